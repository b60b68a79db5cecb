"""The last step: one HTTP round trip to a workspace, over a pooled aiohttp session per host.

aiohttp rather than httpx: its C HTTP parser costs a third of httpx's CPU per request (see
bench/README.md). Answers come back as they were encoded (gzip passed through untouched);
error answers become GatewayErrors in the client's terms (`amp_errors`), retryable ones marked.

TLS to the upstream is verified with `upstream.ca_bundle` when set (else the system's store) and
presents `upstream.client_cert` when set (reloaded when it is rotated, `gateway.tls`). The
environment's proxies are honoured as curl does (`https_proxy`/`HTTPS_PROXY`, `http_proxy`/
`HTTP_PROXY`, `no_proxy`/`NO_PROXY`), decided once per upstream host, not per request. aiohttp's
own `trust_env` is not used: it reads ~/.netrc on every request, in a thread, and would add
its credentials to requests that carry a SigV4 signature.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import ipaddress
import logging
import os
import ssl
import time
import zlib
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from gateway import __version__
from gateway.config import UpstreamSettings, Workspace
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.amp_errors import translate_error
from gateway.pipeline.model import Answer, Body, Request, as_bytes, attempt_sent
from gateway.pipeline.spill import (
    INFLATE_STEP,
    SPILL_BYTES,
    AnswerNoRoom,
    gunzip,
    mapped,
    temporary,
)
from gateway.pipeline.spill import refusal as no_room_refusal
from gateway.pipeline.spill import write as spill_write
from gateway.tls import ReloadingCertificate, upstream_ssl_context

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
        self._proxies: dict[str, str | None] = {}  # per upstream host, from the environment
        self._ssl = upstream_ssl_context(settings)
        self._client_cert: ReloadingCertificate | None = None
        if self._ssl is not None and settings.client_cert and settings.client_key:
            self._client_cert = ReloadingCertificate(
                self._ssl, settings.client_cert, settings.client_key, "upstream.client_cert"
            )
        self._watcher: asyncio.Task[None] | None = None

    def _session_for(self, workspace: Workspace) -> aiohttp.ClientSession:
        """One pooled session per upstream host, made on first use (inside the running loop)."""
        session = self._sessions.get(workspace.host)
        if session is None or session.closed:
            if self._client_cert is not None and self._watcher is None:
                # In a context of its own: made during a request, it would log with that request's id.
                self._watcher = asyncio.get_running_loop().create_task(
                    self._client_cert.watch(), context=contextvars.Context()
                )
            proxy = self._proxies[workspace.host] = proxy_for(workspace.url, os.environ)
            if proxy is not None:
                shown = URL(proxy).with_user(None)
                log.info("upstream %s: through the proxy %s", workspace.host, shown)
            connector = aiohttp.TCPConnector(
                limit=self._settings.max_connections,
                keepalive_timeout=30,
                ttl_dns_cache=60,
                ssl=self._ssl if self._ssl is not None else True,
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
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None

    async def __call__(self, request: Request, outgoing: Outgoing) -> Answer:
        workspace = request.workspace
        metrics = self._metrics
        in_flight = metrics.upstream_in_flight.labels(workspace.id)
        in_flight.inc()
        started = time.monotonic()
        code = "error"
        try:
            attempt_sent.set(True)
            status, headers, raw, size = await self._round_trip(workspace, outgoing)
            code = str(status)
        except AnswerTooLarge as err:
            code = "too_large"
            metrics.upstream_too_large.labels(workspace.id).inc()
            log.warning("upstream %s: an answer over upstream.max_answer_bytes was dropped", workspace.host)
            raise GatewayError(
                "execution",
                f"the answer of {workspace.id} is larger than the gateway takes ({err.limit} bytes, "
                "upstream.max_answer_bytes): narrow the selector, raise the step, or use a recording rule",
                422,
            ) from None
        except aiohttp.ClientConnectorCertificateError as err:
            # Not worth a retry: the gateway's trust (upstream.ca_bundle) or the upstream's
            # certificate needs fixing, or someone is in between.
            reason = getattr(err.certificate_error, "verify_message", None) or err.certificate_error
            log.error("upstream %s: TLS verification failed: %s", workspace.host, reason)
            raise GatewayError(
                "unavailable",
                f"the upstream of {workspace.id} ({workspace.host}) presented a certificate the gateway "
                f"does not trust ({reason}); set upstream.ca_bundle to the CA that issued it",
                502,
            ) from None
        except _CONNECTION_ERRORS as err:
            refusal = _tls_refusal(err)
            if refusal is not None:
                log.error("upstream %s: the TLS handshake was refused: %s", workspace.host, refusal)
                raise GatewayError(
                    "unavailable",
                    f"the upstream of {workspace.id} ({workspace.host}) refused the TLS handshake "
                    f"({refusal}); if it asks for a client certificate, set upstream.client_cert and "
                    "upstream.client_key",
                    502,
                ) from None
            raise GatewayError(
                "unavailable",
                f"the upstream of {workspace.id} ({workspace.host}) is unreachable: {type(err).__name__}",
                503,
                retry="connection",
                failure="unreachable",
            ) from None
        except AnswerNoRoom as err:
            raise no_room_refusal(workspace, err) from None
        except (aiohttp.ClientError, AnswerUnreadable) as err:  # a bad status line, header or gzip
            log.warning("upstream %s: unreadable answer: %s", workspace.host, type(err).__name__)
            raise GatewayError(
                "unavailable",
                f"the upstream of {workspace.id} ({workspace.host}) sent an answer the gateway cannot "
                f"read ({type(err).__name__})",
                502,
            ) from None
        finally:
            in_flight.dec()
            metrics.upstream_seconds.labels(workspace.id).observe(time.monotonic() - started)
            metrics.upstream_requests.labels(workspace.id, request.endpoint.name, code).inc()
        encoding = headers.get("content-encoding", "")
        if encoding not in ("", "gzip", "identity"):
            raise GatewayError("unavailable", f"the upstream sent an unsupported encoding {encoding!r}", 502)
        gzipped = encoding == "gzip"
        if 200 <= status < 300:
            return Answer(raw, gzipped=gzipped, status=status, size=size)
        if status == 429:
            metrics.upstream_throttled.labels(workspace.id).inc()
        elif status == 403 and workspace.sigv4:
            metrics.signing_errors.labels(workspace.id).inc()
        body = as_bytes(Answer(raw, gzipped=gzipped).json_bytes())
        error = translate_error(status, headers, body, workspace, request.path)
        error.failure = "throttled" if status == 429 else "server-error" if status >= 500 else ""
        raise error

    async def _round_trip(
        self, workspace: Workspace, outgoing: Outgoing
    ) -> tuple[int, dict[str, str], Body, int]:
        """Status, the headers passed on, the body as it came and its decompressed size."""
        session = self._session_for(workspace)
        async with session.request(
            outgoing.method,
            URL(outgoing.url, encoded=True),
            data=outgoing.body or None,
            headers=dict(outgoing.headers),
            proxy=self._proxies.get(workspace.host),
        ) as response:
            passed = {
                h: response.headers[h]
                for h in (*_PASSED_HEADERS, "content-encoding")
                if h in response.headers
            }
            gzipped = passed.get("content-encoding") == "gzip"
            raw, size = await read_bounded(
                response.content.iter_any(), self._settings.max_answer_bytes, gzipped
            )
            return response.status, passed, raw, size


class AnswerTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


class AnswerUnreadable(Exception):
    """A body that says it is gzip and is not, or is cut short."""


async def read_bounded(
    chunks: AsyncIterable[bytes], limit: int, gzipped: bool, spill: int = SPILL_BYTES
) -> tuple[Body, int]:
    """The body as it comes (gzip kept: it is passed through) and its decompressed size, read
    chunk by chunk; AnswerTooLarge as soon as the decompressed size passes `limit`, without
    reading the rest. The decompressed bytes are counted, not kept. gzip is read as
    `gzip.decompress` reads it, every member of it (one member can be followed by another);
    AnswerUnreadable for a gzip body that is not one. A body over `spill` bytes goes to an
    unlinked temporary file and comes back as a read-only map of it (the file is gone with the
    map)."""
    body = bytearray()
    file: IO[bytes] | None = None
    size = 0
    inflate = gunzip() if gzipped else None
    fed = False  # whether the current gzip member has begun
    try:
        async for chunk in chunks:
            if file is not None:
                spill_write(file, chunk)
            else:
                body += chunk
                if len(body) > spill:
                    file = temporary()
                    spill_write(file, body)
                    body = bytearray()
            if inflate is None:
                size += len(chunk)
            else:
                data = chunk
                while data and size <= limit:
                    fed = True
                    try:
                        size += len(inflate.decompress(data, INFLATE_STEP))
                    except zlib.error:
                        raise AnswerUnreadable("not gzip") from None
                    if inflate.eof:
                        data = inflate.unused_data  # the next member's
                        inflate, fed = gunzip(), False
                    else:
                        data = inflate.unconsumed_tail
            if size > limit:
                raise AnswerTooLarge(limit)
        if fed:
            raise AnswerUnreadable("cut short")
        if file is None:
            return bytes(body), size
        return mapped(file), size
    finally:
        if file is not None:
            file.close()  # the map keeps what it needs


def _tls_refusal(err: Exception) -> str | None:
    """The reason of a TLS alert the upstream sent (a client certificate required or not
    trusted, no common protocol): asking again would not help. None for anything else, a
    connection cut mid-handshake included, which is retried as connection errors are."""
    cause = err.__cause__
    reason = getattr(cause, "reason", None) if isinstance(cause, ssl.SSLError) else None
    return reason if isinstance(reason, str) and "ALERT" in reason else None


def proxy_for(url: str, env: Mapping[str, str]) -> str | None:
    """The proxy `env` names for `url`, or None: `https_proxy`/`HTTPS_PROXY` for https URLs,
    `http_proxy`/`HTTP_PROXY` for http ones (lower case first, as curl reads them), unless
    `no_proxy`/`NO_PROXY` lists the host. A proxy without a scheme is http://."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    proxy = env.get(f"{scheme}_proxy") or env.get(f"{scheme.upper()}_PROXY")
    if not proxy:
        return None
    port = parts.port or (443 if scheme == "https" else 80)
    if _bypassed(parts.hostname or "", port, env.get("no_proxy") or env.get("NO_PROXY") or ""):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _bypassed(host: str, port: int, no_proxy: str) -> bool:
    """NO_PROXY as curl reads it: comma-separated host names (each also covers its subdomains; a
    leading `.` or `*.` changes nothing), IP addresses or CIDR ranges, each with an optional
    `:port`, or `*` for every host."""
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in no_proxy.replace(" ", ",").lower().split(","):
        if entry == "*":
            return True
        name, entry_port = entry, ""
        if (entry.startswith("[") and "]:" in entry) or entry.count(":") == 1:
            name, _, entry_port = entry.rpartition(":")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]").removeprefix("*").removeprefix(".")
        if not name:
            continue
        if address is not None:
            with contextlib.suppress(ValueError):
                if address in ipaddress.ip_network(name, strict=False):
                    return True
        elif host == name or host.endswith(f".{name}"):
            return True
    return False
