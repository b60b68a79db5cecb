"""Cost of validating a new query: the gateway's PromQL core (Prometheus's grammar in Python, then
the canonical print that goes upstream and into cache keys) against promql-parser (Rust), which
it replaced. Paid once per distinct raw request (the validation memo serves repeats).

    .venv/bin/python bench/bench_promql.py
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import promql_parser

from gateway.promql import PromQLError, parse_canonical, parse_query, print_expr
from gateway.promql.parser import parse

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "promql-compliance" / "queries.jsonl"
CASES = {
    "small (69 B)": 'sum by (job) (rate(http_requests_total{job="a",path=~"/api/.*"}[5m]))',
    "mixin-like (324 B)": (
        'sum by (namespace, pod) (rate(container_cpu_usage_seconds_total{job="kubelet", '
        'metrics_path="/metrics/cadvisor", image!=""}[5m])) / on (namespace, pod) group_left '
        'sum by (namespace, pod) (kube_pod_container_resource_requests{job="kube-state-metrics", '
        'resource="cpu"}) * 100 > 80 and on(pod) (time() - kube_pod_created > 600)'
    ),
    "Grafana variable (8 KB regex)": 'count(up{instance=~"'
    + "|".join(f"host-{i}.example.com:9100" for i in range(320))
    + '|.+"})',
    "512 operators (maximal)": " + ".join(['up{job="x"}'] * 512),
}


def _time(fn: Callable[[], object], budget: float = 0.5) -> float:
    runs = []
    for _ in range(5):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < budget / 5:
            fn()
            n += 1
        runs.append((time.perf_counter() - start) / n)
    return statistics.median(runs)


def _ours(text: str) -> None:
    print_expr(parse(text))


def _ours_uncached(text: str) -> None:
    print_expr(parse(text))


def main() -> None:
    print(f"{'query':32} {'promql-parser':>14} {'gateway.promql':>15} {'ratio':>6}")
    for name, text in CASES.items():
        theirs = _time(lambda t=text: promql_parser.parse(t))
        ours = _time(lambda t=text: _ours(t))
        print(f"{name:32} {theirs * 1e6:11.1f} µs {ours * 1e6:12.1f} µs {ours / theirs:6.1f}")
    text = CASES["mixin-like (324 B)"]
    ours_new = _time(lambda: _ours_uncached(text))
    parse_query(text)
    ours_again = _time(lambda: parse_canonical(text))
    print(
        f"{'mixin-like, text seen before':32} {'':>14} {ours_again * 1e6:12.1f} µs   (parse memo; {ours_new * 1e6:.0f} µs without)"
    )
    corpus = [json.loads(line)["query"] for line in CORPUS.read_text().splitlines() if line.strip()]
    valid = []
    for text in corpus:
        try:
            parse_query(text)
            promql_parser.parse(text)
            valid.append(text)
        except (PromQLError, ValueError):
            pass
    theirs = _time(lambda: [promql_parser.parse(t) for t in valid], 2.0) / len(valid)
    ours = _time(lambda: [_ours(t) for t in valid], 2.0) / len(valid)
    name = f"compliance corpus ({len(valid)}, mean)"
    print(f"{name:32} {theirs * 1e6:11.1f} µs {ours * 1e6:12.1f} µs {ours / theirs:6.1f}")


if __name__ == "__main__":
    main()
