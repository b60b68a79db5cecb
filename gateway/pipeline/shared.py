"""Redis, shared by every worker and replica: cache entries, rate limits, upstream slots and
coalesced answers. One connection pool per process.

Redis is a helper, never a dependency: every caller has a local fallback. After a failure Redis
is not asked again for a backoff (1 s, doubling to 30 s), so an outage costs one timeout, not one
per request. An outage is logged once when it starts and once when it ends, and shows in
/metrics as `gateway_redis_up` 0 and `gateway_redis_fallbacks_total{feature}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as redis_asyncio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from gateway.config import CacheSettings
from gateway.metrics import Metrics

log = logging.getLogger("gateway.redis")

T = TypeVar("T")

# Leases in Redis (a coalescing lock, an upstream slot): their length, and how often a living
# holder renews them.
LEASE, LEASE_RENEW = 10.0, 3.0

# Whatever a Redis call can raise when Redis is away, slow or a cluster is resharding.
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


class SharedRedis:
    def __init__(self, settings: CacheSettings, metrics: Metrics, timeout: float = 0.25) -> None:
        assert settings.redis_url is not None
        self.url = settings.redis_url
        self.cluster = settings.redis_cluster
        self.timeout = timeout
        options: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "health_check_interval": 0,
        }
        self.client: redis_asyncio.Redis | RedisCluster
        if self.cluster:
            self.client = RedisCluster.from_url(self.url, **options)
        else:
            self.client = redis_asyncio.from_url(self.url, retry_on_timeout=False, **options)
        self._metrics = metrics
        self._later: set[asyncio.Task[object]] = set()  # kept until done (the loop holds weak refs)
        self._down_until = 0.0
        self._backoff = 1.0
        self._down = False
        metrics.redis_up().set(1)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, feature: str, err: BaseException) -> None:
        self._metrics.redis_fallbacks.labels(feature).inc()
        now = time.monotonic()
        if now < self._down_until:
            return  # calls that were under way when the outage began: the back-off stands
        if not self._down:
            # Once per outage; the address may carry a password, so it is not logged.
            log.warning(
                "Redis unavailable (%s, in %s): cache in memory only; rate limits, upstream slots "
                "and coalescing per process until it is back",
                type(err).__name__,
                feature,
            )
            self._down = True
            self._metrics.redis_up().set(0)
        self._down_until = now + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)

    def succeeded(self) -> None:
        if self._down:
            log.warning("Redis is back: state shared again")
            self._down = False
            self._metrics.redis_up().set(1)
        self._down_until = 0.0
        self._backoff = 1.0

    async def connect(self, timeout: float = 2.0) -> None:
        """Connect (learn a cluster's nodes and slots) before requests come: the first commands
        must not all wait for it with a request's short timeout, and redis-py's cluster client
        loses commands sent concurrently while it makes its first connections."""
        try:
            async with asyncio.timeout(timeout):
                if isinstance(self.client, RedisCluster):
                    await self.client.initialize()
                await self.client.ping()
        except Exception as err:  # any failure of the helper is an outage, never a crash
            self.failed("connect", err)
        else:
            self.succeeded()

    async def call(
        self,
        feature: str,
        operation: Callable[[], Awaitable[T]],
        timeout: float | None = None,
        always: bool = False,
    ) -> T | None:
        """operation() within the timeout; None (and counted) when Redis failed or is backing off.
        Whatever the client raises counts as a failure of Redis: it is a helper, and its
        client's own bugs must not fail a request either. `always`: even while backing off (a
        release or a renewal: skipping it would hold a slot or lose a lease)."""
        if not always and not self.available:
            self._metrics.redis_fallbacks.labels(feature).inc()
            return None
        try:
            async with asyncio.timeout(timeout or self.timeout):
                result = await operation()
        except Exception as err:  # see above
            self.failed(feature, err)
            return None
        self.succeeded()
        return result

    async def mget(self, keys: list[str]) -> list[Any]:
        """Several keys in one call; in a cluster, one per node that holds some (MGET itself
        refuses keys in different slots)."""
        if isinstance(self.client, RedisCluster):
            return list(await self.client.mget_nonatomic(keys))
        return list(await self.client.mget(keys))

    def later(self, feature: str, operation: Callable[[], Awaitable[object]]) -> None:
        """operation() in the background, even while backing off: giving back what this process
        may hold in Redis (a lock, a slot) when the caller cannot wait for it (it was cancelled)
        or must not (Redis just failed it)."""
        task = asyncio.ensure_future(self.call(feature, operation, always=True))
        self._later.add(task)
        task.add_done_callback(self._later.discard)

    @contextlib.asynccontextmanager
    async def renewing(self, feature: str, renew: Callable[[], Awaitable[object]]) -> AsyncIterator[None]:
        """renew() every LEASE_RENEW seconds while the body runs: a lease held this way ends
        LEASE seconds at the latest after its holder dies, whatever the holder was doing."""

        async def keep() -> None:
            while True:
                await asyncio.sleep(LEASE_RENEW)
                await self.call(feature, renew, always=True)

        keeper = asyncio.create_task(keep())
        try:
            yield
        finally:
            keeper.cancel()

    async def aclose(self) -> None:
        # What is being given back still goes (each call is bounded by the timeout).
        await asyncio.gather(*self._later, return_exceptions=True)
        with contextlib.suppress(*REDIS_FAILURES):
            await self.client.aclose()
