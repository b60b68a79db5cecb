"""Stand-in for the AMP query data plane: SigV4 (service ``aps``) in front of Prometheus.

Requests to ``/workspaces/<id>/api/v1/...`` are verified with
:class:`~support.sigv4_verify.SigV4Verifier` from the raw request and then
forwarded unchanged (method, raw query string, body) to the real Prometheus
mapped to the workspace. Errors use AMP's wire format: a JSON ``{"message": ...}``
body with ``x-amzn-errortype`` and ``x-amzn-requestid`` headers.

QueryMetrics (``query``, ``query_range``) is metered as AMP bills it, by
``totalQueryableSamples``: the stand-in asks Prometheus with ``stats=all`` when the caller did
not, and then removes the stats from the answer (the bytes Prometheus sends without them). It
applies AMP's ``max_samples_processed_error_threshold`` (refused, not charged) and
``max_samples_processed_warning_threshold`` (a warning in the answer).
"""

from __future__ import annotations

import asyncio
import gzip
import re
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import orjson

from .asgi_server import Receive, Scope, Send, ThreadedServer, read_body, respond
from .sigv4_verify import CredentialStore, Failure, SigV4Error, SigV4Verifier, WireRequest
from .upstream import UpstreamError, UpstreamPool

STATIC_ACCESS_KEY = "AKIAAMPSTANDIN000001"
STATIC_SECRET_KEY = "ampStandinSecretKey/0000000000000000000000"

_ERRORTYPES: dict[str, tuple[int, str]] = {
    Failure.MISSING: (403, "MissingAuthenticationTokenException"),
    Failure.INCOMPLETE: (403, "IncompleteSignatureException"),
    Failure.SIGNATURE: (403, "InvalidSignatureException"),
    Failure.UNKNOWN_KEY: (403, "UnrecognizedClientException"),
    Failure.EXPIRED_TOKEN: (403, "ExpiredTokenException"),
}
_FAULT_DEFAULTS: dict[int, tuple[str, str]] = {
    429: ("ThrottlingException", "Rate exceeded"),
    500: ("InternalServerException", "Internal server error"),
    502: ("BadGatewayException", "Bad Gateway"),
    503: ("ServiceUnavailableException", "Service Unavailable"),
    504: ("GatewayTimeoutException", "Endpoint request timed out"),
}
_PATH = re.compile(rb"^/workspaces/([^/]+)(/.*)?$")
_FORWARDED_API = re.compile(
    # AMP's Prometheus-compatible APIs: no query_exemplars (it answers 404 there).
    rb"^/api/v1/(query|query_range|series|labels|label/[^/]+/values|metadata|rules|alerts"
    rb"|remote_write)$"
)
_QUERY_METRICS = re.compile(rb"^/api/v1/(query|query_range)$")
_FORM = b"application/x-www-form-urlencoded"
WARNING_THRESHOLD = "max_samples_processed_warning_threshold"
ERROR_THRESHOLD = "max_samples_processed_error_threshold"
_FORWARD_REQUEST_HEADERS = (
    b"content-type",
    b"content-encoding",
    b"x-prometheus-remote-write-version",
)
_RETURN_HEADERS = (b"content-type", b"content-encoding", b"vary")


def unique_query() -> str:
    """A query no other test sends, so that the stand-in's log counts only one test's requests."""
    return f'sum(demo_num_cpus{{instance!="{uuid.uuid4().hex}"}})'


