"""Throughput with one and with two worker processes (`amp-gateway serve --workers N`).

The gateway (memory cache) answers one cached query_range (a 6 h / 20 s window of 3 series, the
gzip bytes Grafana gets) to wrk with 16 keep-alive connections, first with one worker, then with
two. The baseline, in the same run: a bare Starlette handler (`cache_baseline_app.py`) serving
the same bytes under uvicorn with the same number of workers. Every gateway answer is checked to
be a hit (its own /metrics, added up over the workers) and equal to the baseline's bytes.

The machine running this has 2 cores, shared by the server's workers and wrk (one thread), so
two workers cannot double anything; the ratios say how much of the second core the gateway
turns into answers, next to what a server doing nothing manages.

    .venv/bin/python bench/bench_workers.py [--seconds 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from bench_cache import HIT_QUERY, RANGE, STEP, cache_results, fetch_raw, wrk_get
from common import ROOT, free_port, gateway_process, prometheus, wait_until_up


@contextmanager
def baseline(workers: int, body: bytes) -> Iterator[str]:
    file = Path(tempfile.mkstemp(suffix=".gzip")[1])
    file.write_bytes(body)
    port = free_port()
    env = {**os.environ, "BASELINE_GZIP": str(file), "BASELINE_PLAIN": str(file)}
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "cache_baseline_app:app", "--port", str(port),
         "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
         "--no-access-log", "--log-level", "warning", "--no-server-header"],
        cwd=ROOT / "bench", env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/gzip/", server, "the baseline")
        time.sleep(1.0 * workers)  # every worker up
        yield url
    finally:
        server.terminate()
        server.wait(20)
        file.unlink()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    results: dict[int, dict[str, list[float]]] = {}
    with prometheus(RANGE + 1800) as prom:
        end = int(prom.data_end) - 600
        params = httpx.QueryParams({"query": HIT_QUERY, "start": end - RANGE, "end": end, "step": STEP})
        prometheus_json = fetch_raw(f"{prom.url}/api/v1/query_range?{params}", "plain").body
        for workers in (1, 2):
            env = {
                "GATEWAY_UPSTREAM_URL": prom.url,
                "GATEWAY_SIGV4": "false",
                "GATEWAY_CACHE": "memory",
                "GATEWAY_WORKERS": str(workers),
            }
            with gateway_process(env) as gateway:
                time.sleep(1.0 * workers)  # every worker up
                url = f"{gateway.url}/api/v1/query_range?{params}"
                # Each worker has its own memory tier: warm until every worker answers hits.
                for _ in range(20 * workers):
                    fetch_raw(url, "gzip")
                body = fetch_raw(url, "gzip").body
                assert gzip.decompress(body) == prometheus_json, "not Prometheus's answer"
                with baseline(workers, body) as base:
                    assert fetch_raw(f"{base}/gzip/", "gzip").body == body
                    wrk_get(url, 2, "gzip")  # warm-up
                    wrk_get(f"{base}/gzip/", 2, "gzip")
                    runs: dict[str, list[float]] = {"gateway": [], "bare": []}
                    for i in range(args.rounds):
                        order = ("bare", "gateway") if i % 2 == 0 else ("gateway", "bare")
                        for who in order:
                            before = cache_results(gateway.url)
                            run = wrk_get(url if who == "gateway" else f"{base}/gzip/a", args.seconds, "gzip")
                            if who == "gateway":
                                after = cache_results(gateway.url)
                                hits = after.get("hit", 0.0) - before.get("hit", 0.0)
                                others = sum(after.values()) - sum(before.values()) - hits
                                assert hits >= run.requests and others == 0, (run, hits, others)
                            runs[who].append(run.requests_per_second)
                        print(f"  {workers} worker(s), round {i + 1}: gateway {runs['gateway'][-1]:>7.0f} req/s, "
                              f"bare {runs['bare'][-1]:>7.0f} req/s", flush=True)  # fmt: skip
                    results[workers] = runs
    one, two = (statistics.median(results[n]["gateway"]) for n in (1, 2))
    bare_one, bare_two = (statistics.median(results[n]["bare"]) for n in (1, 2))
    print()
    print(f"cache hits, gzip, 16 connections, {os.cpu_count()} CPUs, median of {args.rounds} rounds:")
    print("| workers | gateway req/s | bare Starlette req/s | gateway / bare |")
    print("|---|---|---|---|")
    print(f"| 1 | {one:.0f} | {bare_one:.0f} | {one / bare_one:.2f} |")
    print(f"| 2 | {two:.0f} | {bare_two:.0f} | {two / bare_two:.2f} |")
    print(f"two workers / one: gateway {two / one:.2f}, bare {bare_two / bare_one:.2f}")


if __name__ == "__main__":
    main()
