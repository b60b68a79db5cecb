"""Slots shared by every worker and replica through Redis."""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Literal

from gateway.pipeline.shared import SharedRedis, lease_ms


class RedisSlots:
    """`size` slots per key shared by every process through Redis: a sorted set of holders,
    each with a lease its holder renews while it holds the slot, so that a slot whose process
    died comes back within `shared.LEASE`. A waiter asks again
    at growing intervals (5 ms doubling to 50 ms) until its deadline; first come is not first
    served. While Redis is away, `acquire` says so (None) and the caller goes on without it."""

    _ACQUIRE = """
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
    if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
        redis.call('ZADD', KEYS[1], now_ms + tonumber(ARGV[2]), ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return 1
    end
    return 0
    """

    _RENEW = """
    local now = redis.call('TIME')
    local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
    if redis.call('ZADD', KEYS[1], 'XX', 'CH', now_ms + tonumber(ARGV[2]), ARGV[1]) == 1 then
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        return 1
    end
    return 0
    """

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared  # the state's Redis: a lease there is never evicted
        self._lease_ms = lease_ms()
        self._script = shared.client.register_script(self._ACQUIRE)
        self._renew = shared.client.register_script(self._RENEW)

    def key(self, name: str) -> str:
        """The sorted set of `name`'s holders, among this deployment's keys (one hash slot)."""
        return self._shared.key("slots", f"{{{name}}}")

    async def acquire(self, key: str, size: int, deadline: float) -> str | Literal[False] | None:
        """A holder id to release; False when no slot freed up within `deadline` seconds;
        None when Redis failed (go on without it)."""
        holder = os.urandom(8).hex()
        loop = asyncio.get_running_loop()
        until = loop.time() + deadline
        delay = 0.005
        try:
            while True:
                got = await self._shared.call(
                    "slots", lambda: self._script(keys=[key], args=[size, self._lease_ms, holder])
                )
                if got is None:
                    # Redis may have taken it and the answer been lost: give it back.
                    self._let_go_later(key, holder)
                    return None
                if got == 1:
                    return holder
                if loop.time() >= until:
                    return False
                await asyncio.sleep(min(delay, until - loop.time()))
                delay = min(delay * 2, 0.05)
        except asyncio.CancelledError:
            self._let_go_later(key, holder)
            raise

    def _let_go_later(self, key: str, holder: str) -> None:
        client = self._shared.client
        self._shared.later("slots", lambda: client.zrem(key, holder))

    def renewing(self, key: str, holder: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Keeps the holder's lease while the body runs: a slot whose holder died comes back
        within `shared.LEASE`."""
        return self._shared.renewing("slots", lambda: self._renew(keys=[key], args=[holder, self._lease_ms]))

    async def release(self, key: str, holder: str) -> None:
        """Even while Redis is backing off: a slot not given back would stay taken for a lease."""
        client = self._shared.client
        await self._shared.call("slots", lambda: client.zrem(key, holder), always=True)
