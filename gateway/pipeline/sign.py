"""Stage: sign. Builds the HTTP request for one attempt and signs it with SigV4 (service `aps`)
when the workspace wants it; every attempt is signed anew (x-amz-date must be fresh).

The query string is encoded strictly (RFC 3986) and sorted as AWS canonicalises it, so the URL
sent is byte for byte the one signed. The upstream is asked for gzip exactly when the client
takes gzip: passed through end to end, never re-coded here.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.credentials import CredentialError, CredentialSource
from gateway.pipeline.model import Answer, Handler, Request
from gateway.pipeline.send import USER_AGENT, Outgoing
from gateway.pipeline.sigv4 import encode_query, sign

log = logging.getLogger("gateway.upstream")

Send = Callable[[Request, Outgoing], Awaitable[Answer]]


def signing(credentials: CredentialSource, metrics: Metrics, send: Send) -> Handler:
    async def handle(request: Request) -> Answer:
        workspace = request.workspace
        query = encode_query(request.params)
        url = workspace.url + request.path
        headers = {"accept-encoding": "gzip" if request.accept_gzip else "identity", "user-agent": USER_AGENT}
        if request.method == "GET":
            url, body = (f"{url}?{query}" if query else url), b""
        else:
            body = query.encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        if workspace.sigv4:
            try:
                found = await credentials.get(workspace)
            except CredentialError as err:
                metrics.credential_errors.labels(workspace.id).inc()
                log.error("credentials for %s: %s", workspace.id, err)
                raise GatewayError(
                    "unavailable", f"the gateway has no usable AWS credentials: {err}", 502
                ) from None
            headers.update(sign(found, workspace.region, request.method, url, body))
        return await send(request, Outgoing(request.method, url, body, tuple(headers.items())))

    return handle
