"""Which embedded store holds a host's shared state (issue 17): LMDB (`lmdb`), SQLite in WAL
mode (stdlib `sqlite3`), and `diskcache` (SQLite underneath, with its own eviction), each on
/dev/shm and on the disk under /tmp.

For each: a 4 KiB read that hits, a 4 KiB write, a read-modify-write transaction (what a rate
bucket or a slot costs), the same transaction from 2 processes at once on one key, and how long
the others wait when a process is SIGKILLed inside a write transaction.

    .venv/bin/python bench/bench_host_store.py
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sqlite3
import struct
import tempfile
import time
from collections.abc import Callable
from typing import Any

import lmdb

try:
    import diskcache  # only for this comparison: pip install diskcache
except ImportError:
    diskcache = None

VALUE = os.urandom(4096)
N = 20_000


class Lmdb:
    name = "lmdb"

    def __init__(self, path: str) -> None:
        self.env = lmdb.open(
            path,
            map_size=1 << 30,
            subdir=True,
            sync=False,
            metasync=False,
            max_dbs=4,
            lock=True,
            readahead=False,
        )

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(buffers=True) as txn:
            found = txn.get(key)
            return None if found is None else bytes(found)

    def put(self, key: bytes, value: bytes) -> None:
        with self.env.begin(write=True) as txn:
            txn.put(key, value)

    def incr(self, key: bytes) -> int:
        with self.env.begin(write=True) as txn:
            found = txn.get(key)
            count = (struct.unpack("<q", found)[0] if found else 0) + 1
            txn.put(key, struct.pack("<q", count))
            return count

    def die_in_write(self, key: bytes) -> None:
        txn = self.env.begin(write=True)
        txn.put(key, b"half")
        os.kill(os.getpid(), signal.SIGKILL)


class Sqlite:
    name = "sqlite-wal"

    def __init__(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)
        self.db = sqlite3.connect(os.path.join(path, "s.db"), isolation_level=None, timeout=30)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("pragma synchronous=off")
        self.db.execute("create table if not exists kv (k blob primary key, v blob) without rowid")

    def get(self, key: bytes) -> bytes | None:
        row = self.db.execute("select v from kv where k=?", (key,)).fetchone()
        return None if row is None else row[0]

    def put(self, key: bytes, value: bytes) -> None:
        self.db.execute("insert or replace into kv values (?, ?)", (key, value))

    def incr(self, key: bytes) -> int:
        self.db.execute("begin immediate")
        row = self.db.execute("select v from kv where k=?", (key,)).fetchone()
        count = (struct.unpack("<q", row[0])[0] if row else 0) + 1
        self.db.execute("insert or replace into kv values (?, ?)", (key, struct.pack("<q", count)))
        self.db.execute("commit")
        return count

    def die_in_write(self, key: bytes) -> None:
        self.db.execute("begin immediate")
        self.db.execute("insert or replace into kv values (?, ?)", (key, b"half"))
        os.kill(os.getpid(), signal.SIGKILL)


class Diskcache:
    name = "diskcache"

    def __init__(self, path: str) -> None:
        self.cache = diskcache.Cache(path, size_limit=1 << 30, sqlite_synchronous=0)

    def get(self, key: bytes) -> bytes | None:
        return self.cache.get(key)  # type: ignore[no-any-return]

    def put(self, key: bytes, value: bytes) -> None:
        self.cache.set(key, value)

    def incr(self, key: bytes) -> int:
        return int(self.cache.incr(key))

    def die_in_write(self, key: bytes) -> None:
        with self.cache.transact():
            self.cache.set(key, b"half")
            os.kill(os.getpid(), signal.SIGKILL)


def per_op(fn: Callable[[], Any], n: int = N) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def _incr_loop(kind: type, path: str, n: int, out: Any) -> None:
    store = kind(path)
    start = time.perf_counter()
    for _ in range(n):
        store.incr(b"counter2")
    out.put(time.perf_counter() - start)


def _die(kind: type, path: str) -> None:
    kind(path).die_in_write(b"victim")


def measure(kind: type, root: str) -> dict[str, float]:
    path = tempfile.mkdtemp(dir=root)
    try:
        store = kind(path)
        for i in range(1000):
            store.put(b"k%d" % i, VALUE)
        figures = {
            "get_us": per_op(lambda: store.get(b"k7")),
            "put_us": per_op(lambda: store.put(b"k8", VALUE), N // 4),
            "rmw_us": per_op(lambda: store.incr(b"counter"), N // 4),
        }
        queue: Any = multiprocessing.Queue()
        n = N // 4
        procs = [multiprocessing.Process(target=_incr_loop, args=(kind, path, n, queue)) for _ in range(2)]
        wall = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - wall
        assert store.incr(b"counter2") == 2 * n + 1, "lost updates"
        figures["rmw_2proc_per_s"] = 2 * n / wall
        dying = multiprocessing.Process(target=_die, args=(kind, path))
        dying.start()
        dying.join()
        start = time.perf_counter()
        store.incr(b"after-death")
        figures["after_kill_ms"] = (time.perf_counter() - start) * 1000
        figures["half_write_seen"] = float(store.get(b"victim") is not None)
        return figures
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main() -> None:
    multiprocessing.set_start_method("spawn")  # LMDB: an environment must not cross a fork
    print(
        f"{'store':<11} {'where':<9} {'get µs':>7} {'put µs':>7} {'rmw µs':>7} {'2-proc rmw/s':>13} "
        f"{'after kill ms':>14} {'half write seen':>16}"
    )
    for root in ("/dev/shm", "/tmp"):
        for kind in (Lmdb, Sqlite, Diskcache) if diskcache is not None else (Lmdb, Sqlite):
            f = measure(kind, root)
            print(
                f"{kind.name:<11} {root:<9} {f['get_us']:>7.1f} {f['put_us']:>7.1f} {f['rmw_us']:>7.1f} "
                f"{f['rmw_2proc_per_s']:>13,.0f} {f['after_kill_ms']:>14.1f} {bool(f['half_write_seen'])!s:>16}"
            )


if __name__ == "__main__":
    main()
