"""AMP's own error answers, turned into Prometheus's envelope with a message for the operator.

AMP's auth layer answers API-Gateway style (`{"message": …}` with `x-amzn-errortype`), not in
Prometheus's shape. Failures of the gateway's own identity (signature, credentials, IAM) are
answered 502: the client did nothing wrong, the gateway's side of the hop is misconfigured.
AMP's words about the gateway's identity name its IAM role and account: they go to the log,
with AMP's request id; the client is told what to fix and where to look. Any AMP text that does
reach a client has ARNs and account ids removed.
"""

from __future__ import annotations

import logging
import re
from typing import get_args

import orjson

from gateway.config import Workspace
from gateway.errors import ErrorType, GatewayError

log = logging.getLogger("gateway.upstream")

QUERY_PERMISSIONS = "aps:QueryMetrics, aps:GetSeries, aps:GetLabels and aps:GetMetricMetadata"
_ARN = re.compile(r"arn:aws[a-z-]*:[^\s\"',;)]*")
_ACCOUNT = re.compile(r"(?<![0-9])[0-9]{12}(?![0-9])")


def scrub(text: str) -> str:
    """`text` without ARNs and 12-digit AWS account ids."""
    return _ACCOUNT.sub("<account>", _ARN.sub("<arn>", text))


RETRY_STATUSES = frozenset({429, 502, 503, 504})


def translate_error(
    status: int, headers: dict[str, str], body: bytes, workspace: Workspace, path: str
) -> GatewayError:
    """An upstream error answer as the client should see it: Prometheus's own envelope as it
    came, anything else (AMP's API-Gateway answers, proxies' pages) in the gateway's words."""
    retry = ("throttled" if status == 429 else str(status)) if status in RETRY_STATUSES else ""
    wait = headers.get("retry-after", "")
    envelope = _envelope(body)
    if envelope is not None:
        passed = {"Retry-After": headers["retry-after"]} if "retry-after" in headers else None
        return GatewayError(
            envelope[0], envelope[1], status, passed, upstream_body=body, retry=retry, wait=wait
        )
    error_type = headers.get("x-amzn-errortype", "").split(":")[0]
    aws_message = _aws_message(body, headers)
    request_id = headers.get("x-amzn-requestid") or headers.get("x-amz-request-id")
    said = (
        f" (AMP said: {error_type + ': ' if error_type else ''}{scrub(aws_message)})"
        if aws_message or error_type
        else ""
    )
    rid = f" [AMP request id {request_id}]" if request_id else ""
    ws = workspace.id
    extra: dict[str, str] = {}
    kind: ErrorType

    lowered = f"{error_type} {aws_message}".lower()
    if error_type == "MissingAuthenticationTokenException" or "missing authentication token" in lowered:
        kind, code, text = (
            "unavailable",
            502,
            (
                f"AMP received no signature from the gateway for {ws}: enable SigV4 for this "
                "workspace (sigv4: true / GATEWAY_SIGV4=true)"
            ),
        )
    elif "signature" in lowered and status in (400, 403):
        kind, code, text = (
            "unavailable",
            502,
            (
                f"AMP rejected the signature of the gateway's request to {ws}: check the gateway's "
                f"credentials, its clock and region {workspace.region!r}"
            ),
        )
    elif error_type in ("UnrecognizedClientException", "InvalidClientTokenId", "ExpiredTokenException") or (
        "security token" in lowered
    ):
        kind, code, text = (
            "unavailable",
            502,
            (
                f"AMP refused the gateway's AWS credentials for {ws}: they are unknown or expired; "
                "check the credential chain (and assume-role settings) the gateway runs with"
            ),
        )
    elif status == 403:
        kind, code, text = (
            "unavailable",
            502,
            (
                f"the gateway's AWS identity may not query {ws}: grant {QUERY_PERMISSIONS} on the "
                "workspace to the gateway's role"
            ),
        )
    elif error_type == "ResourceNotFoundException" or (status == 404 and "workspace" in lowered):
        kind, code, text = (
            "unavailable",
            502,
            (f"AMP has no workspace {ws} in region {workspace.region!r}: check the workspace URL"),
        )
    elif status == 404:
        kind, code, text = "not_found", 404, f"the upstream of {ws} has no endpoint {path}"
    elif status == 429 or error_type == "ThrottlingException":
        kind, code, text = (
            "too_many_requests",
            429,
            (
                f"AMP is throttling queries to {ws} and retries did not get through; slow down or "
                "raise the workspace's query TPS quota"
            ),
        )
        extra["Retry-After"] = headers.get("retry-after") or "1"
    elif status in (400, 413):
        kind, code, text = "bad_data", status, f"AMP rejected the request to {ws}"
    elif status == 422:
        kind, code, text = "execution", 422, f"AMP could not run the query on {ws}"
    elif status == 504:
        kind, code, text = "timeout", 503, f"AMP timed out answering {ws}"
    else:
        kind, code, text = (
            "unavailable",
            503 if status == 503 else 502,
            (f"the upstream of {ws} failed with HTTP {status}"),
        )
    if code == 502 and status in (400, 403, 404):
        # About the gateway's own identity: AMP's words stay in the log.
        log.warning(
            "AMP refused the gateway for %s (HTTP %s%s): %s%s",
            ws,
            status,
            f", {error_type}" if error_type else "",
            aws_message,
            rid,
        )
        text += "; AMP's answer is in the gateway's log" + rid
    else:
        text += said + rid
    if retry and "retry-after" in headers:
        extra.setdefault("Retry-After", headers["retry-after"])
    return GatewayError(kind, text, code, extra, retry=retry, wait=wait)


def _envelope(body: bytes) -> tuple[ErrorType, str] | None:
    """(errorType, error) of a Prometheus error envelope; None when the body is not one."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or parsed.get("status") not in ("success", "error"):
        return None
    kind = parsed.get("errorType")
    known: ErrorType = "execution"
    for candidate in get_args(ErrorType):
        if candidate == kind:
            known = candidate
    return known, str(parsed.get("error") or "")


def _aws_message(body: bytes, headers: dict[str, str]) -> str:
    message = headers.get("x-amzn-errormessage", "")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict):
        message = str(parsed.get("message") or parsed.get("Message") or message)
    elif not message:
        message = body.decode("utf-8", "replace")
    message = " ".join(message.split())
    return message[:300] + ("…" if len(message) > 300 else "")
