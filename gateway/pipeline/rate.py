"""Stage: rate limits. A token bucket per principal (`limits.rate`), checked right after
authentication, before the request is read or parsed: a principal over its rate costs the
gateway nothing more than this check. Refused with 429 and Retry-After."""

from __future__ import annotations

import math
import time

from gateway.config import Principal, Rate
from gateway.errors import GatewayError
from gateway.metrics import Metrics


class TokenBucket:
    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._tokens = rate.burst
        self._stamp = time.monotonic()

    def take(self) -> float:
        """0 when a request may go now, else the seconds until a token is available."""
        now = time.monotonic()
        self._tokens = min(self.rate.burst, self._tokens + (now - self._stamp) * self.rate.per_second)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self.rate.per_second


def too_many(metrics: Metrics, who: str, reason: str, message: str, retry_after: float) -> GatewayError:
    """A 429 with Retry-After, counted in gateway_limited_total."""
    metrics.limited.labels(who, reason).inc()
    seconds = str(max(1, math.ceil(retry_after)))
    return GatewayError("too_many_requests", message, headers={"Retry-After": seconds})


class RateLimiter:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._buckets: dict[str, TokenBucket] = {}  # one per configured principal

    async def admit(self, principal: Principal) -> None:
        rate = principal.limits.rate
        if rate is None:
            return
        who = principal.name
        bucket = self._buckets.get(who)
        if bucket is None or bucket.rate != rate:
            bucket = self._buckets[who] = TokenBucket(rate)
        wait = bucket.take()
        if wait > 0:
            raise too_many(
                self._metrics,
                who,
                "rate",
                f'"{who}" may send {rate.per_second:g} requests per second '
                f"(bursts of {rate.burst:g}); retry later",
                wait,
            )
