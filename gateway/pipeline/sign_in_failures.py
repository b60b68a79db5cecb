"""Failed sign-ins counted per key (a client address's, a user name's, under digests), in fixed
windows that start at a key's first failure. The counts live where they are shared: on Redis
when it is configured (every worker and replica), else, and while Redis is away, in the host's
store (the workers of this host); each process also keeps its own, which answer when neither
store does."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Callable
from typing import Protocol

from cachetools import TTLCache

from gateway.pipeline.host import HostStore, StateTxn
from gateway.pipeline.shared import SharedRedis

# Failed sign-ins are counted per minute, from one client address and for one user name (from
# any address; a higher default, so that others cannot lock a team out as easily as they can
# slow a guesser): auth.failed_sign_ins.
FAILURE_WINDOW = 60.0
# Keys of the failure counts: a digest of what is counted (an address, a user name), so that a
# long name costs no more memory and neither this process nor Redis holds the names themselves.
_KEY_BYTES = 16

# One failure more for a key, in its window (which starts at its first failure): the count.
_RECORD = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return count
"""
_COUNT = struct.Struct("!Q")


def record_failure(txn: StateTxn, key: str, window_ms: int) -> int:
    """_RECORD over the host's state."""
    found = txn.get(key)
    count = 1 if found is None else _COUNT.unpack(found)[0] + 1
    left = txn.ttl_ms(key) if found is not None else None
    txn.put(key, _COUNT.pack(count), window_ms if left is None else left)
    return count


def failure_key(kind: str, value: str) -> str:
    """What failures are counted under: `kind` (address, user) and a digest of the value."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{kind}:{digest[: 2 * _KEY_BYTES]}"


class FailedSignIns:
    """Fixed windows of failed sign-ins per key (an address's, a user name's): past `limit`
    failures in `window` seconds, the key's further attempts are refused until the window ends,
    right credentials included (that is what stops guessing). Bounded in keys."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000
    ) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._windows: TTLCache[str, list[float]] = TTLCache(maxsize=max_keys, ttl=window, timer=clock)

    def retry_after(self, key: str) -> float | None:
        """Seconds until `key` may try again, or None when it may now."""
        found = self._windows.get(key)
        if found is None or found[1] < self.limit:
            return None
        return max(0.0, found[0] + self.window - self._clock())

    def record(self, key: str) -> None:
        found = self._windows.get(key)
        if found is None:
            self._windows[key] = [self._clock(), 1]
        else:
            found[1] += 1


Throttled = tuple[float, str]  # (seconds until it may try again, which key)
Keys = list[tuple[str, FailedSignIns]]  # each key, and the table of its kind (limit, window)


class SharedCounts(Protocol):
    """Failure counts shared by several processes."""

    async def counts(self, keys: list[str]) -> list[int] | None:
        """Each key's failures in its current window; None when the store failed."""
        ...

    async def seconds_left(self, key: str) -> float | None:
        """Until the key's window ends; None when not known."""
        ...

    async def record(self, keys: list[tuple[str, int]]) -> None:
        """One more failure for each (key, window in ms)."""
        ...


class RedisCounts:
    """On the state's Redis, in the deployment's namespace (`sign_in`)."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared
        self._record = shared.client.register_script(_RECORD)

    async def counts(self, keys: list[str]) -> list[int] | None:
        shared = self._shared
        names = [shared.key("sign_in", key) for key in keys]
        found = await shared.call("sign_in", lambda: shared.mget(names))
        return None if found is None else [0 if count is None else int(count) for count in found]

    async def seconds_left(self, key: str) -> float | None:
        shared, name = self._shared, self._shared.key("sign_in", key)
        left = await shared.call("sign_in", lambda: shared.client.pttl(name))
        return None if left is None or int(left) < 0 else int(left) / 1000

    async def record(self, keys: list[tuple[str, int]]) -> None:
        shared, script = self._shared, self._record

        async def record_all() -> None:
            for key, window_ms in keys:
                await script(keys=[shared.key("sign_in", key)], args=[window_ms])

        await shared.call("sign_in", record_all)


class HostCounts:
    """In the host's store."""

    def __init__(self, store: HostStore) -> None:
        self._store = store

    async def counts(self, keys: list[str]) -> list[int] | None:
        found = self._store.peek_state([f"sign_in:{key}" for key in keys])
        if found is None:
            return None
        return [0 if record is None else _COUNT.unpack(record[0])[0] for record in found]

    async def seconds_left(self, key: str) -> float | None:
        found = self._store.peek_state([f"sign_in:{key}"])
        return None if found is None or found[0] is None else found[0][1] / 1000

    async def record(self, keys: list[tuple[str, int]]) -> None:
        def record_all(txn: StateTxn) -> None:
            for key, window_ms in keys:
                record_failure(txn, f"sign_in:{key}", window_ms)

        self._store.transact(record_all)


class SharedFailedSignIns:
    """The windows of FailedSignIns, in the first shared store that answers (Redis, then the
    host's store) and in this process (`FailedSignIns`, which answers when neither does).
    Failures are recorded in every one, so that each knows them when it is the one asked."""

    def __init__(self, shared: SharedRedis | None, host: HostStore | None = None) -> None:
        self.shared = shared
        self._stores: list[SharedCounts] = []
        if shared is not None:
            self._stores.append(RedisCounts(shared))
        if host is not None:
            self._stores.append(HostCounts(host))

    async def retry_after(self, keys: Keys) -> Throttled | None:
        """(seconds until it may try again, which key) for the first of `keys` that is
        throttled, or None."""
        for store in self._stores:
            counts = await store.counts([key for key, _ in keys])
            if counts is None:  # that store failed: the next one
                continue
            for (key, table), count in zip(keys, counts, strict=True):
                if count >= table.limit:
                    left = await store.seconds_left(key)
                    return (table.window if left is None else left), key
            return None
        for key, table in keys:
            wait = table.retry_after(key)
            if wait is not None:
                return wait, key
        return None

    async def record(self, keys: Keys) -> None:
        for key, table in keys:
            table.record(key)
        windows = [(key, max(1, round(table.window * 1000))) for key, table in keys]
        for store in self._stores:
            await store.record(windows)
