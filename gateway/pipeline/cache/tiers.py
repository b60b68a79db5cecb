"""Where entries live: an in-process tier bounded by bytes, and optionally Redis behind it.

Entries are opaque bytes (see codec) carrying their own expiry. Redis is a helper, never a
dependency (see `pipeline.shared`): while it is away the gateway works from memory and the
upstream alone. Writes to Redis run in the background so that a slow Redis never delays an
answer.

In Redis, an entry's key is `gwc:<namespace>:<digest>` (the deployment's namespace, see
`pipeline.shared`); an entry larger than `cache.redis_max_entry_bytes` stays in memory only
(counted as `gateway_cache_not_cached_total{reason="redis-entry-too-large"}`); with
`cache.redis_hmac_key` an entry is sealed with an HMAC of its key and bytes, and one that does
not verify is dropped like a damaged one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from cachetools import TLRUCache

from gateway.pipeline.cache import codec
from gateway.pipeline.shared import SharedRedis

log = logging.getLogger("gateway.cache")

# Bytes an entry holds beyond its payload: the Entry object, its key, the LRU's and the expiry
# queue's bookkeeping (measured with tracemalloc; tests/pipeline/cache/test_memory_bound.py).
_ENTRY_OVERHEAD = 640
_MAX_PENDING_WRITES = 256


def _entry_bytes(entry: codec.Entry) -> int:
    return len(entry.payload) + _ENTRY_OVERHEAD


class MemoryTier:
    """LRU of decoded entries with per-entry expiry, bounded by the bytes they hold.

    Entries are checked (codec's checksum) where bytes cross into the process: when written and
    when read from Redis. What is held here is not checked again on every hit: nothing outside
    the process can change it, and the check cost 7 µs of a ~175 µs hit (bench/README.md).
    """

    def __init__(self, max_bytes: int, clock: Callable[[], float]) -> None:
        self._cache: TLRUCache[str, codec.Entry] = TLRUCache(
            maxsize=max_bytes,
            ttu=lambda _key, entry, _now: entry.expires_at,
            timer=clock,
            getsizeof=_entry_bytes,
        )
        self._max_bytes = max_bytes

    def get(self, key: str) -> codec.Entry | None:
        return self._cache.get(key)

    def put(self, key: str, entry: codec.Entry) -> None:
        if _entry_bytes(entry) > self._max_bytes:
            return
        self._cache[key] = entry

    def delete(self, key: str) -> None:
        self._cache.pop(key, None)

    def stored_keys(self) -> list[str]:
        return list(self._cache)

    @property
    def bytes(self) -> int:
        return int(self._cache.currsize)

    def __len__(self) -> int:
        return len(self._cache)


class UnverifiedEntry(codec.DamagedEntry):
    """An entry in Redis whose HMAC does not verify: forged, or written without the key."""


class RedisTier:
    """On the cache's Redis (`SharedRedis.cache`), which may evict what it holds."""

    def __init__(self, shared: SharedRedis) -> None:
        self._shared = shared.cache
        self._prefix = f"gwc:{shared.namespace}:"
        self._max_bytes = shared.max_entry_bytes
        self._too_large = shared.metrics.cache_not_cached.labels("redis-entry-too-large")
        self._pending: set[asyncio.Task[None]] = set()

    def _key(self, key: str) -> str:
        return self._prefix + key.removeprefix("gwc:")

    async def get_many(self, keys: list[str]) -> list[bytes | memoryview | UnverifiedEntry | None]:
        """The blobs under these keys, as `put` was given them; an UnverifiedEntry for one whose
        HMAC does not verify."""
        named = [self._key(key) for key in keys]
        values = await self._shared.call("cache", lambda: self._shared.mget(named)) if keys else None
        if values is None:
            return [None] * len(keys)
        return [
            self._open(key, value) if isinstance(value, bytes) else None
            for key, value in zip(named, values, strict=True)
        ]

    def _open(self, key: str, blob: bytes) -> bytes | memoryview | UnverifiedEntry:
        opened = self._shared.unseal(key, blob)
        return UnverifiedEntry("cache entry HMAC mismatch") if opened is None else opened

    def put(self, key: str, blob: bytes, ttl: float) -> None:
        if not self._shared.available or len(self._pending) >= _MAX_PENDING_WRITES or ttl <= 0:
            return
        if len(blob) > self._max_bytes:
            self._too_large.inc()
            return
        named = self._key(key)
        sealed = self._shared.seal(named, blob)
        task = asyncio.get_running_loop().create_task(self._put(named, sealed, ttl))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _put(self, key: str, blob: bytes, ttl: float) -> None:
        client = self._shared.client
        await self._shared.call(
            "cache", lambda: client.set(key, blob, px=max(1, int(ttl * 1000))), skip_when_full=True
        )

    async def flush(self) -> None:
        """Wait for background writes (tests and shutdown)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await self.flush()


class Store:
    """Memory first, then Redis (promoting what it finds into memory).

    `plain` holds decoded copies of whole responses for clients that do not take gzip, in memory
    only, in its own byte bound: they are ten to twenty times the size of the gzip entries and
    must not crowd those out.
    """

    def __init__(
        self,
        memory: MemoryTier,
        redis: RedisTier | None,
        clock: Callable[[], float],
        on_damaged: Callable[[str], None] = lambda tier: None,
        plain: MemoryTier | None = None,
    ) -> None:
        self.memory = memory
        self.plain = plain if plain is not None else MemoryTier(0, clock)
        self.redis = redis
        self._clock = clock
        self._on_damaged = on_damaged

    def _decode(self, blob: bytes | memoryview | UnverifiedEntry | None, now: float) -> codec.Entry | None:
        """The entry in Redis's bytes; a damaged one (or one whose HMAC does not verify) is
        dropped (and counted): the caller fetches it again."""
        if isinstance(blob, UnverifiedEntry):
            log.warning("cache: dropped a redis entry whose HMAC does not verify")
            self._on_damaged("redis")
            return None
        try:
            return codec.decode(blob, now)
        except codec.DamagedEntry:
            log.warning("cache: dropped a damaged redis entry")
            self._on_damaged("redis")
            return None

    async def get_many(self, keys: list[str]) -> list[codec.Entry | None]:
        found = [self.memory.get(k) for k in keys]
        if self.redis is not None:
            absent = [i for i, entry in enumerate(found) if entry is None]
            if absent:
                now = self._clock()
                blobs = await self.redis.get_many([keys[i] for i in absent])
                for i, blob in zip(absent, blobs, strict=True):
                    entry = self._decode(blob, now)
                    if entry is not None:
                        self.memory.put(keys[i], entry)
                        self.plain.delete(keys[i])  # a copy of what this process had before
                        found[i] = entry
        return found

    async def get(self, key: str) -> codec.Entry | None:
        return (await self.get_many([key]))[0]

    def get_memory(self, key: str) -> codec.Entry | None:
        return self.memory.get(key)

    def get_plain(self, key: str) -> codec.Entry | None:
        """The plain copy of the whole response under `key`, when one is in memory."""
        return self.plain.get(key)

    def put(self, key: str, entry: codec.Entry) -> None:
        ttl = entry.expires_at - self._clock()
        if ttl <= 0:
            return
        self.memory.put(key, entry)
        self.plain.delete(key)  # a copy of what was there before
        if self.redis is not None:
            self.redis.put(key, codec.encode(entry), ttl)

    def put_plain(self, key: str, entry: codec.Entry) -> None:
        if entry.expires_at > self._clock():
            self.plain.put(key, entry)

    @property
    def memory_bytes(self) -> int:
        return self.memory.bytes + self.plain.bytes

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
