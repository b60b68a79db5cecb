"""Failed basic sign-ins: the time one takes for a configured user name and for an unknown one.

In process, the authenticate stage alone (`Authenticator.authenticate`), with the throttle's
limits out of reach so that every attempt goes the whole way (a 401); the two kinds interleaved
at random, each from its own address, 5 principals configured. The tests check the answers are
the same; this measures whether the time tells them apart.

    .venv/bin/python bench/bench_sign_in.py [--attempts 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import random
import statistics
import time

import common  # noqa: F401  # the tests' support on the path
from starlette.datastructures import Headers

from gateway.config import build_settings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.authenticate import Authenticator


def _basic(user: str, password: str) -> Headers:
    return Headers({"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()})


async def run(attempts: int) -> dict[str, list[float]]:
    principals = [
        {
            "name": f"team-{i}",
            "username": f"grafana-{i}",
            "password_sha256": hashlib.sha256(f"password-{i}".encode()).hexdigest(),
            "workspaces": ["*"],
        }
        for i in range(5)
    ]
    raw = {
        "workspaces": [{"id": "ws-1", "url": "http://127.0.0.1:9/workspaces/ws-1", "region": "us-east-1"}],
        "auth": {
            "principals": principals,
            "failed_sign_ins": {"per_address": 10**9, "per_principal": 10**9},
        },
    }
    authenticator = Authenticator(build_settings(raw, {}).auth, Metrics())
    kinds = ["known", "unknown"] * attempts
    random.Random(16).shuffle(kinds)
    names = {"known": "grafana-3", "unknown": "grafana-7"}  # same length, one configured
    times: dict[str, list[float]] = {"known": [], "unknown": []}
    for i, kind in enumerate(kinds):
        headers = _basic(names[kind], f"wrong-{i % 1000:04d}")
        address = f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"
        started = time.perf_counter_ns()
        try:
            await authenticator.authenticate(headers, address)
        except GatewayError as err:
            assert err.status == 401
        times[kind].append((time.perf_counter_ns() - started) / 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--attempts", type=int, default=20000)
    args = parser.parse_args()
    times = asyncio.run(run(args.attempts))
    print("| user name | attempts | mean µs | p50 µs | p90 µs | p99 µs |")
    print("|---|---|---|---|---|---|")
    for kind, values in times.items():
        ordered = sorted(values)

        def at(q: float, ordered: list[float] = ordered) -> float:
            return ordered[int(q * (len(ordered) - 1))]

        print(
            f"| {kind} | {len(values)} | {statistics.fmean(values):.1f} | {at(0.5):.1f} "
            f"| {at(0.9):.1f} | {at(0.99):.1f} |"
        )


if __name__ == "__main__":
    main()
