"""`limits:` (global defaults) and `auth.principals[].limits` (per-principal overrides)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from gateway.config.readers import ConfigError, Reader

# Prometheus's bound on a range query's points per series (web/api/v1/api.go).
MAX_POINTS = 11_000


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


_KEYS = frozenset(Limits.__dataclass_fields__)
_RATE_KEYS = {"per_second", "burst"}


def parse_limits(raw: Any, key: str, base: Limits | None = None) -> Limits:
    """`raw` overrides `base` (the defaults); ConfigError names `key`.<setting>."""
    base = base or Limits()
    if raw is None:
        return base
    if not isinstance(raw, dict):
        raise ConfigError(f"{key}: must be a mapping")
    reader = Reader(raw, f"{key}.")
    reader.reject_unknown(_KEYS, "limit")
    changes: dict[str, Any] = {}
    for name, value in raw.items():
        if value is None:
            continue
        if name in ("max_range", "queue_timeout"):
            changes[name] = reader.seconds(name, 0.0)
        elif name == "max_body_bytes":
            changes[name] = reader.size(name, 1)
        elif name == "rate":
            changes[name] = _rate(reader.mapping("rate"))
        else:
            changes[name] = reader.whole(name, 0, minimum=1)
    return replace(base, **changes)


def _rate(reader: Reader) -> Rate:
    if not reader.has("per_second"):
        raise reader.error(None, "must be a mapping like {per_second: 20, burst: 40}")
    reader.reject_unknown(_RATE_KEYS)
    per_second = reader.number("per_second", 0.0, 0.0, above=True)
    burst = reader.number("burst", max(1.0, per_second), 1.0)
    return Rate(per_second, burst)
