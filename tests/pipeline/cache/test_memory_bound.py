"""The memory tier's byte bound counts what its entries really cost, small ones included."""

from __future__ import annotations

import gc
import os
import time
import tracemalloc

import pytest

from gateway.pipeline.cache import codec
from gateway.pipeline.cache.tiers import MemoryTier

BOUND = 2 * 1024 * 1024


@pytest.mark.parametrize("payload", [50, 300, 2_000, 30_000])
def test_real_memory_stays_near_the_bound(payload: int) -> None:
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tier = MemoryTier(BOUND, time.time)
        for i in range(3 * BOUND // payload):
            tier.put(
                f"gwc:{i:040x}:b{i}",
                codec.Entry(codec.KIND_RESPONSE, time.time() + 3600, 1, os.urandom(payload)),
            )
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert tier.bytes <= BOUND
    assert held <= 1.25 * BOUND, f"{held / BOUND:.2f} x the bound for {payload}-byte entries"
