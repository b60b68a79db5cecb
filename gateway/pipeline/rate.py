"""Stage: rate limits per principal (`limits.rate`), checked right after authentication, before
the request is read or parsed: a principal over its rate costs the gateway nothing more than
this check. Refused with 429 and Retry-After.

A token bucket: `burst` requests at once, `per_second` on average. With Redis, one bucket for
every worker and replica (GCRA, the bucket as one "theoretical arrival time" per principal, in
one Lua script on Redis's clock); while Redis is away, one per process.

Not the `limits` library: it has fixed and moving windows but no token bucket, and a window
keeps either the configured rate or the configured burst, not both (per_second 100 with burst
10 became 10 requests a second).
"""

from __future__ import annotations

import math
import time

from gateway.config import Principal, Rate
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.shared import SharedRedis

# KEYS[1]: the principal's theoretical arrival time (µs); ARGV: µs per request, µs of tolerance
# ((burst - 1) requests). Answers 0 when the request may go, else the µs to wait.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return math.ceil(wait) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return 0
"""


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
    def __init__(self, metrics: Metrics, shared: SharedRedis | None = None, scope: str = "") -> None:
        """`scope`: what tells this deployment's principals from another's on the same Redis,
        its identity (`Settings.fingerprint`); without it, `shared.namespace`, which is the same
        for loaded settings. On the state's Redis: a bucket there is never evicted."""
        self._metrics = metrics
        self._prefix = f"amp-gateway:{scope or (shared.namespace if shared else '')}:rate:"
        self._buckets: dict[str, TokenBucket] = {}  # this process's, one per configured principal
        self._shared = shared
        self._gcra = shared.client.register_script(_GCRA) if shared is not None else None

    async def admit(self, principal: Principal) -> None:
        rate = principal.limits.rate
        if rate is None:
            return
        who = principal.name
        wait = await self._shared_wait(who, rate) if self._shared is not None else None
        if wait is None:  # no Redis, or Redis is away
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

    async def _shared_wait(self, who: str, rate: Rate) -> float | None:
        assert self._shared is not None and self._gcra is not None
        interval = 1_000_000 / rate.per_second
        args = [interval, (rate.burst - 1) * interval]
        gcra = self._gcra
        waited = await self._shared.call("rate", lambda: gcra(keys=[self._prefix + who], args=args))
        return None if waited is None else int(waited) / 1_000_000
