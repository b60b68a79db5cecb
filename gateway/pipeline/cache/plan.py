"""The range cache's plan: from a request's grid and what its buckets' extents hold, what is held,
what to fetch and where each fetched run is kept. Pure arithmetic, no I/O and no clock; the
steps that fetch, merge and store are the stage's (stage.py), as Cortex's query-frontend keeps
`partition` (what the cache has, what to ask for) apart from `Do`.

A request evaluates the grid start, start+step, ... last. Points up to `final_last` are final
(they read only data older than the freshness horizon) and are kept as extents, cut into split
buckets; the points after it, the recent tail, are fetched every time the whole response has
expired, and never written into an extent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.pipeline.cache.extents import Run, bucket_runs, floor_grid, grid_last, missing_runs


@dataclass(frozen=True, slots=True)
class Grid:
    """A range request's evaluation grid and its final part cut into split buckets."""

    start: int
    last: int
    step: int
    final_last: int  # the last final point; below `start` when no point is final
    buckets: tuple[tuple[int, Run], ...]  # (bucket index, run): [start, final_last], cut

    @property
    def recent(self) -> Run | None:
        """The points past the final ones: always fetched, never kept as extents."""
        if self.final_last >= self.last:
            return None
        return (max(self.start, self.final_last + self.step), self.last)

    @property
    def all_final(self) -> bool:
        """Every point is final: the whole response may live as long as its extents."""
        return self.final_last == self.last


def cut(start: int, end: int, step: int, split: int, final: int | None) -> Grid:
    """The grid of a request over [start, end] every `step` ms, whose points up to `final` (a
    time, or None when none is) are final, with buckets `split` ms wide."""
    last = grid_last(start, end, step)
    final_last = start - step if final is None else min(last, floor_grid(final, start % step, step))
    buckets = tuple(bucket_runs(start, final_last, step, split)) if final_last >= start else ()
    return Grid(start, last, step, final_last, buckets)


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do for one request, given what its buckets hold.

    `fetch` are the runs to ask the upstream for, in time order; with `whole`, the one run is
    the client's own request, sent as it came. `writes[b]` says which fetched runs go into bucket
    b's extent: (index into `fetch`, the part of it inside the bucket). The recent tail, when
    there is one, is the end of the last fetched run and is in no write.
    """

    whole: bool
    held: tuple[Run, ...]  # the request's points the extents hold, in time order
    fetch: tuple[Run, ...]
    writes: tuple[tuple[tuple[int, Run], ...], ...]
    recent: Run | None

    def held_until(self, step: int) -> int | None:
        """The last point of what is held when that is all of the request up to it and the
        fetch is everything after (one run, or several end to end): what an answer can be made
        of when the fetch fails. None otherwise (nothing held, or a gap before the end)."""
        if self.whole or not self.fetch or len(self.held) != 1 or self.held[0][1] + step != self.fetch[0][0]:
            return None
        for (_, hi), (lo, _) in zip(self.fetch, self.fetch[1:], strict=False):
            if hi + step != lo:
                return None
        return self.held[0][1]


def plan(grid: Grid, coverage: Sequence[Sequence[Run]], no_cache: bool) -> Plan:
    """The plan for `grid` when bucket i's extent covers `coverage[i]` (runs on the same grid,
    possibly beyond the request). Nothing held, or a client that asked for a fresh answer: the
    client's own request is sent whole, and every bucket is written from it."""
    if no_cache or not any(coverage):
        writes: tuple[tuple[tuple[int, Run], ...], ...] = tuple(((0, run),) for _, run in grid.buckets)
        return Plan(True, (), ((grid.start, grid.last),), writes, grid.recent)
    held: list[Run] = []
    fetch: list[Run] = []
    for (_, run), covered in zip(grid.buckets, coverage, strict=True):
        gaps = missing_runs(list(covered), run[0], run[1], grid.step)
        fetch.extend(gaps)
        held.extend(_complement(gaps, run, grid.step))
    recent = grid.recent
    if recent is not None:
        if fetch and fetch[-1][1] + grid.step == recent[0]:
            fetch[-1] = (fetch[-1][0], grid.last)
        else:
            fetch.append(recent)
    writes = tuple(_writes(run, fetch) for _, run in grid.buckets)
    return Plan(False, tuple(_joined(held, grid.step)), tuple(fetch), writes, recent)


def _complement(gaps: list[Run], run: Run, step: int) -> list[Run]:
    """The parts of `run` outside `gaps` (sorted, disjoint runs within it)."""
    out: list[Run] = []
    cursor = run[0]
    for lo, hi in gaps:
        if lo > cursor:
            out.append((cursor, lo - step))
        cursor = hi + step
    if cursor <= run[1]:
        out.append((cursor, run[1]))
    return out


def _joined(runs: list[Run], step: int) -> list[Run]:
    """Sorted runs with those end to end made one."""
    out: list[Run] = []
    for lo, hi in runs:
        if out and out[-1][1] + step == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def _writes(run: Run, fetch: list[Run]) -> tuple[tuple[int, Run], ...]:
    out = []
    for index, (lo, hi) in enumerate(fetch):
        lo, hi = max(run[0], lo), min(run[1], hi)
        if lo <= hi:
            out.append((index, (lo, hi)))
    return tuple(out)
