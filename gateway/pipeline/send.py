"""The last step: one HTTP round trip to a workspace, over a pooled aiohttp session per host.

aiohttp rather than httpx: its C HTTP parser costs a third of httpx's CPU per request (see
bench/README.md). Answers come back as they were encoded (gzip passed through untouched);
error answers become GatewayErrors in the client's terms (`amp_errors`), retryable ones marked.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import aiohttp
from yarl import URL

from gateway import __version__
from gateway.config import UpstreamSettings, Workspace
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.amp_errors import translate_error
from gateway.pipeline.model import Answer, Request

log = logging.getLogger("gateway.upstream")

_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
_PASSED_HEADERS = ("x-amzn-requestid", "x-amzn-errortype", "x-amzn-errormessage", "retry-after")
USER_AGENT = f"amp-gateway/{__version__}"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """The HTTP request exactly as it goes on the wire (signed when the workspace wants it)."""

    method: str
    url: str  # encoded
    body: bytes
    headers: tuple[tuple[str, str], ...]


class Sender:
    def __init__(self, settings: UpstreamSettings, metrics: Metrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session_for(self, workspace: Workspace) -> aiohttp.ClientSession:
        """One pooled session per upstream host, made on first use (inside the running loop)."""
        session = self._sessions.get(workspace.host)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._settings.max_connections, keepalive_timeout=30, ttl_dns_cache=60
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._settings.connect_timeout),
                auto_decompress=False,
                trust_env=False,
                skip_auto_headers=("Accept", "Content-Type"),
            )
            self._sessions[workspace.host] = session
        return session

    async def aclose(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    async def __call__(self, request: Request, outgoing: Outgoing) -> Answer:
        workspace = request.workspace
        metrics = self._metrics
        in_flight = metrics.upstream_in_flight.labels(workspace.id)
        in_flight.inc()
        started = time.monotonic()
        code = "error"
        try:
            status, headers, raw = await self._round_trip(workspace, outgoing)
            code = str(status)
        except _CONNECTION_ERRORS as err:
            raise GatewayError(
                "unavailable",
                f"the upstream of {workspace.id} ({workspace.host}) is unreachable: {type(err).__name__}",
                503,
                retry="connection",
            ) from None
        finally:
            in_flight.dec()
            metrics.upstream_seconds.labels(workspace.id).observe(time.monotonic() - started)
            metrics.upstream_requests.labels(workspace.id, request.endpoint, code).inc()
        encoding = headers.get("content-encoding", "")
        if encoding not in ("", "gzip", "identity"):
            raise GatewayError("unavailable", f"the upstream sent an unsupported encoding {encoding!r}", 502)
        gzipped = encoding == "gzip"
        if 200 <= status < 300:
            return Answer(raw, gzipped=gzipped, status=status)
        if status == 429:
            metrics.upstream_throttled.labels(workspace.id).inc()
        elif status == 403 and workspace.sigv4:
            metrics.signing_errors.labels(workspace.id).inc()
        body = Answer(raw, gzipped=gzipped).json_bytes()
        raise translate_error(status, headers, body, workspace, request.path)

    async def _round_trip(
        self, workspace: Workspace, outgoing: Outgoing
    ) -> tuple[int, dict[str, str], bytes]:
        session = self._session_for(workspace)
        async with session.request(
            outgoing.method,
            URL(outgoing.url, encoded=True),
            data=outgoing.body or None,
            headers=dict(outgoing.headers),
        ) as response:
            raw = await response.read()
            passed = {
                h: response.headers[h]
                for h in (*_PASSED_HEADERS, "content-encoding")
                if h in response.headers
            }
            return response.status, passed, raw
