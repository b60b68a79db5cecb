"""The HTTP edge under attack, against a real `serve` process with 2 workers (gateway/edge.py):
endless request lines and headers, too many headers, half-sent requests by the thousand, and
more busy connections than a worker takes. Through each, the probes keep answering, no worker
dies, and what the attacker sends is refused with the status that says why."""

from __future__ import annotations

import concurrent.futures
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psutil
import pytest
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.prometheus import PrometheusServer
from support.testenv import AMP_REGION

# A generous bound for one probe: a frozen worker (the failure this guards against) takes
# seconds; the figures under each attack are in bench/README.md (bench_hostile.py).
PROBE_TIMEOUT = 2.0


def _raw(amp: AmpStandin, **server: Any) -> dict[str, Any]:
    return {
        "workspaces": [{"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "cache": {"mode": "off"},
        "upstream": {"retry_base": "10ms"},
        "access_log": False,
        "server": server,
    }


def _connect(gateway: GatewayProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gateway.port), timeout=10)


def _answer(sock: socket.socket) -> bytes:
    """What the gateway wrote before it closed (or the first 64 KiB); TimeoutError when it
    neither answered nor closed within the socket's timeout."""
    chunks = []
    try:
        while sum(map(len, chunks)) < 65536:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _stream(gateway: GatewayProcess, head: bytes, chunk: bytes, most: int) -> bytes:
    """Send `head`, then `chunk` again and again (up to `most` bytes) as fast as the gateway
    takes it; the gateway's answer."""
    sock = _connect(gateway)
    sent = 0
    try:
        sock.sendall(head)
        while sent < most:
            sock.sendall(chunk)
            sent += len(chunk)
    except (BrokenPipeError, ConnectionResetError):
        pass
    answer = _answer(sock)
    sock.close()
    return answer


@pytest.fixture
def probing() -> Iterator[Callable[[GatewayProcess], list[int]]]:
    """Probes /-/healthy every 20 ms in a thread while the test attacks; the statuses seen (599
    when a probe got no answer within PROBE_TIMEOUT)."""
    stop = threading.Event()
    threads: list[threading.Thread] = []

    def start(gateway: GatewayProcess) -> list[int]:
        statuses: list[int] = []

        def probe() -> None:
            with httpx.Client(timeout=PROBE_TIMEOUT) as client:
                while not stop.is_set():
                    try:
                        statuses.append(client.get(f"{gateway.url}/-/healthy").status_code)
                    except httpx.HTTPError:
                        statuses.append(599)
                    time.sleep(0.02)

        thread = threading.Thread(target=probe, daemon=True)
        thread.start()
        threads.append(thread)
        return statuses

    yield start
    stop.set()
    for thread in threads:
        thread.join(10)


def _finish(gateway: GatewayProcess, workers: list[int], statuses: list[int]) -> None:
    time.sleep(0.2)
    assert gateway.alive
    assert sorted(gateway.worker_pids()) == sorted(workers), "a worker died"
    assert statuses and set(statuses) == {200}, statuses
    assert httpx.get(f"{gateway.url}/-/healthy", timeout=PROBE_TIMEOUT).status_code == 200


def test_endless_headers_and_targets_are_refused_while_the_probes_answer(
    fresh_amp: AmpStandin, start: Callable[..., GatewayProcess], probing: Callable[..., list[int]]
) -> None:
    gateway = start(_raw(fresh_amp), workers=2)
    workers = gateway.worker_pids()
    statuses = probing(gateway)
    attacks = [
        (b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Endless: ", b"a" * 16384),  # one header
        (b"GET /api/v1/query?query=", b"b" * 16384),  # the request target
        (b"GET /-/healthy HTTP/1.1\r\n", b"X-H: 1\r\n" * 2048),  # header lines
    ]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda a: _stream(gateway, a[0], a[1], 64 << 20), attacks * 2))
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [
        b"HTTP/1.1 431 Request Header Fields Too Large",
        b"HTTP/1.1 414 URI Too Long",
        b"HTTP/1.1 431 Request Header Fields Too Large",
    ] * 2
    assert b"connection: close" in answers[0] and b"65536 bytes" in answers[0]
    _finish(gateway, workers, statuses)


