"""TLS contexts: the one the gateway's server presents, reloaded when its files change on disk
(cert-manager rotates a Kubernetes secret in place), and the one the upstream hop verifies with.

Two ways to serve with it (an SSLContext cannot be sent to another process: each worker
process builds its own):

- workers under uvicorn's supervisor (`Multiprocess`): hand uvicorn the factory, which it calls
  in each worker as the worker loads its config, inside the worker's event loop; the factory
  builds the context and starts watching the files from that loop:

      uvicorn.Config(..., ssl_certfile=settings.tls.cert_file, ssl_keyfile=settings.tls.key_file,
                     ssl_context_factory=uvicorn_ssl_context)      # uvicorn >= 0.47

- a server you run yourself:

      served = server_tls(settings)                      # None: plain HTTP
      if served is not None:
          use_in_uvicorn(config, served.context)         # before uvicorn.Server(config)
          watcher = asyncio.create_task(served.watch())  # in the loop that serves

A reload loads the new pair into the same context: new handshakes present the new certificate,
connections already open keep theirs. A pair that does not load (half written, mismatched) is
not taken: the old certificate stays, and a warning says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.config import Settings, UpstreamSettings
from gateway.config.certificates import load_pair

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("gateway.tls")

WATCH_INTERVAL = 5.0  # seconds between looks at the files' inode, size and mtime

# What identifies a file's version: device, inode, size, mtime; None when it cannot be read.
_Stamp = tuple[tuple[int, int, int, int] | None, ...]


def server_tls(settings: Settings) -> ReloadingCertificate | None:
    """The certificate the server presents (`tls.cert_file`, `tls.key_file`), in a context of its
    own, or None when the gateway serves plain HTTP."""
    tls = settings.tls
    if tls.cert_file is None or tls.key_file is None:
        return None
    return ReloadingCertificate(_server_context(), tls.cert_file, tls.key_file, "tls")


def uvicorn_ssl_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """uvicorn's `ssl_context_factory`: the context of `server_tls`, for the files of
    `config.ssl_certfile` and `config.ssl_keyfile`, watched from the running loop of the worker
    that loads `config` (uvicorn loads it in `Server.serve`). uvicorn's `default` is not used."""
    if config.ssl_certfile is None or config.ssl_keyfile is None:
        raise ValueError("uvicorn_ssl_context needs ssl_certfile and ssl_keyfile on the uvicorn.Config")
    served = ReloadingCertificate(
        _server_context(), os.fspath(config.ssl_certfile), os.fspath(config.ssl_keyfile), "tls"
    )
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        log.warning("tls: the config was loaded outside an event loop; the certificate will not be reloaded")
    else:
        task = loop.create_task(served.watch())
        _watchers.add(task)
        task.add_done_callback(_watchers.discard)
    return served.context


_watchers: set[asyncio.Task[None]] = set()  # the factory's watch tasks, kept from the collector


def _server_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_RENEGOTIATION
    return context


def use_in_uvicorn(config: uvicorn.Config, context: ssl.SSLContext) -> None:
    """Make the server of `config` present `context` itself, not a copy uvicorn would build from
    file names, so that reloads reach it. Works with every uvicorn from 0.30: the config is
    loaded here, and uvicorn.Server does not load a loaded config again. (uvicorn 0.47 added
    `ssl_context_factory=lambda config, default: context`, which does the same.)"""
    if not config.loaded:
        config.load()
    config.ssl = context


def upstream_ssl_context(settings: UpstreamSettings) -> ssl.SSLContext | None:
    """The context that verifies upstreams: `ca_bundle`'s CAs instead of the system's store when
    it is set; None (aiohttp's default verification) when neither it nor a client certificate is.
    The client certificate is loaded by `ReloadingCertificate` (`Sender` does it)."""
    if settings.ca_bundle is None and settings.client_cert is None:
        return None
    return ssl.create_default_context(cafile=settings.ca_bundle)


class ReloadingCertificate:
    """A certificate and its key loaded into `context`, and loaded again when either file changes."""

    def __init__(self, context: ssl.SSLContext, cert_file: str, key_file: str, name: str) -> None:
        self.context = context
        self.cert_file = cert_file
        self.key_file = key_file
        self.name = name  # what the log calls it: "tls", "upstream.client_cert"
        self._stamp = self._stat()  # taken before loading: a change during the load is seen later
        _load_as_read(context, cert_file, key_file)
        self._refused: _Stamp | None = None

    def reload_if_changed(self) -> bool:
        """Load the files again if they changed since the last load; True when that happened."""
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        try:
            if None in stamp:
                raise FileNotFoundError("a file is missing")
            _load_as_read(self.context, self.cert_file, self.key_file)
        except (OSError, ValueError, ssl.SSLError) as err:
            if stamp != self._refused:  # once per version of the files, not every few seconds
                self._refused = stamp
                log.warning(
                    "%s: %s and %s changed but do not load (%s); still presenting the previous certificate",
                    self.name,
                    self.cert_file,
                    self.key_file,
                    getattr(err, "reason", None) or err,
                )
            return False
        self._stamp = stamp
        self._refused = None
        log.info("%s: loaded the new certificate from %s", self.name, self.cert_file)
        return True

    async def watch(self, interval: float | None = None) -> None:
        """Look at the files every `interval` seconds (`WATCH_INTERVAL`) until cancelled."""
        while True:
            await asyncio.sleep(interval or WATCH_INTERVAL)
            try:
                self.reload_if_changed()
            except Exception:  # a bug here must not end the watching
                log.exception("%s: checking %s failed", self.name, self.cert_file)

    def _stat(self) -> _Stamp:
        return tuple(_file_stamp(path) for path in (self.cert_file, self.key_file))


def _file_stamp(path: str) -> tuple[int, int, int, int] | None:
    try:
        found = os.stat(path)  # through symlinks: a Kubernetes secret volume swaps a ..data link
    except OSError:
        return None
    return (found.st_dev, found.st_ino, found.st_size, found.st_mtime_ns)


def _load_as_read(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Load the pair from one reading of the files: into a scratch context first, so that a pair
    that does not load leaves `context` as it was (load_cert_chain would have replaced the
    certificate before finding that the key does not match it)."""
    cert, key = Path(cert_file).read_bytes(), Path(key_file).read_bytes()
    with _private_copy(cert) as cert_copy, _private_copy(key) as key_copy:
        load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_copy, key_copy)
        load_pair(context, cert_copy, key_copy)


@contextlib.contextmanager
def _private_copy(data: bytes) -> Iterator[str]:
    """A path to `data` that nobody else can change: a memory file where Linux has them (the key
    never touches a disk), else a private temporary file."""
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("gateway-tls", os.MFD_CLOEXEC)
        path = f"/proc/self/fd/{fd}"
    else:
        fd, path = tempfile.mkstemp(prefix="gateway-tls-")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        yield path
    finally:
        os.close(fd)
        if not path.startswith("/proc/"):
            os.unlink(path)
