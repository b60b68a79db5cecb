"""Floods against a real `serve` process with 2 workers and auth on (issue 16): /metrics scraped
by many clients at once, and one principal sending fresh heavy regexes. Through each, the probes
and another principal's cached query keep answering, no worker dies, and the workers' memory
stays within the documented budget."""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psutil
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.prometheus import PrometheusServer
from support.testenv import AMP_REGION

PROBE_TIMEOUT = 2.0  # generous: a stalled worker takes seconds; bench_attacks.py has the figures
TOKENS = {"flooder": "flooder-token-0123456789abcdef", "other": "other-token-0123456789abcdef"}
# The memos a worker may fill (README, "Sizing"): validation and parse 16 MiB each, analyses
# 8 MiB, compiled regexes 16 MiB; plus slack for the allocator.
MEMO_BUDGET = (16 + 16 + 8 + 16 + 40) << 20


def _raw(amp: AmpStandin) -> dict[str, Any]:
    return {
        "workspaces": [{"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "upstream": {"retry_base": "10ms"},
        "access_log": False,
        "auth": {
            "principals": [
                {
                    "name": name,
                    "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
                    "workspaces": ["*"],
                }
                for name, token in TOKENS.items()
            ]
        },
    }


def _as(name: str) -> dict[str, str]:
    return {"authorization": f"Bearer {TOKENS[name]}"}


def _watch(
    gateway: GatewayProcess, prometheus: PrometheusServer, flood: Callable[[threading.Event], None]
) -> tuple[list[int], dict[int, int], dict[int, int]]:
    """Runs `flood` for 4 s while probing /-/healthy and the other principal's cached query;
    (statuses seen, RSS at rest and at its highest by worker)."""
    small = {"query": "sum(demo_num_cpus)", "time": str(prometheus.data_end - 3600)}
    assert httpx.get(f"{gateway.url}/api/v1/query", params=small, headers=_as("other")).status_code == 200
    workers = gateway.worker_pids()
    rest = {pid: psutil.Process(pid).memory_info().rss for pid in workers}
    peak = dict(rest)
    statuses: list[int] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(base_url=gateway.url, timeout=PROBE_TIMEOUT) as client:
            while not stop.is_set():
                for path, params, headers in (
                    ("/-/healthy", None, None),
                    ("/api/v1/query", small, _as("other")),
                ):
                    try:
                        statuses.append(client.get(path, params=params, headers=headers).status_code)
                    except httpx.HTTPError:
                        statuses.append(599)
                for pid in workers:
                    with contextlib.suppress(psutil.Error):
                        peak[pid] = max(peak[pid], psutil.Process(pid).memory_info().rss)
                time.sleep(0.02)

    with concurrent.futures.ThreadPoolExecutor(9) as pool:
        prober = pool.submit(probe)
        floods = [pool.submit(flood, stop) for _ in range(8)]
        time.sleep(4)
        stop.set()
        for future in (prober, *floods):
            future.result()
    assert sorted(gateway.worker_pids()) == sorted(workers), "a worker died"
    return statuses, rest, peak


def test_a_metrics_flood_leaves_probes_and_queries_alone(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp), workers=2)
    scrapes: list[int] = []

    def flood(stop: threading.Event) -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                scrapes.append(client.get(f"{gateway.url}/metrics").status_code)

    statuses, rest, peak = _watch(gateway, prometheus, flood)
    assert statuses and set(statuses) == {200}, statuses
    assert len(scrapes) > 100 and set(scrapes) == {200}
    for pid in rest:
        assert peak[pid] - rest[pid] < 64 << 20


def test_fresh_heavy_regexes_from_one_principal_leave_the_others_alone(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp), workers=2)
    answers: list[int] = []

    def flood(stop: threading.Event) -> None:
        with httpx.Client(timeout=30, headers=_as("flooder")) as client:
            while not stop.is_set():  # each regex new: ~0.6 MiB of RE2 program, ~45 ms to compile
                query = f'count(up{{job=~"\\\\pL{{60}}{uuid.uuid4().hex}"}})'
                answers.append(
                    client.post(f"{gateway.url}/api/v1/format_query", data={"query": query}).status_code
                )

    statuses, rest, peak = _watch(gateway, prometheus, flood)
    assert statuses and set(statuses) == {200}, statuses
    assert len(answers) > 20 and set(answers) == {200}
    for pid in rest:
        assert peak[pid] - rest[pid] < MEMO_BUDGET, (pid, rest[pid], peak[pid])
