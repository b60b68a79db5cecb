"""Limits: global defaults in `limits:`, per-principal overrides in `auth.principals[].limits`.

The stage refuses what is too large before it costs anything upstream (range, points, query
length), rations requests (a token bucket per principal, 429 with Retry-After) and upstream
concurrency (per principal and workspace, queued with a deadline), caps series and label
results, and passes AMP's query-samples-processed thresholds so AMP refuses costly queries
before they are billed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import orjson

from gateway.api.errors import ApiError
from gateway.api.params import MAX_POINTS
from gateway.config import ConfigError, _bytes, _int, _seconds
from gateway.metrics import Metrics
from gateway.pipeline.model import Handler, Principal, UpstreamRequest, UpstreamResponse
from gateway.promql import Expr, walk
from gateway.promql.ast import MatrixSelector, SubqueryExpr

_LIST_PARAMS = frozenset({"match[]", "rule_name[]", "rule_group[]", "file[]"})
_THRESHOLDS = (
    ("samples_processed_warning_threshold", "max_samples_processed_warning_threshold"),
    ("samples_processed_error_threshold", "max_samples_processed_error_threshold"),
)
_RESULT_CAPS = {"series": "max_series", "labels": "max_labels", "label_values": "max_labels"}


@dataclass(frozen=True)
class Rate:
    per_second: float
    burst: float


@dataclass(frozen=True)
class Limits:
    max_range: float | None = None  # seconds: query_range window, and any [range] inside a query
    max_points: int = MAX_POINTS  # points per series of a range query
    max_query_length: int = 16384  # characters of `query` and of each `match[]`
    max_series: int | None = None  # series returned by /series
    max_labels: int | None = None  # names or values returned by /labels and /label/<n>/values
    max_body_bytes: int = 1024 * 1024
    rate: Rate | None = None  # requests per principal (token bucket)
    max_concurrency: int | None = None  # requests in flight per principal and workspace
    queue_timeout: float = 30.0  # how long a request may wait for one of those slots
    samples_processed_warning_threshold: int | None = None  # AMP query-cost thresholds
    samples_processed_error_threshold: int | None = None

    @property
    def has_thresholds(self) -> bool:
        return (
            self.samples_processed_warning_threshold is not None
            or self.samples_processed_error_threshold is not None
        )


_KEYS = set(Limits.__dataclass_fields__)


def parse_limits(raw: Any, key: str, base: Limits | None = None) -> Limits:
    """`raw` overrides `base` (the defaults); ConfigError names `key`.<setting>."""
    base = base or Limits()
    if raw is None:
        return base
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: must be a mapping")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise ConfigError(f"{key}.{unknown[0]}: unknown limit (known: {', '.join(sorted(_KEYS))})")
    prefix = f"{key}."
    changes: dict[str, Any] = {}
    for name in raw:
        value = raw[name]
        if value is None:
            continue
        if name in ("max_range", "queue_timeout"):
            changes[name] = _seconds(raw, name, 0.0, prefix)
        elif name == "max_body_bytes":
            changes[name] = _bytes(raw, name, 1, prefix)
        elif name == "rate":
            changes[name] = _rate(value, f"{prefix}rate")
        else:
            changes[name] = _int(raw, name, 0, prefix, minimum=1)
    return replace(base, **changes)


def _rate(raw: Any, key: str) -> Rate:
    if not isinstance(raw, Mapping) or set(raw) - {"per_second", "burst"} or "per_second" not in raw:
        raise ConfigError(f"{key}: must be a mapping like {{per_second: 20, burst: 40}}")
    per_second = raw["per_second"]
    if isinstance(per_second, bool) or not isinstance(per_second, (int, float)) or per_second <= 0:
        raise ConfigError(f"{key}.per_second: must be a number > 0, got {per_second!r}")
    burst = raw.get("burst", max(1, per_second))
    if isinstance(burst, bool) or not isinstance(burst, (int, float)) or burst < 1:
        raise ConfigError(f"{key}.burst: must be a number >= 1, got {burst!r}")
    return Rate(float(per_second), float(burst))


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


def _ranges(node: Expr) -> list[float]:
    """Seconds of every [range] in a query: range selectors and subqueries."""
    return [n.range_ms / 1000 for n in walk(node) if isinstance(n, (MatrixSelector, SubqueryExpr))]


def _duration_text(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds:g}s"


def _first_only(params: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One value per single-valued parameter (the first, as Prometheus reads it)."""
    if len({key for key, _ in params}) == len(params):
        return params  # no name repeats: nothing to drop
    seen: set[str] = set()
    out = []
    for key, value in params:
        if key in _LIST_PARAMS:
            out.append((key, value))
        elif key not in seen:
            seen.add(key)
            out.append((key, value))
    return out


def _with_param(params: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(k, v) for k, v in params if k != name] + [(name, value)]


