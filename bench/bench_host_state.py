"""What sharing state through the host's store (pipeline/host.py, issue 17) costs a request, in
process (no HTTP, no upstream): each stage alone, in front of a fake next handler, with its
state in this process only (`local`, what each worker had before) and in the host's store
(`host`, what the workers of one serve now share), same run. CPU time per request
(process_time), best of 3 rounds:

- rate limit:        RateLimiter.admit for a principal with a rate (every request);
- principal slots:   the stage for a principal with max_concurrency (every request, hits too);
- coalesce + slots:  the coalescing and workspace-slot stages in front of the upstream, distinct
                     requests (every cache miss: a fetch nobody else waits for);
- failed sign-in:    a wrong password's check and count (Authenticator, per address and name).

    .venv/bin/python bench/bench_host_state.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import tempfile
import time
from collections.abc import Awaitable, Callable

import uvloop
from common import ROOT  # noqa: F401  (puts tests/ on the path)
from starlette.datastructures import Headers
from support.stages import FakeUpstream, request

from gateway.config import AuthSettings, Limits, Principal, Rate, UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.authenticate import Authenticator
from gateway.pipeline.coalesce import coalescing
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer
from gateway.pipeline.rate import RateLimiter
from gateway.pipeline.slots import principal_slots, workspace_slots

BODY = os.urandom(52_000).hex().encode()  # 104 KB, bench_shared_state.py's answer size
LIMITED = Principal(
    name="team", limits=Limits(rate=Rate(per_second=1e9, burst=1e9), max_concurrency=8, queue_timeout=5)
)


def cases(host: HostStore | None) -> dict[str, Callable[[int], Awaitable[None]]]:
    limiter = RateLimiter(Metrics(), host=host)
    upstream = FakeUpstream(Answer(BODY))
    slotted = principal_slots(Metrics(), host=host)(upstream)
    fetch = coalescing(lambda: None, host=host)(
        workspace_slots(UpstreamSettings(), Metrics(), host=host)(upstream)
    )
    auth = Authenticator(
        AuthSettings(enabled=True, failures_per_address=10**9, failures_per_principal=10**9),
        Metrics(),
        host=host,
    )
    wrong = Headers({"authorization": "Basic " + base64.b64encode(b"someone:wrong").decode()})
    limited = request(principal=LIMITED)

    async def rate(i: int) -> None:
        await limiter.admit(LIMITED)

    async def principal(i: int) -> None:
        await slotted(limited)

    async def coalesce(i: int) -> None:
        upstream.requests.clear()
        await fetch(request(params=(("query", f"q-{i}-{time.perf_counter()}"),)))

    async def sign_in(i: int) -> None:
        with contextlib.suppress(GatewayError):  # the 401
            await auth.authenticate(wrong, f"192.0.2.{i % 250}")

    return {
        "rate limit": rate,
        "principal slots": principal,
        "coalesce + slots": coalesce,
        "failed sign-in": sign_in,
    }


async def measure(call: Callable[[int], Awaitable[None]], count: int) -> float:
    for i in range(200):  # warm up
        await call(i)
    cpu = time.process_time()
    for i in range(count):
        await call(i)
    return (time.process_time() - cpu) / count * 1e6


async def main(count: int) -> None:
    store = HostStore(tempfile.mkdtemp(prefix="bench-host-state-"), 64 << 20)
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for _ in range(3):
            for where, host in (("local", None), ("host", store)):
                for name, call in cases(host).items():
                    results.setdefault(name, {}).setdefault(where, []).append(await measure(call, count))
    finally:
        store.close()
    print(f"{count} requests per stage, CPU µs per request, best of 3 rounds:")
    print("| stage | local (per process) | host's store | added |")
    print("|---|---|---|---|")
    for name, by_where in results.items():
        local, host_cost = min(by_where["local"]), min(by_where["host"])
        print(f"| {name} | {local:.1f} | {host_cost:.1f} | +{host_cost - local:.1f} µs |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20_000)
    uvloop.run(main(parser.parse_args().requests))
