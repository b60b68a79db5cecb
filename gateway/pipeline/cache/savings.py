"""What the cache saved: the query samples AMP would have processed, and billed (QSP), for what
the cache served instead of fetching.

A whole response keeps what its fetch processed (codec's `processed`). A range extent keeps the
samples processed at each step it holds (`Matrix.per_step`, from the stats of the fetches
written into it), so that an answer assembled from extents saves the cost of exactly the steps
served from them. A step fetched without stats has no cost kept and saves 0: never a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.pipeline.cache.extents import Run
from gateway.pipeline.cache.matrix import Matrix


def steps_cost(matrices: Iterable[Matrix], runs: Sequence[Run]) -> int:
    """The samples kept for the steps within `runs` (inclusive ms ranges) in `matrices`, which
    hold disjoint steps (the buckets of one grid, or the fetches of disjoint runs)."""
    total = 0
    for matrix in matrices:
        for t, samples in matrix.per_step.items():
            for lo, hi in runs:
                if lo <= t <= hi:
                    total += samples
                    break
    return total
