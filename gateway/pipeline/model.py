"""What flows through the query path: the request as it arrived (`Incoming`), the validated
request to one workspace (`Request`) and its answer (`Answer`). All three are immutable: a stage
that changes a request or an answer makes a new one (`replace`)."""

from __future__ import annotations

import dataclasses
import gzip
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers

from gateway.config import Principal, Workspace
from gateway.promql import Expr

if TYPE_CHECKING:  # the table's builders build Requests' parts: imported there at run time
    from gateway.pipeline.endpoints import Endpoint

ANONYMOUS = Principal(name="anonymous")

# Reads a POST body within a byte limit: (content type, body); ("", b"") for a GET.
BodyReader = Callable[[int], Awaitable[tuple[str, bytes]]]


async def _no_body(limit: int) -> tuple[str, bytes]:
    return "", b""


@dataclass(frozen=True, slots=True)
class Incoming:
    """An API call as the client sent it, before anything of it was checked."""

    endpoint: str  # query, query_range, series, labels, label_values, ..., format_query
    method: str = "GET"
    workspace: str | None = None  # the <name> of /workspaces/<name>/...; None: the default
    label: str = ""  # the <name> of /label/<name>/values
    headers: Headers = dataclasses.field(default_factory=Headers)
    client: str = "-"  # the peer's address
    query_string: bytes = b""
    read_body: BodyReader = _no_body
    request_id: str = ""


@dataclass(frozen=True, slots=True)
class QueryWindow:
    """A range query's parsed window: times in ms, step in ns (Go's time.Duration)."""

    start_ms: int
    end_ms: int
    step_ns: int


@dataclass(frozen=True, slots=True)
class Origin:
    """Who the request is for, as Grafana says it: its data-source requests carry the dashboard's
    uid (X-Dashboard-Uid), the panel's id (X-Panel-Id), the org (X-Grafana-Org-Id) and, with
    `send_user_header`, the user (X-Grafana-User); newer versions the titles too. What the client
    says, unchecked: for the cost view and dashboard budgets, never for access."""

    dashboard: str = ""
    panel: str = ""
    org: str = ""
    user: str = ""
    dashboard_title: str = ""
    panel_title: str = ""


NO_ORIGIN = Origin()
_ORIGIN_HEADERS = {
    b"x-dashboard-uid": "dashboard",
    b"x-panel-id": "panel",
    b"x-grafana-org-id": "org",
    b"x-grafana-user": "user",
    b"x-dashboard-title": "dashboard_title",
    b"x-panel-title": "panel_title",
}
MAX_ORIGIN_CHARS = 128


def origin_of(headers: Headers) -> Origin:
    """The request's `Origin` from its headers: each value cut to MAX_ORIGIN_CHARS printable
    characters, so that no header can grow a key or a label without bound."""
    found: dict[str, str] = {}
    # One pass over the raw headers (Headers.get scans them all for each name: six scans cost
    # a cache hit more than this; the first of a name counts, as Headers.get reads it).
    for key, raw in headers.raw:
        name = _ORIGIN_HEADERS.get(key)
        if name is None or name in found:
            continue
        value = raw.decode("utf-8", "replace")  # Grafana sends titles as UTF-8
        text = "".join(c for c in value[:MAX_ORIGIN_CHARS] if c.isprintable()).strip()
        found[name] = text
    found = {name: text for name, text in found.items() if text}
    return Origin(**found) if found else NO_ORIGIN


