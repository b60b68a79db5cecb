"""The HTTP edge under attack, against a real `serve` process with 2 workers (gateway/edge.py):
endless request lines and headers, too many headers, half-sent requests by the thousand, and
more busy connections than a worker takes. Through each, the probes keep answering, no worker
dies, and what the attacker sends is refused with the status that says why."""

from __future__ import annotations

import concurrent.futures
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

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


# ---------------------------------------------------------------- from the attack review


def _responses(raw: bytes) -> list[bytes]:
    """The status lines of the answers in `raw`, in order (a body is followed at once by the
    next answer, without a line end)."""
    return re.findall(rb"HTTP/1\.1 \d{3} [^\r\n]*", raw)


def _read_all(sock: socket.socket, seconds: float = 10) -> bytes:
    sock.settimeout(seconds)
    chunks = []
    try:
        while chunk := sock.recv(1 << 20):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    return b"".join(chunks)


def _query_request(query: str, at: float, extra: bytes = b"") -> bytes:
    target = "/api/v1/query?" + urlencode({"query": query, "time": str(at)})
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n".encode() + extra + b"\r\n"


def test_a_pipelined_request_refused_is_answered_after_the_one_before_it(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp), workers=1)
    fresh_amp.inject_delay(1.0, count=1, path_contains="/api/v1/query")
    sock = _connect(gateway)
    huge = b"X-Big: " + b"a" * 70000 + b"\r\n"
    sock.sendall(
        _query_request("count(up)", prometheus.data_end) + b"GET /-/healthy HTTP/1.1\r\n" + huge + b"\r\n"
    )
    raw = _read_all(sock)
    assert _responses(raw) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 431 Request Header Fields Too Large"]
    direct = httpx.get(
        f"{prometheus.url}/api/v1/query", params={"query": "count(up)", "time": str(prometheus.data_end)}
    )
    assert direct.content in raw
    assert gateway.alive and "Traceback" not in gateway.log.read_text()


def test_an_endless_header_behind_a_request_in_flight_is_refused(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp), workers=1)
    fresh_amp.inject_delay(2.0, count=1, path_contains="/api/v1/query")
    answer = _stream(
        gateway,
        _query_request("count(up)", prometheus.data_end) + b"GET /-/healthy HTTP/1.1\r\nX-Endless: ",
        b"a" * 16384,
        32 << 20,
    )
    assert _responses(answer) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 431 Request Header Fields Too Large"]


def test_a_post_answered_before_its_body_is_in_gets_one_answer(
    fresh_amp: AmpStandin, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp), workers=1)
    body = b"x" * (4 << 20)
    sock = _connect(gateway)
    sock.sendall(b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body))
    sock.sendall(body)
    sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert _responses(_read_all(sock)) == [b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]


def test_clients_that_do_not_read_their_answers_cannot_pass_the_cap(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, max_connections=3, keep_alive_timeout="1s", body_timeout="2s"), workers=1)
    (worker,) = gateway.worker_pids()
    rest = psutil.Process(worker).memory_info().rss
    # ~8 MB of JSON each (every series over 3 h at 20 s), never read.
    params = (
        f"query=%7B__name__%3D~%22.%2B%22%7D&start={prometheus.data_start}&end={prometheus.data_end}&step=20"
    )
    stuck = []
    for _ in range(12):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", gateway.port))
        sock.sendall(f"GET /api/v1/query_range?{params} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        stuck.append(sock)
        time.sleep(0.3)
    time.sleep(3)  # past body_timeout with nothing read

    def held() -> int:
        return sum(
            1
            for c in psutil.Process(worker).net_connections(kind="tcp")
            if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == gateway.port
        )

    assert held() <= 3
    assert psutil.Process(worker).memory_info().rss - rest < 64 << 20
    assert httpx.get(f"{gateway.url}/-/healthy", timeout=PROBE_TIMEOUT).status_code == 200
    for sock in stuck:
        sock.close()


def test_a_busy_pipelined_connection_is_not_closed_to_make_room(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, max_connections=2), workers=1)
    fresh_amp.inject_delay(2.0, count=1, path_contains="/api/v1/query")
    busy = _connect(gateway)
    busy.sendall(
        b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n"
        + _query_request("count(up)", prometheus.data_end, b"Connection: close\r\n")
    )
    time.sleep(0.5)
    others = [_connect(gateway), _connect(gateway)]
    assert _responses(_read_all(busy)) == [b"HTTP/1.1 200 OK", b"HTTP/1.1 200 OK"]
    for sock in others:
        sock.close()


def test_a_probe_over_the_cap_does_not_lift_it(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp, max_connections=1), workers=1)
    fresh_amp.inject_delay(3.0, count=1, path_contains="/api/v1/query")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            httpx.get,
            f"{gateway.url}/api/v1/query",
            params={"query": "count(up)", "time": str(prometheus.data_end)},
            timeout=30,
        )
        time.sleep(0.5)
        over = _connect(gateway)
        over.sendall(
            b"HEAD /-/healthy HTTP/1.1\r\nHost: x\r\n\r\nGET /api/v1/labels HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        raw = _read_all(over)
        assert _responses(raw) == [b"HTTP/1.1 200 OK"] and b"connection: close" in raw
        assert slow.result().status_code == 200


def test_an_upstream_answer_that_is_not_the_gzip_it_says_is_a_502(
    fresh_amp: AmpStandin, prometheus: PrometheusServer, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(_raw(fresh_amp), workers=1)
    fresh_amp.inject(200, count=1, body=b"garbage, not gzip", headers={"content-encoding": "gzip"})
    answer = httpx.get(
        f"{gateway.url}/api/v1/query",
        params={"query": "count(up)", "time": str(prometheus.data_end)},
        headers={"accept-encoding": "gzip"},
    )
    assert answer.status_code == 502 and answer.json()["errorType"] == "unavailable"
    assert "cannot read" in answer.json()["error"]


def test_a_body_or_a_next_head_that_stops_halfway_is_closed(
    fresh_amp: AmpStandin, start: Callable[..., GatewayProcess]
) -> None:
    gateway = start(
        _raw(fresh_amp, header_timeout="1s", body_timeout="1s", keep_alive_timeout="30s"), workers=1
    )
    body_stalled = _connect(gateway)
    body_stalled.sendall(b"POST /api/v1/query HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nquery=up")
    head_stalled = _connect(gateway)  # one answer, then half of the next request's head
    head_stalled.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.5)
    head_stalled.sendall(b"GET /-/healthy HTTP/1.1\r\nHo")
    for sock in (body_stalled, head_stalled):
        sock.settimeout(8)  # closed after its 1 s timeout (30 s idle would pass this)
    assert _responses(_read_all(body_stalled, 8)) == []
    assert _responses(_read_all(head_stalled, 8)) == [b"HTTP/1.1 200 OK"]
