"""`amp-gateway serve`: worker processes under a supervisor.

The supervisor binds the listening socket once and starts `workers` processes that share it
(uvicorn's own `Multiprocess` supervisor). It replaces a worker whose process died. On SIGTERM
or SIGINT it stops them: each stops accepting, lets its in-flight requests finish within
`shutdown_grace` seconds, and exits.

The supervisor runs even for one worker: a worker killed by a segfault is replaced in about a
second instead of taking the service down (a container's OOM kill, on Kubernetes 1.28+ with
cgroup v2, takes the whole container anyway).

Every worker serves the settings the supervisor checked at start (handed over, not read again).
The supervisor makes the directory of the store the workers share (`pipeline.host`: the cache,
coalescing, rate buckets, slots and failed sign-ins), bounded by `cache.memory_bytes` for the
whole group, and removes it at exit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import socket
import ssl
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lmdb
import uvicorn
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.app import create_app, host_bytes, startup_line, warn_without_credentials
from gateway.config import Settings
from gateway.edge import GuardedProtocol, raise_open_files_limit
from gateway.logs import setup_logging
from gateway.metrics import absorb_gone_worker
from gateway.pipeline.host import HostStore
from gateway.tls import uvicorn_ssl_context

log = logging.getLogger("gateway")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Supervisor(Multiprocess):
    """uvicorn's supervisor, and:
    - on SIGTERM or SIGINT it closes its copy of the listening socket first: once the workers
      have closed theirs, new connections are refused at once instead of waiting in a backlog
      that nobody accepts from any more;
    - a worker that died is a warning, with its exit code (-9: killed, as by the OOM killer);
    - a worker that is gone (died, or replaced on SIGHUP or SIGTTOU) leaves /metrics' gauges,
      and its counters and histograms join the gone workers' totals (its files are deleted);
    - `failed_to_start` says whether it stopped because a worker could not start."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._known: set[int] = set()
        self.failed_to_start = False

    def handle_term(self) -> None:
        self._stop_listening()
        super().handle_term()

    def handle_int(self) -> None:
        self._stop_listening()
        super().handle_int()

    def _stop_listening(self) -> None:
        for sock in self.sockets:
            sock.close()

    def keep_subprocess_alive(self) -> None:
        before = list(self.processes)
        super().keep_subprocess_alive()
        for process in before:
            if process.exitcode == STARTUP_FAILURE:
                self.failed_to_start = True
            elif process not in self.processes:
                log.warning("worker %s died (exit code %s); started another", process.pid, process.exitcode)
        living = {process.pid for process in self.processes if process.pid is not None}
        for pid in self._known - living:  # serve() set PROMETHEUS_MULTIPROC_DIR before starting us
            absorb_gone_worker(os.environ[METRICS_DIR_ENV], pid)  # its totals kept, its files gone
        self._known = living


def available_cpus() -> int:
    """The CPUs this process may use: its affinity, bounded by a cgroup CPU quota (a container's
    `resources.limits.cpu`)."""
    count = len(os.sched_getaffinity(0))
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    try:  # cgroup v2: "max 100000" or "150000 100000"
        limit, v2_period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if limit == "max" else int(limit) / int(v2_period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def worker_settings(settings: Settings, workers: int) -> Settings:
    return dataclasses.replace(settings, workers=workers)


@dataclass(frozen=True)
class WorkerApp:
    """The app factory every worker calls; uvicorn hands it to each worker process (pickled),
    with the settings the supervisor checked: every worker, the replacements of dead ones
    included, serves those, whatever happens to the file afterwards."""

    settings: Settings
    workers: int
    host_path: str  # the store the workers share

    def __call__(self) -> Starlette:
        setup_logging(self.settings.log_level)
        try:
            return create_app(worker_settings(self.settings, self.workers), host_path=self.host_path)
        except Exception:
            # One JSON line, then uvicorn's code for "would fail the same way every time":
            # the supervisor stops instead of restarting it forever.
            log.exception("a worker could not start")
            sys.exit(STARTUP_FAILURE)


def worker_ssl_context(config: uvicorn.Config, default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """`gateway.tls`'s reloading context, built in each worker before its app; a certificate
    that no longer loads (deleted since start) stops the supervisor, as a failing app does."""
    setup_logging(str(config.log_level or "info"))
    try:
        return uvicorn_ssl_context(config, default)
    except Exception:
        log.exception("a worker could not load its certificate")
        sys.exit(STARTUP_FAILURE)


def serve(settings: Settings, workers: int | None) -> int:
    count = workers or settings.workers or available_cpus()
    setup_logging(settings.log_level)
    try:
        metrics_dir = _metrics_directory()
    except OSError as err:
        log.error("%s: %s: %s", METRICS_DIR_ENV, os.environ.get(METRICS_DIR_ENV), err.strerror or err)
        return STARTUP_FAILURE
    try:
        host_path = tempfile.mkdtemp(prefix="amp-gateway-host-", dir=settings.cache.host_dir)
    except OSError as err:
        log.error("cache.host_dir: %s: %s", settings.cache.host_dir or tempfile.gettempdir(), err)
        return STARTUP_FAILURE
    try:
        try:
            HostStore.make(host_path, host_bytes(settings))
        except (OSError, lmdb.Error) as err:
            log.error("cache.host_dir: %s: %s", host_path, err)
            return STARTUP_FAILURE
        return _supervise(settings, count, host_path)
    finally:
        shutil.rmtree(host_path, ignore_errors=True)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(settings: Settings, count: int, host_path: str) -> int:
    config = uvicorn.Config(
        WorkerApp(settings, count, host_path),
        factory=True,
        host=settings.listen_host,
        port=settings.listen_port,
        workers=count,
        loop="uvloop",
        # httptools, bounded: request line, headers, read timeouts and connections (gateway.edge)
        http=GuardedProtocol(settings.server),  # type: ignore[arg-type]  # a protocol factory works as a class does
        ws="none",
        timeout_keep_alive=settings.server.keep_alive_timeout,  # type: ignore[arg-type]  # typed int, any number works
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace,  # type: ignore[arg-type]  # typed int, any number works
        # Inbound TLS: each worker builds its context and reloads it when the files change.
        ssl_certfile=settings.tls.cert_file,
        ssl_keyfile=settings.tls.key_file,
        ssl_context_factory=worker_ssl_context if settings.tls.cert_file else None,
    )
    try:
        sock = config.bind_socket()
    except SystemExit:
        return STARTUP_FAILURE
    raise_open_files_limit()  # the workers inherit it
    log.info(startup_line(settings, count))
    warn_without_credentials(settings)
    supervisor = Supervisor(config, sockets=[sock])
    supervisor.run()
    if supervisor.failed_to_start:
        log.error("stopped: a worker could not start (see above)")
        return STARTUP_FAILURE
    return 0


def _metrics_directory() -> str | None:
    """Where the workers write their metrics (gateway.metrics adds them up): a fresh directory
    of our own, removed at exit (returned), or the one PROMETHEUS_MULTIPROC_DIR names, emptied
    of an earlier run's files (prometheus-client's advice), created if need be."""
    given = os.environ.get(METRICS_DIR_ENV)
    if not given:
        made = os.environ[METRICS_DIR_ENV] = tempfile.mkdtemp(prefix="amp-gateway-metrics-")
        return made
    directory = Path(given)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    return None
