"""Shared benchmark plumbing: a backfilled Prometheus, a gateway process, and wrk runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.netutil import free_port  # noqa: E402
from support.prometheus import PrometheusServer, start_prometheus  # noqa: E402


@contextmanager
def prometheus(duration: int | None = None) -> Iterator[PrometheusServer]:
    """A Prometheus backfilled with `duration` seconds of data up to now (default: 3 h)."""
    extra = {} if duration is None else {"duration": duration}
    server = start_prometheus(Path(tempfile.mkdtemp(prefix="bench-prom-")), **extra)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class GatewayProcess:
    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its living children (`serve`'s workers)."""
    process = psutil.Process(pid)
    total = 0.0
    for each in (process, *process.children(recursive=True)):
        times = each.cpu_times()
        total += times.user + times.system
    return total


def gateway_package() -> str:
    """The directory of the `gateway` package that `gateway_process` runs (`python -m gateway`
    from ROOT imports ROOT's package first, then PYTHONPATH's, then the installed one)."""
    done = subprocess.run(
        [sys.executable, "-c", "import gateway, os; print(os.path.dirname(gateway.__file__))"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@contextmanager
def gateway_process(env: dict[str, str], tree: Path = ROOT) -> Iterator[GatewayProcess]:
    """`amp-gateway serve` in its own process (its own GIL), as it runs in production, with one
    worker unless `env` sets GATEWAY_WORKERS (so that figures compare with earlier runs); the
    gateway of `tree`, by default this checkout (another: an earlier one, measured alongside)."""
    port = free_port()
    full_env = {
        **os.environ,
        "GATEWAY_LISTEN": f"127.0.0.1:{port}",
        "GATEWAY_LOG_LEVEL": "warning",
        "AWS_ACCESS_KEY_ID": "AKIABENCHMARK0000000",
        "AWS_SECRET_ACCESS_KEY": "bench-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
        "GATEWAY_WORKERS": "1",
        **env,
    }
    full_env.pop("PYTHONPATH", None)
    process = subprocess.Popen([sys.executable, "-m", "gateway", "serve"], env=full_env, cwd=tree)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/-/healthy", process, "the gateway")
        yield GatewayProcess(url, process.pid)
    finally:
        process.terminate()
        process.wait(10)


def wait_until_up(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    """Until `url` answers 200; RuntimeError if `process` exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.1)


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    errors: int


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    assert match, text
    return float(match.group(1)) * _UNIT[match.group(2)]


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk(
    url: str, body: str | list[str], seconds: int = 10, connections: int = 16, threads: int = 2
) -> WrkResult:
    """POST `body` (a form) to `url` with wrk; parse throughput and latency percentiles.

    `body` as a list: one wrk thread and one connection per body, each connection sending its
    own body again and again (distinct requests in flight, none identical to another).
    """
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    if isinstance(body, list):
        threads = connections = len(body)
        script.write_text(
            f"local bodies = {{{', '.join(_lua_string(b) for b in body)}}}\n"
            "local count = 0\n"
            'function setup(thread)\n  count = count + 1\n  thread:set("id", count)\nend\n'
            "function init(args)\n  wrk.body = bodies[id]\nend\n"
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        )
    else:
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {_lua_string(body)}\n"
            'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        )
    try:
        done = subprocess.run(
            ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--latency", "-s", str(script), url],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
    finally:
        script.unlink()
    out = done.stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return WrkResult(
        rps, _ms(pct["50"]), _ms(pct["90"]), _ms(pct["99"]), int(errors.group(1)) if errors else 0
    )
