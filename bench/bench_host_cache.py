"""What one cache per host buys (issue 17): AMP's cost of a dashboard with 1, 2 and 4 workers,
and the speed of a hit from the host's store against each worker's own memory.

1. **Dashboard replay.** 4 panels (1 h windows, step 15 s, asked at once on separate connections
   as Grafana does), refreshed 6 times, each refresh one step later. Between the gateway
   (`amp-gateway serve --workers N`, a fresh cache each time) and Prometheus sits a counting
   proxy that adds `stats=all` to every query and sums Prometheus's
   `samples.totalQueryableSamples` (what AMP bills as samples processed) before handing the
   answer on without its stats. For 1, 2 and 4 workers, without and with Redis, for this tree
   and for the gateway before the change (`--before DIR`, a checkout of it) in the same run.
2. **Hit throughput.** One cached query_range (6 h, step 20 s, 3 series, gzip) to wrk with 16
   connections, served with 1 and 2 workers by this tree (the host's store) and by the tree
   before (each worker's own memory), alternating rounds.

    git worktree add /tmp/pre17 52d7ee5
    .venv/bin/python bench/bench_host_cache.py --before /tmp/pre17 [--rounds 3] [--only-hits]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import orjson
from bench_cache import HIT_QUERY, fetch_raw, wrk_get
from cache_savings import PANELS
from common import ROOT, free_port, gateway_process, prometheus

STEP = 15
WINDOW = 3600
REFRESHES = 6


class CountingProxy:
    """Forwards to Prometheus with stats=all; counts requests and samples processed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests = 0
        self.samples = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(b"")

            def do_POST(self) -> None:
                self._forward(self.rfile.read(int(self.headers.get("content-length") or 0)))

            def _forward(self, body: bytes) -> None:
                url = urlsplit(self.path)
                params = parse_qsl(url.query, keep_blank_values=True) + parse_qsl(
                    body.decode(), keep_blank_values=True
                )
                querying = url.path.endswith(("/query", "/query_range"))
                if querying:
                    params = [(k, v) for k, v in params if k != "stats"] + [("stats", "all")]
                answer = httpx.post(
                    proxy.upstream + url.path,
                    content=urlencode(params),
                    headers={"content-type": "application/x-www-form-urlencoded"},
                    timeout=60,
                )
                out = answer.content
                if querying and answer.status_code == 200:
                    doc = orjson.loads(out)
                    stats = doc["data"].pop("stats", {})
                    with proxy._lock:
                        proxy.requests += 1
                        proxy.samples += stats.get("samples", {}).get("totalQueryableSamples", 0)
                    out = orjson.dumps(doc)
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.requests = self.samples = 0

    def close(self) -> None:
        self.server.shutdown()


async def replay(url: str, first_end: int) -> None:
    """The dashboard's refreshes; each panel on a connection of its own (any worker may take it)."""
    for refresh in range(REFRESHES):
        end = first_end + refresh * STEP

        async def panel(query: str, end: int = end) -> None:
            async with httpx.AsyncClient(timeout=60, headers={"accept-encoding": "gzip"}) as client:
                form = {"query": query, "start": end - WINDOW, "end": end, "step": STEP}
                answer = await client.post(f"{url}/api/v1/query_range", data=form)
                assert answer.status_code == 200, answer.text

        await asyncio.gather(*(panel(query) for query in PANELS[:4]))
        await asyncio.sleep(0.3)


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    from support.redis_server import RedisServer  # tests/support, on the path below

    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(free_port(), Path(workdir))
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


def dashboard_costs(
    before: Path | None, prom_url: str, first_end: int
) -> list[tuple[str, str, int, int, int]]:
    proxy = CountingProxy(prom_url)
    rows = []
    trees = [("this tree", ROOT)] + ([("before", before)] if before else [])
    try:
        for redis in (False, True):
            for name, tree in trees:
                for workers in (1, 2, 4):
                    with contextlib.ExitStack() as stack:
                        env = {
                            "GATEWAY_UPSTREAM_URL": proxy.url,
                            "GATEWAY_SIGV4": "false",
                            "GATEWAY_WORKERS": str(workers),
                        }
                        if redis:
                            env["GATEWAY_REDIS_URL"] = stack.enter_context(redis_server())
                        gateway = stack.enter_context(gateway_process(env, tree))
                        time.sleep(0.5 * workers)  # every worker up
                        proxy.reset()
                        asyncio.run(replay(gateway.url, first_end))
                        row = (name, "Redis" if redis else "no Redis", workers, proxy.requests, proxy.samples)
                        print(f"  {row}", flush=True)
                        rows.append(row)
    finally:
        proxy.close()
    return rows


def hit_throughput(before: Path | None, prom_url: str, end: int, seconds: int, rounds: int) -> None:
    params = httpx.QueryParams({"query": HIT_QUERY, "start": end - 6 * 3600, "end": end, "step": 20})
    trees = [("host store", ROOT)] + ([("per-worker memory (before)", before)] if before else [])
    results: dict[tuple[str, int], list[float]] = {}
    for workers in (1, 2):
        for i in range(rounds):
            for name, tree in trees if i % 2 == 0 else list(reversed(trees)):
                env = {
                    "GATEWAY_UPSTREAM_URL": prom_url,
                    "GATEWAY_SIGV4": "false",
                    "GATEWAY_WORKERS": str(workers),
                }
                with gateway_process(env, tree) as gateway:
                    time.sleep(0.5 * workers)
                    url = f"{gateway.url}/api/v1/query_range?{params}"
                    for _ in range(20 * workers):  # the tree before: every worker warms its own
                        fetch_raw(url, "gzip")
                    wrk_get(url, 2, "gzip")
                    run = wrk_get(url, seconds, "gzip")
                    results.setdefault((name, workers), []).append(run.requests_per_second)
                    print(f"  {name}, {workers} worker(s): {run.requests_per_second:.0f} req/s", flush=True)
    print("\n| workers | " + " | ".join(f"{name} req/s" for name, _ in trees) + " | ratio |")
    print("|---|" + "---|" * len(trees) + "---|")
    for workers in (1, 2):
        medians = [statistics.median(results[(name, workers)]) for name, _ in trees]
        ratio = f"{medians[0] / medians[1]:.2f}" if len(medians) == 2 else "-"
        print(f"| {workers} | " + " | ".join(f"{m:.0f}" for m in medians) + f" | {ratio} |")


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="a checkout of the gateway before the change")
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-hits", action="store_true")
    parser.add_argument("--only-hits", action="store_true")
    args = parser.parse_args()
    with prometheus(6 * 3600 + 3600) as prom:
        first_end = (int(prom.data_end) - 1200) // STEP * STEP - REFRESHES * STEP
        rows = [] if args.only_hits else dashboard_costs(args.before, prom.url, first_end)
        if rows:
            print(f"\ndashboard replay: {len(PANELS[:4])} panels, {REFRESHES} refreshes, a fresh cache each:")
            print("| gateway | shared tier | workers | upstream fetches | samples processed | x 1 worker |")
            print("|---|---|---|---|---|---|")
        for name, redis, workers, fetches, samples in rows:
            one = next(r[4] for r in rows if r[:2] == (name, redis) and r[2] == 1)
            print(f"| {name} | {redis} | {workers} | {fetches} | {samples:,} | {samples / one:.2f} |")
        if not args.skip_hits:
            print("\nhit throughput, gzip, 16 connections:")
            hit_throughput(args.before, prom.url, int(prom.data_end) - 600, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
