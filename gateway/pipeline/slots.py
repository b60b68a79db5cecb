"""Stages: bounded requests in flight, per principal and workspace (`limits.max_concurrency`)
and per workspace (`upstream.max_concurrency`, since AMP throttles per workspace). The rest
wait in line, each for at most its queue deadline, then get a 429."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable

from gateway.config import UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.pipeline.rate import too_many


class KeyedSlots:
    """`size` slots per key, made on first use."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, asyncio.Semaphore] = {}

    async def acquire(self, key: Hashable, size: int, deadline: float) -> asyncio.Semaphore | None:
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


def principal_slots(metrics: Metrics) -> Stage:
    """Per principal and workspace, when the principal's limits set max_concurrency."""
    slots = KeyedSlots()

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            limits = request.principal.limits
            if limits.max_concurrency is None:
                return await next_handler(request)
            who, workspace = request.principal.name, request.workspace.id
            held = await slots.acquire((who, workspace), limits.max_concurrency, limits.queue_timeout)
            if held is None:
                raise too_many(
                    metrics,
                    who,
                    "concurrency",
                    f'"{who}" already has {limits.max_concurrency} requests in flight to '
                    f"{workspace} and none finished within {limits.queue_timeout:g}s; retry later",
                    1,
                )
            try:
                return await next_handler(request)
            finally:
                held.release()

        return handle

    return stage


def workspace_slots(settings: UpstreamSettings, metrics: Metrics) -> Stage:
    """Per workspace, for every attempt sent upstream."""
    slots = KeyedSlots()

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            workspace = request.workspace.id
            queued = time.monotonic()
            held = await slots.acquire(workspace, settings.max_concurrency, settings.queue_timeout)
            if held is None:
                raise GatewayError(
                    "too_many_requests",
                    f"all {settings.max_concurrency} upstream slots of {workspace} stayed "
                    f"busy for {settings.queue_timeout:g}s; retry later",
                    headers={"Retry-After": "1"},
                )
            metrics.upstream_queue_seconds.labels(workspace).observe(time.monotonic() - queued)
            try:
                return await next_handler(request)
            finally:
                held.release()

        return handle

    return stage
