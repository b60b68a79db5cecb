"""Cache-hit throughput of this gateway against an earlier checkout's, in the same run, both
under `serve --workers 2`: what the bounded HTTP edge (gateway/edge.py) costs, as ratios.

    git worktree add /tmp/pre16 935a67e   # main before issue 16
    .venv/bin/python bench/bench_edge.py --before /tmp/pre16 [--seconds 6] [--rounds 4]

Both gateways run at once (memory cache), warmed until both workers answer hits; wrk (16
keep-alive connections, one thread, gzip as Grafana asks) alternates between them, round by
round, so that the machine's drift falls on both; the workers' CPU time per hit is steadier than
the rate on a shared 2-core machine. Every answer is checked to be a hit equal to Prometheus's
bytes.
"""

from __future__ import annotations

import argparse
import gzip
import statistics
from pathlib import Path

import httpx
from bench_cache import HIT_QUERY, RANGE, STEP, cache_results, fetch_raw, wrk_get
from common import ROOT, cpu_seconds, gateway_process, prometheus


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True, help="an earlier checkout")
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    with prometheus(RANGE + 1800) as prom:
        end = int(prom.data_end) - 600
        params = httpx.QueryParams({"query": HIT_QUERY, "start": end - RANGE, "end": end, "step": STEP})
        expected = fetch_raw(f"{prom.url}/api/v1/query_range?{params}", "plain").body
        env = {
            "GATEWAY_UPSTREAM_URL": prom.url,
            "GATEWAY_SIGV4": "false",
            "GATEWAY_CACHE": "memory",
            "GATEWAY_WORKERS": "2",
        }
        with gateway_process(env, ROOT) as after, gateway_process(env, args.before) as before:
            gateways = {"after": after.url, "before": before.url}
            for url in gateways.values():
                for _ in range(40):  # each worker has its own memory tier
                    fetch_raw(f"{url}/api/v1/query_range?{params}", "gzip")
                body = fetch_raw(f"{url}/api/v1/query_range?{params}", "gzip").body
                assert gzip.decompress(body) == expected, "not Prometheus's answer"
                wrk_get(f"{url}/api/v1/query_range?{params}", 2, "gzip")  # warm-up
            runs: dict[str, list[float]] = {name: [] for name in gateways}
            cpu: dict[str, list[float]] = {name: [] for name in gateways}  # µs per request
            pids = {"after": after.pid, "before": before.pid}
            for i in range(args.rounds):
                order = ("after", "before") if i % 2 == 0 else ("before", "after")
                for name in order:
                    url = gateways[name]
                    seen = cache_results(url)
                    began = cpu_seconds(pids[name])
                    run = wrk_get(f"{url}/api/v1/query_range?{params}", args.seconds, "gzip")
                    used = cpu_seconds(pids[name]) - began
                    now = cache_results(url)
                    hits = now.get("hit", 0.0) - seen.get("hit", 0.0)
                    assert hits >= run.requests and sum(now.values()) - sum(seen.values()) == hits
                    runs[name].append(run.requests_per_second)
                    cpu[name].append(used / run.requests * 1e6)
                print(f"  round {i + 1}: after {runs['after'][-1]:.0f} req/s, before {runs['before'][-1]:.0f} req/s",
                      flush=True)  # fmt: skip
    after_rps, before_rps = statistics.median(runs["after"]), statistics.median(runs["before"])
    after_cpu, before_cpu = statistics.median(cpu["after"]), statistics.median(cpu["before"])
    print()
    print(f"cache hits, gzip, 16 connections, serve --workers 2, median of {args.rounds} rounds:")
    print("| gateway | req/s | / before | CPU µs per hit (workers) | / before |")
    print("|---|---|---|---|---|")
    print(f"| before ({args.before}) | {before_rps:.0f} | 1.00 | {before_cpu:.0f} | 1.00 |")
    print(
        f"| after | {after_rps:.0f} | {after_rps / before_rps:.2f} | {after_cpu:.0f} | {after_cpu / before_cpu:.2f} |"
    )


if __name__ == "__main__":
    main()
