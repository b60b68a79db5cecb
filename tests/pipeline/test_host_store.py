"""The host's store (`pipeline.host`), its cache records: bounded in bytes whatever is written,
counted exactly, and never half-written when a writer is killed mid-transaction."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import lmdb
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pipeline.host import HostStore, record_bytes

BOUND = 256 * 1024

writes = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 70_000), st.floats(-10, 10)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=writes)
def test_the_bound_holds_and_the_count_is_exact(tmp_path_factory, writes) -> None:
    store = HostStore(str(tmp_path_factory.mktemp("host")), BOUND)
    try:
        kept: dict[bytes, tuple[int, float]] = {}  # the last value stored: its size, keep_until
        for name, size, keep in writes:
            key = b"k%d" % name
            stored = store.put(key, bytes([name % 251]) * size, keep_until=100.0 + keep)
            assert stored == (record_bytes(key, size) <= BOUND // 4)
            if stored:
                kept[key] = (size, 100.0 + keep)
            assert store.stored_bytes <= BOUND
        live = store.cache_keys()
        assert set(live) <= set(kept)
        assert store.stored_bytes == sum(record_bytes(key, kept[key][0]) for key in live)
        # What is there is what was last stored under its key, until its keep_until.
        found = store.get_many(live, now=100.0)
        for key, value in zip(live, found, strict=True):
            size, keep_until = kept[key]
            assert value == (bytes([int(key[1:]) % 251]) * size if keep_until > 100.0 else None)
    finally:
        store.close()


def test_the_least_recently_stored_go_first(tmp_path: Path) -> None:
    store = HostStore(str(tmp_path), BOUND)
    size = BOUND // 8
    for i in range(12):
        assert store.put(b"k%d" % i, b"x" * size, keep_until=1e12)
    present = {
        key
        for key, value in zip(store.cache_keys(), store.get_many(store.cache_keys(), 0), strict=True)
        if value
    }
    assert b"k11" in present and b"k0" not in present
    newest_first = [b"k%d" % i for i in range(11, -1, -1)]
    assert newest_first[: len(present)] == sorted(present, key=lambda k: -int(k[1:]))
    store.close()


def _die_while_writing(path: str, ready: multiprocessing.synchronize.Event) -> None:
    env = lmdb.open(path, map_size=2 * BOUND + (64 << 20), subdir=True, max_dbs=4)
    cache = env.open_db(b"cache")
    txn = env.begin(write=True)
    txn.put(b"half", b"written by a process about to die", db=cache)
    ready.set()
    os.kill(os.getpid(), signal.SIGKILL)


def test_a_writer_killed_mid_transaction_leaves_no_lock_and_nothing_seen(tmp_path: Path) -> None:
    store = HostStore(str(tmp_path), BOUND)
    assert store.put(b"before", b"v", keep_until=1e12)
    spawn = multiprocessing.get_context("spawn")  # an LMDB environment must not cross a fork
    ready = spawn.Event()
    dying = spawn.Process(target=_die_while_writing, args=(str(tmp_path), ready))
    dying.start()
    dying.join(30)
    assert dying.exitcode == -signal.SIGKILL and ready.is_set()
    # The writer's lock came back with its death; what it wrote was never published.
    assert store.put(b"after", b"w", keep_until=1e12)
    assert store.get_many([b"before", b"after", b"half"], now=0) == [b"v", b"w", None]
    assert store.transact(lambda txn: txn.put("counter", b"1", 1000) or "ran") == "ran"
    store.close()
