"""/metrics flooded: what it does to another client's cached query, before and after issue 16.

One gateway worker as `serve` runs it (uvicorn, uvloop, httptools, PROMETHEUS_MULTIPROC_DIR set:
every worker's files added up), its memory cache holding a 6 h query_range. Its metrics
directory also holds the files of `--dead` killed workers: copies of its own, as a killed
worker leaves them.

- before: /metrics rendered on the event loop at every scrape (the code before issue 16,
  `exposition()` called in the handler), the dead workers' files left where they are;
- after: /metrics as shipped (`Scrapes`: in a thread, single-flight, at most once a second),
  the dead workers' files merged as the supervisor now does (`absorb_gone_worker`).

For each: p50/p99 of the cached query asked one at a time for `--seconds`, alone and while wrk
floods /metrics (8 connections, aiohttp in another process), and the time one rendering takes.

    .venv/bin/python bench/bench_metrics.py [--seconds 10] [--dead 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
from common import ROOT, prometheus, wait_until_up
from support.netutil import free_port

FLOOD_CONNECTIONS = 8


def serve_one_worker(mode: str, port: int, directory: str) -> None:
    """The worker (this script run with --serve): the app under uvicorn in this process."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # before prometheus_client is imported
    import uvicorn
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.requests import Request
    from starlette.responses import Response

    import gateway.api.ops as ops
    from gateway.metrics import Metrics, exposition

    if mode == "before":

        def metrics_endpoint(metrics: Metrics) -> ops.Endpoint:  # the handler before issue 16
            async def serve_metrics(request: Request) -> Response:
                return Response(exposition(metrics.registry), media_type=CONTENT_TYPE_LATEST)

            return serve_metrics

        ops.metrics_endpoint = metrics_endpoint
    from gateway.app import create_app  # after the patch: it imports metrics_endpoint by name
    from gateway.config import load_settings

    app = create_app(load_settings())
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning")


@contextmanager
def worker(mode: str, directory: Path, prom_url: str) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "GATEWAY_UPSTREAM_URL": prom_url,
        "GATEWAY_REGION": "us-east-1",
        "GATEWAY_SIGV4": "false",
        "GATEWAY_CACHE": "memory",
        "GATEWAY_LOG_LEVEL": "warning",
    }
    command = [sys.executable, __file__, "--serve", mode, "--port", str(port), "--dir", str(directory)]
    process = subprocess.Popen(command, env=env, cwd=ROOT / "bench")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/-/healthy", process, "the worker")
        yield url
    finally:
        process.terminate()
        process.wait(10)


def add_dead_workers(directory: Path, count: int, merge: bool) -> None:
    """Copies of the live worker's files under pids of workers that are gone; merged into the
    gone workers' totals (as the supervisor does since issue 16) when `merge`."""
    from gateway.metrics import absorb_gone_worker

    live = [p for p in directory.glob("*.db") if re.search(r"_\d+\.db$", p.name)]
    for k in range(count):
        fake = 4_000_000 + k
        for path in live:
            shutil.copy(path, directory / re.sub(r"_\d+\.db$", f"_{fake}.db", path.name))
        if merge:
            absorb_gone_worker(str(directory), fake)


def probe(url: str, body: str, seconds: float) -> list[float]:
    """Latencies (ms) of the cached query asked one at a time, on one keep-alive connection."""
    out = []
    headers = {"content-type": "application/x-www-form-urlencoded", "accept-encoding": "gzip"}
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            answer = client.post(f"{url}/api/v1/query_range", content=body, headers=headers)
            out.append((time.perf_counter() - started) * 1000)
            assert answer.status_code == 200 and answer.headers.get("x-cache") == "hit", answer.headers
    return out


_FLOODER = """
import asyncio, sys, time
import aiohttp

async def main(url, connections, seconds):
    done = 0
    deadline = time.monotonic() + seconds

    async def one(session):
        nonlocal done
        while time.monotonic() < deadline:
            async with session.get(url) as answer:
                await answer.read()
            done += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        await asyncio.gather(*(one(session) for _ in range(connections)))
    print(done / seconds)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
"""


def flood(url: str, seconds: float) -> float:
    """/metrics asked by `FLOOD_CONNECTIONS` connections at once, in another process (aiohttp);
    its requests per second."""
    command = [sys.executable, "-c", _FLOODER, f"{url}/metrics", str(FLOOD_CONNECTIONS), str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(done.stdout)


def render_ms(directory: Path) -> float:
    """One rendering of the directory's files (what each scrape cost before), median of 20."""
    code = (
        "import os, time, statistics\n"
        f"os.environ['PROMETHEUS_MULTIPROC_DIR'] = {str(directory)!r}\n"
        "from prometheus_client import CollectorRegistry\n"
        "from gateway.metrics import exposition\n"
        "r = CollectorRegistry()\n"
        "times = []\n"
        "for _ in range(20):\n"
        "    t = time.perf_counter(); exposition(r); times.append((time.perf_counter() - t) * 1000)\n"
        "print(statistics.median(times))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return float(done.stdout)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--dead", type=int, default=20)
    parser.add_argument("--serve", choices=["before", "after"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.serve:
        serve_one_worker(args.serve, args.port, args.dir)
        return
    with prometheus(duration=8 * 3600) as prom:
        end = int(prom.data_end) - 3600  # wholly in the past: every ask a hit
        body = urlencode({
            "query": 'sum by (path) (rate(http_requests_total{job="recommender"}[1m]))',
            "start": end - 6 * 3600, "end": end, "step": 60,
        })  # fmt: skip
        print(
            f"{args.dead} dead workers' files; cached 6 h query_range; flood: {FLOOD_CONNECTIONS} connections on /metrics"
        )
        print("| | files | one rendering | alone p50 / p99 | flooded p50 / p99 | /metrics req/s |")
        print("|---|---|---|---|---|---|")
        for mode in ("before", "after"):
            directory = Path(tempfile.mkdtemp(prefix=f"bench-metrics-{mode}-"))
            with worker(mode, directory, prom.url) as url:
                for _ in range(3):  # fill the cache, make the usual series
                    httpx.post(f"{url}/api/v1/query_range", content=body, timeout=30,
                               headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
                httpx.get(f"{url}/api/v1/query", params={"query": "sum("}, timeout=10)
                httpx.get(f"{url}/metrics", timeout=10)
                add_dead_workers(directory, args.dead, merge=mode == "after")
                files = len(list(directory.glob("*.db")))
                rendering = render_ms(directory)
                probe(url, body, 1)  # warm up
                alone = probe(url, body, args.seconds)
                rps: list[float] = []

                def flooding(url: str = url, rps: list[float] = rps) -> None:
                    rps.append(flood(url, args.seconds + 2))

                flooder = threading.Thread(target=flooding)
                flooder.start()
                time.sleep(1)
                flooded = probe(url, body, args.seconds)
                flooder.join()
            shutil.rmtree(directory, ignore_errors=True)
            print(
                f"| {mode} | {files} | {rendering:.1f} ms | {statistics.median(alone):.2f} / {pct(alone, 0.99):.2f} ms "
                f"| {statistics.median(flooded):.2f} / {pct(flooded, 0.99):.2f} ms | {rps[0]:.0f} |"
            )


if __name__ == "__main__":
    main()
