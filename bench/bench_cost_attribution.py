"""The attribution check at dashboard scale (issue 18): Grafana-shaped traffic from several
dashboards, panels and users through `serve --workers N` (2 unless said; the results cache on, no Redis), with a
proxy between the gateway and Prometheus that records what Prometheus processed for each query
(`totalQueryableSamples`, what AMP bills). Requests go one at a time, so each proxy record
belongs to the request being answered. Printed per dimension: what the proxy saw charged, what
the gateway's cost API says, and the cache's savings against what each load costs alone
(Prometheus's stats for the same request).

    .venv/bin/python bench/bench_cost_attribution.py [--refreshes 6] [--users 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import orjson
from cache_savings import PANELS
from common import free_port, gateway_process, prometheus

STEP = 30
WINDOW = 3 * 3600
DASHBOARDS = {"nodes": PANELS[:3], "api": PANELS[2:6], "disks": PANELS[5:8]}


class MeteringProxy:
    """Forwards to Prometheus as it is asked; notes each query's samples processed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.samples: list[int] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                path = urlsplit(self.path).path
                answer = httpx.post(
                    proxy.upstream + path,
                    content=body,
                    headers={"content-type": "application/x-www-form-urlencoded"},
                    timeout=60,
                )
                if path.endswith(("/query", "/query_range")) and answer.status_code == 200:
                    stats = orjson.loads(answer.content)["data"].get("stats") or {}
                    proxy.samples.append(int(stats.get("samples", {}).get("totalQueryableSamples", 0)))
                self.send_response(answer.status_code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--refreshes", type=int, default=6)
    parser.add_argument("--users", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with prometheus(WINDOW + 2 * 3600) as prom:
        proxy = MeteringProxy(prom.url)
        env = {
            "GATEWAY_UPSTREAM_URL": proxy.url,
            "GATEWAY_SIGV4": "false",
            "GATEWAY_WORKERS": str(args.workers),
        }
        first_end = (int(prom.data_end) - 1200) // STEP * STEP - args.refreshes * STEP
        loads: list[tuple[dict[str, str], dict[str, str], int]] = []  # (form, who, charged)
        with gateway_process(env) as gateway, httpx.Client(timeout=60) as client:
            started = time.perf_counter()
            for refresh in range(args.refreshes):
                end = first_end + refresh * STEP
                for user in range(args.users):
                    for uid, queries in DASHBOARDS.items():
                        for panel, query in enumerate(queries, 1):
                            form = {
                                "query": query,
                                "start": str(end - WINDOW),
                                "end": str(end),
                                "step": str(STEP),
                            }
                            who = {"dashboard": uid, "panel": f"{uid}/{panel}", "user": f"user{user}"}
                            headers = {
                                "X-Dashboard-Uid": uid,
                                "X-Panel-Id": str(panel),
                                "X-Grafana-User": who["user"],
                            }
                            before = len(proxy.samples)
                            answer = client.post(
                                f"{gateway.url}/api/v1/query_range", data=form, headers=headers
                            )
                            assert answer.status_code == 200, answer.text
                            loads.append((form, who, sum(proxy.samples[before:])))
            elapsed = time.perf_counter() - started
            time.sleep(2)  # every worker's charges written (each writes within a second)
            fresh = [_fresh(client, prom.url, form) for form, _, _ in loads]
            print(f"{len(loads)} loads in {elapsed:.1f}s; {len(proxy.samples)} upstream queries")
            print(
                "| by | names | billed (proxy) | counted (gateway) | equal | saved | billed + saved = alone |"
            )
            print("|---|---|---|---|---|---|---|")
            for by in ("dashboard", "panel", "user"):
                billed: Counter[str] = Counter()
                alone: Counter[str] = Counter()
                for (_, who, charged), cost in zip(loads, fresh, strict=True):
                    billed[who[by]] += charged
                    alone[who[by]] += cost
                rows = _rows(client, gateway.url, by)
                counted = {k: s for k, (s, _) in rows.items()}
                saved = {k: v for k, (_, v) in rows.items()}
                whole = all(counted.get(k, 0) + saved.get(k, 0) == alone[k] for k in alone)
                print(
                    f"| {by} | {len(billed)} | {sum(billed.values()):,} | {sum(counted.values()):,} | "
                    f"{'yes' if _nonzero(counted) == _nonzero(billed) else 'NO'} | "
                    f"{sum(saved.values()):,} | {'yes' if whole else 'NO'} |"
                )
            total = sum(fresh)
            print(
                f"without the cache AMP would have processed {total:,}; it processed {sum(proxy.samples):,} "
                f"({sum(proxy.samples) / total:.2%})"
            )


def _nonzero(totals: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in totals.items() if v}


def _fresh(client: httpx.Client, prom_url: str, form: dict[str, str]) -> int:
    answer = client.post(f"{prom_url}/api/v1/query_range", data={**form, "stats": "all"}).json()
    return int(answer["data"]["stats"]["samples"]["totalQueryableSamples"])


def _rows(client: httpx.Client, url: str, by: str) -> dict[str, tuple[int, int]]:
    answer = client.get(f"{url}/api/v1/gateway/cost", params={"by": by, "range": "24h"}).json()
    return {r["key"]: (r["samples"], r["saved_samples"]) for r in answer["data"]["rows"]}


if __name__ == "__main__":
    main()
