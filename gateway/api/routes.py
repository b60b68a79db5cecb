"""Starlette routes for the Prometheus API, at /api/v1/... and /workspaces/<id>/api/v1/...

Every API request goes the same way: authenticate → pick the workspace → authorize → read and
validate parameters → the pipeline (limits, cache, signing, upstream) → the client's response.

Validation is deterministic for identical input, so its outcome (a `Prepared`) is memoized per
exact raw request (endpoint, workspace, principal, method, content type, query string, body):
a dashboard's refresh skips parsing and PromQL validation. Everything else (authentication,
authorization, the body limit, the whole pipeline) runs every time, and nothing is memoized
that depends on the clock or that failed.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette._utils import get_route_path
from starlette.datastructures import URLPath
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from gateway.api import local
from gateway.api.endpoints import BUILDERS, Call, label_values
from gateway.api.errors import ApiError, error_response
from gateway.api.params import Params, parse_form
from gateway.config import Settings, Workspace
from gateway.metrics import Metrics
from gateway.pipeline.auth import Authenticator
from gateway.pipeline.model import Handler, Principal, QueryWindow, UpstreamRequest, UpstreamResponse
from gateway.promql import offloop
from gateway.promql.memo import tree_bytes

log = logging.getLogger("gateway.api")

MAX_BODY_BYTES = 1024 * 1024
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_METHODS = ["GET", "POST"]
# Request ids: a random per-process prefix and a counter (unique, and far cheaper than uuid4).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)
# The parsed-request memo: bounded by the bytes it holds, measured (raw request, parameters,
# PromQL tree); requests larger than MEMO_MAX_RAW are parsed every time.
MEMO_BYTES = 16 * 1024 * 1024
MEMO_MAX_RAW = 64 * 1024
_MEMO_OVERHEAD = 600  # the OrderedDict slot, the key tuple, the Prepared object
_CLIENT_HEADERS = (b"x-request-id", b"cache-control", b"accept-encoding")


def success(data: object) -> Response:
    document = {"status": "success", "data": data}
    try:
        body = orjson.dumps(document)
    except TypeError:  # orjson refuses more than 255 levels (a deep parse_query tree)
        body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(body, media_type="application/json")


@dataclass(frozen=True, slots=True)
class Prepared:
    """What validation decided about a request: the parts of its UpstreamRequest that depend
    only on the raw request and the settings. Shared between identical requests: read only."""

    endpoint: str
    path: str
    method: str
    params: tuple[tuple[str, str], ...]
    timeout: float
    expr: Any
    window: QueryWindow | None
    time_ms: int | None
    size: int = 0  # estimated bytes held, for the memo's bound


class _Memo:
    """Least-recently-used Prepared requests, bounded by their estimated bytes."""

    def __init__(self, max_bytes: int) -> None:
        self._entries: OrderedDict[tuple[Any, ...], Prepared] = OrderedDict()
        self._max_bytes = max_bytes
        self.bytes = 0

    def get(self, key: tuple[Any, ...]) -> Prepared | None:
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], prepared: Prepared) -> None:
        if prepared.size > self._max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[key] = prepared
        self.bytes += prepared.size
        while self.bytes > self._max_bytes:
            _, evicted = self._entries.popitem(last=False)
            self.bytes -= evicted.size

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


class PrometheusApi:
    def __init__(
        self,
        settings: Settings,
        pipeline: Handler,
        authenticator: Authenticator,
        metrics: Metrics,
    ) -> None:
        self.settings = settings
        self.pipeline = pipeline
        self.authenticator = authenticator
        self.metrics = metrics
        self._memo = _Memo(MEMO_BYTES)
        self._counted: dict[tuple[str, str, int], Any] = {}

    def routes(self) -> list[BaseRoute]:
        groups: list[BaseRoute] = []
        for prefix in ("", "/workspaces/{workspace}"):
            routes: list[Route] = []
            for name in BUILDERS:
                endpoint = _Endpoint(self._forwarded(name))
                routes.append(Route(f"{prefix}/api/v1/{name}", endpoint, methods=_METHODS))
            label_values_endpoint = _Endpoint(self._forwarded("label_values"))
            routes.append(
                Route(f"{prefix}/api/v1/label/{{name}}/values", label_values_endpoint, methods=_METHODS)
            )
            routes.append(
                Route(f"{prefix}/api/v1/status/buildinfo", self._local("buildinfo"), methods=_METHODS)
            )
            routes.append(
                Route(f"{prefix}/api/v1/format_query", self._local("format_query"), methods=_METHODS)
            )
            routes.append(Route(f"{prefix}/api/v1/parse_query", self._local("parse_query"), methods=_METHODS))
            routes.append(Route(f"{prefix}/api/v1/{{rest:path}}", self._unknown, methods=_METHODS))
            groups.append(RouteGroup(prefix, routes))
        return groups

    # ------------------------------------------------------------ request handling

    async def run(
        self,
        request: Request,
        endpoint: str,
        params: Params,
        workspace: str | None = None,
        label: str = "",
    ) -> UpstreamResponse:
        """One API call made on behalf of `request` (panels use it): the same authentication,
        authorization, validation and pipeline as /api/v1/<endpoint>; raises ApiError."""
        principal, target = await self._admit(request, workspace)
        builder = None if endpoint == "label_values" else BUILDERS[endpoint]
        call = await offloop.run(parse_cost(params), _build, builder, params, label)
        return await self.pipeline(self._upstream_request(request, call, principal, target))

    async def _admit(self, request: Request, name: str | None = None) -> tuple[Principal, Workspace]:
        principal = await self.authenticator.authenticate(request)
        name = name or request.path_params.get("workspace")
        workspace = self.settings.workspace(name)
        if workspace is None:
            raise ApiError("not_found", f'workspace "{name}" is not configured in this gateway')
        if not principal.may_query(workspace):
            raise ApiError(
                "forbidden", f'"{principal.name}" may not query workspace "{name or workspace.id}"'
            )
        return principal, workspace

    def _forwarded(self, endpoint: str) -> Callable[[Request], Awaitable[Response]]:
        builder = BUILDERS.get(endpoint)
        seconds: list[Any] = []  # the endpoint's histogram child, made on first use

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            headers = _client_headers(request.scope)
            rid = _request_id(request.scope, headers)
            workspace_id = "-"
            try:
                principal, workspace = await self._admit(request)
                workspace_id = workspace.id
                prepared = await self._prepare(request, endpoint, builder, principal)
                upstream_request = _make_request(prepared, principal, workspace, headers, rid)
                answer = await self.pipeline(upstream_request)
                response = to_response(answer, headers.get(b"accept-encoding", ""))
            except ApiError as err:
                response = err.to_response()
            _set_request_id(response, rid)
            self._count(endpoint, workspace_id, response.status_code)
            if not seconds:
                seconds.append(self.metrics.request_seconds.labels(endpoint))
            seconds[0].observe(time.perf_counter() - started)
            return response

        return handle

    def _count(self, endpoint: str, workspace_id: str, status: int) -> None:
        """gateway_requests_total, with the labelled children kept (endpoints x workspaces x codes)."""
        key = (endpoint, workspace_id, status)
        child = self._counted.get(key)
        if child is None:
            child = self._counted[key] = self.metrics.requests.labels(endpoint, workspace_id, str(status))
        child.inc()

    async def _prepare(
        self,
        request: Request,
        endpoint: str,
        builder: Callable[[Params], Call] | None,
        principal: Principal,
    ) -> Prepared:
        """The request validated by its endpoint builder, from the memo when an identical raw
        request was validated before (the body is read, within the limit, every time)."""
        content_type, body = "", b""
        if request.method == "POST":
            content_type, body = await read_body(request, max_body_bytes(principal))
        query_string: bytes = request.scope.get("query_string", b"")
        label = "" if builder is not None else request.path_params["name"]
        workspace = request.path_params.get("workspace")
        key = (endpoint, label, workspace, principal.name, request.method, content_type, query_string, body)
        prepared = self._memo.get(key)
        if prepared is not None:
            return prepared
        params = parse_params(content_type, body, query_string)
        raw = len(query_string) + len(body)
        call = await offloop.run(parse_cost(params), _build, builder, params, label)
        prepared = self._prepared(call, _measured(key, call))
        # An instant query without `time` is evaluated at "now": never memoized.
        if raw <= MEMO_MAX_RAW and (endpoint != "query" or params.get("time") != ""):
            self._memo.put(key, prepared)
        return prepared

    def _prepared(self, call: Call, size: int = 0) -> Prepared:
        cap = self.settings.upstream.timeout
        timeout = min(call.client_timeout, cap) if call.client_timeout else cap
        params = call.params
        if call.client_timeout and call.client_timeout > cap:
            params = [(k, f"{cap:g}s" if k == "timeout" else v) for k, v in params]
        return Prepared(
            call.endpoint,
            call.path,
            call.method,
            tuple(params),
            timeout,
            call.expr,
            call.window,
            call.time_ms,
            size,
        )

    def _upstream_request(
        self, request: Request, call: Call, principal: Principal, workspace: Workspace
    ) -> UpstreamRequest:
        headers = _client_headers(request.scope)
        rid = _request_id(request.scope, headers)
        return _make_request(self._prepared(call), principal, workspace, headers, rid)

    def _local(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                principal, _ = await self._admit(request)
                params = await read_params(request, max_body_bytes(principal))
                if name == "buildinfo":
                    response = success(local.buildinfo())
                else:
                    text = params.get("query")
                    answer = local.format_query if name == "format_query" else local.parse_query
                    # Printing and translating walk the whole tree: off the loop for long texts.
                    response = success(await offloop.run(len(text), answer, params))
            except ApiError as err:
                response = err.to_response()
            response.headers["x-request-id"] = request_id(request)
            self._count(name, "-", response.status_code)
            return response

        return handle

    async def _unknown(self, request: Request) -> Response:
        return error_response("not_found", f"unknown API endpoint {request.url.path}", 404)


class RouteGroup(BaseRoute):
    """The API routes under one prefix, matched exactly as Starlette's Router would match them
    one after another, but without trying those that cannot match: only the route whose static
    path equals the request's (a dict lookup), then the routes with path parameters, in order.
    Starlette still does the matching (Route.matches) and the handling (Route.handle, 405s)."""

    def __init__(self, prefix: str, routes: list[Route]) -> None:
        self.routes = routes
        # "/workspaces/{workspace}" -> the request path starts "/workspaces/<one segment>".
        self._head = prefix.split("{", 1)[0]
        self._one_segment = "{" in prefix
        self._static: dict[str, Route] = {}
        self._dynamic: list[Route] = []
        for route in routes:
            suffix = route.path[len(prefix) :]
            if "{" in suffix:
                self._dynamic.append(route)
            else:
                self._static.setdefault(suffix, route)

    def _suffix(self, path: str) -> str | None:
        """The part of `path` after the prefix, or None when no route here can match it."""
        if not self._one_segment:
            return path if path.startswith("/api/v1/") else None
        if not path.startswith(self._head):
            return None
        slash = path.find("/", len(self._head))
        if slash <= len(self._head):
            return None
        suffix = path[slash:]
        return suffix if suffix.startswith("/api/v1/") else None

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        suffix = self._suffix(get_route_path(scope))
        if suffix is None:
            return Match.NONE, {}
        static = self._static.get(suffix)
        partial: Scope | None = None
        for route in self._dynamic if static is None else (static, *self._dynamic):
            match, child = route.matches(scope)
            if match is Match.FULL:
                child["gateway.route"] = route
                return Match.FULL, child
            if match is Match.PARTIAL and partial is None:
                child["gateway.route"] = route
                partial = child
        if partial is not None:
            return Match.PARTIAL, partial
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope["gateway.route"]
        scope["route"] = route
        await route.handle(scope, receive, send)

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        for route in self.routes:
            try:
                return route.url_path_for(name, **path_params)
            except NoMatchFound:
                pass
        raise NoMatchFound(name, path_params)


class _Endpoint:
    """A request handler as a plain ASGI app. Starlette's request_response wrapper would add a
    second exception-handling layer, the same one ExceptionMiddleware already runs around every
    route: errors reach the same handlers either way, one layer fewer per request."""

    def __init__(self, handle: Callable[[Request], Awaitable[Response]]) -> None:
        self.handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handle(Request(scope, receive, send))
        await response(scope, receive, send)


def _measured(key: tuple[Any, ...], call: Call) -> int:
    """Bytes a memo entry holds: its key, the parameters and the tree (counted here even when
    the parse memo shares it: an upper bound), measured with sys.getsizeof."""
    size = _MEMO_OVERHEAD + sum(sys.getsizeof(part) for part in key)
    size += sum(sys.getsizeof(k) + sys.getsizeof(v) + 72 for k, v in call.params)
    if call.expr is not None:
        size += tree_bytes(call.expr)
    return size


def _build(builder: Callable[[Params], Call] | None, params: Params, label: str) -> Call:
    return builder(params) if builder is not None else label_values(params, label)


def parse_cost(params: Params) -> int:
    """What validating these parameters may cost, in offloop's unit (characters to parse): a
    regex matcher (`~`) counts as a long text, its compilation takes milliseconds."""
    size = sum(len(k) + len(v) for k, v in params.items)
    if any("~" in v for _, v in params.items):
        return max(size, offloop.OFF_LOOP_CHARS + 1)
    return size


def _make_request(
    prepared: Prepared, principal: Principal, workspace: Workspace, headers: dict[bytes, str], rid: str
) -> UpstreamRequest:
    return UpstreamRequest(
        workspace=workspace,
        endpoint=prepared.endpoint,
        path=prepared.path,
        method=prepared.method,
        params=list(prepared.params),
        timeout=prepared.timeout,
        principal=principal,
        expr=prepared.expr,
        window=prepared.window,
        time_ms=prepared.time_ms,
        no_cache="no-cache" in headers.get(b"cache-control", "").lower(),
        accept_gzip="gzip" in headers.get(b"accept-encoding", "").lower(),
        request_id=rid,
    )


def _client_headers(scope: Scope) -> dict[bytes, str]:
    """The first value of each header the API reads (as Starlette's Headers.get gives it)."""
    found: dict[bytes, str] = {}
    for key, value in scope["headers"]:
        if key in _CLIENT_HEADERS and key not in found:
            found[key] = value.decode("latin-1")
    return found


def _request_id(scope: Scope, headers: dict[bytes, str]) -> str:
    cached = scope.get("gateway.request_id")
    if cached is None:
        given = headers.get(b"x-request-id", "")
        cached = given if _REQUEST_ID_RE.match(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):x}"
        scope["gateway.request_id"] = cached
    return cached


