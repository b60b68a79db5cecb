"""A panel's time range and step, derived the way Grafana derives them.

Grafana: `interval = roundInterval(range / maxDataPoints)`, never below the minimum interval
(the scrape interval); its Prometheus data source then raises it to `range / 11000` so that
Prometheus's points limit holds, and aligns start and end down to a multiple of the step, which
also lets the cache reuse the earlier steps of a sliding window. `$__rate_interval` is
`max(interval + scrape interval, 4 * scrape interval)`: at least four samples in every window.
"""

from __future__ import annotations

import math

from gateway.config import MAX_POINTS

DEFAULT_RANGE_MS = 3600 * 1000
DEFAULT_WIDTH = 1000  # maxDataPoints when the page width is unknown (Grafana: the panel width)
DEFAULT_MIN_INTERVAL_MS = 15 * 1000  # Grafana's default scrape interval for Prometheus

# Grafana's roundInterval (packages/grafana-data/src/datetime/rangeutil.ts): below the bound,
# the interval becomes the value.
_ROUNDING: tuple[tuple[int, int], ...] = (
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)
_YEAR_MS = 31536000000


def round_interval(interval_ms: float) -> int:
    for bound, value in _ROUNDING:
        if interval_ms < bound:
            return value
    return _YEAR_MS


def auto_interval_ms(range_ms: int, max_points: int, min_interval_ms: int) -> int:
    """Grafana's $__interval for a range drawn on `max_points` points."""
    return max(round_interval(range_ms / max(max_points, 1)), min_interval_ms)


def step_ms(range_ms: int, interval_ms: int) -> int:
    """The query step: the interval, raised so Prometheus's 11,000-points limit holds."""
    safe_ms = math.ceil(range_ms / MAX_POINTS / 1000) * 1000
    return max(interval_ms, safe_ms, 1)


def rate_interval_ms(interval_ms: int, scrape_ms: int) -> int:
    return max(interval_ms + scrape_ms, 4 * scrape_ms)


def align(start_ms: int, end_ms: int, step: int) -> tuple[int, int]:
    return start_ms // step * step, end_ms // step * step


def format_duration(ms: int) -> str:
    """A Prometheus duration for PromQL text: `5m`, `1h30m`, `90s`, `250ms`."""
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400000), ("h", 3600000), ("m", 60000), ("s", 1000), ("ms", 1)):
        amount, ms = divmod(ms, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts)
