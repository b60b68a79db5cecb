"""Results cache, in-process parts of `bench_cache.py`: upstream work saved, memory per sample.

1. Grafana dashboard simulation: 8 panels, `now-6h`, step 20 s (Grafana's interval for a
   1,000-pixel panel: 6 h / 1,000 = 21.6 s, rounded to 20 s), refresh every 30 s for 30
   simulated minutes (61 refreshes). Upstream requests and samples fetched, cache on versus
   off, against a real backfilled Prometheus; the cache's clock is the simulated one.
2. Memory per cached sample, and the byte bound under a flood of distinct queries.

These parts build the gateway in-process (`create_app`) because they need what no public
interface offers: a simulated clock for the cache, and the samples held in its extents. The
cache-hit throughput part of `bench_cache.py` does not import this module. Memory figures come
from the gateway's own `gateway_cache_memory_bytes` and `gateway_cache_host_bytes` gauges. `_build` takes the clock as
`create_app(settings, clock=...)` where the gateway accepts one, else it sets the cache stage's
`clock` attribute (as the gateway of 61d1761 has it).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

import httpx

from gateway.app import create_app
from gateway.config import build_settings
from gateway.pipeline.cache.matrix import load_extent

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


def _build(settings: Any, clock: Callable[[], float]) -> tuple[Any, Any]:
    """The app, and its results-cache stage (None when the cache is off)."""
    if "clock" in inspect.signature(create_app).parameters:
        app = create_app(settings, clock=clock)
        return app, app.state.gateway.cache
    app = create_app(settings)
    if app.state.cache is not None:
        app.state.cache.clock = clock
    return app, app.state.cache


def _memory_bytes(app: Any) -> float:
    registry = app.state.metrics.registry
    return sum(
        registry.get_sample_value(name) or 0.0
        for name in ("gateway_cache_memory_bytes", "gateway_cache_host_bytes")
    )


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
    now = sim_start
    app, cache = _build(settings, lambda: now)
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
        if cache is not None:
            fetched = registry.get_sample_value("gateway_cache_samples_total", {"source": "upstream"})
            result["fetched_samples"] = fetched or 0.0
            store = cache.store
            extent_samples = 0
            for key in list(store.memory._cache):
                entry = store.get_memory(key)
                if entry is not None and entry.kind == 2:
                    extent_samples += load_extent(entry.data())[1].samples()
            result["memory_bytes"] = _memory_bytes(app)
            result["extent_samples"] = extent_samples
        else:
            result["fetched_samples"] = served
    return result


async def flood(prom_url: str, end: float, bound: int, queries: int) -> tuple[int, int]:
    settings = build_settings(
        {"upstream_url": prom_url, "sigv4": False, "cache": {"mode": "memory", "memory_bytes": bound}},
        {},
    )
    app, cache = _build(settings, time.time)
    peak = 0.0
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
                peak = max(peak, _memory_bytes(app))
    return int(peak), len(cache.store.memory)


def savings(prom: Any) -> None:
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
