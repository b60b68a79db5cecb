"""Identical upstream requests in flight at the same time share one round trip.

The fetch runs in its own task, so a client that goes away does not cancel it for the others;
every caller gets its own UpstreamResponse (stages may change the one they hold).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from gateway.pipeline.model import Handler, UpstreamRequest, UpstreamResponse

_Key = tuple[str, str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]
_Frozen = tuple[int, bytes, bool, tuple[tuple[str, str], ...]]


class Coalescer:
    def __init__(self, upstream: Handler, on_shared: Callable[[], None] | None = None) -> None:
        self._upstream = upstream
        self._in_flight: dict[_Key, asyncio.Task[_Frozen]] = {}
        self._on_shared = on_shared

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        # The enforced labels are part of the key: a request only joins one made for the same
        # label scope, so every request still meets the edge guard with its own principal's.
        key: _Key = (
            request.workspace.id,
            request.method,
            request.path,
            tuple(request.params),
            request.principal.enforce,
        )
        task = self._in_flight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch(request))
            self._in_flight[key] = task
            task.add_done_callback(lambda _t: self._in_flight.pop(key, None))
        elif self._on_shared is not None:
            self._on_shared()
        status, body, gzipped, headers = await asyncio.shield(task)
        return UpstreamResponse(status, body, gzipped, dict(headers))

    async def _fetch(self, request: UpstreamRequest) -> _Frozen:
        answer = await self._upstream(request)
        return answer.status, answer.body, answer.gzipped, tuple(answer.headers.items())

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)
