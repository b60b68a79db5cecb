"""`amp-gateway serve`: worker processes under a supervisor.

The supervisor binds the listening socket once and starts `workers` processes that share it
(uvicorn's own `Multiprocess` supervisor). It pings every worker twice a second and replaces
one that died or stopped answering. On SIGTERM or SIGINT it stops them: each stops accepting,
lets its in-flight requests finish within `shutdown_grace` seconds, and exits.

The supervisor runs even for one worker: a worker killed by a segfault or the OOM killer is
replaced in about a second instead of taking the service down.

Each worker builds its settings again from the same file and environment (they were checked
once in the supervisor), and gets an equal share of `cache.memory_bytes`, so the configured
figure bounds the whole process group.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

import uvicorn
from prometheus_client.multiprocess import mark_process_dead
from starlette.applications import Starlette
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors.multiprocess import Multiprocess

from gateway.app import create_app, startup_line, warn_without_credentials
from gateway.config import ConfigError, Settings, load_settings
from gateway.logs import setup_logging
from gateway.tls import uvicorn_ssl_context

log = logging.getLogger("gateway")

CONFIG_ENV = "GATEWAY_CONFIG"
WORKERS_ENV = "GATEWAY_WORKERS"
METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Supervisor(Multiprocess):
    """uvicorn's supervisor, which also closes its copy of the listening socket as soon as it
    is told to stop: once the workers have closed theirs, new connections are refused at once
    instead of waiting in a backlog that nobody accepts from any more."""

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
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        # A dead worker's gauges leave /metrics; its counters stay in the sums.
        for pid in before - {process.pid for process in self.processes}:
            if pid is not None and METRICS_DIR_ENV in os.environ:
                mark_process_dead(pid)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped


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
    """One worker's share: the memory cache is per process."""
    cache = dataclasses.replace(settings.cache, memory_bytes=max(1, settings.cache.memory_bytes // workers))
    return dataclasses.replace(settings, cache=cache, workers=workers)


def worker_app() -> Starlette:
    """The app of one worker process (uvicorn calls this factory by name in each worker)."""
    try:
        settings = load_settings(os.environ.get(CONFIG_ENV))
    except ConfigError as err:  # the file changed since the supervisor checked it
        print(f"amp-gateway: configuration error: {err}", file=sys.stderr)
        sys.exit(STARTUP_FAILURE)
    setup_logging(settings.log_level)
    return create_app(worker_settings(settings, settings.workers or 1))


def serve(settings: Settings, config_path: str | None, workers: int | None) -> int:
    count = workers or settings.workers or available_cpus()
    # The workers read their settings as the supervisor did: same file, same environment.
    if config_path:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    os.environ[WORKERS_ENV] = str(count)
    # Workers write their metrics here, so that /metrics adds up all of them (gateway.metrics).
    metrics_dir = None
    if METRICS_DIR_ENV not in os.environ:
        metrics_dir = os.environ[METRICS_DIR_ENV] = tempfile.mkdtemp(prefix="amp-gateway-metrics-")
    setup_logging(settings.log_level)
    config = uvicorn.Config(
        "gateway.serve:worker_app",
        factory=True,
        host=settings.listen_host,
        port=settings.listen_port,
        workers=count,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        log_level=settings.log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=settings.shutdown_grace,  # type: ignore[arg-type]  # typed int, any number works
        # Inbound TLS: each worker builds its context and reloads it when the files change.
        ssl_certfile=settings.tls.cert_file,
        ssl_keyfile=settings.tls.key_file,
        ssl_context_factory=uvicorn_ssl_context if settings.tls.cert_file else None,
    )
    try:
        sock = config.bind_socket()
    except SystemExit:
        return STARTUP_FAILURE
    log.info(startup_line(settings, count))
    warn_without_credentials(settings)
    try:
        Supervisor(config, sockets=[sock]).run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
