"""The gateway's own metrics, served at /metrics (prometheus-client).

Under `serve`, the workers write their values to files in PROMETHEUS_MULTIPROC_DIR (set by the
supervisor) and /metrics adds them up, whichever worker serves it: counters and histograms
summed over every worker that ever ran, gauges over the live ones (`multiprocess_mode`). When a
worker is gone, the supervisor adds its counters and histograms to the totals of the gone ones
(`absorb_gone_worker`) and deletes its files: totals never go down and files do not pile up.

/metrics is rendered off the event loop, at most once a second per worker (`Scrapes`): a flood
of scrapes costs the requests being served next to nothing.

Besides the gateway's own: `gateway_build_info`, `python_info`, `python_gc_*` and `process_*`.
In one process they are prometheus-client's collectors. Under `serve`, `process_*` describe every
live worker and the supervisor, labelled `pid` and `role` (read from /proc when scraped), and
`python_gc_*` are counters added up over every worker, gone ones included, like the gateway's.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import glob
import logging
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from gateway import __version__
from gateway.errors import UPSTREAM_FAILURES

log = logging.getLogger("gateway")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How long one rendering of /metrics is served again (scrapers ask every 15 s or more).
SCRAPE_CACHE_SECONDS = 1.0
# The files of gone workers' totals: `counter_gone.db`, ... (named where a worker's pid would be).
GONE = "gone"
_SUMMED = ("counter", "histogram", "summary")
_LOCK = "merge.lock"  # not *.db: the collector reads only those
_WORKER_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_[a-z]+)_(\d+)\.db$")

# Every error and limit counter is exported at 0 from the start (`Metrics.expect`), so that an
# alert on it has a series before the first error. The stages' errors an alert would look for:
EXPECTED_STAGE_ERRORS = (
    ("authenticate", "unauthorized"),
    ("authenticate", "too_many_requests"),
    ("rate_limit", "too_many_requests"),
    ("authorize", "forbidden"),
    ("authorize", "not_found"),
    ("validate", "bad_data"),
    ("size_limits", "bad_data"),
    ("principal_slots", "too_many_requests"),
    ("enforce", "bad_data"),
    ("enforce", "internal"),
    ("edge_guard", "internal"),
    ("retry", "timeout"),
    ("operation_rate", "too_many_requests"),
    ("workspace_slots", "too_many_requests"),
    ("sign", "unavailable"),
    ("send", "unavailable"),
    ("send", "execution"),
    ("-", "internal"),
)
AUTH_FAILURE_REASONS = ("missing", "invalid", "expired", "throttled")
LIMIT_REASONS = ("rate", "concurrency", "size")
REDIS_FEATURES = ("connect", "cache", "rate", "slots", "coalesce", "sign_in", "amp_rate")
RETRY_REASONS = ("throttled", "502", "connection")
# AMP's API families (config/amp_rates.py FAMILIES) and what pacing did (pipeline/operation_rate.py).
AMP_RATE_FAMILIES = ("query_metrics", "series_labels_metadata", "other_apis")
AMP_RATE_OUTCOMES = ("waited", "refused", "amp_429")


def exposition(registry: CollectorRegistry) -> bytes:
    """The text /metrics serves, rendered now and synchronously (`Scrapes` runs it off the loop)."""
    return generate_latest(everyone(registry))


def everyone(registry: CollectorRegistry) -> CollectorRegistry:
    """What /metrics renders: this registry, or, under `serve`, every worker's files added up,
    the processes' figures and python_info."""
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        return registry
    found = CollectorRegistry(auto_describe=False)
    found.register(_WorkerFiles(directory))
    found.register(_Processes(directory))
    PlatformCollector(registry=found)
    return found