def request_id(request: Request) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id; the same for the whole request."""
    return _request_id(request.scope, _client_headers(request.scope))


def _set_request_id(response: Response, rid: str) -> None:
    if isinstance(response, _Ready):
        response.raw_headers.append((b"x-request-id", rid.encode("latin-1")))
    else:
        response.headers["x-request-id"] = rid


def max_body_bytes(principal: Principal) -> int:
    """The principal's `limits.max_body_bytes`."""
    return getattr(principal.limits, "max_body_bytes", MAX_BODY_BYTES)


async def read_body(request: Request, max_body: int = MAX_BODY_BYTES) -> tuple[str, bytes]:
    """A POST's content type and body, read within `max_body` (413 beyond); ("", b"") for GET."""
    if request.method != "POST":
        return "", b""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    too_large = ApiError("bad_data", f"request body is larger than {max_body} bytes", 413)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_body:
        raise too_large
    # Read in chunks: a body without Content-Length must not be buffered past the limit.
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise too_large
            chunks.append(chunk)
    except ClientDisconnect:
        # Nobody is left to answer: one line, no traceback. 499 is Prometheus's "canceled".
        log.info("client %s went away before sending its whole request", _peer(request))
        raise ApiError("canceled", "the client closed the connection", 499) from None
    return content_type, b"".join(chunks)