@dataclass
class RecordedRequest:
    """One request as the stand-in received it, and what it answered."""

    method: str
    raw_path: bytes
    raw_query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    signature_valid: bool
    workspace: str | None = None
    access_key: str | None = None
    status: int = 0
    errortype: str | None = None
    forwarded: bool = False
    received_at: float = field(default_factory=time.time)
    samples: int | None = None  # totalQueryableSamples of a query Prometheus answered
    charged: bool = False  # what AMP would bill: answered, not refused by a threshold
    warned: bool = False  # the warning threshold was reached

    @property
    def path(self) -> str:
        return self.raw_path.decode("latin-1")

    @property
    def query(self) -> str:
        return self.raw_query.decode("latin-1")

    def asks(self, query: str) -> bool:
        """Whether this request's `query` parameter (in the URL or the form) is `query`."""
        pairs = parse_qsl(self.query) + parse_qsl(self.body.decode(errors="replace"))
        return ("query", query) in pairs

    def header(self, name: str) -> str | None:
        key = name.lower().encode()
        values = [v.decode("latin-1") for k, v in self.headers if k == key]
        return ",".join(values) if values else None

    @property
    def params(self) -> list[tuple[str, str]]:
        """The parameters as Prometheus (Go's ParseForm) reads them: a POST's form body first,
        then the URL query."""
        url = parse_qsl(self.query, keep_blank_values=True)
        if not _is_form(self.method, self.headers):
            return url
        return parse_qsl(self.body.decode(errors="replace"), keep_blank_values=True) + url

    def param(self, name: str) -> str | None:
        """The first value of `name`, as Go's FormValue; None when absent."""
        return next((value for key, value in self.params if key == name), None)

    @property
    def warning_threshold(self) -> int | None:
        """The max_samples_processed_warning_threshold this request carried (ValueError if garbage)."""
        return _threshold(WARNING_THRESHOLD, self.param(WARNING_THRESHOLD))

    @property
    def error_threshold(self) -> int | None:
        """The max_samples_processed_error_threshold this request carried (ValueError if garbage)."""
        return _threshold(ERROR_THRESHOLD, self.param(ERROR_THRESHOLD))


@dataclass
class Fault:
    remaining: int | None  # None = until reset()
    path_contains: str | None
    status: int = 0
    errortype: str | None = None
    message: str | None = None
    body: bytes | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def matches(self, raw_path: bytes) -> bool:
        return self.path_contains is None or self.path_contains.encode() in raw_path


