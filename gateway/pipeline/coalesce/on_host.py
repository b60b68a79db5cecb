"""Coalescing rounds in the host's store (pipeline/host.py), across the workers of one host.

The lock is one state record: its holder (token, process id, lease) and how many wait for it in
other workers. The answer goes to the store's cache records for 10 s, only when someone waits,
and only when it is at most `max_answer_bytes` (else the waiters fetch themselves). A holder whose
process is gone (a worker SIGKILLed) is seen as gone at once by the others; its lease is the
backstop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time

from gateway.errors import GatewayError
from gateway.pipeline.coalesce.wire import ANSWER_TTL_MS, POLL_FIRST, POLL_MAX, decode, encode
from gateway.pipeline.holders import SIZE, Holder, Renewals, holder_at, process_gone
from gateway.pipeline.host import HostStore, StateTxn
from gateway.pipeline.model import Answer
from gateway.pipeline.shared import lease_ms

_WAITERS = struct.Struct("!I")


def _lock(blob: bytes | None) -> tuple[Holder, int] | None:
    """(the holder, how many wait) of a lock record."""
    if blob is None or len(blob) < SIZE + _WAITERS.size:
        return None
    return holder_at(blob), _WAITERS.unpack_from(blob, SIZE)[0]


def _put_lock(txn: StateTxn, key: str, holder: Holder, waiters: int) -> None:
    txn.put(key, holder.pack() + _WAITERS.pack(waiters), holder.until - txn.now_ms)


# The steps, each in one transaction: on_redis.py's SET NX and scripts over the host's state.


def take(txn: StateTxn, key: str, token: bytes, pid: int, lease: int) -> bool:
    """The lock, unless a living holder has it."""
    found = _lock(txn.get(key))
    if found is not None and not found[0].gone(txn.now_ms):
        return False
    _put_lock(txn, key, Holder(token, pid, txn.now_ms + lease), 0)
    return True


def extend(txn: StateTxn, key: str, token: bytes) -> None:
    found = _lock(txn.get(key))
    if found is not None and found[0].token == token:
        _put_lock(txn, key, found[0]._replace(until=txn.now_ms + lease_ms()), found[1])


def join(txn: StateTxn, key: str) -> bytes | None:
    """The living holder's token, counting one more waiter; None when nobody holds the lock."""
    found = _lock(txn.get(key))
    if found is None or found[0].gone(txn.now_ms):
        return None
    _put_lock(txn, key, found[0], found[1] + 1)
    return found[0].token


def alone(txn: StateTxn, key: str, token: bytes) -> bool:
    """True when nobody waits for this holder (it lets go of the lock, if it still has it)."""
    found = _lock(txn.get(key))
    if found is None or found[0].token != token:
        return True  # the lock is no longer ours: whoever waited for us has stopped
    if found[1] > 0:
        return False
    txn.delete(key)
    return True


def release(txn: StateTxn, key: str, token: bytes) -> None:
    found = _lock(txn.get(key))
    if found is not None and found[0].token == token:
        txn.delete(key)


class HostRounds:
    def __init__(self, store: HostStore, max_answer_bytes: int) -> None:
        self._store = store
        self._max_answer_bytes = max_answer_bytes
        self._renewals = Renewals(store, extend)

    @staticmethod
    def _lock_key(digest: str) -> str:
        return f"coalesce:{digest}"

    @staticmethod
    def _answer_key(digest: str, token: str) -> bytes:
        return f"coalesce:{digest}:{token}".encode()

    async def take(self, digest: str, token: str) -> bool | None:
        key, held, pid, lease = self._lock_key(digest), bytes.fromhex(token), os.getpid(), lease_ms()
        return self._store.transact(lambda txn: take(txn, key, held, pid, lease))

    def renewing(self, digest: str, token: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._renewals.holding(self._lock_key(digest), bytes.fromhex(token))

    async def join(self, digest: str) -> str | None:
        key = self._lock_key(digest)
        holder = self._store.transact(lambda txn: join(txn, key))
        return None if holder is None else holder.hex()

    async def alone(self, digest: str, token: str) -> bool:
        key, held = self._lock_key(digest), bytes.fromhex(token)
        # A store that failed: nothing can be handed over through it.
        return self._store.transact(lambda txn: alone(txn, key, held)) is not False

    async def hand_over(self, digest: str, token: str, outcome: Answer | GatewayError) -> None:
        # Too large to share: not even encoded (a copy of the whole answer, on the event loop).
        small = not isinstance(outcome, Answer) or len(outcome.body) <= self._max_answer_bytes
        if small:
            where = self._answer_key(digest, token)
            # The answer first, then the lock: a waiter that finds the lock gone finds the answer.
            if self._store.put(where, encode(outcome, token, digest), time.time() + ANSWER_TTL_MS / 1000):
                # Gone from the store once the waiters had their time, rather than when evicted.
                asyncio.get_running_loop().call_later(ANSWER_TTL_MS / 1000, self._store.delete, where)
        self.let_go_later(digest, token)

    def let_go_later(self, digest: str, token: str) -> None:
        """At once: the store is on this host, a transaction does not wait for a network."""
        key, held = self._lock_key(digest), bytes.fromhex(token)
        self._store.transact(lambda txn: release(txn, key, held))

    async def await_answer(self, digest: str, holder: str, wait: float) -> Answer | GatewayError | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = POLL_FIRST
        key, where, token = self._lock_key(digest), self._answer_key(digest, holder), bytes.fromhex(holder)
        while loop.time() < deadline:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, POLL_MAX)
            # The lock first: once it is gone, the answer written before it let go is there.
            locks = self._store.peek_state([key])
            if locks is None:
                return None
            blob = self._store.get_many([where], time.time())[0]
            if blob is not None:
                found = decode(blob, holder, digest)
                if found is not None:
                    return found
            current = _lock(locks[0][0]) if locks[0] is not None else None
            if current is None or current[0].token != token or process_gone(current[0].pid):
                return None  # the holder finished, gave up or died without an answer for us
        return None
