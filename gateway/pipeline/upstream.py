"""The last stage: sign and send one request to its workspace, with retries and a slot limit.

One pooled aiohttp session per upstream host (aiohttp's C HTTP parser costs a third of
httpx's CPU per request; see bench/README.md). Each attempt is signed anew (x-amz-date must
be fresh). Throttling (429), 502/503/504 and connection errors are retried with exponential
backoff and full jitter, bounded in count and in total waiting time; every workspace has a
bounded number of requests in flight, the rest queue, since AMP throttles per workspace.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time

import aiohttp
from yarl import URL

from gateway import __version__
from gateway.api.errors import error_body
from gateway.config import UpstreamSettings, Workspace
from gateway.metrics import Metrics
from gateway.pipeline.amp_errors import translate_error
from gateway.pipeline.credentials import CredentialError, CredentialSource
from gateway.pipeline.model import UpstreamRequest, UpstreamResponse
from gateway.pipeline.sigv4 import encode_query, sign

log = logging.getLogger("gateway.upstream")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
RETRY_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError)
_PASSED_HEADERS = ("x-amzn-requestid", "x-amzn-errortype", "x-amzn-errormessage", "retry-after")
USER_AGENT = f"amp-gateway/{__version__}"


class Upstream:
    """Callable pipeline stage: UpstreamRequest -> UpstreamResponse."""

    def __init__(
        self,
        settings: UpstreamSettings,
        credentials: CredentialSource,
        metrics: Metrics,
        workspaces: tuple[Workspace, ...],
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._metrics = metrics
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._slots = {w.id: asyncio.Semaphore(settings.max_concurrency) for w in workspaces}

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

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        deadline = time.monotonic() + request.timeout
        try:
            async with asyncio.timeout(request.timeout):
                return await self._with_retries(request, deadline)
        except TimeoutError:
            return _error(
                "timeout",
                503,
                f"the upstream of {request.workspace.id} did not answer within "
                f"{request.timeout:g}s; narrow the query or raise its timeout",
            )

    async def _with_retries(self, request: UpstreamRequest, deadline: float) -> UpstreamResponse:
        settings, workspace = self._settings, request.workspace
        waited = 0.0
        attempt = 0
        last_error = ""
        while True:
            failure: str
            try:
                response = await self._attempt(request, deadline)
            except _Final as err:
                return err.response
            except CredentialError as err:
                self._metrics.credential_errors.labels(workspace.id).inc()
                log.error("credentials for %s: %s", workspace.id, err)
                return _error("unavailable", 502, f"the gateway has no usable AWS credentials: {err}")
            except RETRY_ERRORS as err:
                failure, response = "connection", None
                last_error = f"{type(err).__name__}"
            else:
                if response.ok:
                    return response
                if response.status not in RETRY_STATUSES:
                    return translate_error(
                        response.status, response.headers, response.json_bytes(), workspace, request.path
                    )
                failure = "throttled" if response.status == 429 else str(response.status)
                if response.status == 429:
                    self._metrics.upstream_throttled.labels(workspace.id).inc()
            pause = _backoff(attempt, settings.retry_base, response)
            out_of_budget = (
                attempt >= settings.retries
                or waited + pause > settings.retry_budget
                or time.monotonic() + pause >= deadline
            )
            if out_of_budget:
                if response is not None:
                    return translate_error(
                        response.status,
                        response.headers,
                        response.json_bytes(),
                        workspace,
                        request.path,
                    )
                return _error(
                    "unavailable",
                    503,
                    f"the upstream of {workspace.id} ({workspace.host}) is unreachable: "
                    f"{last_error} after {attempt + 1} attempt(s)",
                )
            self._metrics.upstream_retries.labels(workspace.id, failure).inc()
            await asyncio.sleep(pause)
            waited += pause
            attempt += 1

    async def _attempt(self, request: UpstreamRequest, deadline: float) -> UpstreamResponse:
        """One signed round trip; non-2xx answers come back raw (headers kept) for retry logic."""
        workspace = request.workspace
        slots = self._slots.get(workspace.id)
        queued = time.monotonic()
        if slots is not None:
            try:
                async with asyncio.timeout(self._settings.queue_timeout):
                    await slots.acquire()
            except TimeoutError:
                raise _Final(
                    _error(
                        "too_many_requests",
                        429,
                        f"all {self._settings.max_concurrency} upstream slots of {workspace.id} stayed "
                        f"busy for {self._settings.queue_timeout:g}s; retry later",
                        {"Retry-After": "1"},
                    )
                ) from None
        self._metrics.upstream_queue_seconds.labels(workspace.id).observe(time.monotonic() - queued)
        in_flight = self._metrics.upstream_in_flight.labels(workspace.id)
        in_flight.inc()
        started = time.monotonic()
        code = "error"
        try:
            response = await self._send(request)
            code = str(response.status)
            return response
        finally:
            in_flight.dec()
            if slots is not None:
                slots.release()
            self._metrics.upstream_seconds.labels(workspace.id).observe(time.monotonic() - started)
            self._metrics.upstream_requests.labels(workspace.id, request.endpoint, code).inc()

    async def _send(self, request: UpstreamRequest) -> UpstreamResponse:
        workspace = request.workspace
        query = encode_query(request.params)
        url = workspace.url + request.path
        # Mirror the client: gzip end to end when it takes gzip, no re-coding here when it does not.
        encoding = "gzip" if request.accept_gzip else "identity"
        headers = {"accept-encoding": encoding, "user-agent": USER_AGENT}
        if request.method == "GET":
            url, body = (f"{url}?{query}" if query else url), b""
        else:
            body = query.encode()
            headers["content-type"] = "application/x-www-form-urlencoded"
        if workspace.sigv4:
            credentials = await self._credentials.get(workspace)
            headers.update(sign(credentials, workspace.region, request.method, url, body))
        session = self._session_for(workspace)
        async with session.request(
            request.method, URL(url, encoded=True), data=body or None, headers=headers
        ) as response:
            raw = await response.read()
            encoding = response.headers.get("content-encoding", "")
            if encoding not in ("", "gzip", "identity"):
                raise _Final(
                    _error("unavailable", 502, f"the upstream sent an unsupported encoding {encoding!r}")
                )
            result = UpstreamResponse(status=response.status, body=raw, gzipped=encoding == "gzip")
        if not result.ok:
            result.headers = {h: response.headers[h] for h in _PASSED_HEADERS if h in response.headers}
            if response.status == 403 and workspace.sigv4:
                self._metrics.signing_errors.labels(workspace.id).inc()
        return result


class _Final(Exception):
    """An answer the gateway decided itself, for the client as it is (never retried)."""

    def __init__(self, response: UpstreamResponse) -> None:
        self.response = response


def _backoff(attempt: int, base: float, response: UpstreamResponse | None) -> float:
    if response is not None:
        retry_after = response.headers.get("retry-after", "")
        if retry_after.isdigit():
            return float(retry_after)
    return random.uniform(0, base * (2**attempt))


def _error(kind: str, status: int, message: str, headers: dict[str, str] | None = None) -> UpstreamResponse:
    return UpstreamResponse(status=status, body=error_body(kind, message), headers=headers or {})
