"""Pass-through (no cache): the gateway versus the same upstream queried directly, in one run.

A Grafana-like query_range (POST form, 6 h at the step Grafana picks for a 1,000-pixel panel,
3 series of 1,081 points, about 104 KB of JSON; Prometheus is backfilled with 7 h so that the
whole range has data), 16 concurrent keep-alive connections (wrk, one thread per connection),
alternating direct and gateway rounds; the gateway runs as `python -m gateway serve`
(`common.gateway_process`). It signs every request with SigV4 (dummy keys; Prometheus ignores
the signature), so the figure includes validation, PromQL parsing, signing and the second HTTP
hop. A 1-connection run shows the latency the gateway adds when nothing queues.

Each of the 16 connections sends its own request, the window shifted by k steps of 20 s: the
same work for Prometheus, but no two requests in flight are identical, so the gateway cannot
merge them (it coalesces identical concurrent requests); the script asserts from the gateway's
/metrics that it did not. The gateway's answer is checked against the direct one first.

Targets (issue 10): throughput at 16 connections >= 0.85 of direct; p50 added at 1 connection
<= 1 ms.

`--redis` adds, in the same run, the same gateway with its state on a real Redis (cache off):
each upstream fetch then also takes and lets go a coalescing lock and an upstream slot there.

    .venv/bin/python bench/bench_passthrough.py [--seconds 10] [--rounds 3] [--redis]
"""

from __future__ import annotations

import argparse
import contextlib
import re
import statistics
import tempfile
from pathlib import Path
from urllib.parse import urlencode

import httpx
from common import WrkResult, cpu_seconds, free_port, gateway_package, gateway_process, prometheus, wrk
from support.redis_server import RedisServer

CONNECTIONS = 16
STEP = 20  # Grafana: 6 h / 1,000 px -> 20 s
RATIO_TARGET = 0.85
ADDED_P50_TARGET_MS = 1.0
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _mark(ok: bool) -> str:
    return "✔" if ok else "✘"


