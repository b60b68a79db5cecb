"""State shared by the workers of one `serve` on one host, without Redis: an LMDB environment in
a directory the supervisor makes (`cache.host_dir`), opened by each worker.

Two kinds of records:
- **cache**: cache entries and coalesced answers, bounded by `max_bytes` (what their pages
  take, counted as LMDB lays them out); past the bound the least recently stored go first. Each
  carries the time after which it is dropped (`keep_until`, the cache's clock).
- **state**: rate buckets, slot leases, coalescing locks and failed sign-in counts, each with its
  own expiry (milliseconds of the host's monotonic clock, which every process shares), changed
  only inside a write transaction (`transact`): what Redis does in a Lua script, the host does
  in a transaction.

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
_SWEEP_EVERY = 4096  # state writes between two sweeps of expired state records
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


_Opened = tuple[lmdb.Environment, "lmdb._Database", "lmdb._Database", "lmdb._Database", "lmdb._Database"]
# LMDB allows one Environment per file in a process: the stores on one path share it (tests
# put two workers' gateways in one process), closed when the last one closes.
_OPEN: dict[str, tuple[int, int, _Opened]] = {}


def _open_environment(path: str, map_size: int) -> _Opened:
    path = os.path.realpath(path)
    known = _OPEN.get(path)
    if known is not None and known[0] == os.getpid():
        _OPEN[path] = (known[0], known[1] + 1, known[2])
        return known[2]
    env = lmdb.open(
        path,
        map_size=map_size,
        subdir=True,
        max_dbs=4,
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

    def __init__(self, txn: lmdb.Transaction, db: lmdb._Database, now_ms: int) -> None:
        self._txn = txn
        self._db = db
        self.now_ms = now_ms
        self.writes = 0

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
        self._txn.put(state_key(key), _STATE_HEAD.pack(self.now_ms + max(1, ttl_ms)) + value, db=self._db)
        self.writes += 1

    def delete(self, key: str) -> None:
        self._txn.delete(state_key(key), db=self._db)


class HostStore:
    """The environment under `path`, opened in this process on first use (an LMDB environment
    must not cross a fork: a forked child opens its own)."""

    def __init__(self, path: str, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._pid = -1
        self._env: lmdb.Environment | None = None
        self._failed = False
        self._state_writes = 0

    # ------------------------------------------------------------ the environment

    def _open(self) -> lmdb.Environment:
        if self._env is not None and self._pid == os.getpid():
            return self._env
        opened = _open_environment(self.path, 2 * self.max_bytes + _MAP_SLACK)
        self._env, self._cache, self._order, self._meta, self._state = opened
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
        """The values under `keys` (copies), None for those absent or past their keep_until."""
        try:
            env = self._open()
            out: list[bytes | None] = []
            with env.begin(db=self._cache, buffers=True) as txn:
                for key in keys:
                    found = txn.get(key)
                    if found is None:
                        out.append(None)
                        continue
                    _, keep_until = _CACHE_HEAD.unpack_from(found)
                    out.append(bytes(found[_CACHE_HEAD.size :]) if keep_until > now else None)
        except _FAILURES as err:
            self._failure("read", err)
            return [None] * len(keys)
        return out

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
        the bound would be passed; False when it was not stored (larger than a quarter of the
        bound, or the store failed)."""
        size = record_bytes(key, len(value))
        if size > self.max_bytes // 4:
            return False
        try:
            try:
                self._put(key, value, keep_until, size, 0)
            except lmdb.MapFullError:
                # Freed pages some reader still saw: make room well beyond this record.
                assert self._env is not None
                self._env.reader_check()
                self._put(key, value, keep_until, size, self.max_bytes // 4)
        except _FAILURES as err:
            self._failure("write", err)
            return False
        self._worked()
        return True

    def _put(self, key: bytes, value: bytes, keep_until: float, size: int, extra: int) -> None:
        env = self._open()
        with env.begin(write=True) as txn:
            stored = self._meta_int(txn, b"bytes")
            seq = self._meta_int(txn, b"seq") + 1
            old = txn.get(key, db=self._cache)
            if old is not None:
                (old_seq,) = _SEQ.unpack_from(old)
                txn.delete(_SEQ.pack(old_seq), db=self._order)
                stored -= record_bytes(key, len(old) - _CACHE_HEAD.size)
            stored = self._evict(txn, stored, self.max_bytes - size - extra)
            txn.put(key, _CACHE_HEAD.pack(seq, keep_until) + value, db=self._cache)
            txn.put(_SEQ.pack(seq), key, db=self._order)
            txn.put(b"bytes", _SEQ.pack(stored + size), db=self._meta)
            txn.put(b"seq", _SEQ.pack(seq), db=self._meta)

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

    def _meta_int(self, txn: lmdb.Transaction, name: bytes) -> int:
        found = txn.get(name, db=self._meta)
        return 0 if found is None else int(_SEQ.unpack(found)[0])

    def delete(self, key: bytes) -> None:
        try:
            env = self._open()
            with env.begin(write=True) as txn:
                old = txn.pop(key, db=self._cache)
                if old is not None:
                    (seq,) = _SEQ.unpack_from(old)
                    txn.delete(_SEQ.pack(seq), db=self._order)
                    stored = self._meta_int(txn, b"bytes") - record_bytes(key, len(old) - _CACHE_HEAD.size)
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
            env = self._open()
            with env.begin(write=True) as txn:
                state = StateTxn(txn, self._state, monotonic_ms())
                result = operation(state)
                self._state_writes += state.writes
                if self._state_writes >= _SWEEP_EVERY:
                    self._state_writes = 0
                    self._sweep(txn, state.now_ms)
        except _FAILURES as err:
            self._failure("state", err)
            return None
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

    def _sweep(self, txn: lmdb.Transaction, now_ms: int) -> None:
        """Deletes expired state records (a failed sign-in count per client address, a lock per
        request: the records would otherwise only grow)."""
        cursor = txn.cursor(db=self._state)
        expired = [
            bytes(key) for key, value in cursor.iternext() if _STATE_HEAD.unpack_from(value)[0] <= now_ms
        ]
        for key in expired:
            txn.delete(key, db=self._state)

    def state_keys(self) -> list[str]:
        """Every live state record's key (tests)."""
        now = monotonic_ms()
        with self._open().begin(db=self._state) as txn:
            return [
                bytes(key).decode()
                for key, value in txn.cursor().iternext()
                if _STATE_HEAD.unpack_from(value)[0] > now
            ]
