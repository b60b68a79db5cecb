"""Step-grid arithmetic for range queries: which timestamps a request evaluates, which of them
a cached extent covers, and where the fixed split boundaries cut them.

A range query evaluates at start, start+step, ... up to end. All times are integer ms. A "run"
is an inclusive pair (first, last) of timestamps on the grid; a list of runs is kept sorted and
merged, so an entry's coverage never grows beyond one run per gap.
"""

from __future__ import annotations

from collections.abc import Iterator

Run = tuple[int, int]


def grid_last(start: int, end: int, step: int) -> int:
    """The last evaluation timestamp of a range query."""
    return start + (end - start) // step * step


def ceil_grid(t: int, offset: int, step: int) -> int:
    """The first grid point (offset + k*step) at or after t."""
    return t + (offset - t) % step


def floor_grid(t: int, offset: int, step: int) -> int:
    """The last grid point at or before t."""
    return t - (t - offset) % step


def bucket_runs(first: int, last: int, step: int, split: int) -> Iterator[tuple[int, Run]]:
    """Cut the grid run [first, last] at multiples of `split`: (bucket index, run) in order."""
    offset = first % step
    bucket = first // split
    while True:
        lo = max(first, bucket * split)
        hi = min(last, (bucket + 1) * split - 1)
        lo, hi = ceil_grid(lo, offset, step), floor_grid(hi, offset, step)
        if lo > last:
            return
        if lo <= hi:
            yield bucket, (lo, hi)
        bucket += 1


def add_run(runs: list[Run], run: Run, step: int) -> list[Run]:
    """Coverage after adding `run`; touching or overlapping runs become one."""
    merged: list[Run] = []
    lo, hi = run
    for a, b in runs:
        if b + step < lo:
            merged.append((a, b))
        elif a > hi + step:
            merged.append((lo, hi))
            lo, hi = a, b
        else:
            lo, hi = min(lo, a), max(hi, b)
    merged.append((lo, hi))
    merged.sort()
    return merged


def missing_runs(runs: list[Run], first: int, last: int, step: int) -> list[Run]:
    """The parts of the grid run [first, last] that `runs` do not cover."""
    gaps: list[Run] = []
    cursor = first
    for a, b in runs:
        if b < cursor:
            continue
        if a > last:
            break
        if a > cursor:
            gaps.append((cursor, min(a - step, last)))
        cursor = max(cursor, b + step)
        if cursor > last:
            break
    if cursor <= last:
        gaps.append((cursor, last))
    return gaps
