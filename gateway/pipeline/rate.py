"""Stage: rate limits per principal (`limits.rate`), checked right after authentication, before
the request is read or parsed: a principal over its rate costs the gateway nothing more than
this check. Refused with 429 and Retry-After.

A token bucket: `burst` requests at once, `per_second` on average, as GCRA (the bucket as one
"theoretical arrival time" per principal), written once per place the bucket can live:
- Redis, when configured: one bucket for every worker and replica (a Lua script on Redis's clock);
- the host's store (pipeline/host.py): one bucket for the workers of this host, without Redis
  or while it is away (a function over one write transaction, on the host's monotonic clock);
- this process, when the host's store fails too (a plain token bucket).

Not the `limits` library: it has fixed and moving windows but no token bucket, and a window
keeps either the configured rate or the configured burst, not both (per_second 100 with burst
10 became 10 requests a second).
"""

from __future__ import annotations

import math
import struct
import time
from typing import Protocol

from gateway.config import Principal, Rate
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.host import HostStore, StateTxn
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

_TAT = struct.Struct("!d")  # the theoretical arrival time, µs of the host's monotonic clock


def gcra(txn: StateTxn, key: str, interval: float, tolerance: float) -> float:
    """_GCRA over the host's state: 0 when the request may go, else the µs to wait."""
    now = time.monotonic_ns() / 1000
    found = txn.get(key)
    tat = max(now, _TAT.unpack(found)[0] if found is not None else now)
    wait = tat - tolerance - now
    if wait > 0:
        return math.ceil(wait)
    next_tat = tat + interval
    txn.put(key, _TAT.pack(next_tat), math.ceil((next_tat - now) / 1000) + 1000)
    return 0


def _gcra_args(rate: Rate) -> tuple[float, float]:
    """µs per request, µs of tolerance ((burst - 1) requests)."""
    interval = 1_000_000 / rate.per_second
    return interval, (rate.burst - 1) * interval


class SharedBuckets(Protocol):
    """Buckets shared by several processes."""

    async def wait(self, who: str, rate: Rate) -> float | None:
        """0 when `who` may send a request now (and it is counted), else the seconds until it
        may; None when the buckets' store failed (the next one answers)."""
        ...


class RedisBuckets:
    """On Redis, every worker and replica's; a bucket there is never evicted (the state's Redis)."""

    def __init__(self, shared: SharedRedis, prefix: str) -> None:
        self._shared = shared
        self._prefix = prefix
        self._gcra = shared.client.register_script(_GCRA)

    async def wait(self, who: str, rate: Rate) -> float | None:
        args = list(_gcra_args(rate))
        script = self._gcra
        waited = await self._shared.call("rate", lambda: script(keys=[self._prefix + who], args=args))
        return None if waited is None else int(waited) / 1_000_000


class HostBuckets:
    """In the host's store, the workers of this host's."""

    def __init__(self, store: HostStore) -> None:
        self._store = store

    async def wait(self, who: str, rate: Rate) -> float | None:
        interval, tolerance = _gcra_args(rate)
        key = f"rate:{who}"
        waited = self._store.transact(lambda txn: gcra(txn, key, interval, tolerance))
        return None if waited is None else waited / 1_000_000


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
        self._buckets: dict[str, TokenBucket] = {}  # this process's, one per configured principal

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
