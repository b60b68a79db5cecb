"""Results cache: what it saves the upstream, how fast a hit is, what it costs in memory.

1. Grafana dashboard simulation: 8 panels, `now-6h`, step 20 s (Grafana's interval for a
   1,000-pixel panel: 6 h / 1,000 = 21.6 s, rounded to 20 s), refresh every 30 s for 30
   simulated minutes (61 refreshes). Upstream requests and samples fetched, cache on versus
   off, against a real backfilled Prometheus; the cache's clock is the simulated one.
2. Cache-hit throughput: the gateway (own process) answering one cached query_range, versus a
   bare Starlette handler (own process) returning the same bytes; 16 keep-alive clients (wrk,
   Accept-Encoding: gzip as Grafana sends), alternating rounds in the same run.
3. Memory per cached sample, and the byte bound under a flood of distinct queries.

    .venv/bin/python bench/bench_cache.py [--seconds 10] [--rounds 2] [--only-hits]

`--only-hits` runs part 2 only (quicker while working on the hit path).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from common import ROOT, gateway_process

from gateway.app import create_app
from gateway.config import build_settings
from gateway.pipeline.cache.matrix import load_extent

sys.path.insert(0, str(ROOT / "tests"))
from support.netutil import free_port
from support.prometheus import start_prometheus

PANELS = [
    'sum by (mode) (rate(demo_cpu_usage_seconds_total{job="demo"}[5m]))',
    "demo_memory_usage_bytes",
    "histogram_quantile(0.9, sum by (le) (rate(demo_api_request_duration_seconds_bucket[5m])))",
    'sum by (path) (rate(http_requests_total{job="recommender"}[5m]))',
    "rate(node_network_transmit_bytes_total[5m])",
    "demo_disk_usage_bytes",
    'sum(rate(demo_api_request_duration_seconds_count{status="500"}[5m]))'
    " / sum(rate(demo_api_request_duration_seconds_count[5m]))",
    "avg_over_time(demo_num_cpus[5m])",
]
STEP = 20
RANGE = 6 * 3600
REFRESH = 30
DURATION = 30 * 60


def _samples(body: dict[str, Any]) -> int:
    return sum(len(s.get("values", ())) for s in body["data"]["result"])


def _upstream_requests(app: Any) -> float:
    total = 0.0
    for metric in app.state.metrics.registry.collect():
        if metric.name == "gateway_upstream_requests":
            total += sum(s.value for s in metric.samples if s.name.endswith("_total"))
    return total


async def dashboard(prom_url: str, sim_start: float, cache_mode: str) -> dict[str, float]:
    settings = build_settings(
        {
            "upstream_url": prom_url,
            "sigv4": False,
            "cache": {"mode": cache_mode},
            "access_log": False,
        },
        {},
    )
    app = create_app(settings)
    now = sim_start
    if app.state.cache is not None:
        app.state.cache.clock = lambda: now
    served = 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=120) as client:
            for refresh in range(DURATION // REFRESH + 1):
                now = sim_start + refresh * REFRESH
                end = int(now) // STEP * STEP
                start = int(now - RANGE) // STEP * STEP
                answers = await asyncio.gather(
                    *(
                        client.post(
                            "/api/v1/query_range",
                            data={"query": q, "start": str(start), "end": str(end), "step": str(STEP)},
                        )
                        for q in PANELS
                    )
                )
                for answer in answers:
                    assert answer.status_code == 200, answer.text
                    served += _samples(answer.json())
        registry = app.state.metrics.registry
        result = {"upstream_requests": _upstream_requests(app), "served_samples": served}
        if app.state.cache is not None:
            fetched = registry.get_sample_value("gateway_cache_samples_total", {"source": "upstream"})
            result["fetched_samples"] = fetched or 0.0
            store = app.state.cache.store
            extent_samples = 0
            for key in list(store.memory._cache):
                entry = store.get_memory(key)
                if entry is not None and entry.kind == 2:
                    extent_samples += load_extent(entry.data())[1].samples()
            result["memory_bytes"] = store.memory.bytes
            result["extent_samples"] = extent_samples
        else:
            result["fetched_samples"] = served
    return result


async def flood(prom_url: str, end: float, bound: int, queries: int) -> tuple[int, int]:
    settings = build_settings(
        {"upstream_url": prom_url, "sigv4": False, "cache": {"mode": "memory", "memory_bytes": bound}},
        {},
    )
    app = create_app(settings)
    peak = 0
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=120) as client:
            for i in range(queries):
                params = {
                    "query": f"demo_memory_usage_bytes * {i}",
                    "start": str(end - 3600),
                    "end": str(end),
                }
                answer = await client.post("/api/v1/query_range", data={**params, "step": "15"})
                assert answer.status_code == 200
                peak = max(peak, app.state.cache.store.memory.bytes)
    return peak, len(app.state.cache.store.memory)


def wrk_get(url: str, seconds: int) -> tuple[float, float]:
    out = subprocess.run(
        ["wrk", "-t", "1", "-c", "16", "-d", f"{seconds}s", "--latency", "-H", "Accept-Encoding: gzip", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.MULTILINE)
    assert p50 is not None and "Non-2xx" not in out, out
    return rps, float(p50.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[p50.group(2)]


def hit_throughput(prom_url: str, end: int, seconds: int, rounds: int) -> dict[str, float]:
    params = httpx.QueryParams({"query": PANELS[0], "start": end - RANGE, "end": end, "step": STEP})
    env = {"GATEWAY_UPSTREAM_URL": prom_url, "GATEWAY_SIGV4": "false", "GATEWAY_CACHE": "memory"}
    with gateway_process(env) as gateway:
        url = f"{gateway.url}/api/v1/query_range?{params}"
        httpx.get(url, headers={"Accept-Encoding": "gzip"})
        hit = httpx.get(url, headers={"Accept-Encoding": "gzip"})
        assert hit.headers.get("x-cache") == "hit", hit.headers
        body_file = Path(tempfile.mkstemp(suffix=".gz")[1])
        body_file.write_bytes(_raw_body(url))
        port = free_port()
        baseline = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "cache_baseline_app.py"), str(port), str(body_file)]
        )
        base_url = f"http://127.0.0.1:{port}/api/v1/query_range?{params}"
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(base_url).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("baseline did not start")
                time.sleep(0.1)
            wrk_get(url, 2)
            wrk_get(base_url, 2)
            gw, bare = [], []
            for _ in range(rounds):
                bare.append(wrk_get(base_url, seconds))
                gw.append(wrk_get(url, seconds))
        finally:
            baseline.terminate()
            baseline.wait(10)
    return {
        "gateway_rps": statistics.median(r for r, _ in gw),
        "gateway_p50_ms": statistics.median(p for _, p in gw),
        "bare_rps": statistics.median(r for r, _ in bare),
        "bare_p50_ms": statistics.median(p for _, p in bare),
        "body_bytes": len(body_file.read_bytes()),
    }


def _raw_body(url: str) -> bytes:
    with httpx.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers.get("content-encoding") == "gzip"
        return b"".join(response.iter_raw())


def _savings(prom: Any) -> None:
    """Parts 1 and 3: upstream work saved, memory per sample, the byte bound."""
    sim_start = prom.data_end - DURATION
    without = asyncio.run(dashboard(prom.url, sim_start, "off"))
    with_cache = asyncio.run(dashboard(prom.url, sim_start, "memory"))
    print("## dashboard: 8 panels, now-6h, step 20s, refresh 30s for 30 simulated minutes")
    print(f"  without cache: {without['upstream_requests']:.0f} upstream requests, "
          f"{without['fetched_samples']:.0f} samples fetched")  # fmt: skip
    print(f"  with cache:    {with_cache['upstream_requests']:.0f} upstream requests, "
          f"{with_cache['fetched_samples']:.0f} samples fetched")  # fmt: skip
    assert with_cache["served_samples"] == without["served_samples"]
    ratio = with_cache["fetched_samples"] / without["fetched_samples"]
    print(f"  ratio: requests {with_cache['upstream_requests'] / without['upstream_requests']:.3f}, "
          f"samples {ratio:.4f} (target <= 0.05)")  # fmt: skip
    per_sample = with_cache["memory_bytes"] / max(1, with_cache["extent_samples"])
    print(f"  memory tier: {with_cache['memory_bytes']:.0f} bytes for {with_cache['extent_samples']:.0f} "
          f"samples in extents ({per_sample:.1f} bytes/sample, whole-response entries included)")  # fmt: skip

    bound = 512 * 1024
    peak, entries = asyncio.run(flood(prom.url, prom.data_end - 1800, bound, 400))
    print(f"## flood: 400 distinct 1h queries into a {bound} byte tier: peak {peak} bytes, "
          f"{entries} entries kept, bound {'holds' if peak <= bound else 'BROKEN'}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only-hits", action="store_true", help="only the cache-hit throughput part")
    args = parser.parse_args()
    began = time.monotonic()
    prom = start_prometheus(Path(tempfile.mkdtemp(prefix="bench-cache-")), duration=RANGE + DURATION + 1800)
    try:
        if not args.only_hits:
            _savings(prom)
        hits = hit_throughput(prom.url, int(prom.data_end) // STEP * STEP - 3600, args.seconds, args.rounds)
        print("## cache hit, 16 clients (wrk, gzip), 6h query_range, "
              f"{hits['body_bytes']} byte gzip body")  # fmt: skip
        print(f"  bare Starlette: {hits['bare_rps']:.0f} req/s, p50 {hits['bare_p50_ms']:.2f} ms")
        print(f"  gateway hit:    {hits['gateway_rps']:.0f} req/s, p50 {hits['gateway_p50_ms']:.2f} ms")
        print(f"  ratio: {hits['gateway_rps'] / hits['bare_rps']:.2f} of bare (target >= 0.5, p50 < 1 ms)")
    finally:
        prom.stop()
    print(f"(bench ran {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()
