"""Stage: validate. Reads the request's parameters (URL query and form body, within the
principal's body limit) and checks them as Prometheus does, endpoint by endpoint
(`endpoints.py`); the result is the immutable `Request` the rest of the path works on.

Validation is deterministic for identical input, so its outcome is remembered per exact raw
request (endpoint, label, workspace, principal, method, content type, query string, body),
bounded by measured bytes: a dashboard's refresh skips parsing. Nothing that depends on the
clock (an instant query without `time`) or that failed is remembered. Measured (bench/README.md,
"validation memo"): it saves more than 5% of a cache hit.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import parse_qsl

from cachetools import LRUCache

from gateway.config import Principal, Workspace
from gateway.errors import GatewayError
from gateway.pipeline.endpoints import ENDPOINTS, Endpoint
from gateway.pipeline.endpoints.builders import Call
from gateway.pipeline.endpoints.params import Params
from gateway.pipeline.model import Incoming, Request, origin_of
from gateway.promql import offloop
from gateway.promql.memo import tree_bytes

MEMO_BYTES = 16 * 1024 * 1024
MEMO_MAX_RAW = 64 * 1024  # larger requests are validated every time
_MEMO_OVERHEAD = 600  # the cache slot, the key tuple, the Request object

_Key = tuple[str, str, str, str, str, str, bytes, bytes]


class Validator:
    def __init__(self, upstream_timeout: float) -> None:
        self._cap = upstream_timeout
        self.memo: LRUCache[_Key, tuple[Request, int]] = LRUCache(MEMO_BYTES, getsizeof=lambda v: v[1])

    async def __call__(self, incoming: Incoming, principal: Principal, workspace: Workspace) -> Request:
        content_type, body = "", b""
        if incoming.method == "POST":
            content_type, body = await incoming.read_body(principal.limits.max_body_bytes)
        key: _Key = (
            incoming.endpoint,
            incoming.label,
            workspace.id,
            principal.name,
            incoming.method,
            content_type,
            incoming.query_string,
            body,
        )
        # Who asks, for the PromQL pool's fair share (promql/offloop.py), here and in the stages
        # after this one; without authentication, each client address is its own principal.
        who = principal.name
        if who == offloop.ANONYMOUS:
            who = f"{who}@{incoming.client}"
        offloop.asking.set(who)
        found = self.memo.get(key)
        if found is None:
            params = parse_params(content_type, body, incoming.query_string)
            endpoint = ENDPOINTS[incoming.endpoint]
            call = await offloop.run(parse_cost(params), endpoint.build, params, incoming.label, who=who)
            template = self._request(endpoint, call, workspace, principal)
            raw = len(incoming.query_string) + len(body)
            # An instant query without `time` is evaluated at "now": never remembered.
            if raw <= MEMO_MAX_RAW and not call.at_now:
                self.memo[key] = (template, _measured(key, call))
        else:
            template = found[0]
        headers = incoming.headers
        return template.for_client(
            no_cache="no-cache" in headers.get("cache-control", "").lower(),
            accept_gzip="gzip" in headers.get("accept-encoding", "").lower(),
            request_id=incoming.request_id,
            origin=origin_of(headers),
        )

    def _request(self, endpoint: Endpoint, call: Call, workspace: Workspace, principal: Principal) -> Request:
        cap = self._cap
        timeout = min(call.client_timeout, cap) if call.client_timeout else cap
        params = call.params
        if call.client_timeout and call.client_timeout > cap:
            params = tuple((k, f"{cap:g}s" if k == "timeout" else v) for k, v in params)
        return Request(
            workspace=workspace,
            endpoint=endpoint,
            path=call.path,
            method=call.method,
            params=params,
            timeout=timeout,
            principal=principal,
            expr=call.expr,
            window=call.window,
            time_ms=call.time_ms,
        )


def parse_params(content_type: str, body: bytes, query_string: bytes) -> Params:
    """URL query and form body, body first (Go's r.Form order: body values win FormValue)."""
    items: list[tuple[str, str]] = []
    if content_type == "application/x-www-form-urlencoded" and body:
        items.extend(_parse_form(body.decode("utf-8", "replace"), "body"))
    text = query_string.decode("latin-1")
    if text:
        items.extend(_parse_form(text, "URL query"))
    return Params(items)


def _parse_form(text: str, where: str) -> list[tuple[str, str]]:
    try:
        return parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise GatewayError("bad_data", f"the {where} is not valid percent-encoded UTF-8") from None


def parse_cost(params: Params) -> int:
    """What validating these parameters may cost, in offloop's unit (characters to parse): a
    regex matcher (`~`) counts as a long text, its compilation takes milliseconds."""
    size = sum(len(k) + len(v) for k, v in params.items)
    if any("~" in v for _, v in params.items):
        return max(size, offloop.OFF_LOOP_CHARS + 1)
    return size


def _measured(key: tuple[Any, ...], call: Call) -> int:
    """Bytes a memo entry holds: its key, the parameters and the tree (counted here even when
    the parse memo shares it: an upper bound), measured with sys.getsizeof."""
    size = _MEMO_OVERHEAD + sum(sys.getsizeof(part) for part in key)
    size += sum(sys.getsizeof(k) + sys.getsizeof(v) + 72 for k, v in call.params)
    if call.expr is not None:
        size += tree_bytes(call.expr)
    return size
