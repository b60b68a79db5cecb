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

    .venv/bin/python bench/bench_passthrough.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
from urllib.parse import urlencode

import httpx
from common import WrkResult, cpu_seconds, gateway_package, gateway_process, prometheus, wrk

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
        with gateway_process(env) as gateway:
            direct_url, via_url = f"{prom.url}/api/v1/query_range", f"{gateway.url}/api/v1/query_range"
            direct_answer = httpx.post(direct_url, content=body, headers=FORM, timeout=30)
            via_answer = httpx.post(via_url, content=body, headers=FORM, timeout=30)
            assert direct_answer.status_code == via_answer.status_code == 200, via_answer.text[:500]
            assert via_answer.json() == direct_answer.json(), "the gateway's answer differs from direct"
            same_bytes = via_answer.content == direct_answer.content
            print(f"query_range answer: {len(direct_answer.content):,} bytes of JSON, "
                  f"{len(direct_answer.json()['data']['result'])} series; gateway's "
                  f"{'identical byte for byte' if same_bytes else 'same JSON, different bytes'}")  # fmt: skip
            merged = coalesced(gateway.url)
            wrk(direct_url, bodies, seconds=2)  # warm up both
            wrk(via_url, bodies, seconds=2)
            runs: dict[str, list[WrkResult]] = {"direct": [], "gateway": [], "direct-1": [], "gateway-1": []}
            cpu_ms_per_request = []
            for _ in range(args.rounds):
                runs["direct"].append(wrk(direct_url, bodies, seconds=args.seconds))
                before = cpu_seconds(gateway.pid)
                result = wrk(via_url, bodies, seconds=args.seconds)
                cpu_ms_per_request.append(
                    (cpu_seconds(gateway.pid) - before) * 1000 / (result.requests_per_second * args.seconds)
                )
                runs["gateway"].append(result)
                runs["direct-1"].append(
                    wrk(direct_url, body, seconds=args.seconds // 2, connections=1, threads=1)
                )
                runs["gateway-1"].append(
                    wrk(via_url, body, seconds=args.seconds // 2, connections=1, threads=1)
                )
            merged = coalesced(gateway.url) - merged
            assert merged == 0, f"{merged:.0f} requests coalesced: not a pass-through measurement"

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    print(f"{'':26}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    labels = {"direct": "direct, 16 connections", "gateway": "gateway, 16 connections",
              "direct-1": "direct, 1 connection", "gateway-1": "gateway, 1 connection"}  # fmt: skip
    for name, label in labels.items():
        print(f"{label:26}{med(name, 'requests_per_second'):>9.0f}{med(name, 'p50_ms'):>9.2f}"
              f"{med(name, 'p90_ms'):>9.2f}{med(name, 'p99_ms'):>9.2f}{sum(r.errors for r in runs[name]):>9}")  # fmt: skip
    ratio = med("gateway", "requests_per_second") / med("direct", "requests_per_second")
    added_16 = med("gateway", "p50_ms") - med("direct", "p50_ms")
    added_1 = med("gateway-1", "p50_ms") - med("direct-1", "p50_ms")
    print(f"throughput ratio at 16 connections (gateway / direct): {ratio:.2f}   "
          f"(target >= {RATIO_TARGET} {_mark(ratio >= RATIO_TARGET)})")  # fmt: skip
    print(f"p50 added at 1 connection (gateway - direct): {added_1:.2f} ms   "
          f"(target <= {ADDED_P50_TARGET_MS:g} ms {_mark(added_1 <= ADDED_P50_TARGET_MS)})")  # fmt: skip
    print(f"p50 added at 16 connections: {added_16:.2f} ms (no target: mostly queueing on a busy machine)")
    print(f"gateway CPU per request: {statistics.median(cpu_ms_per_request):.2f} ms")


if __name__ == "__main__":
    main()
