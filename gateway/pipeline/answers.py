"""Work on large answers off the event loop: decompressing, parsing, editing, merging and
drawing them runs in a small pool of threads shared fairly by principal, as PromQL's is
(`gateway.promql.offloop.FairPool`: a principal runs one job at a time, principals take turns).
A 190 MB answer parsed on the loop stalled every other request of its worker for seconds and
starved the supervisor's ping (issue 16); small answers are worked on in place, where a thread
hop would cost more than the work."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from gateway.pipeline.model import Answer
from gateway.promql.offloop import FairPool, asking

# Answers larger than this (JSON bytes) are worked on in the pool.
OFF_LOOP_BYTES = 256 * 1024
# A gzip answer's JSON is about this many times its size (Prometheus's JSON, level 1 to 6).
GZIP_RATIO = 10

POOL = FairPool(threads=2, per_principal=1, name="answers")
T = TypeVar("T")


def json_size(answer: Answer) -> int:
    """The answer's JSON bytes: known for the upstream's answers, else estimated."""
    if answer.size >= 0:
        return answer.size
    return len(answer.body) * (GZIP_RATIO if answer.gzipped else 1)


async def work(size: int, fn: Callable[..., T], *args: Any, who: str | None = None) -> T:
    """`fn(*args)`: here when it reads at most OFF_LOOP_BYTES, else in the pool, in the queue
    of principal `who` (by default the one asking, as the validate stage set it)."""
    if size <= OFF_LOOP_BYTES:
        return fn(*args)
    future = POOL.submit(asking.get() if who is None else who, fn, *args)
    return await asyncio.wrap_future(future)
