"""The cost ledger's time: hourly and daily buckets (UTC), the buckets a `range` reads, and the
budgets' periods (a UTC day, a calendar month in UTC). Pure functions of a Unix time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

HOUR = 3600
DAY = 86_400
# Ranges up to this are read by the hour, longer ones by the UTC day.
HOURLY_RANGE = 48 * HOUR
MAX_RANGE = 31 * DAY
# How long a bucket is kept after it begins: past the longest range it serves, with room.
KEEP = {HOUR: HOURLY_RANGE + 2 * HOUR, DAY: MAX_RANGE + 5 * DAY}
STEP_NAMES = {HOUR: "h", DAY: "d"}


def bucket_start(t: float, step: int) -> int:
    """The start of the UTC hour (step HOUR) or day (DAY) that holds `t`."""
    return int(t // step) * step


def period_start(per: str, now: float) -> int:
    """When the UTC day or calendar month (UTC) that holds `now` began."""
    if per == "day":
        return bucket_start(now, DAY)
    moment = datetime.fromtimestamp(now, UTC)
    return int(datetime(moment.year, moment.month, 1, tzinfo=UTC).timestamp())


def period_end(per: str, now: float) -> float:
    """When the budget period that holds `now` ends (and its count starts again from 0)."""
    if per == "day":
        return float(bucket_start(now, DAY) + DAY)
    moment = datetime.fromtimestamp(now, UTC)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime(year, month, 1, tzinfo=UTC).timestamp()


@dataclass(frozen=True, slots=True)
class Span:
    """The buckets a range reads: `step` seconds each, beginning at `starts` (oldest first).
    The range is rounded out to whole buckets: the first one holds `now - range`, the last `now`."""

    step: int
    starts: tuple[int, ...]

    @property
    def start(self) -> int:
        return self.starts[0]

    @property
    def end(self) -> int:
        return self.starts[-1] + self.step


def span(range_seconds: float, now: float) -> Span:
    """Hourly buckets for ranges up to HOURLY_RANGE, daily ones beyond."""
    step = HOUR if range_seconds <= HOURLY_RANGE else DAY
    first, last = bucket_start(now - range_seconds, step), bucket_start(now, step)
    return Span(step, tuple(range(first, last + step, step)))