def check_request(request: UpstreamRequest, limits: Limits) -> UpstreamRequest:
    """Refuses requests over the limits; returns the request with capped parameters."""
    params = _first_only(request.params)
    who = request.principal.name
    for key, value in params:
        if key in ("query", "match[]") and len(value) > limits.max_query_length:
            raise ApiError(
                "bad_data",
                f'"{key}" is {len(value)} characters long; the limit for "{who}" is '
                f"{limits.max_query_length}. Shorten the query",
            )
    window = request.window
    if window is not None:
        span = (window.end_ms - window.start_ms) / 1000
        if limits.max_range is not None and span > limits.max_range:
            raise ApiError(
                "bad_data",
                f"the query range ({_duration_text(span)}) exceeds the limit of "
                f'{_duration_text(limits.max_range)} for "{who}"; narrow start and end',
            )
        if (window.end_ms - window.start_ms) * 1_000_000 // window.step_ns > limits.max_points:
            raise ApiError(
                "bad_data",
                f"exceeded maximum resolution of {limits.max_points:,} points per timeseries. "
                "Try decreasing the query resolution (?step=XX)",
            )
    if request.expr is not None and limits.max_range is not None:
        longest = max(_ranges(request.expr), default=0.0)
        if longest > limits.max_range:
            raise ApiError(
                "bad_data",
                f"a range in the query ({_duration_text(longest)}) exceeds the limit of "
                f'{_duration_text(limits.max_range)} for "{who}"; use a shorter [range]',
            )
    if request.endpoint in ("query", "query_range") and limits.has_thresholds:
        for setting, param in _THRESHOLDS:
            cap = getattr(limits, setting)
            if cap is None:
                continue
            given = request.param(param)
            # A client may lower the configured threshold, never raise it.
            value = min(int(given), cap) if given.isdigit() else cap
            params = _with_param(params, param, str(value))
    cap_name = _RESULT_CAPS.get(request.endpoint)
    cap = getattr(limits, cap_name) if cap_name else None
    if cap is not None:
        given = request.param("limit")
        value = min(int(given), cap) if given.isdigit() and int(given) > 0 else cap
        params = _with_param(params, "limit", str(value))
    if params is request.params:
        return request  # nothing dropped or capped
    return request.replace(params=params)


def truncate(answer: UpstreamResponse, cap: int, what: str) -> UpstreamResponse:
    """At most `cap` results, with a warning, whether or not the upstream honoured `limit`."""
    if not answer.ok:
        return answer
    try:
        document = orjson.loads(answer.json_bytes())
    except orjson.JSONDecodeError:
        return answer
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, list) or len(data) <= cap:
        return answer
    document["data"] = data[:cap]
    warnings = document.get("warnings") if isinstance(document.get("warnings"), list) else []
    document["warnings"] = [*warnings, f"results truncated to {cap} {what} by the gateway's limit"]
    return UpstreamResponse(status=answer.status, body=orjson.dumps(document), headers=answer.headers)


class LimitsStage:
    """Stage: refuse, ration and cap, per principal."""

    def __init__(self, defaults: Limits, metrics: Metrics) -> None:
        self.defaults = defaults
        self.metrics = metrics
        self._buckets: dict[str, TokenBucket] = {}
        self._slots: dict[tuple[str, str], asyncio.Semaphore] = {}

    def limits_for(self, principal: Principal) -> Limits:
        return principal.limits if isinstance(principal.limits, Limits) else self.defaults

    def _refuse(self, who: str, reason: str, message: str, retry_after: float) -> ApiError:
        self.metrics.limited.labels(who, reason).inc()
        seconds = str(max(1, math.ceil(retry_after)))
        return ApiError("too_many_requests", message, headers={"Retry-After": seconds})

    def __call__(self, next_handler: Handler) -> Handler:
        async def handle(request: UpstreamRequest) -> UpstreamResponse:
            limits = self.limits_for(request.principal)
            who = request.principal.name
            if limits.rate is not None:
                bucket = self._buckets.get(who)
                if bucket is None or bucket.rate != limits.rate:
                    bucket = self._buckets[who] = TokenBucket(limits.rate)
                wait = bucket.take()
                if wait > 0:
                    raise self._refuse(
                        who,
                        "rate",
                        f'"{who}" may send {limits.rate.per_second:g} requests per second '
                        f"(bursts of {limits.rate.burst:g}); retry later",
                        wait,
                    )
            try:
                checked = check_request(request, limits)
            except ApiError:
                self.metrics.limited.labels(who, "size").inc()
                raise
            if limits.max_concurrency is None:
                answer = await next_handler(checked)
            else:
                answer = await self._in_slot(checked, limits, next_handler)
            limit = checked.param("limit") if request.endpoint in _RESULT_CAPS else ""
            if limit.isdigit() and int(limit) > 0:
                # The effective limit (the client's, within the cap), whether or not the upstream
                # honours `limit` itself.
                what = "series" if request.endpoint == "series" else "names"
                answer = truncate(answer, int(limit), what)
            return answer

        return handle

    async def _in_slot(
        self, request: UpstreamRequest, limits: Limits, next_handler: Handler
    ) -> UpstreamResponse:
        who = request.principal.name
        key = (who, request.workspace.id)
        slots = self._slots.get(key)
        if slots is None:
            slots = self._slots[key] = asyncio.Semaphore(limits.max_concurrency or 1)
        try:
            async with asyncio.timeout(limits.queue_timeout):
                await slots.acquire()
        except TimeoutError:
            raise self._refuse(
                who,
                "concurrency",
                f'"{who}" already has {limits.max_concurrency} requests in flight to '
                f"{request.workspace.id} and none finished within {limits.queue_timeout:g}s; retry later",
                1,
            ) from None
        try:
            return await next_handler(request)
        finally:
            slots.release()
