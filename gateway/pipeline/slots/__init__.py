"""Stages: bounded requests in flight, per principal and workspace (`limits.max_concurrency`)
and per workspace (`upstream.max_concurrency`, since AMP throttles per workspace). The rest
wait in line, each for at most its queue deadline, then get a 429.

A slot is taken in this process first, then where the slots are shared: on Redis when it is
configured (every worker and replica, `on_redis.py`), else, and while Redis is away, in the
host's store (the workers of this host, `on_host.py`); in this process alone only when the
host's store fails too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Literal, Protocol

from gateway.config import UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.pipeline.rate import too_many
from gateway.pipeline.shared import SharedRedis
from gateway.pipeline.slots.on_host import HostSlots
from gateway.pipeline.slots.on_redis import RedisSlots

__all__ = [
    "HostSlots",
    "KeyedSlots",
    "RedisSlots",
    "SharedSlots",
    "Slots",
    "principal_slots",
    "workspace_slots",
]


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


def principal_slots(
    metrics: Metrics, shared: SharedRedis | None = None, host: HostStore | None = None
) -> Stage:
    """Per principal and workspace, when the principal's limits set max_concurrency: in this
    process, and across every process when Redis is there, else across the host's workers."""
    slots = Slots(shared, host)

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


class SharedSlots(Protocol):
    """Slots shared by several processes (RedisSlots, HostSlots)."""

    def key(self, name: str) -> str: ...

    async def acquire(self, key: str, size: int, deadline: float) -> str | Literal[False] | None:
        """A holder id to release; False when no slot freed up within `deadline` seconds;
        None when the slots' store failed (the next one is asked)."""
        ...

    def renewing(self, key: str, holder: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Keeps the holder's lease while the body runs."""
        ...

    async def release(self, key: str, holder: str) -> None: ...


class Slots:
    """`size` slots per key in this process, then in the first shared place that answers
    (Redis, then the host's store): a slot here, then one there, within one deadline."""

    def __init__(self, shared: SharedRedis | None, host: HostStore | None = None) -> None:
        self._here = KeyedSlots()
        self._shared: list[SharedSlots] = []
        if shared is not None:
            self._shared.append(RedisSlots(shared))
        if host is not None:
            self._shared.append(HostSlots(host))

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
            for slots in self._shared:
                shared_key = slots.key(key)
                left = max(0.0, deadline - (time.monotonic() - queued))
                holder = await slots.acquire(shared_key, size, left)
                if holder is None:  # that store failed: the next one
                    continue
                if holder is False:
                    raise refused()
                try:
                    async with slots.renewing(shared_key, holder):
                        return await call()
                finally:
                    await slots.release(shared_key, holder)
            return await call()  # this process's slots alone

        return await self._here.run(key, size, deadline, refused, in_slot_here)


def workspace_slots(
    settings: UpstreamSettings,
    metrics: Metrics,
    shared: SharedRedis | None = None,
    host: HostStore | None = None,
) -> Stage:
    """Per workspace, for every attempt sent upstream: in this process, and across every
    process when Redis is there, else across the host's workers (AMP's quotas are per
    workspace, whoever sends)."""
    slots = Slots(shared, host)

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
