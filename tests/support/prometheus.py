"""A real Prometheus server, backfilled with :mod:`support.promdata` data."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from .netutil import free_port
from .promdata import (
    DEFAULT_DURATION,
    DEFAULT_INTERVAL,
    DEFAULT_SEED,
    DataWindow,
    window_ending_at,
    write_openmetrics,
)

PROMETHEUS_BIN = "/usr/bin/prometheus"
PROMTOOL_BIN = "/usr/bin/promtool"
_CONFIG = "global:\n  scrape_interval: 1m\nscrape_configs: []\n"


@dataclass
class PrometheusServer:
    """A running Prometheus; ``url`` has no trailing slash."""

    url: str
    window: DataWindow
    workdir: Path
    process: subprocess.Popen[bytes]
    startup_seconds: float = field(default=0.0)
    asked_end: float = field(default=0.0)  # the end the data was asked to reach (now, by default)

    @property
    def data_start(self) -> float:
        """Unix seconds of the first sample of every (non-intermittent) series."""
        return float(self.window.start)

    @property
    def data_end(self) -> float:
        """Unix seconds of the last sample (the window end, aligned to the interval)."""
        return float(self.window.end)

    @property
    def interval(self) -> int:
        return self.window.interval

    @property
    def log_path(self) -> Path:
        return self.workdir / "prometheus.log"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def backfill(workdir: Path, window: DataWindow, seed: int = DEFAULT_SEED) -> Path:
    """Generate OpenMetrics text and turn it into TSDB blocks; returns the TSDB dir."""
    workdir.mkdir(parents=True, exist_ok=True)
    tsdb = workdir / "data"
    tsdb.mkdir(exist_ok=True)
    source = write_openmetrics(workdir / "data.om.txt", window, seed)
    subprocess.run(
        [PROMTOOL_BIN, "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(tsdb)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    source.unlink()
    return tsdb


def start_prometheus(
    workdir: Path,
    *,
    end: float | None = None,
    interval: int = DEFAULT_INTERVAL,
    duration: int = DEFAULT_DURATION,
    seed: int = DEFAULT_SEED,
    timeout: float = 60.0,
) -> PrometheusServer:
    """Backfill ``duration`` seconds of data ending at ``end`` (default now) and start Prometheus.

    Returns once ``/-/ready`` answers and ``demo_num_cpus`` has data at ``data_end``.
    """
    began = time.monotonic()
    asked_end = time.time() if end is None else end
    window = window_ending_at(asked_end, interval, duration)
    tsdb = backfill(workdir, window, seed)
    config = workdir / "prometheus.yml"
    config.write_text(_CONFIG, encoding="utf-8")
    port = free_port()
    log = (workdir / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            PROMETHEUS_BIN,
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            "--storage.tsdb.retention.time=30d",
            "--web.enable-remote-write-receiver",
            # AMP answers stats=all with totalQueryableSamplesPerStep; Prometheus does behind this flag.
            "--enable-feature=promql-per-step-stats",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    log.close()
    server = PrometheusServer(f"http://127.0.0.1:{port}", window, workdir, process, asked_end=asked_end)
    try:
        _wait_until_ready(server, began + timeout)
    except BaseException:
        server.stop()
        raise
    server.startup_seconds = time.monotonic() - began
    return server


def _wait_until_ready(server: PrometheusServer, deadline: float) -> None:
    params = {"query": "demo_num_cpus", "time": str(server.window.end)}
    with httpx.Client(timeout=5.0) as client:
        while True:
            if server.process.poll() is not None:
                log = server.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prometheus exited with {server.process.returncode}: {log}")
            try:
                if client.get(f"{server.url}/-/ready").status_code == 200:
                    body = client.get(f"{server.url}/api/v1/query", params=params).json()
                    if body.get("status") == "success" and body["data"]["result"]:
                        return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus at {server.url} not ready with data in time")
            time.sleep(0.1)
