"""What flows through the pipeline: one request to an upstream workspace and its answer."""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.config import Workspace
from gateway.promql import Expr


@dataclass(frozen=True)
class Principal:
    """Who is asking. `enforce` holds label matchers added to every selector they send."""

    name: str
    workspaces: frozenset[str] | None = None  # None: every workspace
    enforce: tuple[tuple[str, str], ...] = ()
    limits: Any = None

    def may_query(self, workspace: Workspace) -> bool:
        return self.workspaces is None or any(n in self.workspaces for n in workspace.names)


ANONYMOUS = Principal(name="anonymous")


@dataclass(frozen=True)
class QueryWindow:
    """A range query's parsed window: times in ms, step in ns (Go's time.Duration)."""

    start_ms: int
    end_ms: int
    step_ns: int


@dataclass
class UpstreamRequest:
    """One Prometheus API call to one workspace, validated and ready to forward.

    `params` are what goes upstream, in the client's order; stages may replace them (label
    enforcement rewrites the query, the cache asks for sub-ranges) with `replace`.
    """

    workspace: Workspace
    endpoint: str  # query, query_range, series, labels, label_values, metadata, ...
    path: str  # the API path appended to the workspace URL, e.g. /api/v1/query_range
    method: str  # the method used upstream: POST (form body) or GET
    params: list[tuple[str, str]]
    timeout: float  # seconds this request may take upstream, retries included
    principal: Principal = ANONYMOUS
    expr: Expr | None = None  # the parsed (and, once enforced, rewritten) `query`
    window: QueryWindow | None = None
    time_ms: int | None = None  # an instant query's evaluation time
    no_cache: bool = False  # the client sent Cache-Control: no-cache
    accept_gzip: bool = False  # the client takes gzip: ask the upstream for it and pass it through
    request_id: str = ""
    client_headers: dict[str, str] = field(default_factory=dict)

    def param(self, name: str) -> str:
        for key, value in self.params:
            if key == name:
                return value
        return ""

    def replace(self, **changes: Any) -> UpstreamRequest:
        values = {**self.__dict__, **changes}
        return UpstreamRequest(**values)


@dataclass
class UpstreamResponse:
    """An answer in Prometheus's JSON shape, possibly still gzip-encoded as it arrived."""

    status: int
    body: bytes
    gzipped: bool = False
    headers: dict[str, str] = field(default_factory=dict)  # extra headers for the client
    cache: str = ""  # hit, miss, partial or "bypass; <reason>"

    def json_bytes(self) -> bytes:
        if self.gzipped:
            self.body, self.gzipped = gzip.decompress(self.body), False
        return self.body

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def with_single(params: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    """The parameters with exactly one `name`, set to `value` where the first stood: the text
    that goes upstream is the text the gateway checked, whatever copies (URL and body) came."""
    out: list[tuple[str, str]] = []
    seen = False
    for key, current in params:
        if key != name:
            out.append((key, current))
        elif not seen:
            out.append((name, value))
            seen = True
    return out


def promql_chars(params: list[tuple[str, str]]) -> int:
    """Characters of PromQL a request carries (its `query` and `match[]` values)."""
    return sum(len(value) for key, value in params if key in ("query", "match[]"))


Handler = Callable[[UpstreamRequest], Awaitable[UpstreamResponse]]
Stage = Callable[[Handler], Handler]
