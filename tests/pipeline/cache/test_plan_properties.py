"""Property tests of the range cache's planner, against plain sets of timestamps: what is held
and what is fetched make the request's grid exactly, fresh points are never written into an
extent, and a stale answer is only ever made of a held prefix."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from gateway.pipeline.cache.extents import Run, add_run, ceil_grid, floor_grid
from gateway.pipeline.cache.plan import Grid, cut, plan


def _points(runs: list[Run] | tuple[Run, ...], step: int) -> list[int]:
    return [t for lo, hi in runs for t in range(lo, hi + 1, step)]


@st.composite
def grids(draw: st.DrawFn) -> tuple[Grid, int]:
    step = draw(st.sampled_from([1000, 15_000, 60_000, 7_000, 3_600_000]))
    split = draw(st.sampled_from([60_000, 300_000, 600_000, 3_600_000, 86_400_000]))
    start = draw(st.integers(1_600_000_000_000, 1_600_100_000_000))
    points = draw(st.integers(0, 300))
    end = start + points * step + draw(st.integers(0, step - 1))  # an end off the grid
    final = draw(st.none() | st.integers(start - 3 * step, end + 3 * step))
    return cut(start, end, step, split, final), split


@st.composite
def cases(draw: st.DrawFn) -> tuple[Grid, list[list[Run]], bool]:
    grid, split = draw(grids())
    offset = grid.start % grid.step
    coverage: list[list[Run]] = []
    for index, _ in grid.buckets:
        # what the bucket's extent holds: runs on the grid anywhere in the bucket (other
        # requests' points too, beyond this one's window), kept merged as add_run keeps them
        first = ceil_grid(index * split, offset, grid.step)
        count = (floor_grid((index + 1) * split - 1, offset, grid.step) - first) // grid.step + 1
        runs: list[Run] = [(first, first + (count - 1) * grid.step)] if draw(st.booleans()) else []
        for _ in range(draw(st.integers(0, 3))):
            lo = draw(st.integers(0, count - 1))
            hi = draw(st.integers(lo, count - 1))
            runs = add_run(runs, (first + lo * grid.step, first + hi * grid.step), grid.step)
        coverage.append(runs)
    return grid, coverage, draw(st.booleans())


@given(grids())
def test_the_grid_is_the_requests_points_and_buckets_cut_its_final_part(case: tuple[Grid, int]) -> None:
    grid, split = case
    assert grid.start <= grid.last and (grid.last - grid.start) % grid.step == 0
    assert grid.final_last <= grid.last and (grid.final_last - grid.start) % grid.step == 0
    final_points = _points([run for _, run in grid.buckets], grid.step)
    assert final_points == [t for t in range(grid.start, grid.last + 1, grid.step) if t <= grid.final_last]
    for index, (lo, hi) in grid.buckets:
        assert index * split <= lo <= hi < (index + 1) * split
    assert grid.recent is None or grid.recent[0] <= grid.recent[1]
    recent = _points([grid.recent] if grid.recent else [], grid.step)
    assert final_points + recent == list(range(grid.start, grid.last + 1, grid.step))
    assert grid.all_final == (not recent)


@given(cases())
def test_held_and_fetched_make_the_grid_exactly(case: tuple[Grid, list[list[Run]], bool]) -> None:
    grid, coverage, no_cache = case
    todo = plan(grid, coverage, no_cache)
    everything = list(range(grid.start, grid.last + 1, grid.step))
    held, fetched = _points(todo.held, grid.step), _points(todo.fetch, grid.step)
    assert sorted(held + fetched) == everything  # no point twice, none missing, none outside
    for lo, hi in (*todo.held, *todo.fetch):
        assert grid.start <= lo <= hi <= grid.last
        assert (lo - grid.start) % grid.step == 0 and (hi - grid.start) % grid.step == 0
    for (_, hi), (lo, _) in itertools.pairwise(todo.fetch):
        assert hi < lo
    for (_, hi), (lo, _) in itertools.pairwise(todo.held):
        assert hi + grid.step < lo  # held runs end to end are one
    if todo.whole:
        assert todo.fetch == ((grid.start, grid.last),) and not todo.held
    assert todo.whole == (no_cache or not any(coverage))


@given(cases())
def test_what_is_held_is_what_the_extents_cover(case: tuple[Grid, list[list[Run]], bool]) -> None:
    grid, coverage, _ = case
    todo = plan(grid, coverage, no_cache=False)
    covered = set(_points([run for runs in coverage for run in runs], grid.step))
    final = set(_points([run for _, run in grid.buckets], grid.step))
    if not todo.whole:
        assert set(_points(todo.held, grid.step)) == covered & final


@given(cases())
def test_writes_keep_only_final_points_each_in_its_bucket(case: tuple[Grid, list[list[Run]], bool]) -> None:
    grid, coverage, no_cache = case
    todo = plan(grid, coverage, no_cache)
    assert len(todo.writes) == len(grid.buckets)
    written: list[int] = []
    for (_, run), writes in zip(grid.buckets, todo.writes, strict=True):
        for index, (lo, hi) in writes:
            assert run[0] <= lo <= hi <= run[1] <= grid.final_last  # never a fresh point
            fetched = todo.fetch[index]
            assert fetched[0] <= lo <= hi <= fetched[1]
            written.extend(range(lo, hi + 1, grid.step))
    # every final point fetched is written (once); no recent point is
    fetched_final = [t for t in _points(todo.fetch, grid.step) if t <= grid.final_last]
    assert sorted(written) == fetched_final


@given(cases())
def test_the_recent_tail_is_always_fetched_and_last(case: tuple[Grid, list[list[Run]], bool]) -> None:
    grid, coverage, no_cache = case
    todo = plan(grid, coverage, no_cache)
    assert todo.recent == grid.recent
    if todo.recent is not None:
        assert todo.fetch[-1][0] <= todo.recent[0] and todo.fetch[-1][1] == todo.recent[1] == grid.last
        assert todo.recent[0] > grid.final_last


@given(cases())
def test_sub_range_fetches_do_not_cross_split_boundaries(case: tuple[Grid, list[list[Run]], bool]) -> None:
    """Each historical gap is fetched per bucket (what the extents record is per bucket);
    only the recent tail joins the gap before it."""
    grid, coverage, _ = case
    todo = plan(grid, coverage, no_cache=False)
    if todo.whole:
        return
    for index, (lo, hi) in enumerate(todo.fetch):
        top = min(hi, grid.final_last)
        if lo > top:
            continue
        touched = [b for b, writes in enumerate(todo.writes) if any(i == index for i, _ in writes)]
        assert len(touched) == 1


@given(cases())
def test_a_stale_answer_is_a_held_prefix_with_everything_after_it_missing(
    case: tuple[Grid, list[list[Run]], bool],
) -> None:
    grid, coverage, no_cache = case
    todo = plan(grid, coverage, no_cache)
    until = todo.held_until(grid.step)
    held = _points(todo.held, grid.step)
    prefix = bool(held) and held == list(range(grid.start, held[-1] + 1, grid.step))
    assert (until is not None) == (not todo.whole and prefix and bool(todo.fetch))
    if until is not None:
        assert held[-1] == until
        assert _points(todo.fetch, grid.step) == list(range(until + grid.step, grid.last + 1, grid.step))