class _Faults:
    """Thread-safe FIFO of faults; each request consumes at most one of each kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._items.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def take(self, raw_path: bytes, delay: bool) -> Fault | None:
        with self._lock:
            for fault in self._items:
                if (fault.delay > 0) == delay and fault.matches(raw_path):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._items.remove(fault)
                    return fault
        return None


class AmpStandin:
    """AMP query API stand-in. Call :meth:`start` (or use :func:`start_amp`)."""

    def __init__(
        self,
        workspaces: Mapping[str, str],
        region: str = "us-east-1",
        store: CredentialStore | None = None,
    ) -> None:
        self.region = region
        self.credentials = store or CredentialStore()
        self.verifier = SigV4Verifier(self.credentials, service="aps", region=region)
        self.workspaces: dict[str, str] = {k: v.rstrip("/") for k, v in workspaces.items()}
        self.access_key = STATIC_ACCESS_KEY
        self.secret_key = STATIC_SECRET_KEY
        self.credentials.add(self.access_key, self.secret_key)
        self.requests: list[RecordedRequest] = []
        self.recording = True
        # The most API requests answered at once (delays included) since reset(); one still
        # answered then (delayed past a test's end) no longer counts.
        self.most_in_flight = 0
        self._in_flight: set[int] = set()
        self._faults = _Faults()
        self._pools: dict[str, UpstreamPool] = {}
        self._server = ThreadedServer(self, name="amp-standin")
        self.url = self._server.url

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> AmpStandin:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def workspace_url(self, workspace_id: str) -> str:
        """Base URL of a workspace, no trailing slash (append ``/api/v1/query`` etc.)."""
        return f"{self.url}/workspaces/{workspace_id}"

    def add_workspace(self, workspace_id: str, prometheus_url: str) -> None:
        self.workspaces[workspace_id] = prometheus_url.rstrip("/")

    def add_credentials(
        self,
        access_key: str,
        secret_key: str,
        session_token: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.credentials.add(access_key, secret_key, session_token, expires_at)

    # -- fault injection -------------------------------------------------------------
    def inject(
        self,
        status: int,
        count: int | None = 1,
        errortype: str | None = None,
        message: str | None = None,
        *,
        body: bytes | None = None,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``count`` authenticated requests (None: all until reset) with an error.

        Default body is AMP's ``{"message": ...}`` with ``x-amzn-errortype``; pass ``body``
        (and ``content_type``) to send e.g. a Prometheus/Cortex error envelope instead.
        """
        default_type, default_message = _FAULT_DEFAULTS.get(status, ("", "Error"))
        self._faults.add(
            Fault(
                remaining=count,
                path_contains=path_contains,
                status=status,
                errortype=errortype if errortype is not None else (default_type or None),
                message=message if message is not None else default_message,
                body=body,
                content_type=content_type,
                headers=dict(headers or {}),
            )
        )

    def inject_delay(
        self, seconds: float, count: int | None = 1, *, path_contains: str | None = None
    ) -> None:
        """Delay the next ``count`` authenticated requests by ``seconds`` before answering."""
        self._faults.add(Fault(remaining=count, path_contains=path_contains, delay=seconds))

    def reset(self) -> None:
        """Drop injected faults and delays and clear recorded requests."""
        self._faults.clear()
        self.requests.clear()
        self._in_flight.clear()
        self.most_in_flight = 0

    @property
    def forwarded(self) -> list[RecordedRequest]:
        """Recorded requests that reached Prometheus."""
        return [r for r in self.requests if r.forwarded]

    def forwarded_count(self, query: str) -> int:
        """How many requests for `query` reached Prometheus."""
        return sum(1 for record in self.forwarded if record.asks(query))

    def received_count(self, query: str) -> int:
        """How many requests for `query` reached the stand-in."""
        return sum(1 for record in self.requests if record.asks(query))

    def charged_samples(self, path_contains: str | None = None) -> int:
        """The query samples AMP would bill for the recorded requests (whose path contains
        `path_contains`, if given): refused and failed queries cost nothing."""
        wanted = None if path_contains is None else path_contains.encode()
        return sum(
            record.samples or 0
            for record in self.requests
            if record.charged and (wanted is None or wanted in record.raw_path)
        )

    # -- ASGI ------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        wire = WireRequest(
            method=scope["method"],
            raw_path=scope.get("raw_path") or scope["path"].encode(),
            raw_query=scope["query_string"],
            headers=list(scope["headers"]),
            body=body,
        )
        record = RecordedRequest(wire.method, wire.raw_path, wire.raw_query, list(wire.headers), body, False)
        if self.recording:
            self.requests.append(record)
        request_id = str(uuid.uuid4())
        try:
            verified = self.verifier.verify(wire)
        except SigV4Error as err:
            status, errortype = _ERRORTYPES[err.kind]
            await self._error(send, record, request_id, status, errortype, err.message)
            return
        record.signature_valid = True
        record.access_key = verified.credential.access_key
        await self._route(send, wire, record, request_id)

    async def _route(self, send: Send, wire: WireRequest, record: RecordedRequest, request_id: str) -> None:
        match = _PATH.match(wire.raw_path)
        workspace = match.group(1).decode("latin-1") if match else None
        record.workspace = workspace
        if match is None or workspace not in self.workspaces:
            await self._error(
                send, record, request_id, 404, "ResourceNotFoundException", "Workspace not found"
            )
            return
        api_path = match.group(2) or b"/"
        if not _FORWARDED_API.match(api_path):
            record.status = 404
            await respond(send, 404, b"404 page not found\n", _text_headers(request_id))
            return
        self._in_flight.add(id(record))
        self.most_in_flight = max(self.most_in_flight, len(self._in_flight))
        try:
            delay = self._faults.take(wire.raw_path, delay=True)
            if delay is not None:
                await asyncio.sleep(delay.delay)
            fault = self._faults.take(wire.raw_path, delay=False)
            if fault is not None:
                await self._fault(send, record, request_id, fault)
                return
            await self._forward(send, wire, record, request_id, self.workspaces[workspace])
        finally:
            self._in_flight.discard(id(record))

    async def _forward(
        self,
        send: Send,
        wire: WireRequest,
        record: RecordedRequest,
        request_id: str,
        upstream: str,
    ) -> None:
        match = _PATH.match(wire.raw_path)
        assert match is not None
        api_path = match.group(2) or b"/"
        metered = _QUERY_METRICS.match(api_path) is not None
        query, body = wire.raw_query, wire.body
        caller_stats = bool(record.param("stats"))
        warning: int | None = None
        error: int | None = None
        if metered:
            try:
                warning, error = record.warning_threshold, record.error_threshold
            except ValueError as exc:
                await self._prometheus_error(send, record, request_id, 400, "bad_data", str(exc))
                return
            if not caller_stats:
                query, body = _asking_stats(wire.method, wire.headers, query, body)
        target = api_path + (b"?" + query if query else b"")
        headers = [(k, v) for k, v in wire.headers if k in _FORWARD_REQUEST_HEADERS]
        accept_encoding = wire.header("accept-encoding") or "identity"
        headers.append((b"accept-encoding", accept_encoding.encode("latin-1")))
        pool = self._pools.get(upstream)
        if pool is None:
            pool = self._pools[upstream] = UpstreamPool(upstream)
        try:
            response = await pool.request(wire.method, target, headers, body)
        except UpstreamError as exc:
            await self._error(send, record, request_id, 503, "ServiceUnavailableException", str(exc))
            return
        record.forwarded = True
        record.status = response.status
        answer = response.body
        if metered and response.status == 200:
            encoding = response.header(b"content-encoding")
            document = _decoded(answer, encoding)
            metering = meter(document, keep_stats=caller_stats, warning=warning, error=error)
            record.samples = metering.samples
            if metering.answer is None:
                await self._prometheus_error(send, record, request_id, 422, "execution", _refusal(error or 0))
                return
            record.charged = True
            record.warned = metering.warned
            if metering.answer is not document:
                answer = _encoded(metering.answer, encoding)
        out = [(b"x-amzn-requestid", request_id.encode())]
        for name in _RETURN_HEADERS:
            value = response.header(name)
            if value is not None:
                out.append((name, value))
        await respond(send, response.status, answer, out)

    async def _prometheus_error(
        self, send: Send, record: RecordedRequest, request_id: str, status: int, kind: str, message: str
    ) -> None:
        """An error in Prometheus's envelope, as AMP's query engine (Cortex) answers one."""
        record.status = status
        body = orjson.dumps({"status": "error", "errorType": kind, "error": message})
        headers = [(b"content-type", b"application/json"), (b"x-amzn-requestid", request_id.encode())]
        await respond(send, status, body, headers)

    async def _fault(self, send: Send, record: RecordedRequest, request_id: str, fault: Fault) -> None:
        body = fault.body
        if body is None:
            body = orjson.dumps({"message": fault.message or ""})
        await self._error(
            send,
            record,
            request_id,
            fault.status,
            fault.errortype,
            body,
            content_type=fault.content_type,
            extra=fault.headers,
        )

    async def _error(
        self,
        send: Send,
        record: RecordedRequest,
        request_id: str,
        status: int,
        errortype: str | None,
        message: str | bytes,
        *,
        content_type: str = "application/json",
        extra: Mapping[str, str] | None = None,
    ) -> None:
        """Send an AWS-style error; a str message becomes ``{"message": ...}``."""
        record.status = status
        record.errortype = errortype
        body = orjson.dumps({"message": message}) if isinstance(message, str) else message
        headers = [
            (b"content-type", content_type.encode()),
            (b"x-amzn-requestid", request_id.encode()),
        ]
        if errortype:
            headers.append((b"x-amzn-errortype", errortype.encode()))
        headers += [(k.lower().encode(), v.encode()) for k, v in (extra or {}).items()]
        await respond(send, status, body, headers)


