"""Starlette routes for the Prometheus API, at /api/v1/... and /workspaces/<id>/api/v1/...

Every API request goes the same way: authenticate → pick the workspace → authorize → read and
validate parameters → the pipeline (limits, cache, signing, upstream) → the client's response.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Awaitable, Callable

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.api import local
from gateway.api.endpoints import BUILDERS, Call, label_values
from gateway.api.errors import ApiError, error_response
from gateway.api.params import Params, parse_form
from gateway.config import Settings, Workspace
from gateway.metrics import Metrics
from gateway.pipeline.auth import Authenticator
from gateway.pipeline.model import Handler, Principal, UpstreamRequest, UpstreamResponse

MAX_BODY_BYTES = 1024 * 1024
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_METHODS = ["GET", "POST"]


def success(data: object) -> Response:
    return Response(orjson.dumps({"status": "success", "data": data}), media_type="application/json")


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

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = []
        for prefix in ("", "/workspaces/{workspace}"):
            for name in BUILDERS:
                routes.append(Route(f"{prefix}/api/v1/{name}", self._forwarded(name), methods=_METHODS))
            routes.append(
                Route(
                    f"{prefix}/api/v1/label/{{name}}/values",
                    self._forwarded("label_values"),
                    methods=_METHODS,
                )
            )
            routes.append(
                Route(f"{prefix}/api/v1/status/buildinfo", self._local("buildinfo"), methods=_METHODS)
            )
            routes.append(
                Route(f"{prefix}/api/v1/format_query", self._local("format_query"), methods=_METHODS)
            )
            routes.append(Route(f"{prefix}/api/v1/parse_query", self._local("parse_query"), methods=_METHODS))
            routes.append(Route(f"{prefix}/api/v1/{{rest:path}}", self._unknown, methods=_METHODS))
        return routes

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
        call = label_values(params, label) if endpoint == "label_values" else BUILDERS[endpoint](params)
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

        async def handle(request: Request) -> Response:
            started = time.perf_counter()
            workspace_id = "-"
            try:
                principal, workspace = await self._admit(request)
                workspace_id = workspace.id
                params = await read_params(request, max_body_bytes(principal))
                if builder is None:
                    call = label_values(params, request.path_params["name"])
                else:
                    call = builder(params)
                upstream_request = self._upstream_request(request, call, principal, workspace)
                answer = await self.pipeline(upstream_request)
                response = to_response(answer, request)
            except ApiError as err:
                response = err.to_response()
            response.headers["x-request-id"] = request_id(request)
            self.metrics.requests.labels(endpoint, workspace_id, str(response.status_code)).inc()
            self.metrics.request_seconds.labels(endpoint).observe(time.perf_counter() - started)
            return response

        return handle

    def _upstream_request(
        self, request: Request, call: Call, principal: Principal, workspace: Workspace
    ) -> UpstreamRequest:
        cap = self.settings.upstream.timeout
        timeout = min(call.client_timeout, cap) if call.client_timeout else cap
        params = call.params
        if call.client_timeout and call.client_timeout > cap:
            params = [(k, f"{cap:g}s" if k == "timeout" else v) for k, v in params]
        return UpstreamRequest(
            workspace=workspace,
            endpoint=call.endpoint,
            path=call.path,
            method=call.method,
            params=params,
            timeout=timeout,
            principal=principal,
            expr=call.expr,
            window=call.window,
            time_ms=call.time_ms,
            no_cache="no-cache" in request.headers.get("cache-control", "").lower(),
            accept_gzip="gzip" in request.headers.get("accept-encoding", "").lower(),
            request_id=request_id(request),
        )

    def _local(self, name: str) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            try:
                principal, _ = await self._admit(request)
                params = await read_params(request, max_body_bytes(principal))
                if name == "buildinfo":
                    response = success(local.buildinfo())
                elif name == "format_query":
                    response = success(local.format_query(params))
                else:
                    response = success(local.parse_query(params))
            except ApiError as err:
                response = err.to_response()
            response.headers["x-request-id"] = request_id(request)
            self.metrics.requests.labels(name, "-", str(response.status_code)).inc()
            return response

        return handle

    async def _unknown(self, request: Request) -> Response:
        return error_response("not_found", f"unknown API endpoint {request.url.path}", 404)


def request_id(request: Request) -> str:
    cached = request.scope.get("gateway.request_id")
    if cached is None:
        given = request.headers.get("x-request-id", "")
        cached = given if _REQUEST_ID_RE.match(given) else uuid.uuid4().hex
        request.scope["gateway.request_id"] = cached
    return cached


def max_body_bytes(principal: Principal) -> int:
    """The principal's `limits.max_body_bytes`."""
    return getattr(principal.limits, "max_body_bytes", MAX_BODY_BYTES)


async def read_params(request: Request, max_body: int = MAX_BODY_BYTES) -> Params:
    """URL query and form body, body first (Go's r.Form order: body values win FormValue)."""
    items: list[tuple[str, str]] = []
    if request.method == "POST":
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        too_large = ApiError("bad_data", f"request body is larger than {max_body} bytes", 413)
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_body:
            raise too_large
        # Read in chunks: a body without Content-Length must not be buffered past the limit.
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise too_large
            chunks.append(chunk)
        body = b"".join(chunks)
        if content_type == "application/x-www-form-urlencoded" and body:
            items.extend(_parse_form(body.decode("utf-8", "replace"), "body"))
    query_string = request.scope.get("query_string", b"").decode("latin-1")
    if query_string:
        items.extend(_parse_form(query_string, "URL query"))
    return Params(items)


def _parse_form(text: str, where: str) -> list[tuple[str, str]]:
    try:
        return parse_form(text)
    except UnicodeDecodeError:
        raise ApiError("bad_data", f"the {where} is not valid percent-encoded UTF-8") from None


def to_response(answer: UpstreamResponse, request: Request) -> Response:
    headers = dict(answer.headers)
    if answer.cache:
        headers["x-cache"] = answer.cache
    if answer.gzipped and "gzip" in request.headers.get("accept-encoding", ""):
        headers["content-encoding"] = "gzip"
        headers["vary"] = "Accept-Encoding"
        body = answer.body
    else:
        body = answer.json_bytes()
    return Response(body, status_code=answer.status, media_type="application/json", headers=headers)
