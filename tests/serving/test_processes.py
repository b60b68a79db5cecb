"""Several real gateway processes (`python -m gateway serve --workers N`), sharing one real Redis,
in front of the SigV4-checking AMP stand-in and the backfilled Prometheus: what replicas share,
what a supervisor does when a worker dies, and what SIGTERM does to a request in flight."""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from support.amp_standin import AmpStandin, unique_query
from support.certs import Authority, Pki, presented_serial
from support.gateway import GatewayProcess, scraped_value
from support.netutil import free_port
from support.prometheus import PrometheusServer
from support.redis_server import RedisServer
from support.testenv import AMP_REGION

TOKEN = "process-team-token-0123456789"


def _raw(amp: AmpStandin, redis_url: str | None, **extra: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "workspaces": [{"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "cache": {"mode": "off"},
        "upstream": {"retry_base": "10ms", "timeout": "20s"},
        "access_log": False,
        **extra,
    }
    if redis_url:
        raw["cache"]["redis_url"] = redis_url
    return raw


def test_identical_cold_requests_over_processes_cost_one_upstream_fetch(
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    redis_server: RedisServer,
    start: Callable[..., GatewayProcess],
) -> None:
    # The cache is off: only coalescing can save the fetches. Two processes, two workers each.
    gateways = [start(_raw(fresh_amp, redis_server.url), workers=2) for _ in range(2)]
    query = unique_query()
    at = str(prometheus.data_end - 600)
    fresh_amp.inject_delay(1.5, count=1, path_contains="/api/v1/query")  # the first one is slow

    def ask(i: int) -> httpx.Response:
        url = gateways[i % 2].url
        return httpx.post(f"{url}/api/v1/query", data={"query": query, "time": at}, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, range(8)))
    direct = httpx.post(f"{prometheus.url}/api/v1/query", data={"query": query, "time": at}, timeout=30)
    assert [a.status_code for a in answers] == [200] * 8
    assert {a.content for a in answers} == {direct.content}
    assert fresh_amp.forwarded_count(query) == 1
    # /metrics adds up its process's workers, whichever worker serves it.
    requests = sum(
        scraped_value(g.url, 'gateway_requests_total{code="200",endpoint="query",workspace="ws-test1"}')
        for g in gateways
    )
    assert requests == 8
    assert sum(scraped_value(g.url, "gateway_coalesced_across_processes_total") for g in gateways) >= 1


def test_a_rate_limit_holds_across_processes_and_falls_back_when_redis_goes(
    fresh_amp: AmpStandin, redis_server: RedisServer, start: Callable[..., GatewayProcess]
) -> None:
    auth = {
        "principals": [
            {
                "name": "team",
                "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
                "workspaces": ["*"],
                "limits": {"rate": {"per_second": 0.01, "burst": 4}},
            }
        ]
    }
    gateways = [start(_raw(fresh_amp, redis_server.url, auth=auth)) for _ in range(3)]
    headers = {"authorization": f"Bearer {TOKEN}"}
    codes = [
        httpx.get(f"{gateways[i % 3].url}/api/v1/labels", headers=headers, timeout=10).status_code
        for i in range(12)
    ]
    assert sorted(codes) == [200] * 4 + [429] * 8, codes

    # Redis goes away: each process limits on its own (4 more each), says so once, and in /metrics.
    redis_server.stop()
    local = [httpx.get(f"{gateways[0].url}/api/v1/labels", headers=headers, timeout=10) for _ in range(6)]
    assert [a.status_code for a in local] == [200] * 4 + [429] * 2
    assert "Retry-After" in local[-1].headers
    metrics = httpx.get(f"{gateways[0].url}/metrics", timeout=10).text
    assert "gateway_redis_up 0.0" in metrics
    assert scraped_value(gateways[0].url, 'gateway_redis_fallbacks_total{feature="rate"}') >= 1
    log = gateways[0].log.read_text()
    assert log.count("Redis unavailable") == 1 and "Traceback" not in log


def test_a_killed_worker_is_replaced_while_the_service_keeps_answering(
    fresh_amp: AmpStandin, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, None), workers=2)
    first = gateway.worker_pids()
    assert len(first) == 2
    os.kill(first[0], signal.SIGKILL)
    # The other worker answers everything meanwhile (one connection each, so the kernel spreads them).
    codes = [httpx.get(f"{gateway.url}/api/v1/status/buildinfo", timeout=10).status_code for _ in range(30)]
    assert codes == [200] * 30
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = gateway.worker_pids()
        if len(now) == 2 and first[0] not in now:
            break
        time.sleep(0.1)
    now = gateway.worker_pids()
    assert len(now) == 2 and first[0] not in now and first[1] in now
    # Then the other original worker dies too; the replacement carries the service.
    os.kill(first[1], signal.SIGKILL)
    codes = [httpx.get(f"{gateway.url}/api/v1/status/buildinfo", timeout=10).status_code for _ in range(30)]
    assert codes == [200] * 30
    assert gateway.alive


def test_sigterm_during_a_slow_upstream_request_still_completes_it(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, None, shutdown_grace="15s"), workers=2)
    query = unique_query()
    at = str(prometheus.data_end - 600)
    fresh_amp.inject_delay(3, count=1, path_contains="/api/v1/query")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            httpx.post, f"{gateway.url}/api/v1/query", data={"query": query, "time": at}, timeout=30
        )
        deadline = time.monotonic() + 10
        while not fresh_amp.received_count(query):
            assert time.monotonic() < deadline, "the request never reached the stand-in"
            time.sleep(0.02)
        assert gateway.process is not None
        gateway.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        with pytest.raises(httpx.ConnectError):  # no longer accepting
            httpx.get(f"{gateway.url}/-/healthy", timeout=2)
        answer = slow.result(timeout=30)
    direct = httpx.post(f"{prometheus.url}/api/v1/query", data={"query": query, "time": at}, timeout=30)
    assert answer.status_code == 200 and answer.content == direct.content
    assert gateway.process.wait(timeout=20) == 0
    log = gateway.log.read_text()
    assert "Traceback" not in log


