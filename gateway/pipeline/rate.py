"""Stage: rate limits per principal (`limits.rate`), checked right after authentication, before
the request is read or parsed: a principal over its rate costs the gateway nothing more than
this check. Refused with 429 and Retry-After.

A token bucket: `burst` requests at once, `per_second` on average, as GCRA (pipeline/gcra.py):
on Redis when configured (one bucket for every worker and replica), else and while it is away in
the host's store (one for the workers of this host), in this process when that fails too.

Not the `limits` library: it has fixed and moving windows but no token bucket, and a window
keeps either the configured rate or the configured burst, not both (per_second 100 with burst
10 became 10 requests a second).
"""

from __future__ import annotations

import math

from gateway.config import Principal
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.gcra import HostBuckets, ProcessBuckets, RedisBuckets, SharedBuckets
from gateway.pipeline.host import HostStore
from gateway.pipeline.shared import SharedRedis

__all__ = ["HostBuckets", "RateLimiter", "too_many"]


def too_many(metrics: Metrics, who: str, reason: str, message: str, retry_after: float) -> GatewayError:
    """A 429 with Retry-After, counted in gateway_limited_total."""
    metrics.limited.labels(who, reason).inc()
    seconds = str(max(1, math.ceil(retry_after)))
    return GatewayError("too_many_requests", message, headers={"Retry-After": seconds})


class RateLimiter:
    def __init__(
        self,
        metrics: Metrics,
        shared: SharedRedis | None = None,
        scope: str = "",
        host: HostStore | None = None,
    ) -> None:
        """`scope`: what tells this deployment's principals from another's on the same Redis,
        its identity (`Settings.fingerprint`); without it, `shared.namespace`, which is the same
        for loaded settings. `host`: the store this process shares with the other workers of
        its host (without Redis, and while it is away)."""
        self._metrics = metrics
        self._shared: list[SharedBuckets] = []
        if shared is not None:
            self._shared.append(RedisBuckets(shared, f"amp-gateway:{scope or shared.namespace}:rate:"))
        if host is not None:
            self._shared.append(HostBuckets(host))
        self._here = ProcessBuckets()  # this process's, one per configured principal

    async def admit(self, principal: Principal) -> None:
        rate = principal.limits.rate
        if rate is None:
            return
        who = principal.name
        wait = None
        for buckets in self._shared:
            wait = await buckets.wait(who, rate)
            if wait is not None:
                break
        if wait is None:  # neither Redis nor the host's store answered
            wait = self._here.take(who, rate, 0.0).wait
        if wait > 0:
            raise too_many(
                self._metrics,
                who,
                "rate",
                f'"{who}" may send {rate.per_second:g} requests per second '
                f"(bursts of {rate.burst:g}); retry later",
                wait,
            )
