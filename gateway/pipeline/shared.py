"""Redis, shared by every worker and replica: cache entries, rate limits, upstream slots and
coalesced answers. One connection pool per process (two with `cache.redis_state_url`).

State that must not be lost (leases of upstream slots, rate buckets, coalescing locks and their
waiters' counts) is on the `SharedRedis` itself; cache entries and coalesced answers, which an
evicting Redis may drop (that costs one fetch), on its `cache`: a second `SharedRedis` on
`cache.redis_url` when `cache.redis_state_url` names another Redis, else the same object.

Every key starts with `amp-gateway:<namespace>:`, the namespace being the deployment's identity
(`Settings.fingerprint`). With `cache.redis_hmac_key`, what is written to be served later (cache
entries, coalesced answers) is sealed with an HMAC-SHA256 of its key and bytes, and what does not
verify is never served.

Redis is a helper, never a dependency: every caller has a local fallback. After a failure Redis
is not asked again for a backoff (1 s, doubling to 30 s), so an outage costs one timeout, not one
per request. An outage is logged once when it starts and once when it ends, and shows in
/metrics as `gateway_redis_up` 0 and `gateway_redis_fallbacks_total{feature}`. A Redis that is
full (`noeviction`) refusing a cache write is not an outage: that write is skipped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import redis.asyncio as redis_asyncio
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import OutOfMemoryError, RedisError

from gateway.config import CacheSettings
from gateway.metrics import Metrics

log = logging.getLogger("gateway.redis")

T = TypeVar("T")

# Leases in Redis (a coalescing lock, an upstream slot): their length, and how often a living
# holder renews them.
LEASE, LEASE_RENEW = 10.0, 3.0


def lease_ms() -> int:
    """LEASE in milliseconds, read when asked (tests shorten it)."""
    return int(LEASE * 1000)


def renew_every() -> float:
    """LEASE_RENEW, read when asked (tests shorten it)."""
    return LEASE_RENEW


# Whatever a Redis call can raise when Redis is away, slow or a cluster is resharding.
REDIS_FAILURES = (RedisError, OSError, TimeoutError)


_TAG = 32  # bytes of an HMAC-SHA256


class SharedRedis:
    def __init__(
        self,
        settings: CacheSettings,
        metrics: Metrics,
        timeout: float = 0.25,
        *,
        cache_url: str | None = None,
    ) -> None:
        """The state's Redis; `cache_url`: this is the cache's, a second one (made here)."""
        assert settings.redis_url is not None
        state_url = settings.redis_state_url or settings.redis_url
        self.url = cache_url or state_url
        self.cluster = settings.redis_cluster
        self.namespace = settings.redis_namespace or "default"
        self.max_entry_bytes = settings.redis_max_entry_bytes
        self.metrics = metrics
        self._seal_key = settings.redis_hmac_key.encode() if settings.redis_hmac_key else None
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
        self._full = False
        self._both = [self]  # gateway_redis_up is 0 while either is away
        self.cache = self
        self._name = "Redis"
        self._loses = "cache, rate limits, upstream slots and coalescing on this host only"
        if cache_url is not None:
            self._name, self._loses = "Redis (cache)", "cache in memory only, answers not shared"
        elif settings.redis_url != state_url:
            self.cache = SharedRedis(settings, metrics, timeout, cache_url=settings.redis_url)
            self.cache._both = self._both = [self, self.cache]
            self._name, self._loses = (
                "Redis (state)",
                "rate limits, upstream slots and coalescing on this host only",
            )
        metrics.redis_up().set(1)

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def key(self, kind: str, name: str) -> str:
        """The key of `name` among this deployment's `kind` (rate, slots, coalesce, cache)."""
        return f"amp-gateway:{self.namespace}:{kind}:{name}"

    def seal(self, key: str, blob: bytes) -> bytes:
        """`blob` as written under `key`: behind its HMAC-SHA256 when a key is configured."""
        if self._seal_key is None:
            return blob
        return self._tag(key, blob) + blob

    def unseal(self, key: str, blob: bytes) -> bytes | memoryview | None:
        """What `seal` wrote under `key` (a view of `blob`: not copied, a large entry's copy cost
        more than its HMAC); None when its HMAC does not verify (forged, moved from another key,
        damaged, or written without the key)."""
        if self._seal_key is None:
            return blob
        sealed = memoryview(blob)[_TAG:]
        if len(blob) < _TAG or not hmac.compare_digest(blob[:_TAG], self._tag(key, sealed)):
            return None
        return sealed

    def _tag(self, key: str, blob: bytes | memoryview) -> bytes:
        assert self._seal_key is not None
        named = key.encode()
        mac = hmac.new(self._seal_key, len(named).to_bytes(4, "big") + named, hashlib.sha256)
        mac.update(blob)
        return mac.digest()

    def _report(self) -> None:
        self._metrics.redis_up().set(0 if any(shared._down for shared in self._both) else 1)

    def failed(self, feature: str, err: BaseException) -> None:
        self._metrics.redis_fallbacks.labels(feature).inc()
        now = time.monotonic()
        if now < self._down_until:
            return  # calls that were under way when the outage began: the back-off stands
        if not self._down:
            # Once per outage; the address may carry a password, so it is not logged.
            log.warning(
                "%s unavailable (%s, in %s): %s until it is back",
                self._name,
                type(err).__name__,
                feature,
                self._loses,
            )
            self._down = True
            self._report()
        self._down_until = now + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)

    def succeeded(self) -> None:
        if self._down:
            log.warning("%s is back: state shared again", self._name)
            self._down = False
            self._report()
        self._down_until = 0.0
        self._backoff = 1.0

    async def connect(self, timeout: float = 2.0) -> None:
        """Connect (learn a cluster's nodes and slots) before requests come: the first commands
        must not all wait for it with a request's short timeout, and redis-py's cluster client
        loses commands sent concurrently while it makes its first connections."""
        if self.cache is not self:
            await self.cache.connect(timeout)
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
        skip_when_full: bool = False,
    ) -> T | None:
        """operation() within the timeout; None (and counted) when Redis failed or is backing off.
        Whatever the client raises counts as a failure of Redis: it is a helper, and its
        client's own bugs must not fail a request either. `always`: even while backing off (a
        release or a renewal: skipping it would hold a slot or lose a lease). `skip_when_full`:
        a write Redis refuses for want of memory (`noeviction`) is skipped, not an outage (a
        cache entry: the state on the same Redis must not fall back for it)."""
        if not always and not self.available:
            self._metrics.redis_fallbacks.labels(feature).inc()
            return None
        try:
            async with asyncio.timeout(timeout or self.timeout):
                result = await operation()
        except OutOfMemoryError as err:
            if not skip_when_full:
                self.failed(feature, err)
                return None
            self._metrics.redis_fallbacks.labels(feature).inc()
            if not self._full:
                log.warning(
                    "%s is full (maxmemory): %s entries are not written while it is", self._name, feature
                )
                self._full = True
            return None
        except Exception as err:  # see above
            self.failed(feature, err)
            return None
        self.succeeded()
        if skip_when_full:
            self._full = False
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
        if self.cache is not self:
            await self.cache.aclose()
