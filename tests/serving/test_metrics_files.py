"""/metrics under a real `serve --workers 2`: workers killed again and again leave their counts
in the totals (which never go down) and no files behind; every live worker's and the
supervisor's process figures are there, whichever worker answers."""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess, scraped
from support.testenv import AMP_REGION

REQUESTS = 'gateway_requests_total{code="200",endpoint="buildinfo",workspace="-"}'
DURATIONS = 'gateway_request_duration_seconds_count{endpoint="buildinfo"}'


@pytest.fixture
def gateway(
    fresh_amp: AmpStandin, tmp_path: Path, aws_env: dict[str, str]
) -> Iterator[tuple[GatewayProcess, Path]]:
    directory = tmp_path / "metrics"
    raw = {
        "workspaces": [{"id": "ws-test1", "url": fresh_amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "cache": {"mode": "off"},
        "access_log": False,
    }
    env = {**aws_env, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    process = GatewayProcess(raw, tmp_path, env, workers=2)
    try:
        yield process.start(), directory
    finally:
        process.stop()


def _eventually(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _pids_in(directory: Path) -> set[str]:
    return {
        re.sub(r"^.*_", "", name.removesuffix(".db"))
        for name in os.listdir(directory)
        if name.endswith(".db")
    }


def test_killed_workers_leave_their_counts_and_no_files(gateway: tuple[GatewayProcess, Path]) -> None:
    process, directory = gateway
    asked = 0
    seen = 0.0
    for _ in range(4):
        for _ in range(10):
            assert httpx.get(f"{process.url}/api/v1/status/buildinfo", timeout=10).status_code == 200
        asked += 10
        # (a scrape may be a second old: /metrics renders at most once a second per worker)
        _eventually(lambda n=asked: scraped(process.url).get(REQUESTS) == n, f"{asked} requests counted")
        victim = process.worker_pids()[0]
        os.kill(victim, signal.SIGKILL)
        _eventually(
            lambda pid=victim: len(process.worker_pids()) == 2 and str(pid) not in _pids_in(directory),
            "the dead worker replaced and its files merged",
        )
        values = scraped(process.url)
        # Counted once, never lost: a scrape during the merge never sees the worker twice or not at all.
        assert values.get(REQUESTS) == asked
        assert values[REQUESTS] >= seen
        seen = values[REQUESTS]
        assert values.get(DURATIONS, 0) >= asked  # histograms merged too (and /metrics' own)
        live = {str(pid) for pid in process.worker_pids()}
        assert _pids_in(directory) <= live | {"gone"}  # bounded: the live workers' and the totals
    assert seen == asked
    assert "Traceback" not in process.log.read_text()


def test_every_worker_and_the_supervisor_has_its_process_figures(
    gateway: tuple[GatewayProcess, Path],
) -> None:
    process, _ = gateway
    assert process.process is not None
    supervisor, workers = process.process.pid, set(process.worker_pids())

    def complete() -> bool:
        values = scraped(process.url)
        described = {
            (m[1], m[2])
            for key in values
            if (m := re.match(r'process_resident_memory_bytes\{pid="(\d+)",role="(\w+)"\}', key))
        }
        return described == {(str(supervisor), "supervisor"), *((str(pid), "worker") for pid in workers)}

    _eventually(complete, "process_* of the supervisor and both workers")
    values = scraped(process.url)
    assert any(key.startswith('process_cpu_seconds_total{pid="') for key in values)
    assert values.get('python_gc_collections_total{generation="0"}', 0) > 0
    assert any(key.startswith("gateway_build_info{") and value == 1.0 for key, value in values.items())
    assert any(key.startswith("python_info{") for key in values)
