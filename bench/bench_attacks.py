"""The attacks of issue 16 against a real `serve --workers 2`, this tree's and, in the same run,
an earlier one's (`--before DIR`, a checkout such as `git worktree add /tmp/pre16 935a67e`):
how long /-/healthy and another client's cached query wait while each attack runs, whether a
worker died, and the workers' resident memory at its highest.

    .venv/bin/python bench/bench_attacks.py [--before /tmp/pre16] [--seconds 8]

Attacks (each alone, against a fresh gateway):
- `header`: two connections each streaming one endless header value as fast as they can;
- `slow`: 5,000 connections that send half a request line and stop;
- `large`: one client asking, again and again, every series of the data at a 1 s step over 3 h
  (~170 MB of JSON: the issue's ~800 series over 6 h, over upstream.max_answer_bytes), at 1.4 s
  (~123 MB, the largest the default takes) and at 2 s (~86 MB), plain and gzip;
- `metrics`: 8 clients scraping /metrics as fast as they can;
- `regex`: 4 clients sending queries with a fresh heavy regex each (format_query).
The baseline of the same run is the same probes with no attack.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import socket
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import psutil
from common import ROOT, gateway_process, prometheus


@contextmanager
def serve(tree: Path, upstream: str) -> Iterator[tuple[str, int]]:
    """The gateway of `tree` with 2 workers: its URL and its supervisor's pid."""
    env = {"GATEWAY_UPSTREAM_URL": upstream, "GATEWAY_SIGV4": "false", "GATEWAY_CACHE": "memory"}
    with gateway_process({**env, "GATEWAY_WORKERS": "2"}, tree) as gateway:
        time.sleep(2)  # both workers up
        yield gateway.url, gateway.pid


def workers(supervisor: int) -> set[int]:
    found = set()
    for child in psutil.Process(supervisor).children():
        try:
            if "resource_tracker" not in " ".join(child.cmdline()):
                found.add(child.pid)
        except psutil.Error:
            pass
    return found


class Probes:
    """/-/healthy and a cached instant query, each from its own thread every 20 ms, and the
    workers' RSS every 10 ms, until stopped."""

    def __init__(self, url: str, small: dict[str, str], supervisor: int) -> None:
        self.url, self.small, self.supervisor = url, small, supervisor
        self.healthy: list[float] = []
        self.cached: list[float] = []
        self.failures = 0
        self.peak_rss = 0
        self.rest_rss = sum(psutil.Process(p).memory_info().rss for p in workers(supervisor))
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=("/-/healthy", None, self.healthy)),
            threading.Thread(target=self._loop, args=("/api/v1/query", small, self.cached)),
            threading.Thread(target=self._rss),
        ]

    def __enter__(self) -> Probes:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _loop(self, path: str, params: dict[str, str] | None, out: list[float]) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                began = time.perf_counter()
                try:
                    ok = client.get(path, params=params).status_code == 200
                except httpx.HTTPError:
                    ok = False
                out.append((time.perf_counter() - began) * 1000)
                self.failures += not ok
                time.sleep(0.02)

    def _rss(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in workers(self.supervisor):
                with suppress(psutil.Error):
                    total += psutil.Process(pid).memory_info().rss
            self.peak_rss = max(self.peak_rss, total)
            time.sleep(0.01)


def header_attack(url: str, stop: threading.Event) -> None:
    port = int(url.rsplit(":", 1)[1])

    def one() -> None:
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\nX-Endless: ")
                    chunk = b"a" * 16384
                    while not stop.is_set():
                        sock.sendall(chunk)
            except OSError:
                pass

    threads = [threading.Thread(target=one) for _ in range(2)]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(10)


def slow_attack(url: str, stop: threading.Event) -> None:
    port = int(url.rsplit(":", 1)[1])
    held = []
    for _ in range(5000):
        if stop.is_set():
            break
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /api/v1/query?query=up")
            held.append(sock)
        except OSError:
            time.sleep(0.01)
    stop.wait()
    for sock in held:
        sock.close()


def large_attack(url: str, stop: threading.Event, params: list[dict[str, str]]) -> None:
    encodings = ("identity", "gzip")
    with httpx.Client(timeout=120) as client:
        i = 0
        while not stop.is_set():
            with suppress(httpx.HTTPError):
                client.get(
                    f"{url}/api/v1/query_range",
                    params=params[i % len(params)],
                    headers={"accept-encoding": encodings[i // len(params) % 2]},
                )
            i += 1


def metrics_attack(url: str, stop: threading.Event) -> None:
    def one() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                with suppress(httpx.HTTPError):
                    client.get(f"{url}/metrics")

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def regex_attack(url: str, stop: threading.Event) -> None:
    """Fresh heavy regexes (`\\pL{40}` and a unique tail: ~30 ms of RE2 each, valid before and
    after the change), from 4 clients at once."""

    def one() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                query = f'count(up{{job=~"\\\\pL{{40}}{uuid.uuid4().hex}"}})'
                with suppress(httpx.HTTPError):
                    client.post(f"{url}/api/v1/format_query", data={"query": query})

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def summary(samples: list[float]) -> str:
    if not samples:
        return "no answer"
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, math.ceil(len(ordered) * 0.99) - 1)]
    return f"p50 {statistics.median(ordered):.1f} / p99 {p99:.0f} / max {ordered[-1]:.0f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, help="an earlier checkout, measured in the same run")
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--only", nargs="*", default=["none", "header", "slow", "large", "metrics", "regex"])
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trees = [("after", ROOT)] + ([("before", args.before)] if args.before else [])
    rows = []
    with prometheus() as prom:
        small = {"query": "sum(demo_num_cpus)", "time": str(int(prom.data_end) - 3600)}
        window = {"query": '{__name__=~".+"}', "start": str(prom.data_start), "end": str(prom.data_end)}
        large = [{**window, "step": step} for step in ("1", "1.4", "2")]
        attacks: dict[str, Callable[[str, threading.Event], None]] = {
            "none": lambda url, stop: stop.wait(),
            "header": header_attack,
            "slow": slow_attack,
            "large": lambda url, stop: large_attack(url, stop, large),
            "metrics": metrics_attack,
            "regex": regex_attack,
        }
        for attack in args.only:
            for name, tree in trees:
                with serve(tree, prom.url) as (url, supervisor):
                    httpx.get(f"{url}/api/v1/query", params=small)  # cached in one worker at least
                    httpx.get(f"{url}/api/v1/query", params=small)
                    before = workers(supervisor)
                    stop = threading.Event()
                    attacker = threading.Thread(target=attacks[attack], args=(url, stop))
                    with Probes(url, small, supervisor) as probes:
                        attacker.start()
                        time.sleep(args.seconds)
                        stop.set()
                        attacker.join(120)
                    died = len(before - workers(supervisor))
                    row = (
                        f"| {attack} | {name} | {summary(probes.healthy)} | {summary(probes.cached)} | "
                        f"{probes.failures} | {died} | {probes.rest_rss / 2**20:.0f} → "
                        f"{probes.peak_rss / 2**20:.0f} |"
                    )
                    print(row, flush=True)
                    rows.append(row)
    print()
    print(f"serve --workers 2, {os.cpu_count()} CPUs, {args.seconds:.0f} s per attack:")
    print(
        "| attack | gateway | /-/healthy | cached query | failed probes | workers died | RSS MiB, both workers (rest → peak) |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
