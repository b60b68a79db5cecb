"""Pages and dashboards sit behind the same authentication as the API: the caller is known
before anything of the request (a query, a dashboard name) is read. `panels.public: true`
opens the pages explicitly, not their data: a figure's JSON is authenticated before its query
is parsed (nothing is compiled for a request before it is authenticated), then goes through
the API's checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.respond import error_response
from gateway.config import PanelSettings
from gateway.errors import GatewayError
from gateway.panels import pages
from gateway.panels.service import JSON_HEADERS
from gateway.pipeline.authenticate import Authenticator
from gateway.promql import offloop

Endpoint = Callable[[Request], Awaitable[Response]]


def signed_in(
    settings: PanelSettings, authenticator: Authenticator, endpoint: Endpoint, json: bool, data: bool = False
) -> Endpoint:
    """`endpoint` for signed-in callers only; with `panels.public`, for anyone unless it serves
    `data`. The PromQL work that follows is queued as the caller's (promql/offloop.py)."""
    if settings.public and not data:
        return endpoint

    async def handle(request: Request) -> Response:
        address = request.client.host if request.client else "-"
        try:
            principal = await authenticator.authenticate(request.headers, address)
        except GatewayError as err:
            if json:
                return error_response(err, JSON_HEADERS)
            response = pages.page(settings=settings, title="Sign in", error=err.message, status=err.status)
            response.headers.update(err.headers)
            return response
        who = principal.name
        offloop.asking.set(f"{who}@{address}" if who == offloop.ANONYMOUS else who)
        return await endpoint(request)

    return handle