@dataclass(frozen=True, slots=True)
class Request:
    """One Prometheus API call to one workspace, validated and ready to forward.

    `params` are what goes upstream, in the client's order; stages replace them (enforcement
    rewrites the query, the cache asks for sub-ranges) with `replace`.
    """

    workspace: Workspace
    endpoint: Endpoint  # its row of the endpoint table
    path: str  # the API path appended to the workspace URL, e.g. /api/v1/query_range
    method: str  # the method used upstream: POST (form body) or GET
    params: tuple[tuple[str, str], ...]
    timeout: float  # seconds this request may take upstream, retries included
    principal: Principal = ANONYMOUS
    expr: Expr | None = None  # the parsed (and, once enforced, rewritten) `query`
    window: QueryWindow | None = None
    time_ms: int | None = None  # an instant query's evaluation time
    no_cache: bool = False  # the client sent Cache-Control: no-cache
    accept_gzip: bool = False  # the client takes gzip: ask the upstream for it, pass it through
    request_id: str = ""
    origin: Origin = NO_ORIGIN  # the Grafana dashboard, panel and user it is for, if said

    def param(self, name: str) -> str:
        """The first value of `name`, or "" (Go's FormValue)."""
        for key, value in self.params:
            if key == name:
                return value
        return ""

    def replace(self, **changes: Any) -> Request:
        return dataclasses.replace(self, **changes)

    def for_client(
        self, no_cache: bool, accept_gzip: bool, request_id: str, origin: Origin = NO_ORIGIN
    ) -> Request:
        """This validated request as one client's: what it accepts and its request id. (The
        constructor called directly: dataclasses.replace costs twice as much, and this runs on
        every cache hit; bench/README.md, issue 10.)"""
        return Request(
            self.workspace,
            self.endpoint,
            self.path,
            self.method,
            self.params,
            self.timeout,
            self.principal,
            self.expr,
            self.window,
            self.time_ms,
            no_cache,
            accept_gzip,
            request_id,
            origin,
        )


# An answer's bytes: in memory, or, for a large answer read from the upstream, a read-only map
# of a temporary file (`send.read_bounded`): its pages are the kernel's page cache, which the
# kernel can drop under pressure, not the worker's heap.
Body = bytes | memoryview


def as_bytes(body: Body) -> bytes:
    """The body as bytes (a copy of a mapped one: for what keeps it, such as the cache)."""
    return body if isinstance(body, bytes) else bytes(body)


@dataclass(frozen=True, slots=True)
class Answer:
    """A successful answer in Prometheus's JSON shape, gzip-encoded or not (`gzipped`)."""

    body: Body
    gzipped: bool = False
    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()  # extra headers for the client
    cache: str = ""  # hit, miss, partial or "bypass; reason=<why>": the client's x-cache
    size: int = -1  # the JSON's bytes (decompressed) when known, as the upstream's answers are
    # The query samples AMP processed for this answer (its `totalQueryableSamples`, what AMP
    # bills), when the upstream said; -1: not known, not metered, or not from the upstream.
    samples_processed: int = -1
    # A range query's samples processed at each step: ((step time in ms, samples), ...).
    samples_per_step: tuple[tuple[int, int], ...] = ()

    def json_size(self) -> int:
        return self.size if self.size >= 0 else len(self.json_bytes())

    def json_bytes(self) -> Body:
        return gzip.decompress(self.body) if self.gzipped else self.body

    def replace(self, **changes: Any) -> Answer:
        return dataclasses.replace(self, **changes)


Handler = Callable[[Request], Awaitable[Answer]]
Stage = Callable[[Handler], Handler]


def with_single(params: tuple[tuple[str, str], ...], name: str, value: str) -> tuple[tuple[str, str], ...]:
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
    return tuple(out)


def with_one(params: tuple[tuple[str, str], ...], name: str, value: str) -> tuple[tuple[str, str], ...]:
    """`with_single`, and `name` added last when the parameters have none."""
    if all(key != name for key, _ in params):
        return (*params, (name, value))
    return with_single(params, name, value)


def promql_chars(params: tuple[tuple[str, str], ...]) -> int:
    """Characters of PromQL a request carries (its `query` and `match[]` values)."""
    return sum(len(value) for key, value in params if key in ("query", "match[]"))


# Whether an attempt of the request in this task was sent upstream: set by `send`, read by
# `retry` to tell the upstream not answering in time from the request waiting out its time in
# the gateway's own queue for a workspace slot (only the first may be answered stale).
attempt_sent: ContextVar[bool] = ContextVar("attempt_sent", default=False)
