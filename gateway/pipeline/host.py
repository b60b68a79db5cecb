"""State shared by the workers of one `serve` on one host, without Redis: an LMDB environment in
a directory the supervisor makes (`cache.host_dir`), opened by each worker.

Two kinds of records:
- **cache**: cache entries and coalesced answers, bounded by `max_bytes` (what their pages
  take, counted as LMDB lays them out); past the bound the least recently stored go first, a
  record read being stored again (see get_many). Each carries the time after which it is
  dropped (`keep_until`, the cache's clock).
- **state**: rate buckets, slot leases, coalescing locks and failed sign-in counts, each with its
  own expiry (milliseconds of the host's monotonic clock, which every process shares), changed
  only inside a write transaction (`transact`): what Redis does in a Lua script, the host does
  in a transaction. An index by expiry lets each transaction drop a few expired records (never
  a scan of them all inside a request's transaction); at most MAX_STATE_RECORDS are kept, the
  soonest to expire going first past it (a flood of failed sign-ins from many addresses).

One writer at a time for the whole host: a record is at most MAX_RECORD_BYTES, so that no write
holds the others' rate, slot and lock transactions for long (a 4 MiB write with its evictions
took about 15 ms; a 16 MiB one 112-119 ms).

The supervisor makes the directory (mode 0700) and the environment in it; a worker opens only
an environment that exists in a directory of its own user that nobody else may read: a
directory deleted under a running `serve` is not made again by one worker (which would split
the state from the others', and readable by all).

Why LMDB (bench/bench_host_store.py, bench/README.md): a 4 KiB read costs 1.3-1.8 µs where SQLite
in WAL mode costs 12-16 µs and diskcache 11-14 µs; a read-modify-write 7-8 µs (SQLite 47-54,
diskcache 43-47); 2 processes incrementing one counter do 51-62 thousand a second (SQLite 17-23,
diskcache 15-18). A process SIGKILLed inside a write transaction costs the next writer 0.1 ms:
LMDB's writer lock is a robust mutex, and what the dead transaction wrote is never seen (pages
are copied on write and published by one pointer at commit). Readers never block and are never
blocked.

Like Redis, it is a helper: a failing environment (no room for its map, a damaged file) is
logged once, the cache goes without it and the state falls back to each process's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import time
from collections.abc import Callable
from typing import TypeVar

import lmdb

log = logging.getLogger("gateway.host")

T = TypeVar("T")

_CACHE_HEAD = struct.Struct("!Qd")  # the record's store sequence, keep_until (cache clock, s)
_SEQ = struct.Struct("!Q")
_STATE_HEAD = struct.Struct("!q")  # expires at (monotonic ms)
_PAGE = 4096
# Values up to about this size share leaf pages; larger ones take whole overflow pages.
_INLINE = 2000
# The map may hold this much more than the bound: pages freed while a reader still sees them,
# and the trees' own pages.
_MAP_SLACK = 64 << 20
_TIDY = 32  # expired state records each transaction may drop
_AGE_EVERY = 256  # cache reads between two readings of where the older half of the store begins
MAX_STATE_RECORDS = 100_000  # ~17 MB of map with the index, within _MAP_SLACK
MAX_RECORD_BYTES = 4 << 20
_EXPIRY = struct.Struct("!q")  # the expiry index's key: expires at (ms), then the record's key
_FAILURES = (lmdb.Error, OSError)
_MAX_KEY = 400  # bytes of a state record's key stored as it is (LMDB's bound: 511)


def monotonic_ms() -> int:
    return int(time.monotonic() * 1000)


def state_key(key: str) -> bytes:
    """A state record's key as stored: LMDB takes keys of at most 511 bytes, so a longer one (a
    principal's long name) is stored under a digest of it."""
    encoded = key.encode()
    if len(encoded) <= _MAX_KEY:
        return encoded
    return b"#" + hashlib.sha256(encoded).hexdigest().encode()


