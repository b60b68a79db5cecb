"""The HTTP edge: uvicorn's httptools protocol, with bounds on what a client may send and hold.

uvicorn with httptools puts no limit on a request line or a header, and both grow by `bytes +=`
per chunk (quadratic: two connections streaming one header froze every worker); it has no
timeout for a request's headers or body, and no cap on connections (a worker ran out of file
descriptors under half-sent requests). This protocol adds, per `server` settings:

- the request target capped at `max_url_bytes` (414), the header lines at `max_header_bytes` and
  `max_headers` (431): counted as the bytes arrive, so the parser never holds more than the cap
  and one read (linear cost), and refused with a plain-text answer, as Go's net/http does;
- `header_timeout` from a connection's opening (or the first byte of a request on a kept-alive
  one) to the end of the headers, `body_timeout` from there to the end of the body, and
  `keep_alive_timeout` between requests: a connection that overstays is closed;
- at most `max_connections` per worker: a new one past the cap first closes the oldest
  connection that is idle or still sending its headers; when every one is busy, the new one is
  answered 503, except the probes (/-/healthy, /-/ready), so a flood does not restart the pod.

Why not another server: uvicorn with h11 has a size cap (one 400 for every case) but serves
cache hits slower than httptools (bench/README.md), and granian would mean replacing the
supervisor, the per-worker TLS reload and the logs for the same bounds.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from gateway.config.server import ServerSettings

log = logging.getLogger("gateway.edge")

PROBES = (b"/-/healthy", b"/-/ready")
# The method, spaces, HTTP version and line ends around a request target and its headers.
_FRAMING = 256
# A refused client gets this long to read the answer while what it still sends is thrown away.
_LINGER = 2.0


class _Refused(Exception):
    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class GuardedProtocol:
    """What uvicorn's `http` setting takes: called for each connection. A picklable value (the
    supervisor hands the config to every worker), carrying the bounds."""

    limits: ServerSettings

    def __call__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> BoundedHttpTools:
        return BoundedHttpTools(config, server_state, app_state, _loop, limits=self.limits)


# Per server, the connections that are idle or still sending a request's headers, oldest first:
# the ones closed first when the cap is reached.
_WAITING: weakref.WeakKeyDictionary[ServerState, OrderedDict[BoundedHttpTools, None]] = (
    weakref.WeakKeyDictionary()
)


class BoundedHttpTools(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: ServerSettings,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.timeout_keep_alive = limits.keep_alive_timeout  # type: ignore[assignment]  # any number works
        self._max_head = limits.max_url_bytes + limits.max_header_bytes + _FRAMING
        self._waiting = _WAITING.setdefault(server_state, OrderedDict())
        # Between the end of a request (or the connection's start) and the end of the next
        # one's headers: what arrives then is head, counted against the caps.
        self._reading_head = True
        self._head_bytes = 0
        self._in_body = False  # between the end of a request's headers and the end of its body
        self._header_bytes = 0
        self._header_count = 0
        self._over_cap = False
        self._refused = False  # a refusal is written or due: what still arrives is thrown away
        self._due: _Refused | None = None  # a refusal due once the answers before it are written
        self._read_timer: asyncio.TimerHandle | None = None
        self._drain_timer: asyncio.TimerHandle | None = None
        self._unsent = 0  # bytes of answers the client had not read at the last look

    # ------------------------------------------------------------------ connections
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]  # as uvicorn's
        super().connection_made(transport)
        self._waiting[self] = None
        self._arm(self.limits.header_timeout)
        if len(self.connections) > self.limits.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting.pop(self, None)
        self._disarm()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        super().connection_lost(exc)

    def _make_room(self) -> None:
        """End the oldest connection that is idle or still sending its headers; when there is
        none, this one is over the cap (answered 503 unless it asks for a probe)."""
        for other in self._waiting:
            if other is not self:
                self._waiting.pop(other)
                other._end()
                return
        self._over_cap = True
        self._arm(min(self.limits.header_timeout, 1.0))

    def _end(self) -> None:
        """Close, or abort when the client has not read what was written to it (a close would
        wait for that forever, holding the connection and its unsent bytes)."""
        self._disarm()
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        elif not self.transport.is_closing():
            self.transport.close()

    # ------------------------------------------------------------------ reading
    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._refused:
            return  # thrown away while the refused client reads its answer
        if self._reading_head:
            self._head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as err:
            if isinstance(err.__context__, _Refused):
                self._refuse(err.__context__)
            else:
                self._bad_request()
            return
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            self._bad_request()
            return
        if self._refused_now():  # (a callback may have refused it while the parser ran)
            return
        # Timers only for what a read left unfinished: a whole request in one read, the usual
        # case, makes none (bench/README.md, "Cache hits through the bounded edge").
        if self._reading_head and self._head_bytes:
            if self._head_bytes > self._max_head:
                # A header is still arriving (a target is counted as it arrives, in on_url):
                # refused before it grows on.
                if len(self.url) > self.limits.max_url_bytes:
                    self._refuse(self._url_too_long())
                else:
                    self._refuse(self._headers_too_large())
            elif self._read_timer is None:
                self._arm(self.limits.header_timeout)  # a head begun on a kept-alive connection
        elif self._in_body and self._read_timer is None:
            self._arm(self.limits.body_timeout)

    def _refused_now(self) -> bool:
        return self._refused

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._header_count = 0

    def on_url(self, url: bytes) -> None:
        if len(self.url) + len(url) > self.limits.max_url_bytes:
            raise self._url_too_long()
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        if self._header_count > self.limits.max_headers or self._header_bytes > self.limits.max_header_bytes:
            raise self._headers_too_large()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        probe = False
        if self._over_cap:
            probe = httptools.parse_url(self.url).path in PROBES
            if not probe:
                raise _Refused(503, "Service Unavailable", "too many connections to this worker; try again")
        self._reading_head = False
        self._in_body = True
        self._head_bytes = 0
        self._waiting.pop(self, None)
        self._disarm()  # the body's timer starts if a read ends before the body does
        super().on_headers_complete()
        if probe and self.cycle is not None:
            self.cycle.keep_alive = False  # a probe does not lift the cap for what follows

    def on_message_complete(self) -> None:
        self._disarm()  # the next head's timer starts with its first byte
        self._in_body = False
        self._reading_head = True
        self._head_bytes = 0
        super().on_message_complete()
        answered = self.cycle is not None and self.cycle.response_complete
        if answered and not self.pipeline and not self._refused and not self.transport.is_closing():
            # Answered before its body was all in (a 404 to a POST): idle from now, as after
            # any answer.
            self._waiting[self] = None
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

    def on_response_complete(self) -> None:
        self._watch_unsent()
        if self._due is not None and not self.pipeline:
            refusal, self._due = self._due, None
            self.server_state.total_requests += 1
            if not self.transport.is_closing():
                self._write_refusal(refusal)
            return
        if self._reading_head and not self.pipeline and not self._refused and not self.transport.is_closing():
            self._waiting[self] = None  # idle until the next request's first byte
        super().on_response_complete()  # arms the keep-alive timeout

    def timeout_keep_alive_handler(self) -> None:
        self._end()

    # ------------------------------------------------------------------ bounds
    def _url_too_long(self) -> _Refused:
        return _Refused(414, "URI Too Long", f"the request target is over {self.limits.max_url_bytes} bytes")

    def _headers_too_large(self) -> _Refused:
        return _Refused(
            431,
            "Request Header Fields Too Large",
            f"the request's headers are over {self.limits.max_header_bytes} bytes or "
            f"{self.limits.max_headers} lines",
        )

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._read_timer = self.loop.call_later(seconds, self._timed_out)

    def _disarm(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _timed_out(self) -> None:
        """The headers, or the body, did not arrive in time: the connection is ended (a request
        being served sees the client gone)."""
        self._read_timer = None
        self._end()

    def _watch_unsent(self) -> None:
        """An answer the client does not read may sit in the connection's buffer: it is ended
        when `body_timeout` passes with none of it read, as nginx's send_timeout does."""
        unsent = self.transport.get_write_buffer_size()
        if unsent and self._drain_timer is None:
            self._unsent = unsent
            self._drain_timer = self.loop.call_later(self.limits.body_timeout, self._check_unsent)

    def _check_unsent(self) -> None:
        self._drain_timer = None
        unsent = self.transport.get_write_buffer_size()
        if unsent and unsent >= self._unsent:
            self.transport.abort()
        elif unsent:
            self._unsent = unsent
            self._drain_timer = self.loop.call_later(self.limits.body_timeout, self._check_unsent)

    def _refuse(self, refusal: _Refused) -> None:
        """Refused: what the client still sends is thrown away, and the refusal is written now,
        or, when answers to earlier pipelined requests are still due, right after them."""
        self._refused = True
        self._waiting.pop(self, None)
        if (self.cycle is not None and not self.cycle.response_complete) or self.pipeline:
            self._due = refusal
            self._disarm()
            self.flow.pause_reading()
            return
        self._write_refusal(refusal)

    def _write_refusal(self, refusal: _Refused) -> None:
        """A plain-text answer and `connection: close`; the client gets a moment to read it
        before the connection is closed, instead of a reset."""
        body = f"{refusal.status} {refusal.reason}: {refusal.detail}\n".encode()
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (refusal.status, refusal.reason.encode(), len(body), body)
        )
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._arm(_LINGER)

    def _bad_request(self) -> None:
        message = "Invalid HTTP request received."
        self.logger.warning(message)
        self.send_400_response(message)


def raise_open_files_limit() -> int:
    """The soft limit of open files raised to the hard one (as Go does at start): a worker's
    connection cap needs a descriptor per connection. Returns the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft
