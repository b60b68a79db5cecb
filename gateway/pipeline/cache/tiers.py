"""Where entries live: the host's tier (shared by the workers of one `serve`, bounded by bytes,
see `pipeline.host`), and optionally Redis behind it; each worker's own copies of whole responses
in its memory.

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
from gateway.pipeline.host import HostStore
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


class HostTier:
    """Entries in the host's store, shared by every worker of this `serve`: written by one, read
    by all. Entries are kept `keep_stale` seconds past their expiry (served only when the
    upstream fails, see the cache stage), then dropped; and, past the store's bound, the least
    recently stored first. The codec's checksum is checked on every read: the bytes come from
    outside the process."""

    def __init__(
        self,
        store: HostStore,
        clock: Callable[[], float],
        keep_stale: float = 0.0,
        on_damaged: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self._clock = clock
        self._keep_stale = keep_stale
        self._on_damaged = on_damaged

    def get_many(self, keys: list[str], grace: float = 0.0) -> list[codec.Entry | None]:
        """The entries under `keys`; with `grace`, also those expired at most `grace` seconds
        ago. A damaged one is dropped (and reported to `on_damaged`)."""
        now = self._clock()
        blobs = self.store.get_many([key.encode() for key in keys], now)
        out: list[codec.Entry | None] = []
        for key, blob in zip(keys, blobs, strict=True):
            try:
                out.append(codec.decode(blob, now - grace))
            except codec.DamagedEntry:
                log.warning("cache: dropped a damaged entry of the host's store")
                self._on_damaged()
                self.store.delete(key.encode())
                out.append(None)
        return out

    def checksum(self, key: str) -> int | None:
        """The checksum of the live entry under `key` (read from its header alone), or None."""
        now = self._clock()
        head = self.store.peek(key.encode(), now, codec.HEADER_BYTES)
        return None if head is None else codec.peek(head, now)

    def put(self, key: str, entry: codec.Entry) -> None:
        self.store.put(key.encode(), codec.encode(entry), entry.expires_at + self._keep_stale)

    def delete(self, key: str) -> None:
        self.store.delete(key.encode())

    def stored_keys(self) -> list[str]:
        return [key.decode() for key in self.store.cache_keys()]

    @property
    def bytes(self) -> int:
        return self.store.stored_bytes

    def __len__(self) -> int:
        return len(self.store.cache_keys())


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
    """The host's tier first, then Redis (promoting what it finds into the host's tier).

    `copies` holds this worker's copies of whole responses, in its own byte bound: decoded ones
    for clients that do not take gzip (ten to twenty times the size of the gzip entries), and
    the gzip entries its hits were served from (a hit then reads the entry's header from the
    host's store, not the entry). A copy is kept under its entry's key and checksum and served
    only while the host's tier holds that very entry: another worker that replaced it has made
    this copy unreachable.
    """

    def __init__(
        self,
        memory: HostTier,
        redis: RedisTier | None,
        clock: Callable[[], float],
        on_damaged: Callable[[str], None] = lambda tier: None,
        copies: MemoryTier | None = None,
    ) -> None:
        self.memory = memory
        self.copies = copies if copies is not None else MemoryTier(0, clock)
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

    async def get_many(self, keys: list[str], stale: float = 0.0) -> list[codec.Entry | None]:
        """The entries under `keys`; with `stale`, also those expired at most `stale` seconds ago
        (the host's tier keeps entries `cache.max_stale` past their expiry; Redis drops them at
        their expiry, see the README's "Stale if error")."""
        found = self.memory.get_many(keys, grace=stale)
        if self.redis is not None:
            absent = [i for i, entry in enumerate(found) if entry is None]
            if absent:
                now = self._clock() - stale
                blobs = await self.redis.get_many([keys[i] for i in absent])
                for i, blob in zip(absent, blobs, strict=True):
                    entry = self._decode(blob, now)
                    if entry is not None:
                        self.memory.put(keys[i], entry)
                        found[i] = entry
        return found

    async def get(self, key: str) -> codec.Entry | None:
        return (await self.get_many([key]))[0]

    def get_copy(self, key: str, gzipped: bool) -> codec.Entry | None:
        """This worker's copy of the whole response under `key`, plain or gzip, when it has one
        of the very entry the host's tier holds."""
        checksum = self.memory.checksum(key)
        if checksum is None:
            return None
        return self.copies.get(f"{key}#{checksum}{':gz' if gzipped else ''}")

    def put(self, key: str, entry: codec.Entry) -> None:
        ttl = entry.expires_at - self._clock()
        if ttl <= 0:
            return
        self.memory.put(key, entry)
        if self.redis is not None:
            self.redis.put(key, codec.encode(entry), ttl)

    def put_copy(self, key: str, made_from: codec.Entry, entry: codec.Entry) -> None:
        """`entry`, this worker's copy of `made_from` (the gzip entry under `key`): plain
        (KIND_PLAIN), or `made_from` itself."""
        if entry.expires_at > self._clock():
            gz = "" if entry.kind == codec.KIND_PLAIN else ":gz"
            self.copies.put(f"{key}#{codec.checksum(made_from)}{gz}", entry)

    async def aclose(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
