"""Property tests of the splitting and merging arithmetic, against plain sets of timestamps."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.cache.extents import add_run, bucket_runs, grid_last, missing_runs
from gateway.pipeline.cache.matrix import Matrix, Series, assemble, label_key, render, replace_range

steps = st.integers(min_value=1, max_value=90_000)
offsets = st.integers(min_value=-(10**12), max_value=10**12)


def _grid(first: int, last: int, step: int) -> set[int]:
    return set(range(first, last + 1, step))


@given(start=offsets, points=st.integers(0, 400), step=steps, split=st.integers(1000, 5_000_000))
def test_bucket_runs_partition_the_grid_at_split_boundaries(start, points, step, split):
    last = start + points * step
    seen: list[int] = []
    previous = None
    for bucket, (lo, hi) in bucket_runs(start, last, step, split):
        assert previous is None or bucket > previous
        previous = bucket
        assert (lo - start) % step == 0 and (hi - start) % step == 0
        assert bucket * split <= lo <= hi < (bucket + 1) * split
        seen.extend(range(lo, hi + 1, step))
    assert seen == list(range(start, last + 1, step))


@st.composite
def runs_on_a_grid(draw):
    step = draw(steps)
    origin = draw(offsets)
    runs = []
    for _ in range(draw(st.integers(0, 12))):
        a = draw(st.integers(0, 200))
        b = draw(st.integers(a, 200))
        runs.append((origin + a * step, origin + b * step))
    a = draw(st.integers(0, 200))
    b = draw(st.integers(a, 200))
    return step, runs, (origin + a * step, origin + b * step)


@given(runs_on_a_grid())
def test_coverage_is_the_union_and_stays_merged(case):
    step, runs, query = case
    coverage: list[tuple[int, int]] = []
    expected: set[int] = set()
    for run in runs:
        coverage = add_run(coverage, run, step)
        expected |= _grid(run[0], run[1], step)
    covered = set().union(*(_grid(a, b, step) for a, b in coverage)) if coverage else set()
    assert covered == expected
    # merged: sorted, disjoint and not even touching, so it cannot grow by repetition
    for (_, b1), (a2, _) in itertools.pairwise(coverage):
        assert b1 + step < a2
    gaps = missing_runs(coverage, query[0], query[1], step)
    missing = set().union(*(_grid(a, b, step) for a, b in gaps)) if gaps else set()
    assert missing == _grid(query[0], query[1], step) - expected


@given(start=offsets, span=st.integers(0, 10**7), step=steps)
def test_grid_last_is_the_last_evaluation_time(start, span, step):
    last = grid_last(start, start + span, step)
    assert (last - start) % step == 0 and start + span - step < last <= start + span


@st.composite
def matrices(draw):
    step = draw(st.integers(1, 60_000))
    n = draw(st.integers(0, 60))
    times = [i * step for i in range(n)]
    matrix = Matrix()
    for index in range(draw(st.integers(0, 5))):
        metric = {"__name__": "m", "i": str(draw(st.integers(0, 3))) + str(index)}
        chosen = [t for t in times if draw(st.booleans())]
        values = [(t, repr(draw(st.floats(allow_nan=True)))) for t in chosen]
        if values:
            matrix.series[label_key(metric)] = Series(metric, values)
    cuts = sorted(draw(st.lists(st.integers(0, max(0, n - 1)), max_size=6)))
    return matrix, times, cuts


@settings(max_examples=200)
@given(matrices())
def test_split_and_reassemble_is_identity(case):
    matrix, times, cuts = case
    if not times:
        return
    bounds = [times[0], *[times[c] for c in cuts], times[-1] + 1]
    parts = []
    for lo, hi in itertools.pairwise(bounds):
        if lo >= hi:
            continue
        piece = Matrix()
        replace_range(piece, matrix, lo, hi - 1)
        parts.append((piece, lo, hi - 1))
    assert render(assemble(parts)) == render(matrix)


@settings(max_examples=200)
@given(matrices(), matrices())
def test_replace_range_takes_new_points_inside_and_keeps_old_outside(old_case, new_case):
    old, times, _ = old_case
    new, _, _ = new_case
    if not times:
        return
    lo, hi = times[0], times[len(times) // 2]
    target = Matrix({k: Series(s.metric, list(s.values)) for k, s in old.series.items()})
    replace_range(target, new, lo, hi)
    for key in set(old.series) | set(new.series):
        got = target.series[key].values if key in target.series else []
        outside = [p for p in (old.series[key].values if key in old.series else []) if not lo <= p[0] <= hi]
        inside = [p for p in (new.series[key].values if key in new.series else []) if lo <= p[0] <= hi]
        assert got == sorted(outside + inside)
