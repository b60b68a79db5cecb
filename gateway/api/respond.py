"""Answers and errors as HTTP responses: the one place the API's wire encoding is decided.

A gzip answer goes to a client that takes gzip as it is; a client that does not gets it decoded
(which only happens on a miss: the cache keeps plain copies for such clients).
"""

from __future__ import annotations

from starlette.responses import Response

from gateway.envelope import error_body
from gateway.errors import GatewayError
from gateway.pipeline.answers import json_size, work
from gateway.pipeline.model import Answer


async def respond(answer: Answer, accept_encoding: str, extra: dict[str, str] | None = None) -> Response:
    headers = {**dict(answer.headers), **(extra or {})}
    if answer.cache:
        headers["x-cache"] = answer.cache
    if answer.gzipped and "gzip" in accept_encoding:
        headers["content-encoding"] = "gzip"
        headers["vary"] = "Accept-Encoding"
        body = answer.body
    elif answer.gzipped:
        # Off the event loop when large (a miss coalesced with a gzip client's fetch: 128 MiB
        # take about half a second to decompress).
        body = await work(json_size(answer), answer.json_bytes)
    else:
        body = answer.body
    return Response(body, status_code=answer.status, media_type="application/json", headers=headers)


def error_response(error: GatewayError, extra: dict[str, str] | None = None) -> Response:
    headers = {**error.headers, **(extra or {})}
    return Response(
        error_body(error), status_code=error.status, media_type="application/json", headers=headers
    )
