"""Prometheus's error envelope: one exception type, one JSON shape."""

from __future__ import annotations

from typing import Literal

import orjson
from starlette.responses import Response

ErrorType = Literal[
    "bad_data",
    "execution",
    "canceled",
    "timeout",
    "internal",
    "not_found",
    "not_acceptable",
    "unavailable",
    "unauthorized",
    "forbidden",
    "too_many_requests",
]

# Prometheus's defaults (web/api/v1/api.go, respondError); the last three are the
# gateway's own, used where Prometheus has no error type for what happened.
DEFAULT_STATUS: dict[str, int] = {
    "bad_data": 400,
    "execution": 422,
    "canceled": 499,
    "timeout": 503,
    "internal": 500,
    "not_found": 404,
    "not_acceptable": 406,
    "unavailable": 503,
    "unauthorized": 401,
    "forbidden": 403,
    "too_many_requests": 429,
}


class ApiError(Exception):
    """An error answered to the client in Prometheus's envelope."""

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status or DEFAULT_STATUS[error_type]
        self.headers = headers or {}

    def to_response(self) -> Response:
        return error_response(self.error_type, self.message, self.status, self.headers)


def bad_param(name: str, detail: str) -> ApiError:
    return ApiError("bad_data", f'invalid parameter "{name}": {detail}')


def error_body(error_type: str, message: str) -> bytes:
    return orjson.dumps({"status": "error", "errorType": error_type, "error": message})


def error_response(
    error_type: str, message: str, status: int, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        error_body(error_type, message),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
