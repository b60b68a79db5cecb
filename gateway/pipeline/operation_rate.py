"""Stage: AMP's requests per second per workspace and API family (`quotas.rates`), for every
attempt sent upstream (it runs below `retry`).

AMP throttles each workspace per family of operations (QueryMetrics; GetSeries, GetLabels and
GetMetricMetadata together; the other Prometheus-compatible APIs), whoever sends. Each family of
each workspace is one token bucket (pipeline/gcra.py) shared where the gateway's other limits
are: on Redis when configured (every worker and replica), else and while it is away in the
host's store (this host's workers), in this process when that fails too.

An attempt takes a turn. When the bucket is empty it waits for its turn, in order, instead of
being refused at once, which would only bring its retry back sooner: a burst of panels is
spread out at AMP's rate. It waits at most `max_wait`, and at most half the request's own time
left (of `request.timeout` since its first attempt; the other half is AMP's); at most `max_waiters` attempts
wait per workspace and family in one worker. Past either, it is refused with a 429 that names
AMP's quota and the wait, with Retry-After.

When AMP answers 429 all the same (other clients of the workspace share its quota, or the
quota is lower than configured), the bucket is held empty for the time it takes to fill (burst
÷ per_second), or for AMP's Retry-After when it is longer (at most a minute), and refills at
its rate from there: every worker and replica slows down, not only the one that was told.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from gateway.config import Rate
from gateway.config.amp_rates import Family, RateQuotas
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.gcra import HostBuckets, ProcessBuckets, RedisBuckets, SharedBuckets, Turn
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.pipeline.shared import SharedRedis

MAX_HOLD = 60.0  # seconds: the longest AMP's Retry-After may hold a bucket
FEATURE = "amp_rate"  # its Redis calls, in gateway_redis_fallbacks_total

# The request whose attempts this task is sending, and when its first attempt came: a retry may
# wait only for what is left of the request's time (`retry`, above, runs every attempt of a
# request in one task).
_first_attempt: ContextVar[tuple[Request, float] | None] = ContextVar("first_attempt", default=None)


def time_left(request: Request, now: float) -> float:
    """Seconds left of `request.timeout` since its first attempt reached this stage."""
    first = _first_attempt.get()
    if first is None or first[0] is not request:
        _first_attempt.set((request, now))
        return request.timeout
    return request.timeout - (now - first[1])


def hold_for(rate: Rate, error: GatewayError) -> float:
    """How long AMP's 429 holds the bucket empty: the time it takes to fill, or AMP's
    Retry-After when longer (at most MAX_HOLD)."""
    asked = float(error.wait) if error.wait.isdigit() else 0.0
    return max(rate.burst / rate.per_second, min(asked, MAX_HOLD))


class Pacer:
    """The buckets of every workspace and family, and this worker's waiters on each."""

    def __init__(
        self,
        quotas: RateQuotas,
        metrics: Metrics,
        shared: SharedRedis | None = None,
        host: HostStore | None = None,
        scope: str = "",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        """`scope`: this deployment's identity on a shared Redis (`Settings.fingerprint`);
        `clock` and `sleep`: the request's time and its wait (tests give simulated ones; the
        shared buckets keep their stores' clocks)."""
        self._quotas = quotas
        self._metrics = metrics
        self._shared: list[SharedBuckets] = []
        if shared is not None:
            prefix = f"amp-gateway:{scope or shared.namespace}:{FEATURE}:"
            self._shared.append(RedisBuckets(shared, prefix, FEATURE))
        if host is not None:
            self._shared.append(HostBuckets(host, f"{FEATURE}:"))
        self._here = ProcessBuckets(clock)
        self._clock = clock
        self._sleep = sleep
        self._waiters: dict[str, int] = {}

    def paced(self, request: Request) -> tuple[Family, Rate] | None:
        """The family the request's AMP operation counts against and its rate; None: not paced."""
        return self._quotas.paced(request.endpoint.operation)

    async def _take(self, key: str, rate: Rate, max_wait: float) -> Turn:
        for buckets in self._shared:
            turn = await buckets.take(key, rate, max_wait)
            if turn is not None:
                return turn
        return self._here.take(key, rate, max_wait)

    async def turn(self, request: Request, family: Family, rate: Rate) -> None:
        """Returns when the request may be sent; raises the 429 when it may not wait that long."""
        key = f"{request.workspace.fingerprint}:{family.key}"
        left = time_left(request, self._clock())
        waiting = self._waiters.get(key, 0)
        may_queue = waiting < self._quotas.max_waiters
        if may_queue:  # counted before the bucket is asked: a place in line is held while asking
            self._waiters[key] = waiting + 1
        try:
            # At most half the request's time left: the other half is AMP's to answer in (a
            # request sent with no time left is aborted mid-flight, and AMP may bill it).
            allowed = max(0.0, min(self._quotas.max_wait, left / 2)) if may_queue else 0.0
            turn = await self._take(key, rate, allowed)
            labels = (request.workspace.id, family.key)
            if not turn.taken:
                self._metrics.amp_rate_paced.labels(*labels, "refused").inc()
                raise self._refusal(request, family, rate, turn.wait, left, may_queue, waiting)
            self._metrics.amp_rate_wait_seconds.labels(*labels).observe(turn.wait)
            if turn.wait > 0:
                self._metrics.amp_rate_paced.labels(*labels, "waited").inc()
                await self._sleep(turn.wait)
        finally:
            if may_queue:
                self._waiters[key] -= 1

    def _refusal(
        self,
        request: Request,
        family: Family,
        rate: Rate,
        wait: float,
        left: float,
        may_queue: bool,
        waiting: int,
    ) -> GatewayError:
        if not may_queue:
            why = f"{waiting} requests already wait for it in this worker (quotas.rates.max_waiters)"
        elif wait > left / 2:
            why = f"more than half the {max(0.0, left):.1f}s left of the request's time (the rest is AMP's)"
        else:
            why = f"longer than quotas.rates.max_wait ({self._quotas.max_wait:g}s)"
        return GatewayError(
            "too_many_requests",
            f"AMP allows {rate.per_second:g} {family.title} requests a second to "
            f"{request.workspace.id} (quota {family.quota_code}, quotas.rates.{family.key}, "
            f"bursts of {rate.burst:g}): the next turn is in {wait:.1f}s, {why}; retry later",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
            # AMP's rate, kept by the gateway: the cache may answer it stale as it does AMP's 429
            failure="throttled",
        )

    async def throttled(self, request: Request, family: Family, rate: Rate, error: GatewayError) -> None:
        """AMP answered 429: hold the family's bucket empty, for every process that shares it."""
        key = f"{request.workspace.fingerprint}:{family.key}"
        seconds = hold_for(rate, error)
        self._metrics.amp_rate_paced.labels(request.workspace.id, family.key, "amp_429").inc()
        for buckets in self._shared:
            if await buckets.hold(key, rate, seconds):
                return
        self._here.hold(key, rate, seconds)


def operation_rate(pacer: Pacer) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            paced = pacer.paced(request)
            if paced is None:
                return await next_handler(request)
            family, rate = paced
            await pacer.turn(request, family, rate)
            try:
                return await next_handler(request)
            except GatewayError as err:
                if err.retry == "throttled":  # AMP's own 429 (send marks it; a slot's 429 is not)
                    await pacer.throttled(request, family, rate, err)
                raise

        return handle

    return stage
