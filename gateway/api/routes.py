"""The Prometheus HTTP API's routes, at /api/v1/... and /workspaces/<name>/api/v1/...

One handler for every endpoint: it turns the HTTP request into an `Incoming`, asks the query
path `app.py` composed (authenticate → … → send) and writes the answer or the error. What an
endpoint accepts is decided by its row of the endpoint table (`gateway.pipeline.endpoints`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from prometheus_client import Counter
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import Receive, Scope, Send

from gateway import logs
from gateway.api.respond import error_response, respond
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.endpoints import ENDPOINTS, Endpoint
from gateway.pipeline.endpoints.params import Params
from gateway.pipeline.model import Answer, Incoming
from gateway.pipeline.validate import parse_params

log = logging.getLogger("gateway.api")

Ask = Callable[[Incoming], Awaitable[Answer]]

MAX_BODY_BYTES = 1024 * 1024
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_METHODS = ["GET", "POST"]
# Request ids: a random per-process prefix and a counter (unique, and far cheaper than uuid4).
_ID_PREFIX = os.urandom(8).hex()
_ID_COUNTER = itertools.count(1)
# gateway_requests_total names a workspace only once the request was admitted to it, and never
# for the endpoints answered without one.
_ADMISSION = frozenset({"authenticate", "rate_limit", "authorize"})


class PrometheusApi:
    def __init__(self, settings: Settings, ask: Ask, metrics: Metrics) -> None:
        self.settings = settings
        self.ask = ask
        self.metrics = metrics

    def routes(self) -> list[BaseRoute]:
        """/api/v1/... and /workspaces/<name>/api/v1/...: one mount each, so that a request is
        matched against the API's routes only when its path is an API path."""
        api: list[BaseRoute] = [
            Route(f"/{e.route}", ApiEndpoint(self, e), methods=_METHODS) for e in ENDPOINTS.values()
        ]
        api.append(Route("/{rest:path}", _unknown, methods=_METHODS))
        mounts = (Mount("/api/v1", routes=api), Mount("/workspaces/{workspace}/api/v1", routes=api))
        for mount in mounts:
            # A path may hold a newline (%0A in a label name, which must get Prometheus's 400):
            # Starlette's mount pattern ends in `.*`, which stops at one.
            mount.path_regex = re.compile(mount.path_regex.pattern, re.DOTALL)
        return list(mounts)

    async def run(
        self, request: Request, endpoint: str, params: Params, workspace: str | None = None, label: str = ""
    ) -> Answer:
        """One API call made on behalf of `request` (the panels' way in): the same path as
        /api/v1/<endpoint> with these parameters; raises GatewayError."""
        query_string = urlencode(params.items).encode()
        return await self.ask(incoming_from(request, endpoint, query_string, workspace, label))


class ApiEndpoint:
    """One endpoint's handler, as an ASGI app (Starlette calls a Route's non-function endpoint
    as one): the request becomes an `Incoming`, the gateway answers it, `respond` writes it."""

    def __init__(self, api: PrometheusApi, endpoint: Endpoint) -> None:
        self.api = api
        self.name = name = endpoint.name
        self.labelled = endpoint.workspace
        self.seconds = api.metrics.request_seconds.labels(name)
        # gateway_requests_total's children for this endpoint's successes, kept once made
        # (labels() on every request cost 3 µs of a 146 µs hit; bench/README.md, issue 10). At
        # most one per configured workspace, and "-".
        self.succeeded: dict[str, Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        api = self.api
        request = Request(scope, receive)
        incoming = incoming_from(request, self.name)
        admitted = self.labelled
        extra = {"x-request-id": incoming.request_id}
        try:
            answer = await api.ask(incoming)
            response = await respond(answer, incoming.headers.get("accept-encoding", ""), extra)
        except GatewayError as err:
            api.metrics.stage_errors.labels(err.stage or "-", err.error_type).inc()
            admitted = admitted and err.stage not in _ADMISSION
            response = error_response(err, extra)
        workspace = api.settings.workspace(incoming.workspace) if admitted else None
        workspace_id = workspace.id if workspace is not None else "-"
        if response.status_code == 200:
            counter = self.succeeded.get(workspace_id)
            if counter is None:
                counter = self.succeeded[workspace_id] = api.metrics.requests.labels(
                    self.name, workspace_id, "200"
                )
        else:
            counter = api.metrics.requests.labels(self.name, workspace_id, str(response.status_code))
        counter.inc()
        self.seconds.observe(time.perf_counter() - started)
        await response(scope, receive, send)


def incoming_from(
    request: Request,
    endpoint: str,
    query_string: bytes | None = None,
    workspace: str | None = None,
    label: str | None = None,
) -> Incoming:
    """The API call `request` makes; panels pass their own parameters (always a GET)."""
    scope = request.scope
    path_params = scope.get("path_params", {})
    client = scope.get("client")

    async def read(limit: int) -> tuple[str, bytes]:
        return await read_body(request, limit)

    return Incoming(
        endpoint,
        scope["method"] if query_string is None else "GET",
        workspace or path_params.get("workspace"),
        label if label is not None else path_params.get("name", ""),
        request.headers,
        client[0] if client else "-",
        scope.get("query_string", b"") if query_string is None else query_string,
        read,
        request_id(request),
    )


def request_id(request: Request) -> str:
    """The client's X-Request-Id when it is a sane one, else a new id; the same for the whole request."""
    scope = request.scope
    found: str | None = scope.get("gateway.request_id")
    if found is None:
        given = request.headers.get("x-request-id", "")
        found = given if _REQUEST_ID_RE.match(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):x}"
        scope["gateway.request_id"] = found
        logs.request_id.set(found)
    return found


async def read_body(request: Request, max_body: int = MAX_BODY_BYTES) -> tuple[str, bytes]:
    """A POST's content type and body, read within `max_body` (413 beyond); ("", b"") for GET."""
    if request.method != "POST":
        return "", b""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    too_large = GatewayError("bad_data", f"request body is larger than {max_body} bytes", 413)
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
        peer = request.client.host if request.client else "-"
        log.info("client %s went away before sending its whole request", peer)
        raise GatewayError("canceled", "the client closed the connection", 499) from None
    return content_type, b"".join(chunks)


async def read_params(request: Request, max_body: int = MAX_BODY_BYTES) -> Params:
    """A page's parameters (URL query and form body), as the API reads them."""
    content_type, body = await read_body(request, max_body)
    return parse_params(content_type, body, request.scope.get("query_string", b""))


async def _unknown(request: Request) -> Response:
    return error_response(GatewayError("not_found", f"unknown API endpoint {request.url.path}"))
