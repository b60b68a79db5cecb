"""The host's store (`pipeline.host`), its cache records: bounded in bytes whatever is written,
counted exactly, and never half-written when a writer is killed mid-transaction."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import lmdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.pipeline import host
from gateway.pipeline.host import MAX_RECORD_BYTES, HostStore, record_bytes

BOUND = 256 * 1024

writes = st.lists(
    st.tuples(st.integers(0, 40), st.integers(0, 70_000), st.floats(-10, 10)),
    min_size=1,
    max_size=60,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=writes)
def test_the_bound_holds_and_the_count_is_exact(tmp_path_factory, writes) -> None:
    store = HostStore(str(tmp_path_factory.mktemp("host")), BOUND, create=True)
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
    store = HostStore(str(tmp_path), BOUND, create=True)
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
    store = HostStore(str(tmp_path), BOUND, create=True)
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


def test_state_records_are_bounded_and_expired_ones_dropped_a_few_at_a_time(
    tmp_path: Path, monkeypatch
) -> None:
    """A flood of distinct keys (failed sign-ins from many addresses) keeps at most
    MAX_STATE_RECORDS, the soonest to expire going first; expired records go a few per
    transaction, never in one scan of them all."""
    monkeypatch.setattr(host, "MAX_STATE_RECORDS", 50)
    store = HostStore(str(tmp_path), BOUND, create=True)
    for i in range(200):
        store.transact(lambda txn, i=i: txn.put(f"sign_in:{i}", b"1", 60_000 + i))
        assert len(store.state_keys()) <= 50
    assert set(store.state_keys()) == {f"sign_in:{i}" for i in range(150, 200)}
    monkeypatch.setattr(host, "MAX_STATE_RECORDS", 1000)
    for i in range(100):  # expire at once
        store.transact(lambda txn, i=i: txn.put(f"short:{i}", b"1", 300))
    time.sleep(0.4)

    def entries() -> int:
        with store._open().begin() as txn:  # the expiry index and the records agree
            assert txn.stat(store._expiry)["entries"] == txn.stat(store._state)["entries"]
            return int(txn.stat(store._state)["entries"])

    before = entries()
    store.transact(lambda txn: txn.put("one more", b"1", 60_000))
    dropped_by_one = before + 1 - entries()
    assert dropped_by_one == host._TIDY
    while entries() > 51:
        store.transact(lambda txn: None)
    assert set(store.state_keys()) == {f"sign_in:{i}" for i in range(150, 200)} | {"one more"}
    store.close()


def test_a_deleted_directory_is_not_made_again_by_a_worker(tmp_path: Path) -> None:
    path = tmp_path / "host"
    path.mkdir(mode=0o700)
    HostStore.make(str(path), BOUND)
    for name in os.listdir(path):
        os.unlink(path / name)
    path.rmdir()
    worker = HostStore(str(path), BOUND)
    assert worker.transact(lambda txn: "ran") is None
    assert not worker.put(b"k", b"v", keep_until=1e12)
    assert not path.exists()


@pytest.mark.parametrize("mode", [0o755, 0o770, 0o701])
def test_a_directory_others_may_use_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "host"
    path.mkdir()
    path.chmod(mode)
    assert HostStore(str(path), BOUND, create=True).transact(lambda txn: "ran") is None
    assert not (path / "data.mdb").exists()


def test_no_record_larger_than_the_bound_holds_the_writer_long(tmp_path: Path) -> None:
    store = HostStore(str(tmp_path), 64 * MAX_RECORD_BYTES, create=True)
    assert store.put(b"fits", b"x" * (MAX_RECORD_BYTES // 2), keep_until=1e12)
    assert not store.put(b"too large", b"x" * MAX_RECORD_BYTES, keep_until=1e12)
    store.close()


def test_what_is_read_stays_while_what_is_not_goes(tmp_path: Path, monkeypatch) -> None:
    """A dashboard's extent, read on every refresh, outlives the whole responses of the windows
    that moved on, each written once and never read again. (Where the older half begins is read
    every read here: this store turns over in 28 writes, a real one in thousands.)"""
    monkeypatch.setattr(host, "_AGE_EVERY", 1)
    store = HostStore(str(tmp_path), BOUND, create=True)
    assert store.put(b"extent", b"e" * 3000, keep_until=1e12)
    for refresh in range(300):
        assert store.put(b"whole %d" % refresh, b"w" * 9000, keep_until=1e12)
        assert store.get_many([b"extent"], now=0) == [b"e" * 3000], refresh
    assert store.stored_bytes <= BOUND
    store.close()
