"""Stages: bounded requests in flight, per principal and workspace (`limits.max_concurrency`)
and per workspace (`upstream.max_concurrency`, since AMP throttles per workspace). The rest
wait in line, each for at most its queue deadline, then get a 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

from gateway.config import UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.pipeline.rate import too_many


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


def principal_slots(metrics: Metrics) -> Stage:
    """Per principal and workspace, when the principal's limits set max_concurrency."""
    slots = KeyedSlots()

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            limits = request.principal.limits
            if limits.max_concurrency is None:
                return await next_handler(request)
            who, workspace = request.principal.name, request.workspace.id
            return await slots.run(
                (who, workspace),
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


def workspace_slots(settings: UpstreamSettings, metrics: Metrics) -> Stage:
    """Per workspace, for every attempt sent upstream."""
    slots = KeyedSlots()

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            workspace = request.workspace.id
            queued = time.monotonic()

            def started() -> Awaitable[Answer]:
                metrics.upstream_queue_seconds.labels(workspace).observe(time.monotonic() - queued)
                return next_handler(request)

            return await slots.run(
                workspace,
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