# -- metering QueryMetrics ----------------------------------------------------------------------
# AMP's wording of its threshold messages is not documented (searched: the AWS docs, the AWS blog
# on query thresholds, whose example shows them only in a screenshot, and GitHub): these are the
# stand-in's own, naming the threshold as AMP's docs do.


def _refusal(threshold: int) -> str:
    return f"query exceeded {ERROR_THRESHOLD} ({threshold})"


def _warning(threshold: int) -> str:
    return f"query processed more samples than {WARNING_THRESHOLD} ({threshold})"


@dataclass(frozen=True)
class Metering:
    """What the stand-in makes of one QueryMetrics answer Prometheus gave with stats."""

    samples: int  # totalQueryableSamples
    answer: bytes | None  # the answer to send; None: refused by the error threshold
    warned: bool = False


_STATS_MEMBER = b',"stats":'
_WARNINGS_MEMBER = b',"warnings":['


def meter(document: bytes, *, keep_stats: bool, warning: int | None, error: int | None) -> Metering:
    """Read the samples from a successful answer that has stats, apply AMP's thresholds (over
    `error`: refused; at or over `warning`: a warning), and remove the stats unless
    `keep_stats`. The answer is `document` itself when nothing had to change."""
    start, end = stats_span(document)
    stats = orjson.loads(document[start + len(_STATS_MEMBER) : end])
    samples = int(stats["samples"]["totalQueryableSamples"])
    if error is not None and samples > error:
        return Metering(samples, None)
    answer = document if keep_stats else document[:start] + document[end:]
    data_end = end if keep_stats else start
    warned = warning is not None and samples >= warning
    if warned:
        assert warning is not None
        answer = with_warning(answer, data_end, _warning(warning))
    return Metering(samples, answer, warned)


