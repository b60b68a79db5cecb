"""A page asks the gateway's own HTTP API as a client would over the network, in process: the
same routes, middleware, authentication, rate limits and answers, with its caller's
credentials and address, so the API decides what the caller may see. For pages whose data is
what an API route answers (the /cost page and the cost API)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any, get_args
from urllib.parse import urlencode

import orjson
from starlette.requests import Request
from starlette.types import Message

from gateway.errors import ErrorType, GatewayError

# What of the caller's request goes with the question: who it is (the authenticating proxy's
# header is added by the caller) and its request id, for the log; no body, no encodings.
FORWARDED = (b"host", b"authorization", b"user-agent", b"x-request-id")
# The API's error headers a page passes on: a 401's challenge, a 429's wait.
ERROR_HEADERS = ("www-authenticate", "retry-after")
_ERROR_TYPES: dict[str, ErrorType] = {kind: kind for kind in get_args(ErrorType)}


async def ask_api(
    request: Request, path: str, params: Mapping[str, str], forward: Iterable[str] = ()
) -> dict[str, Any]:
    """The success document the app answers `GET path?params` with for `request`'s caller;
    GatewayError with the API's own status, type, message and challenge otherwise. `forward`:
    more header names to pass on (an authenticating proxy's)."""
    names = {*FORWARDED, *(name.lower().encode("latin-1") for name in forward)}
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": request.url.scheme,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": urlencode(params).encode(),
        "headers": [(k, v) for k, v in request.scope["headers"] if k in names],
        "client": request.scope.get("client"),
        "server": request.scope.get("server"),
    }
    if "state" in request.scope:
        scope["state"] = dict(request.scope["state"])
    status, headers, body = await _call(request.scope["app"], scope)
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict):
        raise GatewayError("internal", f"{path} answered HTTP {status} without a JSON document")
    if status == 200 and document.get("status") == "success":
        return document
    raise GatewayError(
        _ERROR_TYPES.get(str(document.get("errorType")), "internal"),
        str(document.get("error") or f"{path} answered HTTP {status}"),
        status if status >= 400 else 500,
        headers={k: v for k, v in headers.items() if k in ERROR_HEADERS},
    )


async def _call(app: Any, scope: dict[str, Any]) -> tuple[int, dict[str, str], bytes]:
    status = 500
    headers: dict[str, str] = {}
    chunks: list[bytes] = []
    answered = asyncio.Event()
    asked = False

    async def receive() -> Message:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()  # a route listening for the client's leaving: it leaves when answered
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = int(message["status"])
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", [])
            }
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                answered.set()

    await app(scope, receive, send)
    answered.set()
    return status, headers, b"".join(chunks)
