"""The gateway's own metrics, served at /metrics (prometheus-client).

Under `serve`, the workers write their values to files in PROMETHEUS_MULTIPROC_DIR (set by the
supervisor) and /metrics adds them up, whichever worker serves it: counters and histograms
summed over every worker that ever ran, gauges over the live ones (`multiprocess_mode`)."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def exposition(registry: CollectorRegistry) -> bytes:
    """The text /metrics serves: this registry's, or every worker's when they share a directory."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return generate_latest(registry)
    everyone = CollectorRegistry()
    MultiProcessCollector(everyone, path=directory)  # type: ignore[no-untyped-call]  # untyped upstream
    return generate_latest(everyone)


class Metrics:
    """One registry per app, so several apps (tests, benchmarks) can live in one process."""

    def __init__(self) -> None:
        self._redis_up: Gauge | None = None
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
            "Bytes held by the in-process cache tier.",
            multiprocess_mode="livesum",
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
        self.workspace_ready = Gauge(
            "gateway_workspace_ready",
            "1 when the workspace answered the last readiness probe, else 0 (the reason is logged).",
            ["workspace"],
            multiprocess_mode="livemin",
            registry=r,
        )
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

    def redis_up(self) -> Gauge:
        """Made when Redis is configured (`pipeline.shared`), absent otherwise: 0 means away."""
        if self._redis_up is None:
            self._redis_up = Gauge(
                "gateway_redis_up",
                "1 while Redis answers; 0 while cache, rate limits, slots and coalescing are per process.",
                multiprocess_mode="livemin",
                registry=self.registry,
            )
        return self._redis_up
