"""Stage: the results cache. Answers from the cache what it can, asks the next stage for the rest.

Every answer says how it was made in `Answer.cache` (the client's `x-cache`):
`hit`, `miss`, `partial` (some sub-ranges fetched), `stale` (the upstream failed and the cache
held the answer, see stale.py) or `bypass; reason=<why>`.

Range queries are kept as extents per split bucket (see extents.py): a request reads the
buckets it spans, fetches only the grid runs they lack (in parallel, bounded), merges, and
stores the result both as extents and as a whole response (so that the very same request,
the usual dashboard refresh, is answered without any merging). Points newer than the
freshness horizon are never written into extents; answers that include them live only
`recent_ttl`. Instant queries with an explicit time and the metadata endpoints are whole-
response entries with a TTL. Errors are never stored.

A hit is served as stored, in the encoding the client takes: whole responses are kept gzip (in
memory and Redis) and, once a client without gzip has asked, also plain in memory, so that no
hit decompresses or compresses anything.

What each answer served from the cache saved in AMP's query samples (QSP: a query or range
query's `totalQueryableSamples`, which the cost meter below reads) goes to `on_saved` (the cost
ledger): a whole response's is kept with it, an extent's per step (see savings.py).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from cachetools import LRUCache
from prometheus_client import Counter

from gateway.config import CacheSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.answers import GZIP_RATIO, json_size, work
from gateway.pipeline.cache import codec, stale
from gateway.pipeline.cache.extents import Run, add_run, grid_last
from gateway.pipeline.cache.matrix import (
    Matrix,
    NotCacheable,
    assemble,
    dump_extent,
    load_extent,
    parse_matrix,
    render,
    replace_range,
)
from gateway.pipeline.cache.plan import Grid, Plan, cut, plan
from gateway.pipeline.cache.safety import Analysis, analyse, final_until, format_seconds, pin_start_end
from gateway.pipeline.cache.savings import steps_cost
from gateway.pipeline.cache.tiers import HostTier, MemoryTier, RedisTier, Store
from gateway.pipeline.endpoints.params import ERROR_THRESHOLD, WARNING_THRESHOLD
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Handler, Request, as_bytes
from gateway.pipeline.shared import SharedRedis
from gateway.promql import offloop
from gateway.promql.memo import tree_bytes

log = logging.getLogger("gateway.cache")

# AMP's query-cost guards: limits on what a fetch may cost, not part of an answer's identity.
# Every fetch carries the client's (sub-ranges too); an answer AMP warned about under one is
# passed on but never stored (see _guarded).
THRESHOLDS = (WARNING_THRESHOLD, ERROR_THRESHOLD)
# Parameters keyed separately (normalised) or that do not change the answer.
_UNKEYED = frozenset({"query", "start", "end", "step", "time", "timeout", *THRESHOLDS})
# Range-query parameters whose effect depends on the whole window: splitting would change the answer.
_WINDOW_PARAMS = {"stats": "stats", "limit": "limit"}
ANALYSES_BYTES = 8 << 20
# Told the query samples an answer served from the cache saved (the cost ledger's `saved`).
OnSaved = Callable[[Request, int], Awaitable[None]]
# Plain copies for clients without gzip may use 1/PLAIN_SHARE of cache.memory_bytes.
PLAIN_SHARE = 8


def _analysis_bytes(analysis: Analysis) -> int:
    return tree_bytes(analysis.expr) + 2 * sys.getsizeof(analysis.normalized) + 400


class ResultsCache:
    """The cache stage; `upstream` is the next handler (coalesce, then on to the upstream)."""

    def __init__(
        self,
        settings: CacheSettings,
        metrics: Metrics,
        upstream: Handler,
        clock: Callable[[], float] = time.time,
        shared: SharedRedis | None = None,
        *,
        host: HostStore,
        workers: int = 1,
        on_saved: OnSaved | None = None,
    ) -> None:
        """`host`: the store shared by the workers of this `serve` (`workers` of them, who share
        out the plain copies' part of `cache.memory_bytes`). `on_saved(request, samples)`: once
        for each answer of a query or range query served from the cache that saved samples."""
        self._settings = settings
        self._on_saved = on_saved
        self._metrics = metrics
        self._clock = clock
        self._fetch = upstream
        redis = RedisTier(shared) if settings.mode == "redis" and shared is not None else None
        damaged = metrics.cache_damaged_entries
        self.store = Store(
            HostTier(host, self._clock, settings.max_stale, on_damaged=lambda: damaged.labels("host").inc()),
            redis,
            self._clock,
            on_damaged=lambda tier: damaged.labels(tier).inc(),
            copies=MemoryTier(settings.memory_bytes // PLAIN_SHARE // max(1, workers), self._clock),
        )
        self._split_ms = max(1000, round(settings.split_interval * 1000))
        # Analyses of the queries seen, by canonical text, bounded by their measured bytes.
        self._analyses: LRUCache[str, Analysis] = LRUCache(maxsize=ANALYSES_BYTES, getsizeof=_analysis_bytes)
        self._samples_from_cache = metrics.cache_samples.labels("cache")
        # gateway_cache_requests_total's children, kept once made: labels() on each hit cost
        # 3 µs, 7% of the stage (bench/README.md, issue 10). At most endpoints x 4 outcomes.
        self._outcomes: dict[tuple[str, str], Counter] = {}
        # By the endpoint's cache kind in the endpoint table.
        self._handlers: dict[str, Handler] = {
            "range": self._range,
            "instant": self._instant,
            "metadata": self._metadata,
        }

    async def aclose(self) -> None:
        await self.store.aclose()

    async def __call__(self, request: Request) -> Answer:
        handler = self._handlers.get(request.endpoint.cache)
        try:
            if handler is None:
                answer = await self._bypass(request, "endpoint-not-cached")
            else:
                answer = await handler(request)
        except GatewayError as err:
            self._metrics.cache_requests.labels(request.endpoint.name, "bypass").inc()
            self._metrics.cache_not_cached.labels("error-not-cached").inc()
            raise err.with_headers({"x-cache": "bypass; reason=error-not-cached"}) from None
        result = answer.cache.split(";", 1)[0] or "bypass"
        outcome = self._outcomes.get((request.endpoint.name, result))
        if outcome is None:
            outcome = self._outcomes[(request.endpoint.name, result)] = self._metrics.cache_requests.labels(
                request.endpoint.name, result
            )
        outcome.inc()
        return answer

    # ------------------------------------------------------------ helpers

    @staticmethod
    def _key(request: Request, kind: str, *parts: Any) -> str:
        """The entry's key: a hash of everything that can change the answer. repr() of a tuple
        quotes and escapes every string, so distinct inputs cannot collide."""
        text = repr(
            (
                codec.SCHEMA_VERSION,
                kind,
                request.workspace.fingerprint,
                request.endpoint.name,
                request.path,
                request.principal.enforce,
                [(k, v) for k, v in request.params if k not in _UNKEYED],
                parts,
            )
        )
        return "gwc:" + hashlib.blake2b(text.encode(), digest_size=20).hexdigest()

    async def _analyse(self, request: Request, query: str) -> Analysis | None:
        """The analysis of the request's (validated, enforced) tree, remembered by its text."""
        analysis = self._analyses.get(query)
        if analysis is None:
            if request.expr is None:
                return None
            analysis = await offloop.run(len(query), analyse, request.expr)
            self._analyses[query] = analysis
        return analysis

    def _not_cached(self, answer: Answer, reason: str) -> Answer:
        self._metrics.cache_not_cached.labels(reason).inc()
        return answer.replace(cache=f"bypass; reason={reason}")

    async def _bypass(self, request: Request, reason: str) -> Answer:
        return self._not_cached(await self._fetch(request), reason)

    async def _lookup(self, request: Request, key: str) -> Answer | None:
        """A whole response from the cache, in the client's encoding, as stored."""
        if request.no_cache:
            return None
        entry = self.store.get_copy(key, gzipped=request.accept_gzip)
        if entry is None:
            entry = await self.store.get(key)
            if entry is None:
                return None
            if request.accept_gzip and entry.kind == codec.KIND_RESPONSE:
                # This worker's copy: the next hit reads the entry's header from the host's
                # store, about 4 µs, not the entry, 16.7 µs for 15 KB (bench/README.md, issue 17).
                self.store.put_copy(key, entry, entry)
                self._metrics.cache_memory_bytes.set(self.store.copies.bytes)
        answer = self._serve(entry, request, key)
        if entry.processed > 0:
            await self._saved(request, entry.processed)
        return answer

    async def _saved(self, request: Request, samples: int) -> None:
        if samples > 0 and self._on_saved is not None:
            await self._on_saved(request, samples)

    def _serve(self, entry: codec.Entry, request: Request, key: str) -> Answer:
        self._samples_from_cache.inc(entry.samples)
        self._metrics.cache_served_bytes.inc(len(entry.payload))
        if request.accept_gzip or entry.kind == codec.KIND_PLAIN:
            return Answer(entry.payload, gzipped=entry.kind != codec.KIND_PLAIN, cache="hit")
        # The first client without gzip to ask for this entry: a plain copy, kept in memory.
        data = entry.data()
        self._keep_plain(key, entry, data)
        return Answer(data, cache="hit")

    def _keep_plain(self, key: str, made_from: codec.Entry, data: bytes) -> None:
        plain = codec.Entry(
            codec.KIND_PLAIN,
            made_from.expires_at,
            made_from.samples,
            data,
            made_from.stored_at,
            made_from.processed,
        )
        self.store.put_copy(key, made_from, plain)
        self._metrics.cache_memory_bytes.set(self.store.copies.bytes)

    def _put(
        self, key: str, kind: int, ttl: float, samples: int, gz: bytes, processed: int = 0
    ) -> codec.Entry | None:
        """An entry of `gz`, a payload already gzip-compressed (off the loop when large), made
        by processing `processed` query samples (0: not known, or an extent)."""
        if ttl <= 0:
            return None
        now = self._clock()
        entry = codec.entry(kind, now + ttl, samples, gz, compressed=True, stored_at=now, processed=processed)
        self._metrics.cache_stored_bytes.inc(codec.encoded_size(entry))
        self.store.put(key, entry)
        self._metrics.cache_host_bytes.set(self.store.memory.bytes)
        return entry

    def _put_answer(
        self, key: str, ttl: float, samples: int, answer: Answer, gz: bytes, processed: int
    ) -> None:
        """A whole response: `gz` (its gzip form) for every tier, and plain in memory when this
        client is plain; a hit on it saves `processed`."""
        entry = self._put(key, codec.KIND_RESPONSE, ttl, samples, gz, processed)
        if not answer.gzipped and entry is not None:
            self._keep_plain(key, entry, as_bytes(answer.body))

    @staticmethod
    def _guarded(request: Request) -> bool:
        """Whether the request carries a cost threshold: then an answer with warnings is not
        stored. AMP's threshold warning cannot be told from a query's own warnings by its text,
        and stored, it would be replayed to clients that set no threshold (or another one)."""
        return any(request.param(name) for name in THRESHOLDS)

    def _horizon_ms(self) -> int:
        return int((self._clock() - self._settings.max_freshness) * 1000)

    # ------------------------------------------------------------ whole responses

    async def _whole(self, request: Request, key: str, ttl: float, billed: bool) -> Answer:
        """A whole-response entry; `billed`: AMP bills the endpoint by query samples (a query's
        hit saves what its fetch processed; a metadata endpoint's, nothing)."""
        found = await self._lookup(request, key)
        if found is not None:
            return found
        try:
            answer = await self._fetch(request)
        except GatewayError as err:
            return await self._stale_or_raise(request, key, err)
        limit = self._settings.max_answer_bytes
        if answer.size > limit:
            return self._not_cached(answer, "too-large")
        kept = await work(json_size(answer), _whole_entry, answer, limit, self._guarded(request))
        if isinstance(kept, str):
            return self._not_cached(answer, kept)
        samples, gz = kept
        self._metrics.cache_samples.labels("upstream").inc(samples)
        self._put_answer(key, ttl, samples, answer, gz, answer.samples_processed if billed else 0)
        if request.no_cache:
            return self._not_cached(answer, "no-cache-header")
        return answer.replace(cache="miss")

    async def _metadata(self, request: Request) -> Answer:
        key = self._key(request, "meta", request.params)
        return await self._whole(request, key, self._settings.metadata_ttl, billed=False)

    async def _instant(self, request: Request) -> Answer:
        if request.time_ms is None:
            return await self._bypass(request, "no-time")
        if request.param("stats"):
            return await self._bypass(request, "stats")
        analysis = await self._analyse(request, request.param("query"))
        if analysis is None:
            return await self._bypass(request, "no-expression")
        time_ms = request.time_ms
        final = final_until(analysis, self._horizon_ms(), (time_ms,))
        long_lived = final is not None and time_ms <= final
        ttl = self._settings.results_ttl if long_lived else self._settings.recent_ttl
        key = self._key(request, "instant", analysis.normalized, time_ms)
        return await self._whole(request, key, ttl, billed=True)

    # ------------------------------------------------------------ range queries

    async def _range(self, request: Request) -> Answer:
        window = request.window
        if window is None:
            return await self._bypass(request, "no-window")
        first = dict(reversed(request.params))  # each name's first value, as request.param() reads
        for name, reason in _WINDOW_PARAMS.items():
            if first.get(name):
                return await self._bypass(request, reason)
        if window.step_ns % 1_000_000:
            return await self._bypass(request, "sub-millisecond-step")
        analysis = await self._analyse(request, first.get("query", ""))
        if analysis is None:
            return await self._bypass(request, "no-expression")
        step = window.step_ns // 1_000_000
        start = window.start_ms
        last = grid_last(start, window.end_ms, step)
        pinned_query: str | None = None
        key_query = analysis.normalized
        if analysis.start_end:
            pinned_query = key_query = await offloop.run(
                len(analysis.normalized), pin_start_end, analysis, window.start_ms, window.end_ms
            )
        base = self._key(request, "range", key_query, step, start % step)
        whole_key = f"{base}:{start}:{last}"
        found = await self._lookup(request, whole_key)
        if found is not None:
            return found

        final = final_until(analysis, self._horizon_ms(), (window.start_ms, window.end_ms))
        grid = cut(start, window.end_ms, step, self._split_ms, final)
        bucket_keys = [f"{base}:b{index}" for index, _ in grid.buckets]
        extents = await self._load_extents(request, bucket_keys)
        todo = plan(grid, [coverage for coverage, _ in extents], request.no_cache)
        if todo.whole:
            return await self._range_whole(request, grid, todo, bucket_keys, extents, whole_key)

        fetched = await self._fetch_runs(request, list(todo.fetch), pinned_query)
        for answer in fetched:
            if isinstance(answer, GatewayError):
                errors = [e for e in fetched if isinstance(e, GatewayError)]
                return await self._range_failed(request, errors, whole_key, grid, todo, extents, analysis)
            if isinstance(answer, NotCacheable):
                return await self._bypass(request, str(answer))
        matrices: list[Matrix] = [m for m in fetched if isinstance(m, Matrix)]
        fetched_samples = sum(m.samples() for m in matrices)
        self._metrics.cache_samples.labels("upstream").inc(fetched_samples)

        size = sum(m.samples() for _, m in extents) * 24 + fetched_samples * 24  # ~JSON bytes a point
        merged = await work(size, _merge, grid, todo, extents, matrices)
        self._metrics.cache_samples.labels("cache").inc(max(0, merged.samples - fetched_samples))
        merged_answer = Answer(merged.body, cache="partial" if todo.fetch else "hit", size=len(merged.body))
        await self._saved(request, merged.saved)
        if self._guarded(request) and any(m.warnings for m in matrices):
            self._metrics.cache_not_cached.labels("threshold-warning").inc()
            return merged_answer
        for key, (samples, gz) in zip(bucket_keys, merged.extents, strict=True):
            if gz is not None:
                self._put(key, codec.KIND_EXTENT, self._settings.results_ttl, samples, gz)
        ttl = self._settings.results_ttl if grid.all_final else self._settings.recent_ttl
        if len(merged.body) <= self._settings.max_answer_bytes:  # (its extents are kept either way)
            self._put_answer(whole_key, ttl, merged.samples, merged_answer, merged.gz, merged.processed)
        return merged_answer

    async def _range_whole(
        self,
        request: Request,
        grid: Grid,
        todo: Plan,
        bucket_keys: list[str],
        extents: list[tuple[list[Run], Matrix]],
        whole_key: str,
    ) -> Answer:
        """Nothing cached (or the client asked for a fresh answer): send the client's own
        request, answer with exactly what came back, and keep it as extents."""
        try:
            answer = await self._fetch(request)
        except GatewayError as err:
            return await self._stale_or_raise(request, whole_key, err)
        limit = self._settings.max_answer_bytes
        if answer.size > limit:
            return self._not_cached(answer, "too-large")
        guarded = self._guarded(request)
        kept = await work(json_size(answer), _whole_extents, answer, limit, grid, todo, extents, guarded)
        if isinstance(kept, str):
            return self._not_cached(answer, kept)
        samples, gz, extent_entries = kept
        self._metrics.cache_samples.labels("upstream").inc(samples)
        for key, (extent_samples, extent_gz) in zip(bucket_keys, extent_entries, strict=True):
            self._put(key, codec.KIND_EXTENT, self._settings.results_ttl, extent_samples, extent_gz)
        ttl = self._settings.results_ttl if grid.all_final else self._settings.recent_ttl
        self._put_answer(whole_key, ttl, samples, answer, gz, answer.samples_processed)
        if request.no_cache:
            return self._not_cached(answer, "no-cache-header")
        return answer.replace(cache="miss")

    # ------------------------------------------------------------ stale-if-error

    async def _stale_or_raise(self, request: Request, key: str, error: GatewayError) -> Answer:
        found = await self._stale_whole(request, key, error)
        if found is None:
            raise error
        return found

    async def _stale_whole(self, request: Request, key: str, error: GatewayError) -> Answer | None:
        """The whole response under `key`, expired at most cache.max_stale ago, with a warning,
        when the upstream failed in a way the cache may answer for (never with max_stale 0)."""
        if not stale.rescues(error) or request.no_cache or self._settings.max_stale <= 0:
            return None
        entry = (await self.store.get_many([key], stale=self._settings.max_stale))[0]
        if entry is None or entry.kind != codec.KIND_RESPONSE:
            return None
        warning = stale.whole_warning(error, self._clock() - entry.stored_at)
        made = await work(len(entry.payload) * GZIP_RATIO, stale.whole, entry, warning, request.accept_gzip)
        if made is None:
            return None
        return await self._served_stale(request, error, entry.samples, entry.processed, *made)

    async def _range_failed(
        self,
        request: Request,
        errors: list[GatewayError],
        whole_key: str,
        grid: Grid,
        todo: Plan,
        extents: list[tuple[list[Run], Matrix]],
        analysis: Analysis,
    ) -> Answer:
        """Some sub-range fetches failed: the whole response, as for any request, else the
        request's points the extents hold, when they are all of it but a tail that was fresh
        at most cache.max_stale ago; else the error. Nothing fetched now is mixed in."""
        refused = next((e for e in errors if not stale.rescues(e)), None)
        if refused is not None:
            raise refused
        error = errors[0]
        found = await self._stale_whole(request, whole_key, error)
        if found is not None:
            return found
        until = todo.held_until(grid.step)
        if until is None or self._settings.max_stale <= 0:
            raise error
        pinned = (request.window.start_ms, request.window.end_ms) if request.window else ()
        horizon = self._horizon_ms() - round(self._settings.max_stale * 1000)
        then = final_until(analysis, horizon, pinned)
        if then is not None and until + grid.step <= then:
            raise error  # missing points that were already final then: not a fresh tail
        missing = (grid.last - until) // grid.step
        warning = stale.prefix_warning(error, self._clock() - until / 1000, missing)
        size = sum(m.samples() for _, m in extents) * 24
        matrices = [m for _, m in extents]
        body, gzipped, samples = await work(
            size, stale.held_prefix, grid, matrices, until, warning, request.accept_gzip
        )
        saved = steps_cost(matrices, [(grid.start, until)])
        return await self._served_stale(request, error, samples, saved, body, gzipped)

    async def _served_stale(
        self, request: Request, error: GatewayError, samples: int, saved: int, body: bytes, gzipped: bool
    ) -> Answer:
        self._metrics.cache_stale.labels(request.endpoint.name, error.failure).inc()
        self._samples_from_cache.inc(samples)
        self._metrics.cache_served_bytes.inc(len(body))
        await self._saved(request, saved)
        return Answer(body, gzipped=gzipped, cache="stale")

    async def _load_extents(self, request: Request, keys: list[str]) -> list[tuple[list[Run], Matrix]]:
        entries = await self.store.get_many(keys)
        size = sum(len(e.payload) for e in entries if e is not None) * GZIP_RATIO
        return await work(size, _decode_extents, entries)

    async def _fetch_runs(
        self, request: Request, runs: list[Run], query: str | None
    ) -> list[Matrix | GatewayError | NotCacheable]:
        slots = asyncio.Semaphore(self._settings.parallel_fetches)

        limit = self._settings.max_answer_bytes

        async def one(run: Run) -> Matrix | GatewayError | NotCacheable:
            try:
                async with slots:
                    answer = await self._fetch(_sub_request(request, run, query))
            except GatewayError as err:
                return err
            if answer.size > limit:
                return NotCacheable("too-large")
            return await work(json_size(answer), _parsed, answer, limit)

        return list(await asyncio.gather(*(one(run) for run in runs)))


def _sub_request(request: Request, run: Run, query: str | None) -> Request:
    params = []
    for name, value in request.params:
        if name == "start":
            value = format_seconds(run[0])
        elif name == "end":
            value = format_seconds(run[1])
        elif name == "query" and query is not None:
            value = query
        params.append((name, value))
    return request.replace(params=tuple(params))


# ---------------------------------------------------------------- the work (in the pool when large)


def _gz(answer: Answer) -> bytes:
    return as_bytes(answer.body) if answer.gzipped else codec.gzip_bytes(answer.body)


def _whole_entry(answer: Answer, limit: int, guarded: bool) -> tuple[int, bytes] | str:
    """(samples, the gzip body) of a whole answer to keep, or why it is not kept (`guarded`:
    fetched under a cost threshold, see ResultsCache._guarded)."""
    data = answer.json_bytes()
    if len(data) > limit:
        return "too-large"
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        return "invalid-json"
    if not isinstance(doc, dict) or doc.get("status") != "success":
        return "error-not-cached"
    if guarded and doc.get("warnings"):
        return "threshold-warning"
    return _samples(doc.get("data")), _gz(answer)


def _parsed(answer: Answer, limit: int) -> Matrix | NotCacheable:
    """A range answer's matrix, with what its fetch processed at each step."""
    data = answer.json_bytes()
    if len(data) > limit:
        return NotCacheable("too-large")
    try:
        matrix = parse_matrix(data)
    except NotCacheable as err:
        return err
    matrix.per_step = dict(answer.samples_per_step)
    return matrix


def _extent_entry(coverage: list[Run], matrix: Matrix) -> tuple[int, bytes]:
    return matrix.samples(), codec.gzip_bytes(dump_extent(coverage, matrix))


def _decode_extents(entries: list[codec.Entry | None]) -> list[tuple[list[Run], Matrix]]:
    out: list[tuple[list[Run], Matrix]] = []
    for entry in entries:
        loaded: tuple[list[Run], Matrix] = ([], Matrix())
        if entry is not None and entry.kind == codec.KIND_EXTENT:
            try:
                loaded = load_extent(entry.data())
            except (OSError, EOFError, ValueError, KeyError, TypeError):
                log.warning("cache: dropped a damaged extent entry")
        out.append(loaded)
    return out


def _whole_extents(
    answer: Answer,
    limit: int,
    grid: Grid,
    todo: Plan,
    extents: list[tuple[list[Run], Matrix]],
    guarded: bool,
) -> tuple[int, bytes, list[tuple[int, bytes]]] | str:
    """A whole answer to keep: (samples, its gzip body, each bucket's extent entry), or why not."""
    matrix = _parsed(answer, limit)
    if isinstance(matrix, NotCacheable):
        return str(matrix)
    if guarded and matrix.warnings:
        return "threshold-warning"
    kept = []
    for writes, (coverage, stored) in zip(todo.writes, extents, strict=True):
        for _, (lo, hi) in writes:
            replace_range(stored, matrix, lo, hi)
            coverage = add_run(coverage, (lo, hi), grid.step)
        kept.append(_extent_entry(coverage, stored))
    return matrix.samples(), _gz(answer), kept


@dataclass(frozen=True, slots=True)
class _Merged:
    body: bytes
    gz: bytes
    samples: int
    extents: list[tuple[int, bytes | None]]  # per bucket: (samples, entry) when it changed
    saved: int  # the query samples of the steps served from the extents
    processed: int  # ... and of all the answer's steps (those fetched now too), as far as known


def _merge(
    grid: Grid, todo: Plan, extents: list[tuple[list[Run], Matrix]], matrices: list[Matrix]
) -> _Merged:
    """The fetched runs written into the buckets' extents, and the answer assembled from them."""
    saved = steps_cost([stored for _, stored in extents], todo.held)
    fetched = sum(steps_cost([matrix], [run]) for matrix, run in zip(matrices, todo.fetch, strict=True))
    parts: list[tuple[Matrix, int, int]] = []
    changed: list[tuple[int, bytes | None]] = []
    for (_, run), writes, (coverage, stored) in zip(grid.buckets, todo.writes, extents, strict=True):
        for index, (lo, hi) in writes:
            replace_range(stored, matrices[index], lo, hi)
            coverage = add_run(coverage, (lo, hi), grid.step)
        changed.append(_extent_entry(coverage, stored) if writes else (0, None))
        parts.append((stored, run[0], run[1]))
    if todo.recent is not None:
        parts.append((matrices[-1], todo.recent[0], todo.recent[1]))
    merged = assemble(parts)
    body = render(merged)
    return _Merged(body, codec.gzip_bytes(body), merged.samples(), changed, saved, saved + fetched)


def _samples(data: Any) -> int:
    """Samples in an instant or range answer (0 for the metadata endpoints)."""
    if not isinstance(data, dict):
        return 0
    result = data.get("result")
    if not isinstance(result, list):
        return 0
    if data.get("resultType") == "matrix":
        return sum(len(s.get("values") or ()) + len(s.get("histograms") or ()) for s in result)
    return len(result) if data.get("resultType") == "vector" else 1