def record_bytes(key: bytes, value_len: int) -> int:
    """What a record takes in the map, as LMDB lays it out."""
    size = value_len + _CACHE_HEAD.size
    if size > _INLINE:
        return -(-(size + 16) // _PAGE) * _PAGE + len(key) + 64
    return size + len(key) + 64


_Opened = tuple[
    lmdb.Environment, lmdb._Database, lmdb._Database, lmdb._Database, lmdb._Database, lmdb._Database
]
# LMDB allows one Environment per file in a process: the stores on one path share it (tests
# put two workers' gateways in one process), closed when the last one closes.
_OPEN: dict[str, tuple[int, int, _Opened]] = {}


class UnsafeDirectory(OSError):
    """The store's directory is missing, or others than its owner may use it."""


def _check_directory(path: str) -> None:
    try:
        found = os.stat(path)
    except FileNotFoundError:
        raise UnsafeDirectory(f"{path} is gone") from None
    if found.st_uid != os.geteuid() or found.st_mode & 0o077:
        raise UnsafeDirectory(
            f"{path} is not this user's alone (owner {found.st_uid}, mode {found.st_mode:o})"
        )


def _open_environment(path: str, map_size: int, create: bool) -> _Opened:
    path = os.path.realpath(path)
    known = _OPEN.get(path)
    if known is not None and known[0] == os.getpid():
        _OPEN[path] = (known[0], known[1] + 1, known[2])
        return known[2]
    _check_directory(path)
    env = lmdb.open(
        path,
        map_size=map_size,
        subdir=True,
        create=create,
        mode=0o600,
        max_dbs=5,
        max_readers=1024,
        # Nothing here must outlive the host: what the OS has not written when the machine
        # stops is lost with the processes that would read it.
        sync=False,
        metasync=False,
        readahead=False,
        meminit=False,
    )
    env.reader_check()  # reader slots of processes that died
    opened: _Opened = (
        env,
        env.open_db(b"cache"),
        env.open_db(b"order"),
        env.open_db(b"meta"),
        env.open_db(b"state"),
        env.open_db(b"expiry"),
    )
    _OPEN[path] = (os.getpid(), 1, opened)
    return opened


def _close_environment(path: str) -> None:
    path = os.path.realpath(path)
    known = _OPEN.get(path)
    if known is None or known[0] != os.getpid():
        return
    if known[1] > 1:
        _OPEN[path] = (known[0], known[1] - 1, known[2])
        return
    del _OPEN[path]
    known[2][0].close()


class StateTxn:
    """State records inside one write transaction; `now_ms` is the host's monotonic clock."""

    def __init__(
        self, txn: lmdb.Transaction, db: lmdb._Database, expiry: lmdb._Database, now_ms: int
    ) -> None:
        self._txn = txn
        self._db = db
        self._expiry = expiry
        self.now_ms = now_ms
        self.added = 0  # records made less records deleted

    def get(self, key: str) -> bytes | None:
        """The record's value; None when absent or expired."""
        found = self._txn.get(state_key(key), db=self._db)
        if found is None:
            return None
        (expires,) = _STATE_HEAD.unpack_from(found)
        if expires <= self.now_ms:
            return None
        return bytes(found[_STATE_HEAD.size :])

    def ttl_ms(self, key: str) -> int | None:
        found = self._txn.get(state_key(key), db=self._db)
        if found is None:
            return None
        (expires,) = _STATE_HEAD.unpack_from(found)
        return expires - self.now_ms if expires > self.now_ms else None

    def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        stored = state_key(key)
        self._unindex(stored)
        expires = self.now_ms + max(1, ttl_ms)
        self._txn.put(stored, _STATE_HEAD.pack(expires) + value, db=self._db)
        self._txn.put(_EXPIRY.pack(expires) + stored, b"", db=self._expiry)
        self.added += 1

    def delete(self, key: str) -> None:
        stored = state_key(key)
        if self._unindex(stored):
            self._txn.delete(stored, db=self._db)

    def _unindex(self, stored: bytes) -> bool:
        """Drops the index entry of the record under `stored`; whether there was a record."""
        found = self._txn.get(stored, db=self._db)
        if found is None:
            return False
        self._txn.delete(bytes(found[: _STATE_HEAD.size]) + stored, db=self._expiry)
        self.added -= 1
        return True

    def tidy(self, count: int) -> int:
        """Drops up to _TIDY expired records, and the soonest to expire while more than
        MAX_STATE_RECORDS would be kept; the count after."""
        cursor = self._txn.cursor(db=self._expiry)
        dropped = 0
        while dropped < _TIDY and cursor.first():
            index = bytes(cursor.key())
            (expires,) = _EXPIRY.unpack_from(index)
            if expires > self.now_ms and count + self.added - dropped <= MAX_STATE_RECORDS:
                break
            cursor.delete()
            self._txn.delete(index[_EXPIRY.size :], db=self._db)
            dropped += 1
        return count + self.added - dropped


class HostStore:
    """The environment under `path`, opened in this process on first use. `create`: made here if
    it is not there (the supervisor's, or a process's own store); else it must exist.

    An LMDB environment must not cross a fork, and py-lmdb refuses a second one for the same
    file in a process that inherited the first: `serve` spawns its workers, which open it anew.
    """

    def __init__(self, path: str, max_bytes: int, create: bool = False) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._create = create
        self._pid = -1
        self._env: lmdb.Environment | None = None
        self._failed = False
        self._reads, self._old = _AGE_EVERY, 0

    @property
    def max_record_bytes(self) -> int:
        """The largest record `put` stores: MAX_RECORD_BYTES, or a quarter of a smaller bound."""
        return min(self.max_bytes // 4, MAX_RECORD_BYTES)

    @classmethod
    def make(cls, path: str, max_bytes: int) -> None:
        """Makes the environment in `path` (a directory of this user's alone), for others to open."""
        store = cls(path, max_bytes, create=True)
        store._open()
        store.close()

    # ------------------------------------------------------------ the environment

    def _open(self) -> lmdb.Environment:
        if self._env is not None and self._pid == os.getpid():
            return self._env
        opened = _open_environment(self.path, 2 * self.max_bytes + _MAP_SLACK, self._create)
        self._env, self._cache, self._order, self._meta, self._state, self._expiry = opened
        self._pid = os.getpid()
        return self._env

    def _failure(self, what: str, err: BaseException) -> None:
        if not self._failed:
            log.warning(
                "host store %s failed (%s: %s): cache and shared state per process until it works",
                what,
                type(err).__name__,
                err,
            )
            self._failed = True

    def _worked(self) -> None:
        if self._failed:
            log.warning("host store works again")
            self._failed = False

    def close(self) -> None:
        if self._env is not None and self._pid == os.getpid():
            _close_environment(self.path)
        self._env = None

    # ------------------------------------------------------------ cache records

    def get_many(self, keys: list[bytes], now: float) -> list[bytes | None]:
        """The values under `keys` (copies), None for those absent or past their keep_until.

        A record found in the older half of the store's order is stored again as if new, so
        that what is read stays (a dashboard's extents, read on every refresh) while what is
        not goes first (the whole responses of windows that moved on): about least recently
        used, at the cost of one write for each record read once per half turn of the store."""
        try:
            env = self._open()
            out: list[bytes | None] = []
            again: list[tuple[bytes, int]] = []
            with env.begin(buffers=True) as txn:
                old = self._older_than(txn)
                for key in keys:
                    found = txn.get(key, db=self._cache)
                    if found is None:
                        out.append(None)
                        continue
                    seq, keep_until = _CACHE_HEAD.unpack_from(found)
                    if keep_until <= now:
                        out.append(None)
                        continue
                    out.append(bytes(found[_CACHE_HEAD.size :]))
                    if seq <= old:
                        again.append((key, seq))
            if again:
                self._store_again(again)
        except _FAILURES as err:
            self._failure("read", err)
            return [None] * len(keys)
        return out

    def _older_than(self, txn: lmdb.Transaction) -> int:
        """The sequence at or below which a record is older than half the records (more than
        half were stored after it); read from the store once every _AGE_EVERY reads (reading it
        every time cost 4 µs of a 11 µs read)."""
        self._reads += 1
        if self._reads >= _AGE_EVERY:
            self._reads = 0
            self._old = self._meta_int(txn, b"seq") - txn.stat(self._order)["entries"] // 2 - 1
        return self._old

    def _store_again(self, records: list[tuple[bytes, int]]) -> None:
        """Moves these records (unless written since) to the newest end of the order."""
        with self._open().begin(write=True) as txn:
            seq = self._meta_int(txn, b"seq")
            for key, was in records:
                found = txn.get(key, db=self._cache)
                if found is None or _SEQ.unpack_from(found)[0] != was:
                    continue
                seq += 1
                txn.delete(_SEQ.pack(was), db=self._order)
                txn.put(_SEQ.pack(seq), key, db=self._order)
                txn.put(key, _SEQ.pack(seq) + bytes(found[_SEQ.size :]), db=self._cache)
            txn.put(b"seq", _SEQ.pack(seq), db=self._meta)

    def peek(self, key: bytes, now: float, size: int) -> bytes | None:
        """The first `size` bytes of the value under `key` (None as for get_many)."""
        try:
            with self._open().begin(db=self._cache, buffers=True) as txn:
                found = txn.get(key)
                if found is None or _CACHE_HEAD.unpack_from(found)[1] <= now:
                    return None
                return bytes(found[_CACHE_HEAD.size : _CACHE_HEAD.size + size])
        except _FAILURES as err:
            self._failure("read", err)
            return None

    def put(self, key: bytes, value: bytes, keep_until: float) -> bool:
        """Stores `value` until `keep_until`, dropping the least recently stored records while
        the bound would be passed; False when it was not stored (larger than MAX_RECORD_BYTES or
        a quarter of the bound, or the store failed)."""
        size = record_bytes(key, len(value))
        if size > self.max_record_bytes:
            return False
        try:
            try:
                self._put(key, value, keep_until, size)
            except lmdb.MapFullError:
                self._make_room()
                self._put(key, value, keep_until, size)
        except _FAILURES as err:
            self._failure("write", err)
            return False
        self._worked()
        return True

    def _put(self, key: bytes, value: bytes, keep_until: float, size: int) -> None:
        env = self._open()
        with env.begin(write=True) as txn:
            stored = self._meta_int(txn, b"bytes") - self._drop(txn, key)
            seq = self._meta_int(txn, b"seq") + 1
            stored = self._evict(txn, stored, self.max_bytes - size)
            txn.put(key, _CACHE_HEAD.pack(seq, keep_until) + value, db=self._cache)
            txn.put(_SEQ.pack(seq), key, db=self._order)
            txn.put(b"bytes", _SEQ.pack(stored + size), db=self._meta)
            txn.put(b"seq", _SEQ.pack(seq), db=self._meta)

    def _make_room(self) -> None:
        """After MapFullError: pages freed while some reader still saw them (or a dead reader's
        slot) kept the map full. Reader slots of dead processes are let go, and a quarter of
        the bound's cache records dropped in a transaction of its own."""
        env = self._open()
        env.reader_check()
        with env.begin(write=True) as txn:
            stored = self._evict(txn, self._meta_int(txn, b"bytes"), self.max_bytes * 3 // 4)
            txn.put(b"bytes", _SEQ.pack(stored), db=self._meta)

    def _evict(self, txn: lmdb.Transaction, stored: int, room: int) -> int:
        """Drops the least recently stored records until at most `room` bytes are stored."""
        if stored <= room:
            return stored
        cursor = txn.cursor(db=self._order)
        while stored > room and cursor.first():
            key = bytes(cursor.value())
            cursor.delete()
            old = txn.pop(key, db=self._cache)
            if old is not None:
                stored -= record_bytes(key, len(old) - _CACHE_HEAD.size)
        return max(0, stored)

    def _drop(self, txn: lmdb.Transaction, key: bytes) -> int:
        """Deletes the record under `key` and its place in the order; the bytes it took."""
        old = txn.pop(key, db=self._cache)
        if old is None:
            return 0
        txn.delete(old[: _SEQ.size], db=self._order)
        return record_bytes(key, len(old) - _CACHE_HEAD.size)

    def _meta_int(self, txn: lmdb.Transaction, name: bytes) -> int:
        found = txn.get(name, db=self._meta)
        return 0 if found is None else int(_SEQ.unpack(found)[0])

    def delete(self, key: bytes) -> None:
        try:
            env = self._open()
            with env.begin(write=True) as txn:
                freed = self._drop(txn, key)
                if freed:
                    stored = self._meta_int(txn, b"bytes") - freed
                    txn.put(b"bytes", _SEQ.pack(max(0, stored)), db=self._meta)
        except _FAILURES as err:
            self._failure("write", err)

    def cache_keys(self) -> list[bytes]:
        """Every cache record's key (tests)."""
        with contextlib.suppress(*_FAILURES), self._open().begin(db=self._cache) as txn:
            return [bytes(key) for key in txn.cursor().iternext(values=False)]
        return []

    @property
    def stored_bytes(self) -> int:
        """The bytes the cache records take, as counted against the bound."""
        try:
            with self._open().begin() as txn:
                return self._meta_int(txn, b"bytes")
        except _FAILURES:
            return 0

    # ------------------------------------------------------------ state records

    def transact(self, operation: Callable[[StateTxn], T]) -> T | None:
        """operation() inside one write transaction on the state records, as every process
        sees them; None when the store failed (the caller goes on with its process's state)."""
        try:
            try:
                return self._transact(operation)
            except lmdb.MapFullError:
                self._make_room()
                return self._transact(operation)
        except _FAILURES as err:
            self._failure("state", err)
            return None

    def _transact(self, operation: Callable[[StateTxn], T]) -> T:
        env = self._open()
        with env.begin(write=True) as txn:
            state = StateTxn(txn, self._state, self._expiry, monotonic_ms())
            result = operation(state)
            count = state.tidy(self._meta_int(txn, b"state"))
            txn.put(b"state", _SEQ.pack(max(0, count)), db=self._meta)
        return result

    def peek_state(self, keys: list[str]) -> list[tuple[bytes, int] | None] | None:
        """(value, milliseconds left) of each live state record under `keys`, None for those
        absent or expired, read without a write transaction (a waiter's poll); None when the
        store failed."""
        try:
            with self._open().begin(db=self._state, buffers=True) as txn:
                now = monotonic_ms()
                out: list[tuple[bytes, int] | None] = []
                for key in keys:
                    found = txn.get(state_key(key))
                    if found is None:
                        out.append(None)
                        continue
                    (expires,) = _STATE_HEAD.unpack_from(found)
                    out.append((bytes(found[_STATE_HEAD.size :]), expires - now) if expires > now else None)
        except _FAILURES as err:
            self._failure("read", err)
            return None
        return out

    def state_keys(self) -> list[str]:
        """Every live state record's key (tests)."""
        now = monotonic_ms()
        with self._open().begin(db=self._state) as txn:
            return [
                bytes(key).decode()
                for key, value in txn.cursor().iternext()
                if _STATE_HEAD.unpack_from(value)[0] > now
            ]