def test_heads_within_the_bounds_are_served(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, max_url_bytes="8KiB", max_headers=20), workers=2)
    matcher = "x" * 6000
    query = f'count(up{{job!="{matcher}"}})'
    at = str(prometheus.data_end)
    headers = {f"x-extra-{i}": "v" * 1000 for i in range(15)}  # 15 of 20 lines, ~15 KB of 64
    answer = httpx.get(f"{gateway.url}/api/v1/query", params={"query": query, "time": at}, headers=headers)
    direct = httpx.get(f"{prometheus.url}/api/v1/query", params={"query": query, "time": at})
    assert answer.status_code == 200 and answer.content == direct.content

    too_long = httpx.get(f"{gateway.url}/api/v1/query", params={"query": "x" * 9000})
    assert too_long.status_code == 414 and "8192 bytes" in too_long.text
    too_many = httpx.get(f"{gateway.url}/-/healthy", headers={f"x-{i}": "1" for i in range(21)})
    assert too_many.status_code == 431


def test_half_sent_requests_are_closed_and_capped_while_the_probes_answer(
    fresh_amp: AmpStandin, start: Callable[..., GatewayProcess], probing: Callable[..., list[int]]
) -> None:
    gateway = start(_raw(fresh_amp, max_connections=100, header_timeout="1500ms"), workers=2)
    workers = gateway.worker_pids()
    statuses = probing(gateway)
    stalled = []
    for _ in range(1000):  # half a request line each, then nothing
        sock = _connect(gateway)
        sock.sendall(b"GET /api/v1/query?query=up")
        stalled.append(sock)
    # Each worker holds at most its cap (plus its listening socket, files and upstream pool).
    for pid in workers:
        assert psutil.Process(pid).num_fds() < 100 + 40
    time.sleep(2.0)  # past header_timeout: every stalled connection is closed
    for sock in stalled:
        sock.settimeout(5)
        assert _answer(sock) == b""  # closed without an answer, as Go's ReadHeaderTimeout does
        sock.close()
    _finish(gateway, workers, statuses)


def test_a_connection_that_never_sends_is_closed(
    fresh_amp: AmpStandin, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, header_timeout="500ms", keep_alive_timeout="500ms"), workers=2)
    silent = _connect(gateway)
    kept = _connect(gateway)
    kept.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    silent.settimeout(5)
    kept.settimeout(5)
    assert _answer(silent) == b""  # closed after header_timeout
    answer = _answer(kept)  # answered, then closed after keep_alive_timeout
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"Healthy.\n")


def test_past_the_cap_busy_connections_stay_new_ones_get_503_and_probes_answer(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, max_connections=3), workers=1)
    fresh_amp.inject_delay(3.0, count=3, path_contains="/api/v1/query")
    at = str(prometheus.data_end)

    def slow(i: int) -> httpx.Response:  # distinct queries: coalescing would not make them one
        query = f"count(up) + {i}"
        return httpx.get(f"{gateway.url}/api/v1/query", params={"query": query, "time": at}, timeout=30)

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        busy = [pool.submit(slow, i) for i in range(3)]
        deadline = time.monotonic() + 10
        while len(fresh_amp.requests) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = httpx.get(f"{gateway.url}/api/v1/labels", timeout=10)
        probe = httpx.get(f"{gateway.url}/-/healthy", timeout=PROBE_TIMEOUT)
        assert [f.result().status_code for f in busy] == [200] * 3
    assert refused.status_code == 503 and "too many connections" in refused.text
    assert refused.headers["connection"] == "close"
    assert probe.status_code == 200