class Scrapes:
    """/metrics for a flood of scrapers: rendered in a thread, never on the event loop; one
    rendering at a time, shared by every scrape that asks meanwhile; and served again for
    `max_age` seconds. A scrape sees values at most that old."""

    def __init__(
        self,
        registry: CollectorRegistry,
        max_age: float = SCRAPE_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = everyone(registry)
        self._max_age = max_age
        self._clock = clock
        self._body = b""
        self._rendered_at = -max_age - 1.0
        self._pending: asyncio.Future[bytes] | None = None

    async def render(self) -> bytes:
        if self._clock() - self._rendered_at < self._max_age:
            return self._body
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._render())
        # A scraper that goes away does not cancel the rendering the others wait for.
        return await asyncio.shield(self._pending)

    async def _render(self) -> bytes:
        started = self._clock()
        try:
            body = await asyncio.to_thread(generate_latest, self._registry)
        finally:
            self._pending = None
        self._body, self._rendered_at = body, started
        return body


def absorb_gone_worker(directory: str, pid: int) -> None:
    """A worker is gone: its live gauges leave, its counters, histograms and summaries are added
    to the totals of gone workers, and its files are deleted. Under an exclusive lock, which a
    rendering takes shared: a scrape never counts a worker twice, nor misses it."""
    try:
        _absorb(directory, pid)
    except Exception as err:  # a full disk or a damaged file must not stop the supervisor
        log.warning("could not merge gone worker %s's metrics files: %r", pid, err)


def _absorb(directory: str, pid: int) -> None:
    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]  # untyped upstream
    with _locked(directory, fcntl.LOCK_EX):
        for kind in _SUMMED:
            path = os.path.join(directory, f"{kind}_{pid}.db")
            try:
                values = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            except FileNotFoundError:
                continue
            totals = MmapedDict(os.path.join(directory, f"{kind}_{GONE}.db"))  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            try:
                for key, value, _, _ in values:
                    before, _ = totals.read_value(key)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
                    totals.write_value(key, before + value, 0.0)  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            finally:
                totals.close()  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped
            os.unlink(path)
        # Gauges of the other modes (the gateway has none): a gone worker's value is no one's.
        for path in glob.glob(os.path.join(directory, f"gauge_*_{pid}.db")):
            os.unlink(path)


@contextlib.contextmanager
def _locked(directory: str, how: int) -> Iterator[None]:
    try:
        handle = open(os.path.join(directory, _LOCK), "a")  # noqa: SIM115  # closed below
    except OSError:  # the directory is being removed: the gateway is stopping
        yield
        return
    with handle:
        fcntl.flock(handle, how)
        yield  # the lock goes with the file


def worker_pids(directory: str) -> set[int]:
    """The workers that have files in the directory: the live ones (and, for half a second at
    most, one the supervisor has not yet seen gone)."""
    pids = set()
    for name in os.listdir(directory):
        found = _WORKER_FILE.match(name)
        if found:
            pids.add(int(found[1]))
    return pids


class _WorkerFiles(Collector):
    """Every worker's files added up (prometheus-client's MultiProcessCollector), read under the
    shared lock; this worker's GC figures written to its files first."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        _gc_figures().sync()
        with _locked(self._directory, fcntl.LOCK_SH):
            files = glob.glob(os.path.join(self._directory, "*.db"))
            return list(MultiProcessCollector.merge(files, accumulate=True))  # type: ignore[no-untyped-call]  # prometheus_client leaves it untyped


class _Processes(Collector):
    """`process_*` of every live worker and the supervisor, labelled `pid` and `role`, read from
    /proc by whichever worker renders: a scrape sees all of them, whichever worker answers."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        roles = {pid: "worker" for pid in worker_pids(self._directory)}
        roles[os.getppid()] = "supervisor"
        families: dict[str, Metric] = {}
        for pid, role in sorted(roles.items()):
            reader = ProcessCollector(pid=lambda pid=pid: pid, registry=None)  # type: ignore[misc]  # a default binds the loop's pid
            for family in reader.collect():
                merged = families.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "pid": str(pid), "role": role}
                    merged.samples.append(Sample(sample.name, labels, sample.value))
        return list(families.values())


