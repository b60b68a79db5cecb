"""Stage: identical upstream requests in flight at the same time share one round trip.

The fetch runs in its own task, so a client that goes away does not cancel it for the others.
Answers and errors are immutable: every caller gets the same one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.pipeline.model import Answer, Handler, Request, Stage

_Key = tuple[str, str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


def coalescing(on_shared: Callable[[], None]) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        in_flight: dict[_Key, asyncio.Task[Answer]] = {}

        async def handle(request: Request) -> Answer:
            # The enforced labels are part of the key: a request only joins one made for the
            # same label scope, so every request still meets the edge guard with its own
            # principal's.
            key: _Key = (
                request.workspace.id,
                request.method,
                request.path,
                request.params,
                request.principal.enforce,
            )
            task = in_flight.get(key)
            if task is None:
                task = asyncio.ensure_future(next_handler(request))
                in_flight[key] = task
                task.add_done_callback(lambda done: _finished(in_flight, key, done))
            else:
                on_shared()
            return await asyncio.shield(task)

        return handle

    return stage


def _finished(in_flight: dict[_Key, asyncio.Task[Answer]], key: _Key, task: asyncio.Task[Answer]) -> None:
    in_flight.pop(key, None)
    if not task.cancelled():
        task.exception()  # retrieved: every caller may have gone, the error was still seen
