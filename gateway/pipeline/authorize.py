"""Stage: authorize. Which workspace the request names (by id or alias; the default one when
the path names none), and whether the principal may read it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from gateway.config import Principal, Settings, Workspace
from gateway.errors import GatewayError

Authorize = Callable[[Principal, str | None], Awaitable[Workspace]]


def authorizer(settings: Settings) -> Authorize:
    async def authorize(principal: Principal, name: str | None) -> Workspace:
        workspace = settings.workspace(name)
        if workspace is None:
            raise GatewayError("not_found", f'workspace "{name}" is not configured in this gateway')
        if not principal.may_query(workspace.names):
            raise GatewayError(
                "forbidden", f'"{principal.name}" may not query workspace "{name or workspace.id}"'
            )
        return workspace

    return authorize