class _GcFigures:
    """Under `serve`: this process's garbage collections (`gc.get_stats()`), written to its
    files as counters, so that /metrics adds up every worker's. Brought up to date every
    `GC_SYNC_SECONDS` by a thread, and by the worker that renders /metrics before it does."""

    def __init__(self) -> None:
        labels = ["generation"]
        self.collected = Counter(
            "python_gc_objects_collected", "Objects collected during gc", labels, registry=None
        )
        self.uncollectable = Counter(
            "python_gc_objects_uncollectable", "Uncollectable objects found during GC", labels, registry=None
        )
        self.collections = Counter(
            "python_gc_collections", "Number of times this generation was collected", labels, registry=None
        )
        self._seen: list[dict[str, int]] = []
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            stats = gc.get_stats()
            while len(self._seen) < len(stats):
                self._seen.append({"collected": 0, "uncollectable": 0, "collections": 0})
            for generation, (now, seen) in enumerate(zip(stats, self._seen, strict=False)):
                for field, counter in (
                    ("collected", self.collected),
                    ("uncollectable", self.uncollectable),
                    ("collections", self.collections),
                ):
                    delta = now[field] - seen[field]
                    counter.labels(str(generation)).inc(max(0, delta))  # made at 0, then added to
                    seen[field] = now[field]

    def keep_up(self, every: float) -> None:
        while True:
            time.sleep(every)
            self.sync()


GC_SYNC_SECONDS = 5.0
_gc: _GcFigures | None = None


def _gc_figures() -> _GcFigures:
    """This process's (made, with its thread, on first use)."""
    global _gc
    if _gc is None:
        _gc = _GcFigures()
        _gc.sync()
        threading.Thread(target=_gc.keep_up, args=(GC_SYNC_SECONDS,), name="gc-figures", daemon=True).start()
    return _gc


