"""Pages and dashboards sit behind the same authentication as the API: the caller is known
before anything of the request (a query, a dashboard name) is read. `panels.public: true`
opens them explicitly; their data still goes through the API's checks."""

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

Endpoint = Callable[[Request], Awaitable[Response]]


def signed_in(
    settings: PanelSettings, authenticator: Authenticator, endpoint: Endpoint, json: bool
) -> Endpoint:
    if settings.public:
        return endpoint

    async def handle(request: Request) -> Response:
        try:
            await authenticator.authenticate(request.headers, request.client.host if request.client else "-")
        except GatewayError as err:
            if json:
                return error_response(err, JSON_HEADERS)
            response = pages.page(settings=settings, title="Sign in", error=err.message, status=err.status)
            response.headers.update(err.headers)
            return response
        return await endpoint(request)

    return handle