def test_replicas_share_state_through_redis_with_tls_and_auth(
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    tmp_path: Path,
    start: Callable[..., GatewayProcess],
) -> None:
    ca = Authority.create()
    ca_file = ca.write(tmp_path / "ca.pem")
    pair = ca.issue(tmp_path / "redis-cert", "127.0.0.1")
    server = RedisServer(free_port(), tmp_path, password="redis-pass-123", tls=(pair.cert, pair.key, ca_file))
    server.start()
    try:
        raw = _raw(fresh_amp, server.url)
        raw["cache"]["mode"] = "redis"
        gateways = [start(raw) for _ in range(2)]
        query = unique_query()
        at = str(prometheus.data_end - 600)
        first = httpx.post(f"{gateways[0].url}/api/v1/query", data={"query": query, "time": at}, timeout=30)
        second = httpx.post(f"{gateways[1].url}/api/v1/query", data={"query": query, "time": at}, timeout=30)
        assert first.status_code == second.status_code == 200 and first.content == second.content
        assert second.headers["x-cache"] == "hit"  # from the other replica's entry, over TLS
        assert fresh_amp.forwarded_count(query) == 1
        stored = server.keys()
        assert any(key.startswith(b"gwc:") for key in stored)
        for gateway in gateways:
            log = gateway.log.read_text()
            assert "Redis unavailable" not in log and "redis-pass-123" not in log
    finally:
        server.stop()


def test_every_worker_serves_tls_and_takes_a_rotated_certificate(
    fresh_amp: AmpStandin, tmp_path: Path, start: Callable[..., GatewayProcess]
) -> None:
    pki = Pki.create(tmp_path / "pki")
    live = pki.ca.issue(tmp_path / "live", "localhost")
    tls = {"cert_file": str(live.cert), "key_file": str(live.key)}
    gateway = start(_raw(fresh_amp, None, tls=tls), workers=2)
    assert gateway.url.startswith("https://")
    # New connections, spread by the kernel over both workers, all see the certificate.
    assert {presented_serial(gateway.port, pki.ca_file) for _ in range(10)} == {live.serial}
    with httpx.Client(verify=str(pki.ca_file), timeout=10) as client:
        answer = client.get(f"https://localhost:{gateway.port}/api/v1/status/buildinfo")
    assert answer.status_code == 200
    assert "serving https://127.0.0.1" in gateway.log.read_text()

    rotated = pki.ca.issue(tmp_path / "rotated", "localhost")
    live.replace(rotated)
    deadline = time.monotonic() + 30  # each worker looks at the files every 5 s
    seen: set[int] = set()
    while time.monotonic() < deadline:
        seen = {presented_serial(gateway.port, pki.ca_file) for _ in range(10)}
        if seen == {rotated.serial}:
            break
        time.sleep(0.5)
    assert seen == {rotated.serial}
    while gateway.log.read_text().count("loaded the new certificate") < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert gateway.log.read_text().count("loaded the new certificate") == 2  # each worker, once


def test_a_replacement_worker_serves_the_settings_checked_at_start(
    fresh_amp: AmpStandin, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, None), workers=2)
    gateway.config.write_text("log_level: verbose\nnot: [valid")  # edited since: broken
    first = gateway.worker_pids()
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 20
    # Until the supervisor has said so and replaced it (a child just forked, such as
    # multiprocessing's resource tracker before its exec, can look like a worker for a moment).
    while time.monotonic() < deadline and (
        f"worker {first[0]} died" not in gateway.log.read_text()
        or len(gateway.worker_pids()) < 2
        or first[0] in gateway.worker_pids()
    ):
        time.sleep(0.1)
    assert len(gateway.worker_pids()) == 2 and gateway.alive
    codes = [httpx.get(f"{gateway.url}/api/v1/status/buildinfo", timeout=10).status_code for _ in range(20)]
    assert codes == [200] * 20
    log = gateway.log.read_text()
    assert f"worker {first[0]} died (exit code -9); started another" in log
    assert "configuration error" not in log


def test_a_worker_that_cannot_start_stops_the_supervisor_with_an_error(
    fresh_amp: AmpStandin, tmp_path: Path, start: Callable[..., GatewayProcess]
) -> None:
    pki = Pki.create(tmp_path / "pki")
    pair = pki.ca.issue(tmp_path / "live", "localhost")
    gateway = start(
        _raw(fresh_amp, None, tls={"cert_file": str(pair.cert), "key_file": str(pair.key)}), workers=2
    )
    pair.key.unlink()  # the replacement cannot load the certificate the others serve
    os.kill(gateway.worker_pids()[0], signal.SIGKILL)
    assert gateway.process is not None
    assert gateway.process.wait(timeout=30) == 3  # uvicorn's "startup failure", not 0
    lines = [orjson.loads(line) for line in gateway.log.read_text().splitlines()]  # all JSON
    messages = [line["message"] for line in lines if line["level"] == "error"]
    assert "a worker could not load its certificate" in messages
    assert "stopped: a worker could not start (see above)" in messages
