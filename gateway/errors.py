"""The gateway's one error type: every stage raises GatewayError, one place writes it
(`gateway.api.envelope`), in Prometheus's envelope: {"status":"error","errorType":…,"error":…}."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

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
DEFAULT_STATUS: Mapping[str, int] = MappingProxyType(
    {
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
)

_EMPTY: Mapping[str, str] = MappingProxyType({})
# GatewayError.failure: how the upstream failed to answer.
UPSTREAM_FAILURES = ("throttled", "server-error", "timeout", "unreachable")


class GatewayError(Exception):
    """An answer that is not a success, raised by whichever stage decided it.

    `upstream_body` holds an error answer the upstream wrote itself in Prometheus's envelope:
    the client gets those bytes unchanged (Prometheus's exact words), with `status`.
    `retry` says why the upstream may answer if asked again ("throttled", "502", "connection"),
    "" when asking again would not help; `wait` is the upstream's own Retry-After, if it sent
    one. `failure` says how the upstream failed to answer, when that is what happened:
    "throttled" (429s past the retries), "server-error" (a 5xx of its own), "timeout" (no
    answer within the request's time), "unreachable" (no connection): the failures the results
    cache may answer for from an expired entry (stale-if-error). It is "" for everything else:
    the gateway's own refusals, 4xx, and AMP refusing the gateway's identity. `stage` names the
    stage that raised it (set by the pipeline's instrumentation).
    """

    def __init__(
        self,
        error_type: ErrorType,
        message: str,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        upstream_body: bytes | None = None,
        retry: str = "",
        wait: str = "",
        failure: str = "",
    ) -> None:
        super().__init__(message)
        self.error_type: ErrorType = error_type
        self.message = message
        self.status = status or DEFAULT_STATUS[error_type]
        self.headers: Mapping[str, str] = MappingProxyType(dict(headers)) if headers else _EMPTY
        self.upstream_body = upstream_body
        self.retry = retry
        self.wait = wait
        self.failure = failure
        self.stage: str | None = None

    def with_headers(self, headers: Mapping[str, str]) -> GatewayError:
        """The same error with more headers for the client."""
        error = GatewayError(
            self.error_type,
            self.message,
            self.status,
            {**self.headers, **headers},
            self.upstream_body,
            self.retry,
            self.wait,
            self.failure,
        )
        error.stage = self.stage
        return error


def bad_param(name: str, detail: str) -> GatewayError:
    """Prometheus's words for a parameter it cannot read: `invalid parameter "name": …`."""
    return GatewayError("bad_data", f'invalid parameter "{name}": {detail}')
