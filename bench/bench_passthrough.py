"""Pass-through (no cache): the gateway versus the same upstream queried directly, in one run.

A Grafana-like query_range (POST form, 6 h at the step Grafana picks for a 1,000-pixel panel),
16 concurrent keep-alive clients (wrk), alternating direct and gateway rounds. The gateway signs
every request with SigV4 (dummy keys; Prometheus ignores the signature), so the figure includes
validation, PromQL parsing, signing and the second HTTP hop. A 1-client run shows the latency
the gateway adds when nothing queues.

    .venv/bin/python bench/bench_passthrough.py [--seconds 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
from urllib.parse import urlencode

from common import WrkResult, cpu_seconds, gateway_process, prometheus, wrk


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with prometheus() as prom:
        end = int(prom.data_end)
        start = end - 6 * 3600
        body = urlencode({
            "query": 'sum by (path) (rate(http_requests_total{job="recommender"}[1m]))',
            "start": start, "end": end, "step": 20, "timeout": "2m",  # Grafana: 6 h / 1,000 px -> 20 s
        })  # fmt: skip
        env = {"GATEWAY_UPSTREAM_URL": prom.url, "GATEWAY_REGION": "us-east-1", "GATEWAY_CACHE": "off"}
        with gateway_process(env) as gateway:
            direct_url, via_url = f"{prom.url}/api/v1/query_range", f"{gateway.url}/api/v1/query_range"
            wrk(direct_url, body, seconds=2)  # warm up both
            wrk(via_url, body, seconds=2)
            runs: dict[str, list[WrkResult]] = {"direct": [], "gateway": [], "direct-1": [], "gateway-1": []}
            cpu_ms_per_request = []
            for _ in range(args.rounds):
                runs["direct"].append(wrk(direct_url, body, seconds=args.seconds))
                before = cpu_seconds(gateway.pid)
                result = wrk(via_url, body, seconds=args.seconds)
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

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs[name])

    print(f"{'':26}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'non-2xx':>9}")
    labels = {"direct": "direct, 16 clients", "gateway": "gateway, 16 clients",
              "direct-1": "direct, 1 client", "gateway-1": "gateway, 1 client"}  # fmt: skip
    for name, label in labels.items():
        print(f"{label:26}{med(name, 'requests_per_second'):>9.0f}{med(name, 'p50_ms'):>9.2f}"
              f"{med(name, 'p90_ms'):>9.2f}{med(name, 'p99_ms'):>9.2f}{sum(r.errors for r in runs[name]):>9}")  # fmt: skip
    ratio = med("gateway", "requests_per_second") / med("direct", "requests_per_second")
    print(f"throughput ratio at 16 clients (gateway / direct): {ratio:.2f}   (target >= 0.50)")
    print(f"p50 added, 16 clients: {med('gateway', 'p50_ms') - med('direct', 'p50_ms'):.2f} ms;"
          f" 1 client: {med('gateway-1', 'p50_ms') - med('direct-1', 'p50_ms'):.2f} ms   (target <= 1 ms)")  # fmt: skip
    print(f"gateway CPU per request: {statistics.median(cpu_ms_per_request):.2f} ms")


if __name__ == "__main__":
    main()
