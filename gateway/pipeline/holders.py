"""Leases held in the host's store (pipeline/host.py): upstream slots and coalescing locks taken
by one worker of the host.

A holder is a token, its process's id and the time its lease ends (the host's monotonic clock,
ms). A living holder renews its leases every `shared.LEASE_RENEW`: one timer per process renews
all it holds in one transaction, so holding costs no task per request. A holder is gone when its
lease ended (a process that stopped renewing: gone within `shared.LEASE`) or, at once, when its
process no longer exists (a worker SIGKILLed or OOM-killed); the lease stays the backstop for a
process id the kernel has given to another process since.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from typing import NamedTuple

from gateway.pipeline.host import HostStore, StateTxn
from gateway.pipeline.shared import renew_every

_HOLDER = struct.Struct("!8sIq")  # token, process id, lease ends (host ms)
SIZE = _HOLDER.size


class Holder(NamedTuple):
    token: bytes  # 8 bytes
    pid: int
    until: int  # the lease ends (host ms)

    def pack(self) -> bytes:
        return _HOLDER.pack(self.token, self.pid, self.until)

    def gone(self, now_ms: int) -> bool:
        """Its lease ended, or its process no longer exists."""
        return self.until <= now_ms or process_gone(self.pid)


def holder_at(blob: bytes, offset: int = 0) -> Holder:
    return Holder(*_HOLDER.unpack_from(blob, offset))


def holders_in(blob: bytes | None) -> list[Holder]:
    """The holders packed one after another in `blob`."""
    if blob is None:
        return []
    return [holder_at(blob, offset) for offset in range(0, len(blob) - SIZE + 1, SIZE)]


def process_gone(pid: int) -> bool:
    """True when no process has this id (one of another user's exists: PermissionError)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


Renew = Callable[[StateTxn, str, bytes], None]  # (transaction, record's key, holder's token)


class Renewals:
    """The leases this process holds in one store, each renewed by `renew` every
    `shared.LEASE_RENEW` while it is held (`with renewals.holding(key, token): ...`)."""

    def __init__(self, store: HostStore, renew: Renew) -> None:
        self._store = store
        self._renew = renew
        self._held: dict[tuple[str, bytes], None] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def holding(self, key: str, token: bytes) -> Holding:
        return Holding(self, key, token)

    def _add(self, key: str, token: bytes) -> None:
        self._held[(key, token)] = None
        loop = asyncio.get_running_loop()
        if self._timer is None or self._loop is not loop:
            self._loop = loop
            self._timer = loop.call_later(renew_every(), self._renew_all)

    def _remove(self, key: str, token: bytes) -> None:
        self._held.pop((key, token), None)

    def _renew_all(self) -> None:
        """The timer: renews what is held and comes again while anything is (a timer left
        behind once nothing is held fires once for nothing; cheaper than cancelling it)."""
        self._timer = None
        held = list(self._held)
        if not held or self._loop is None:
            return
        renew = self._renew

        def renew_all(txn: StateTxn) -> None:
            for key, token in held:
                renew(txn, key, token)

        self._store.transact(renew_all)
        self._timer = self._loop.call_later(renew_every(), self._renew_all)


class Holding:
    """A lease renewed while the body runs (either kind of `with`)."""

    __slots__ = ("_key", "_renewals", "_token")

    def __init__(self, renewals: Renewals, key: str, token: bytes) -> None:
        self._renewals, self._key, self._token = renewals, key, token

    def __enter__(self) -> None:
        self._renewals._add(self._key, self._token)

    def __exit__(self, *exc: object) -> None:
        self._renewals._remove(self._key, self._token)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()