def coalesced(gateway_url: str) -> float:
    """Requests the gateway answered by joining an identical one in flight (its /metrics)."""
    text = httpx.get(f"{gateway_url}/metrics", timeout=10).text
    found = re.search(r"^gateway_cache_coalesced_total ([\d.e+]+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis", action="store_true", help="also a gateway with its state on a real Redis")
    args = parser.parse_args()
    print(f"gateway package: {gateway_package()}")

    with prometheus(duration=7 * 3600) as prom:
        end = int(prom.data_end)
        start = end - 6 * 3600
        # one body per connection, no two identical (see the docstring)
        bodies = [
            urlencode({
                "query": 'sum by (path) (rate(http_requests_total{job="recommender"}[1m]))',
                "start": start - k * STEP, "end": end - k * STEP, "step": STEP, "timeout": "2m",
            })
            for k in range(CONNECTIONS)
        ]  # fmt: skip
        body = bodies[0]
        env = {"GATEWAY_UPSTREAM_URL": prom.url, "GATEWAY_REGION": "us-east-1", "GATEWAY_CACHE": "off"}
        with contextlib.ExitStack() as stack:
            gateways = {"gateway": stack.enter_context(gateway_process(env))}
            if args.redis:
                # The same gateway with its state on Redis: each upstream fetch takes and lets go
                # a coalescing lock and an upstream slot there (cache off: no entries).
                redis = RedisServer(free_port(), Path(tempfile.mkdtemp(prefix="bench-redis-"))).start()
                stack.callback(redis.stop)
                shared_env = {**env, "GATEWAY_REDIS_URL": redis.url}
                gateways["gateway+redis"] = stack.enter_context(gateway_process(shared_env))
            direct_url = f"{prom.url}/api/v1/query_range"
            direct_answer = httpx.post(direct_url, content=body, headers=FORM, timeout=30)
            merged = {}
            for name, gateway in gateways.items():
                via_answer = httpx.post(
                    f"{gateway.url}/api/v1/query_range", content=body, headers=FORM, timeout=30
                )
                assert direct_answer.status_code == via_answer.status_code == 200, via_answer.text[:500]
                assert via_answer.json() == direct_answer.json(), f"the {name}'s answer differs from direct"
                same_bytes = via_answer.content == direct_answer.content
                print(f"query_range answer: {len(direct_answer.content):,} bytes of JSON, "
                      f"{len(direct_answer.json()['data']['result'])} series; {name}'s "
                      f"{'identical byte for byte' if same_bytes else 'same JSON, different bytes'}")  # fmt: skip
                merged[name] = coalesced(gateway.url)
                wrk(f"{gateway.url}/api/v1/query_range", bodies, seconds=2)  # warm up
            wrk(direct_url, bodies, seconds=2)
            runs: dict[str, list[WrkResult]] = {"direct": [], "direct-1": []}
            cpu_ms_per_request: dict[str, list[float]] = {}
            for name in gateways:
                runs[name], runs[f"{name}-1"], cpu_ms_per_request[name] = [], [], []
            for _ in range(args.rounds):
                runs["direct"].append(wrk(direct_url, bodies, seconds=args.seconds))
                runs["direct-1"].append(
                    wrk(direct_url, body, seconds=args.seconds // 2, connections=1, threads=1)
                )
                for name, gateway in gateways.items():
                    via_url = f"{gateway.url}/api/v1/query_range"
                    before = cpu_seconds(gateway.pid)
                    result = wrk(via_url, bodies, seconds=args.seconds)
                    cpu_ms_per_request[name].append(
                        (cpu_seconds(gateway.pid) - before)
                        * 1000
                        / (result.requests_per_second * args.seconds)
                    )
                    runs[name].append(result)
                    runs[f"{name}-1"].append(
                        wrk(via_url, body, seconds=args.seconds // 2, connections=1, threads=1)
                    )
            # wrk leaves up to 16 requests in flight when a run ends; the gateway finishes them,
            # and the next run's identical first requests may join them. Nothing else may merge.
            for name, gateway in gateways.items():
                extra = coalesced(gateway.url) - merged[name]
                boundaries = 2 * args.rounds + 1
                assert extra <= CONNECTIONS * boundaries, (
                    f"{extra:.0f} coalesced: not a pass-through measurement"
                )

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    print(f"{'':32}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    for name in runs:
        label = f"{name.removesuffix('-1')}, {'1 connection' if name.endswith('-1') else '16 connections'}"
        print(f"{label:32}{med(name, 'requests_per_second'):>9.0f}{med(name, 'p50_ms'):>9.2f}"
              f"{med(name, 'p90_ms'):>9.2f}{med(name, 'p99_ms'):>9.2f}{sum(r.errors for r in runs[name]):>9}")  # fmt: skip
    for name in cpu_ms_per_request:
        ratio = med(name, "requests_per_second") / med("direct", "requests_per_second")
        added_16 = med(name, "p50_ms") - med("direct", "p50_ms")
        added_1 = med(f"{name}-1", "p50_ms") - med("direct-1", "p50_ms")
        print(f"{name}: throughput ratio at 16 connections ({name} / direct): {ratio:.2f}   "
              f"(target >= {RATIO_TARGET} {_mark(ratio >= RATIO_TARGET)})")  # fmt: skip
        print(f"{name}: p50 added at 1 connection ({name} - direct): {added_1:.2f} ms   "
              f"(target <= {ADDED_P50_TARGET_MS:g} ms {_mark(added_1 <= ADDED_P50_TARGET_MS)})")  # fmt: skip
        print(
            f"{name}: p50 added at 16 connections: {added_16:.2f} ms (no target: mostly queueing on a busy machine)"
        )
        print(f"{name}: CPU per request: {statistics.median(cpu_ms_per_request[name]):.2f} ms")


if __name__ == "__main__":
    main()
