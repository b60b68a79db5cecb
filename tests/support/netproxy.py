"""Small real network parts for the TLS and proxy tests, each serving from daemon threads.

- `Proxy`: an HTTP proxy as egress proxies are: CONNECT tunnels (what clients use for https
  URLs) and absolute-form requests (`GET http://host/path`, for http URLs), recording what it
  was asked for.
- `TlsFront`: TLS in front of a plain local server (the AMP or STS stand-in), with the server
  context it is given (a certificate from a throwaway CA; client certificates required or not),
  in threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

from .netutil import bound_socket


class _ThreadedServer:
    """An asyncio server on a free 127.0.0.1 port, in its own loop and thread."""

    def __init__(self, name: str) -> None:
        self._sock = bound_socket()
        self.port = int(self._sock.getsockname()[1])
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> _ThreadedServer:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self._server = started.result(10)
        return self

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, sock=self._sock)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._sock.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


async def _splice(
    a: tuple[asyncio.StreamReader, asyncio.StreamWriter], b: tuple[asyncio.StreamReader, asyncio.StreamWriter]
) -> None:
    await asyncio.gather(_pipe(a[0], b[1]), _pipe(b[0], a[1]))


@dataclass(frozen=True)
class Asked:
    """What a client asked the proxy for: `CONNECT host:port` or `GET http://…` (the first
    request of its connection), and its headers (lower-case names)."""

    method: str
    target: str
    headers: dict[str, str]


class Proxy(_ThreadedServer):
    def __init__(self) -> None:
        super().__init__("proxy")
        self.url = f"http://127.0.0.1:{self.port}"
        self.asked: list[Asked] = []

    def start(self) -> Proxy:
        super().start()
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = line.split(" ", 2)
        headers = {}
        for header in lines:
            if ":" in header:
                name, value = header.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        self.asked.append(Asked(method, target, headers))
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            forward = b""
        else:
            parts = urlsplit(target)
            host, port = parts.hostname or "", str(parts.port or 80)
            forward = head  # absolute-form passes through: HTTP/1.1 servers must take it
        try:
            upstream = await asyncio.open_connection(host.strip("[]"), int(port))
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
            writer.close()
            return
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            upstream[1].write(forward)
        await _splice((reader, writer), upstream)


class TlsFront:
    """https://127.0.0.1:<port> (or https://localhost:<port>) to http://127.0.0.1:<target_port>.

    Blocking sockets, a thread per connection: OpenSSL then writes its alerts (certificate
    required, handshake failure) to the client before closing, as real servers do (asyncio's
    TLS closes without sending them)."""

    def __init__(self, target_port: int, context: ssl.SSLContext) -> None:
        self._sock = bound_socket()
        self.port = int(self._sock.getsockname()[1])
        self.target_port = target_port
        self._context = context
        self.handshakes = 0  # connections whose TLS handshake completed
        self.refused: list[str] = []  # why handshakes failed, as the server saw it

    def start(self) -> TlsFront:
        self._sock.listen(64)
        threading.Thread(target=self._accept, name="tls-front", daemon=True).start()
        return self

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        tls = self._context.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        try:
            tls.do_handshake()
        except (ssl.SSLError, OSError) as err:
            self.refused.append(str(err))
            _linger(socket.socket(fileno=tls.detach()))
            return
        self.handshakes += 1
        try:
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
        except OSError:
            tls.close()
            return
        threading.Thread(target=_copy, args=(upstream, tls), daemon=True).start()
        _copy(tls, upstream)


def _linger(conn: socket.socket) -> None:
    """Close as servers do after a refused handshake: stop writing, read what the client still
    sends, then close. Closing at once would answer the request a TLS 1.3 client sends right
    after its side of the handshake with a reset, which may reach it before the alert does."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(2)
        while conn.recv(65536):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def _copy(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            with contextlib.suppress(OSError):
                sock.close()


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    """A server context presenting cert/key; with `client_ca`, clients must present a
    certificate that CA issued."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca)
    return context
