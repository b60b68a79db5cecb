"""Coalescing rounds on Redis, across every worker and replica.

The lock and the waiters' count are state (`SharedRedis`, never evicted); the answer goes to the
cache's Redis (`SharedRedis.cache`, which may evict it: the waiters then fetch themselves),
sealed with the deployment's HMAC key when one is configured. An answer larger than
`cache.redis_max_entry_bytes` is not written: the waiters fetch themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import NamedTuple

from gateway.errors import GatewayError
from gateway.pipeline.coalesce.wire import ANSWER_TTL_MS, POLL_FIRST, POLL_MAX, decode, encode, request_digest
from gateway.pipeline.model import Answer, Request
from gateway.pipeline.shared import SharedRedis, lease_ms

# KEYS: the lock, the waiters' count. The holder extends both while it fetches (if it dies, the
# lock ends within LEASE and the waiters fetch themselves); a waiter counts itself in only while
# a holder has the lock; a holder with nobody counted in lets go without writing its answer.
_SCRIPTS = {
    "extend": """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
        return 1
    """,
    "join": """
        local holder = redis.call('GET', KEYS[1])
        if holder then
            redis.call('INCR', KEYS[2])
            redis.call('PEXPIRE', KEYS[2], ARGV[1])
        end
        return holder
    """,
    "alone": """
        if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
        if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
        return 1
    """,
    "release": """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1], KEYS[2])
        return 1
    """,
}


class RoundKeys(NamedTuple):
    """A request's keys in Redis (one hash slot in a cluster), and its digest."""

    lock: str  # the holder's token, while it fetches
    waiters: str  # how many wait in other processes (the answer is written only for them)
    base: str
    digest: str

    def answer(self, token: str) -> str:
        """Where the holder with this token leaves its answer."""
        return f"{self.base}:answer:{token}"


def round_keys(digest: str, namespace: str) -> RoundKeys:
    base = f"amp-gateway:{namespace}:coalesce:{{{digest}}}"
    return RoundKeys(f"{base}:lock", f"{base}:waiters", base, digest)


def redis_keys(request: Request, namespace: str) -> RoundKeys:
    """The request's keys among the deployment's (`namespace`)."""
    return round_keys(request_digest(request), namespace)


class RedisRounds:
    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared
        self._lease_ms = lease_ms()
        self._scripts = {name: shared.client.register_script(text) for name, text in _SCRIPTS.items()}

    def _keys(self, digest: str) -> RoundKeys:
        return round_keys(digest, self._shared.namespace)

    async def take(self, digest: str, token: str) -> bool | None:
        lock, client, lease = self._keys(digest).lock, self._shared.client, self._lease_ms

        async def take() -> bool:  # redis-py answers None, not False, when NX did not set
            return bool(await client.set(lock, token, nx=True, px=lease))

        return await self._shared.call("coalesce", take)

    def renewing(self, digest: str, token: str) -> contextlib.AbstractAsyncContextManager[None]:
        keys, renew, lease = self._keys(digest), self._scripts["extend"], self._lease_ms
        return self._shared.renewing(
            "coalesce", lambda: renew(keys=[keys.lock, keys.waiters], args=[token, lease])
        )

    async def join(self, digest: str) -> str | None:
        keys, join, lease = self._keys(digest), self._scripts["join"], self._lease_ms
        holder = await self._shared.call(
            "coalesce", lambda: join(keys=[keys.lock, keys.waiters], args=[lease])
        )
        return holder.decode() if isinstance(holder, bytes) else None

    async def alone(self, digest: str, token: str) -> bool:
        keys, alone = self._keys(digest), self._scripts["alone"]
        got = await self._shared.call(
            "coalesce", lambda: alone(keys=[keys.lock, keys.waiters], args=[token]), always=True
        )
        return got == 1

    async def hand_over(self, digest: str, token: str, outcome: Answer | GatewayError) -> None:
        shared, keys = self._shared, self._keys(digest)
        # Too large to share: not even encoded (a copy of the whole answer, on the event loop).
        small = not isinstance(outcome, Answer) or len(outcome.body) <= shared.max_entry_bytes
        blob = encode(outcome, token, digest) if small else b""
        if small and len(blob) <= shared.max_entry_bytes:
            cache, where = shared.cache, keys.answer(token)
            sealed = cache.seal(where, blob)
            # The answer first, then the lock: a waiter that finds the lock gone finds the answer.
            await cache.call(
                "coalesce",
                lambda: cache.client.set(where, sealed, px=ANSWER_TTL_MS),
                timeout=2.0,
                skip_when_full=True,
            )
        release = self._scripts["release"]
        await shared.call(
            "coalesce", lambda: release(keys=[keys.lock, keys.waiters], args=[token]), always=True
        )

    def let_go_later(self, digest: str, token: str) -> None:
        keys, release = self._keys(digest), self._scripts["release"]
        self._shared.later("coalesce", lambda: release(keys=[keys.lock, keys.waiters], args=[token]))

    async def await_answer(self, digest: str, holder: str, wait: float) -> Answer | GatewayError | None:
        shared, keys = self._shared, self._keys(digest)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        delay = POLL_FIRST
        client, cache = shared.client, shared.cache
        # Only the answer of the round waited for: its key carries the holder's token.
        where = keys.answer(holder)
        counted = False
        while loop.time() < deadline:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, POLL_MAX)
            if cache is shared:
                values = await shared.call("coalesce", lambda: client.mget([where, keys.lock]))
                if values is None:
                    return None
                blob, current = values
            else:
                # The lock first: once it is gone, the answer written before it let go is there.
                locks = await shared.call("coalesce", lambda: client.mget([keys.lock]))
                if locks is None:
                    return None
                current = locks[0]
                blob = await cache.call("coalesce", lambda: cache.client.get(where))
            if isinstance(blob, bytes):
                opened = cache.unseal(where, blob)
                found = decode(bytes(opened), holder, digest) if opened is not None else None
                if found is not None:
                    return found
                if not counted:  # damaged, forged, or another round's: counted once per wait
                    shared.metrics.cache_damaged_entries.labels("coalesced").inc()
                    counted = True
            if current != holder.encode():  # the holder finished or gave up without an answer for us
                return None
        return None
