"""Stages: bounded requests in flight, per principal and workspace (`limits.max_concurrency`)
and per workspace (`upstream.max_concurrency`, since AMP throttles per workspace). The rest
wait in line, each for at most its queue deadline, then get a 429."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Hashable

from gateway.config import UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.pipeline.rate import too_many
from gateway.pipeline.shared import LEASE, SharedRedis


class KeyedSlots:
    """`size` slots per key, made on first use."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, asyncio.Semaphore] = {}

    async def _acquire(self, key: Hashable, size: int, deadline: float) -> asyncio.Semaphore | None:
        """The key's semaphore, acquired (release it when done); None when no slot freed up
        within `deadline` seconds."""
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(size)
        try:
            async with asyncio.timeout(deadline):
                await slots.acquire()
        except TimeoutError:
            return None
        return slots

    async def run(
        self,
        key: Hashable,
        size: int,
        deadline: float,
        refused: Callable[[], GatewayError],
        call: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        """call() in one of the key's slots; refused() is raised when none freed up in time."""
        held = await self._acquire(key, size, deadline)
        if held is None:
            raise refused()
        try:
            return await call()
        finally:
            held.release()


def principal_slots(metrics: Metrics, shared: SharedRedis | None = None) -> Stage:
    """Per principal and workspace, when the principal's limits set max_concurrency: in this
    process, and across every process when Redis is there."""
    slots = Slots(shared)

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            limits = request.principal.limits
            if limits.max_concurrency is None:
                return await next_handler(request)
            who, workspace = request.principal.name, request.workspace.id
            return await slots.run(
                f"principal:{who}:{request.workspace.fingerprint}",
                limits.max_concurrency,
                limits.queue_timeout,
                lambda: too_many(
                    metrics,
                    who,
                    "concurrency",
                    f'"{who}" already has {limits.max_concurrency} requests in flight to '
                    f"{workspace} and none finished within {limits.queue_timeout:g}s; retry later",
                    1,
                ),
                lambda: next_handler(request),
            )

        return handle

    return stage


class Slots:
    """`size` slots per key in this process and, with Redis, across every process (a slot
    here, then one there, within one deadline)."""

    def __init__(self, shared: SharedRedis | None) -> None:
        self._here = KeyedSlots()
        self._everywhere = RedisSlots(shared) if shared is not None else None

    async def run(
        self,
        key: str,
        size: int,
        deadline: float,
        refused: Callable[[], GatewayError],
        call: Callable[[], Awaitable[Answer]],
    ) -> Answer:
        queued = time.monotonic()

        async def in_slot_here() -> Answer:
            if self._everywhere is None:
                return await call()
            everywhere = self._everywhere
            shared_key = everywhere.key(key)
            left = max(0.0, deadline - (time.monotonic() - queued))
            holder = await everywhere.acquire(shared_key, size, left)
            if holder is False:
                raise refused()
            if not isinstance(holder, str):  # Redis is away: this process's slots alone
                return await call()
            try:
                async with everywhere.renewing(shared_key, holder):
                    return await call()
            finally:
                await everywhere.release(shared_key, holder)

        return await self._here.run(key, size, deadline, refused, in_slot_here)


class RedisSlots:
    """`size` slots per key shared by every process through Redis: a sorted set of holders,
    each with a lease its holder renews while it holds the slot, so that a slot whose process
    died comes back within `shared.LEASE`. A waiter asks again
    at growing intervals (5 ms doubling to 50 ms) until its deadline; first come is not first
    served. While Redis is away, `acquire` says so (None) and the caller goes on with its
    process's slots alone."""

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
        self._lease_ms = int(LEASE * 1000)
        self._script = shared.client.register_script(self._ACQUIRE)
        self._renew = shared.client.register_script(self._RENEW)

    def key(self, name: str) -> str:
        """The sorted set of `name`'s holders, among this deployment's keys (one hash slot)."""
        return self._shared.key("slots", f"{{{name}}}")

    async def acquire(self, key: str, size: int, deadline: float) -> str | bool | None:
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


def workspace_slots(settings: UpstreamSettings, metrics: Metrics, shared: SharedRedis | None = None) -> Stage:
    """Per workspace, for every attempt sent upstream: in this process, and across every
    process when Redis is there (AMP's quotas are per workspace, whoever sends)."""
    slots = Slots(shared)

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            workspace = request.workspace.id
            queued = time.monotonic()

            def started() -> Awaitable[Answer]:
                metrics.upstream_queue_seconds.labels(workspace).observe(time.monotonic() - queued)
                return next_handler(request)

            return await slots.run(
                f"workspace:{request.workspace.fingerprint}",
                settings.max_concurrency,
                settings.queue_timeout,
                lambda: GatewayError(
                    "too_many_requests",
                    f"all {settings.max_concurrency} upstream slots of {workspace} stayed "
                    f"busy for {settings.queue_timeout:g}s; retry later",
                    headers={"Retry-After": "1"},
                ),
                started,
            )

        return handle

    return stage
