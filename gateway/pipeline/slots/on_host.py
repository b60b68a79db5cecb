"""Slots shared by the workers of one host through its store (pipeline/host.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Literal

from gateway.pipeline.holders import Holder, Renewals, holders_in
from gateway.pipeline.host import HostStore, StateTxn
from gateway.pipeline.shared import lease_ms


def take(txn: StateTxn, key: str, size: int, token: bytes, pid: int, lease: int) -> bool:
    """One of `size` slots for the holder `token`, when one is free: RedisSlots._ACQUIRE over
    the host's state. Holders whose lease ended are dropped; when every slot is taken, so are
    holders whose process is gone."""
    now = txn.now_ms
    holders = holders_in(txn.get(key))
    living = [holder for holder in holders if holder.until > now]
    if len(living) >= size:
        living = [holder for holder in living if not holder.gone(now)]
    if len(living) >= size:
        if len(living) < len(holders):
            _store(txn, key, living)
        return False
    living.append(Holder(token, pid, now + lease))
    _store(txn, key, living)
    return True


def renew(txn: StateTxn, key: str, token: bytes) -> None:
    """RedisSlots._RENEW: the holder's lease, from now, if it still holds the slot."""
    holders = holders_in(txn.get(key))
    for i, holder in enumerate(holders):
        if holder.token == token:
            holders[i] = holder._replace(until=txn.now_ms + lease_ms())
            _store(txn, key, holders)
            return


def release(txn: StateTxn, key: str, token: bytes) -> None:
    holders = holders_in(txn.get(key))
    left = [holder for holder in holders if holder.token != token]
    if len(left) < len(holders):
        _store(txn, key, left)


def _store(txn: StateTxn, key: str, holders: list[Holder]) -> None:
    """The record lives as long as its longest lease."""
    if not holders:
        txn.delete(key)
        return
    txn.put(key, b"".join(holder.pack() for holder in holders), max(h.until for h in holders) - txn.now_ms)


class HostSlots:
    """`size` slots per key shared by the workers of this host: the key's holders in one state
    record, each with a lease renewed while it holds the slot and its process's id (a holder
    whose process is gone frees its slot at once). A waiter asks again at growing intervals
    (5 ms doubling to 50 ms) until its deadline, as with Redis. When the store fails, `acquire`
    says so (None) and the caller goes on without it."""

    def __init__(self, store: HostStore) -> None:
        self._store = store
        self._renewals = Renewals(store, renew)

    def key(self, name: str) -> str:
        return f"slots:{name}"

    async def acquire(self, key: str, size: int, deadline: float) -> str | Literal[False] | None:
        """A holder id to release; False when no slot freed up within `deadline` seconds;
        None when the store failed."""
        token, pid, lease = os.urandom(8), os.getpid(), lease_ms()
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        delay = 0.005
        while True:
            got = self._store.transact(lambda txn: take(txn, key, size, token, pid, lease))
            if got is None:
                return None
            if got:
                return token.hex()
            if loop.time() >= until:
                return False
            await asyncio.sleep(min(delay, until - loop.time()))
            delay = min(delay * 2, 0.05)

    def renewing(self, key: str, holder: str) -> contextlib.AbstractAsyncContextManager[None]:
        return self._renewals.holding(key, bytes.fromhex(holder))

    async def release(self, key: str, holder: str) -> None:
        token = bytes.fromhex(holder)
        self._store.transact(lambda txn: release(txn, key, token))
