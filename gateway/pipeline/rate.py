"""Stage: rate limits per principal (`limits.rate`), checked right after authentication, before
the request is read or parsed: a principal over its rate costs the gateway nothing more than
this check. Refused with 429 and Retry-After."""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, RedisClusterStorage, RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter

from gateway.config import Principal, Rate
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.shared import SharedRedis

KEY_PREFIX = "amp-gateway:rate"


def too_many(metrics: Metrics, who: str, reason: str, message: str, retry_after: float) -> GatewayError:
    """A 429 with Retry-After, counted in gateway_limited_total."""
    metrics.limited.labels(who, reason).inc()
    seconds = str(max(1, math.ceil(retry_after)))
    return GatewayError("too_many_requests", message, headers={"Retry-After": seconds})


def window(rate: Rate) -> RateLimitItem:
    """`per_second` with bursts of `burst`: at most `burst` requests in any window of
    burst/per_second seconds (rounded up to whole seconds, the `limits` library's unit)."""
    amount = max(1, math.floor(rate.burst))
    return RateLimitItemPerSecond(amount, max(1, math.ceil(amount / rate.per_second)))


class RateLimiter:
    """A moving window per principal (the `limits` library), in Redis when there is one, so the
    rate holds across workers and replicas; per process while Redis is away."""

    def __init__(self, metrics: Metrics, shared: SharedRedis | None = None) -> None:
        self._metrics = metrics
        self._local = MovingWindowRateLimiter(MemoryStorage())
        self._shared = shared
        self._in_redis: MovingWindowRateLimiter | None = None
        if shared is not None:
            # Its own small pool: `limits` builds its client from a URI and plain options (a
            # cluster's from host:port, so TLS is said apart; a URL's scheme says it otherwise).
            kind = RedisClusterStorage if shared.cluster else RedisStorage
            tls = {"ssl": True} if shared.cluster and shared.url.startswith("rediss://") else {}
            storage = kind(
                shared.limits_uri(),
                implementation="redispy",
                key_prefix=KEY_PREFIX,
                socket_timeout=shared.timeout,
                socket_connect_timeout=shared.timeout,
                **tls,
            )
            self._in_redis = MovingWindowRateLimiter(storage)

    async def admit(self, principal: Principal) -> None:
        rate = principal.limits.rate
        if rate is None:
            return
        who = principal.name
        item = window(rate)
        limiter = self._local
        allowed: bool | None = None
        if self._shared is not None and self._in_redis is not None:
            shared = self._in_redis
            allowed = await self._shared.call("rate", lambda: shared.hit(item, who))
            if allowed is not None:
                limiter = shared
        if allowed is None:
            allowed = await self._local.hit(item, who)
        if allowed:
            return
        wait = 1.0
        if limiter is self._local or self._shared is None:
            wait = (await limiter.get_window_stats(item, who)).reset_time - time.time()
        else:
            stats = await self._shared.call("rate", lambda: limiter.get_window_stats(item, who))
            if stats is not None:
                wait = stats.reset_time - time.time()
        raise too_many(
            self._metrics,
            who,
            "rate",
            f'"{who}" may send {rate.per_second:g} requests per second '
            f"(bursts of {rate.burst:g}); retry later",
            wait,
        )
