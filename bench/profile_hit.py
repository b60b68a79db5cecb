"""In-process cost of one results-cache hit: the ASGI app called directly, no server, no sockets.

Builds the gateway as `bench_cache.py` runs it (memory cache, access log on but at WARNING, as
under GATEWAY_LOG_LEVEL=warning), warms one 6 h query_range, then times N hits (median of
several runs) and prints a cProfile of N more.

    .venv/bin/python bench/profile_hit.py [--n 3000] [--runs 5] [--rows 30] [--no-profile]
                                          [--plain] [--no-memo]

`--plain`: a client without Accept-Encoding (curl), served the cache's plain copy.
`--no-memo`: the validation memo emptied before every hit, to measure what it saves.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import logging
import os
import pstats
import statistics
import time
from typing import Any
from urllib.parse import urlencode

from common import prometheus

from gateway.app import create_app
from gateway.config import build_settings

QUERY = 'sum by (mode) (rate(demo_cpu_usage_seconds_total{job="demo"}[5m]))'


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--plain", action="store_true")
    parser.add_argument("--no-memo", action="store_true")
    args = parser.parse_args()
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    logging.getLogger("gateway.access").setLevel(logging.WARNING)
    with prometheus() as prom:
        end = int(prom.data_end)
        query = urlencode({"query": QUERY, "start": end - 6 * 3600, "end": end, "step": 20}).encode()
        env = {"GATEWAY_UPSTREAM_URL": prom.url, "GATEWAY_SIGV4": "false", "GATEWAY_CACHE": "memory"}
        app = create_app(build_settings({"access_log": True}, env))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/api/v1/query_range",
            "raw_path": b"/api/v1/query_range",
            "query_string": query,
            "root_path": "",
            "headers": [(b"host", b"x")] + ([] if args.plain else [(b"accept-encoding", b"gzip")]),
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        memo = app.state.gateway.validator.memo

        async def call() -> list[dict[str, Any]]:
            messages: list[dict[str, Any]] = []
            if args.no_memo:
                memo.clear()

            async def send(message: dict[str, Any]) -> None:
                messages.append(message)

            await app(dict(scope), receive, send)
            return messages

        async def run() -> None:
            async with app.router.lifespan_context(app):
                await call()
                start = (await call())[0]
                print("status", start["status"], "x-cache", dict(start["headers"]).get(b"x-cache"))
                timings = []
                for _ in range(args.runs):
                    began = time.perf_counter()
                    for _ in range(args.n):
                        await call()
                    timings.append((time.perf_counter() - began) / args.n * 1e6)
                print(
                    f"per hit: median {statistics.median(timings):.1f} µs ({', '.join(f'{t:.1f}' for t in timings)})"
                )
                if args.no_profile:
                    return
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(args.n):
                    await call()
                profile.disable()
                pstats.Stats(profile).sort_stats("tottime").print_stats(args.rows)

        asyncio.run(run())


if __name__ == "__main__":
    main()
