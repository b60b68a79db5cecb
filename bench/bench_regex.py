"""Regex compilation (issue 16): what RE2 costs per pattern class, and what one principal's flood
of fresh heavy regexes does to another principal's cached query, one parser thread against the
fair pool.

    .venv/bin/python bench/bench_regex.py [--seconds 8] [--flooders 8]

Part 1, for `\\pL{n}`, `[\\p{L}\\p{N}_-]{1,n}` and `.{n}`: compile time (median and worst of 3),
RE2's program size, the heap the program holds after compiling and matching "" and a value
(glibc's mallinfo2), what the regex cache counts for it, or the refusal and what it cost.

Part 2, in one process, through `promql.offloop.run` as the pipeline calls it: principal A has
`--flooders` tasks that each parse, back to back, a query with a fresh `\\pL{60}` regex (what
the validate stage does for a new query); principal B asks every 20 ms for a cached 3 KB query
(a parse memo hit through the pool: the enforcement stage's work for an enforced principal's
long query, on every request, cache hits included), and a probe measures how late the event
loop runs a 20 ms timer. "one thread" is the pool before issue 16 (a ThreadPoolExecutor of one
thread, first come first served); "fair pool" is promql/offloop.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import statistics
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from gateway.promql import QueryTooComplex, offloop, parse_canonical, parse_query
from gateway.promql.regex import COMPILED, MAX_MEM, CompiledRegexes, charged_bytes

CLASSES = {"\\pL{n}": "\\pL{%d}", "[\\p{L}\\p{N}_-]{1,n}": "[\\p{L}\\p{N}_-]{1,%d}", ".{n}": ".{%d}"}
SIZES = (1, 10, 30, 60, 64, 100, 128, 200, 400, 1000)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_LIBC = ctypes.CDLL("libc.so.6")
_LIBC.mallinfo2.restype = _MallInfo2


def heap() -> int:
    info = _LIBC.mallinfo2()
    return int(info.uordblks + info.hblkhd)


def ladder() -> None:
    print(f"RE2 max_mem {MAX_MEM >> 20} MiB")
    print(f"{'pattern':26} {'compile p50':>11} {'worst':>8} {'program':>9} {'heap':>10} {'counted':>10}")
    for template in CLASSES.values():
        for n in SIZES:
            pattern = template % n
            times, held, size, refused = [], 0, 0, ""
            for _ in range(3):
                cache = CompiledRegexes()
                gc.collect()
                before = heap()
                began = time.perf_counter()
                try:
                    compiled = cache.get(pattern)
                except ValueError as err:
                    times.append(time.perf_counter() - began)
                    refused = str(err).split(":")[1].strip()
                    continue
                times.append(time.perf_counter() - began)
                compiled.fullmatch("")
                compiled.fullmatch("é" * n)
                gc.collect()
                held, size = heap() - before, compiled.programsize
                del compiled, cache
            p50, worst = statistics.median(times) * 1000, max(times) * 1000
            if refused:
                print(f"{pattern:26} {p50:8.1f} ms {worst:5.1f} ms   refused: {refused}")
            else:
                counted = charged_bytes(pattern, size)
                print(
                    f"{pattern:26} {p50:8.1f} ms {worst:5.1f} ms {size:9,} {held / 1024:7.0f} KiB {counted / 1024:7.0f} KiB"
                )


class _OneThread:
    """The pool before issue 16: one thread, first come first served, whoever asks."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="promql-before")

    def submit(self, who: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self.executor.submit(fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[max(0, int(len(ordered) * 0.99) - 1)]
    return f"n={len(ordered):4} p50 {statistics.median(ordered):7.1f} ms  p99 {p99:7.1f} ms  max {ordered[-1]:7.1f} ms"


async def flood(seconds: float, flooders: int, cached: str) -> tuple[list[float], list[float], int]:
    stop = asyncio.Event()
    fresh = 0
    big = offloop.OFF_LOOP_CHARS + 1

    async def principal_a() -> None:
        nonlocal fresh
        while not stop.is_set():
            text = f'up{{a=~"{uuid.uuid4().hex}\\\\pL{{60}}"}}'
            # on a loaded machine a compile may pass the parser's 250 ms budget (wall time)
            with contextlib.suppress(QueryTooComplex):
                await offloop.run(big, parse_query, text, who="A")
            fresh += 1

    b_latency: list[float] = []
    lateness: list[float] = []

    async def principal_b() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await offloop.run(len(cached), parse_canonical, cached, who="B")
            b_latency.append((time.perf_counter() - began) * 1000)
            await asyncio.sleep(0.02)

    async def loop_probe() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.02)
            lateness.append((time.perf_counter() - began - 0.02) * 1000)

    tasks = [asyncio.create_task(principal_a()) for _ in range(flooders)]
    tasks += [asyncio.create_task(principal_b()), asyncio.create_task(loop_probe())]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.gather(*tasks)
    return b_latency, lateness, fresh


def fairness(seconds: float, flooders: int) -> None:
    cached = (
        "sum("
        + " + ".join(f'rate(http_requests_total{{job="api-{i}",path=~"/v1/.*"}}[5m])' for i in range(50))
        + ")"
    )
    assert len(cached) > offloop.OFF_LOOP_CHARS
    parse_canonical(cached)  # B's query is cached: a memo hit
    print(
        f"\nB's cached {len(cached):,}-character query while A floods fresh \\pL{{60}} regexes ({flooders} tasks), {seconds:g} s each"
    )
    quiet, _, _ = asyncio.run(flood(1.0, 0, cached))
    print(f"{'no flood':12} B {_summary(quiet)}")
    fair = offloop.POOL
    for name, pool in (("one thread", _OneThread()), ("fair pool", fair)):
        offloop.POOL = pool  # type: ignore[assignment]  # the old executor, behind the same submit()
        try:
            COMPILED.clear()
            b_latency, lateness, fresh = asyncio.run(flood(seconds, flooders, cached))
        finally:
            offloop.POOL = fair
            if isinstance(pool, _OneThread):
                pool.close()
        print(f"{name:12} B {_summary(b_latency)};  loop lateness {_summary(lateness)};  A parsed {fresh}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--flooders", type=int, default=8)
    parser.add_argument("--skip-ladder", action="store_true")
    args = parser.parse_args()
    if not args.skip_ladder:
        ladder()
    fairness(args.seconds, args.flooders)


if __name__ == "__main__":
    main()