def stats_span(document: bytes) -> tuple[int, int]:
    """Where `,"stats":{...}` lies in a Prometheus answer, as (start, end): document[end] is
    the `}` that closes `data`. Prometheus writes stats as data's last member, and the bytes
    `,"stats":{` cannot occur inside a JSON string (its quote would be escaped), so the last
    of them is the member."""
    start = document.rfind(_STATS_MEMBER + b"{")
    if start < 0:
        raise ValueError("the answer has no stats")
    end = _value_end(document, start + len(_STATS_MEMBER))
    if document[end : end + 1] != b"}":
        raise ValueError("stats is not the last member of data")
    return start, end


def _value_end(document: bytes, at: int) -> int:
    """The index just past the JSON object or array that begins at document[at]."""
    depth = 0
    in_string = False
    index = at
    while index < len(document):
        byte = document[index]
        if in_string:
            if byte == 0x5C:  # a backslash escapes the next byte
                index += 1
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in b"{[":
            depth += 1
        elif byte in b"}]":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise ValueError("unterminated JSON value")


def with_warning(document: bytes, data_end: int, warning: str) -> bytes:
    """`document` with `warning` first in the envelope's warnings (made if absent: Prometheus
    omits an empty list), the rest byte for byte; document[data_end] is the `}` closing data."""
    at = data_end + 1
    text = orjson.dumps(warning)
    if document.startswith(_WARNINGS_MEMBER, at):
        at += len(_WARNINGS_MEMBER)
        separator = b"" if document[at : at + 1] == b"]" else b","
        return document[:at] + text + separator + document[at:]
    return document[:at] + _WARNINGS_MEMBER + text + b"]" + document[at:]


def _threshold(name: str, value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        # The stand-in's message: AMP's answer to a malformed threshold is not documented.
        raise ValueError(f'invalid parameter "{name}": {value!r} is not a non-negative integer')
    return int(value)


def _is_form(method: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether Prometheus reads this request's body as parameters (Go's ParseForm)."""
    content_type = next((v for k, v in headers if k == b"content-type"), b"")
    return method in ("POST", "PUT", "PATCH") and content_type.split(b";")[0].strip().lower() == _FORM


def _without_stats(raw: bytes) -> bytes:
    return b"&".join(pair for pair in raw.split(b"&") if pair and pair.split(b"=", 1)[0] != b"stats")


def _asking_stats(
    method: str, headers: list[tuple[bytes, bytes]], query: bytes, body: bytes
) -> tuple[bytes, bytes]:
    """The URL query and body with `stats=all` (and no other stats, which an empty form value
    would shadow)."""
    if _is_form(method, headers):
        body = _without_stats(body)
    query = _without_stats(query)
    return (query + b"&" if query else b"") + b"stats=all", body


def _decoded(body: bytes, encoding: bytes | None) -> bytes:
    if encoding is None or encoding == b"identity":
        return body
    if encoding == b"gzip":
        return gzip.decompress(body)
    if encoding == b"deflate":
        return zlib.decompress(body)
    raise ValueError(f"the stand-in cannot read content-encoding {encoding!r}")


def _encoded(body: bytes, encoding: bytes | None) -> bytes:
    if encoding is None or encoding == b"identity":
        return body
    # Level 1: compressing a 3 MB answer at gzip's default 9 took the stand-in 340 ms.
    if encoding == b"gzip":
        return gzip.compress(body, compresslevel=1, mtime=0)
    return zlib.compress(body, 1)  # deflate, the only other one _decoded reads


def _text_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    return [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"x-amzn-requestid", request_id.encode()),
    ]


def start_amp(
    workspaces: Mapping[str, str],
    region: str = "us-east-1",
    store: CredentialStore | None = None,
) -> AmpStandin:
    """Create and start an :class:`AmpStandin`."""
    return AmpStandin(workspaces, region, store).start()