def _peer(request: Request) -> str:
    return request.client.host if request.client else "-"


def parse_params(content_type: str, body: bytes, query_string: bytes) -> Params:
    """URL query and form body, body first (Go's r.Form order: body values win FormValue)."""
    items: list[tuple[str, str]] = []
    if content_type == "application/x-www-form-urlencoded" and body:
        items.extend(_parse_form(body.decode("utf-8", "replace"), "body"))
    text = query_string.decode("latin-1")
    if text:
        items.extend(_parse_form(text, "URL query"))
    return Params(items)


async def read_params(request: Request, max_body: int = MAX_BODY_BYTES) -> Params:
    content_type, body = await read_body(request, max_body)
    return parse_params(content_type, body, request.scope.get("query_string", b""))


def _parse_form(text: str, where: str) -> list[tuple[str, str]]:
    try:
        return parse_form(text)
    except UnicodeDecodeError:
        raise ApiError("bad_data", f"the {where} is not valid percent-encoded UTF-8") from None


class _Ready(Response):
    """A JSON answer whose raw headers are built directly (no header dict, no MutableHeaders):
    the same headers, in the same order, as Response(body, status, application/json, headers)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.background = None
        self.body = body
        if not (status < 200 or status in (204, 304)):
            raw_headers.append((b"content-length", str(len(body)).encode("latin-1")))
        raw_headers.append((b"content-type", b"application/json"))
        self.raw_headers = raw_headers


def to_response(answer: UpstreamResponse, accept_encoding: str) -> Response:
    if answer.headers:
        return _general_response(answer, accept_encoding)
    raw: list[tuple[bytes, bytes]] = []
    if answer.cache:
        raw.append((b"x-cache", answer.cache.encode("latin-1")))
    if answer.gzipped and "gzip" in accept_encoding:
        raw.append((b"content-encoding", b"gzip"))
        raw.append((b"vary", b"Accept-Encoding"))
        body = answer.body
    else:
        body = answer.json_bytes()
    return _Ready(body, answer.status, raw)


def _general_response(answer: UpstreamResponse, accept_encoding: str) -> Response:
    headers = dict(answer.headers)
    if answer.cache:
        headers["x-cache"] = answer.cache
    if answer.gzipped and "gzip" in accept_encoding:
        headers["content-encoding"] = "gzip"
        headers["vary"] = "Accept-Encoding"
        body = answer.body
    else:
        body = answer.json_bytes()
    return Response(body, status_code=answer.status, media_type="application/json", headers=headers)
