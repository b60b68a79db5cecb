"""Inbound authentication: who is asking. Without an `auth` section everyone is anonymous."""

from __future__ import annotations

from starlette.requests import HTTPConnection

from gateway.pipeline.model import ANONYMOUS, Principal


class Authenticator:
    """Resolves the principal of a request; raises ApiError (401) when it cannot."""

    async def authenticate(self, connection: HTTPConnection) -> Principal:
        return ANONYMOUS