class Metrics:
    """One registry per app, so several apps (tests, benchmarks) can live in one process."""

    def __init__(self) -> None:
        self._redis_up: Gauge | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if os.environ.get(METRICS_DIR_ENV):
            _gc_figures()  # this worker's, kept up to date in its files
        else:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)
        self.build_info = Gauge(
            "gateway_build_info",
            "1, labelled with the gateway's version and Python's.",
            ["version", "python"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.build_info.labels(__version__, platform.python_version()).set(1)
        self.requests = Counter(
            "gateway_requests_total",
            "API requests answered, by endpoint, workspace and HTTP code.",
            ["endpoint", "workspace", "code"],
            registry=r,
        )
        self.stage_errors = Counter(
            "gateway_stage_errors_total",
            "Errors answered, by the stage of the request path that decided them and error type.",
            ["stage", "type"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "gateway_request_duration_seconds",
            "Time to answer an API request.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests_total",
            "Requests sent upstream, by workspace and HTTP code ('error' when no answer came).",
            ["workspace", "endpoint", "code"],
            registry=r,
        )
        self.upstream_seconds = Histogram(
            "gateway_upstream_duration_seconds",
            "Time of one upstream attempt.",
            ["workspace"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_retries = Counter(
            "gateway_upstream_retries_total",
            "Upstream attempts repeated, by reason.",
            ["workspace", "reason"],
            registry=r,
        )
        self.upstream_throttled = Counter(
            "gateway_upstream_throttled_total",
            "Upstream 429 answers (before retries).",
            ["workspace"],
            registry=r,
        )
        self.upstream_too_large = Counter(
            "gateway_upstream_too_large_total",
            "Upstream answers dropped for being larger than upstream.max_answer_bytes (a 422).",
            ["workspace"],
            registry=r,
        )
        self.redis_fallbacks = Counter(
            "gateway_redis_fallbacks_total",
            "Redis calls that failed or were skipped during an outage, by feature.",
            ["feature"],
            registry=r,
        )
        self.upstream_in_flight = Gauge(
            "gateway_upstream_in_flight",
            "Upstream requests in flight.",
            ["workspace"],
            multiprocess_mode="livesum",
            registry=r,
        )
        self.upstream_queue_seconds = Histogram(
            "gateway_upstream_queue_seconds",
            "Time waited for a per-workspace upstream slot.",
            ["workspace"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.signing_errors = Counter(
            "gateway_signing_errors_total",
            "Requests that could not be signed, or whose signature AMP refused.",
            ["workspace"],
            registry=r,
        )
        self.credential_errors = Counter(
            "gateway_credential_errors_total",
            "Failures to resolve or refresh AWS credentials.",
            ["workspace"],
            registry=r,
        )
        # the cost ledger (gateway.pipeline.cost): AMP's query samples, what it bills
        self.query_samples = Counter(
            "gateway_query_samples_total",
            "Query samples AMP processed for the gateway's fetches (totalQueryableSamples: what AMP "
            "bills), by workspace and principal.",
            ["workspace", "principal"],
            registry=r,
        )
        self.query_samples_saved = Counter(
            "gateway_query_samples_saved_total",
            "Query samples the results cache or a shared fetch saved, by workspace and principal.",
            ["workspace", "principal"],
            registry=r,
        )
        self.dashboard_query_samples = Counter(
            "gateway_dashboard_query_samples_total",
            "Query samples AMP processed, by Grafana dashboard uid: the first cost.top a worker "
            "sees, the rest as 'other', '-' when the request named none.",
            ["dashboard"],
            registry=r,
        )
        self.dashboard_query_samples_saved = Counter(
            "gateway_dashboard_query_samples_saved_total",
            "Query samples the cache saved, by Grafana dashboard uid (as "
            "gateway_dashboard_query_samples_total).",
            ["dashboard"],
            registry=r,
        )
        self.cost_unsaved_flushes = Counter(
            "gateway_cost_unsaved_flushes_total",
            "Flushes of a worker's cost totals that neither Redis nor the host's store took (kept "
            "in the worker and tried again with the next).",
            registry=r,
        )
        # results cache (gateway.pipeline.cache)
        self.cache_requests = Counter(
            "gateway_cache_requests_total",
            "Requests seen by the results cache, by endpoint and result (hit, miss, partial, bypass).",
            ["endpoint", "result"],
            registry=r,
        )
        self.cache_not_cached = Counter(
            "gateway_cache_not_cached_total",
            "Answers the results cache did not store or serve, by reason.",
            ["reason"],
            registry=r,
        )
        self.cache_samples = Counter(
            "gateway_cache_samples_total",
            "Samples in answers, by source: 'cache' (upstream work avoided) or 'upstream' (fetched).",
            ["source"],
            registry=r,
        )
        self.cache_stored_bytes = Counter(
            "gateway_cache_stored_bytes_total",
            "Bytes of (compressed) entries written to the cache.",
            registry=r,
        )
        self.cache_served_bytes = Counter(
            "gateway_cache_served_bytes_total",
            "Bytes of answers served from the cache.",
            registry=r,
        )
        self.cache_memory_bytes = Gauge(
            "gateway_cache_memory_bytes",
            "Bytes of plain copies (for clients without gzip) in the workers' own memory.",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.cache_host_bytes = Gauge(
            "gateway_cache_host_bytes",
            "Bytes of the cache in the store the workers of this host share, as counted against "
            "cache.memory_bytes.",
            multiprocess_mode="livemax",  # every worker reads the same store
            registry=r,
        )
        self.cache_coalesced = Counter(
            "gateway_cache_coalesced_total",
            "Upstream requests saved by joining an identical request already in flight.",
            registry=r,
        )
        self.coalesced_across_processes = Counter(
            "gateway_coalesced_across_processes_total",
            "Upstream requests saved by waiting for another worker's or replica's identical one.",
            registry=r,
        )
        self.cache_damaged_entries = Counter(
            "gateway_cache_damaged_entries_total",
            "Cache entries whose checksum did not match: dropped and fetched again, never served.",
            ["tier"],
            registry=r,
        )
        # stale-if-error: the causes are GatewayError.failure's
        self.cache_stale = Counter(
            "gateway_cache_stale_total",
            "Answers served from an expired cache entry because the upstream failed, by endpoint "
            "and cause (throttled, server-error, timeout, unreachable).",
            ["endpoint", "cause"],
            registry=r,
        )
        self.workspace_ready = Gauge(
            "gateway_workspace_ready",
            "1 when the workspace answered the last readiness probe, else 0 (the reason is logged).",
            ["workspace"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.preflight_refused = Counter(
            "gateway_preflight_refused_total",
            "Queries refused before sending because AMP's query quotas would refuse them, by reason"
            " (instant_range, query_range, samples).",
            ["reason"],
            registry=r,
        )
        for reason in ("instant_range", "query_range", "samples"):  # preflight.REASONS
            self.preflight_refused.labels(reason)
        self.enforcement_violations = Counter(
            "gateway_enforcement_violations_total",
            "Requests refused at the last stage because a selector lacked the principal's matchers.",
            ["endpoint"],
            registry=r,
        )
        self.auth_failures = Counter(
            "gateway_auth_failures_total",
            "Requests refused by inbound authentication, by reason (never the credential).",
            ["reason"],
            registry=r,
        )
        self.limited = Counter(
            "gateway_limited_total",
            "Requests refused by a limit, by principal and reason (rate, concurrency, size).",
            ["principal", "reason"],
            registry=r,
        )
        self.amp_rate_paced = Counter(
            "gateway_amp_rate_total",
            "Attempts paced to AMP's rate per workspace and API family, by outcome: waited for "
            "their turn, refused (429) rather than wait longer, or amp_429 (AMP throttled one: "
            "the family's bucket was held empty).",
            ["workspace", "family", "outcome"],
            registry=r,
        )
        self.amp_rate_wait_seconds = Histogram(
            "gateway_amp_rate_wait_seconds",
            "Time an attempt waited for its turn in its workspace's and API family's bucket.",
            ["workspace", "family"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def expect(
        self,
        workspaces: Iterable[str],
        principals: Iterable[str],
        redis: bool,
        enforced: Iterable[str] = (),
        cached: Iterable[str] = (),
    ) -> None:
        """Every error and limit counter whose labels are known ahead, made at 0: an alert on
        `rate(...)` or `increase(...)` has a series before the first error. `enforced`: the
        endpoints whose selectors enforcement rewrites; `cached`: those the results cache keeps
        (and may answer stale)."""
        for stage, kind in EXPECTED_STAGE_ERRORS:
            self.stage_errors.labels(stage, kind)
        for reason in AUTH_FAILURE_REASONS:
            self.auth_failures.labels(reason)
        for principal in principals:
            for reason in LIMIT_REASONS:
                self.limited.labels(principal, reason)
        for workspace in workspaces:
            self.upstream_throttled.labels(workspace)
            self.upstream_too_large.labels(workspace)
            self.signing_errors.labels(workspace)
            self.credential_errors.labels(workspace)
            for reason in RETRY_REASONS:
                self.upstream_retries.labels(workspace, reason)
        for endpoint in enforced:
            self.enforcement_violations.labels(endpoint)
        for endpoint in cached:
            for cause in UPSTREAM_FAILURES:
                self.cache_stale.labels(endpoint, cause)
        if redis:
            for feature in REDIS_FEATURES:
                self.redis_fallbacks.labels(feature)
            self.cache_damaged_entries.labels("redis")
        for workspace in workspaces:
            for family in AMP_RATE_FAMILIES:
                for outcome in AMP_RATE_OUTCOMES:
                    self.amp_rate_paced.labels(workspace, family, outcome)

    def redis_up(self) -> Gauge:
        """Made when Redis is configured (`pipeline.shared`), absent otherwise: 0 means away."""
        if self._redis_up is None:
            self._redis_up = Gauge(
                "gateway_redis_up",
                "1 while Redis answers; 0 while cache, rate limits, slots and coalescing are per host.",
                multiprocess_mode="livemin",
                registry=self.registry,
            )
        return self._redis_up
