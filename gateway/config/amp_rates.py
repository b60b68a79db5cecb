"""`quotas.rates`: AMP's requests per second per workspace, for each API family.

AMP throttles each workspace per family of operations, each family one Service Quotas code
(`aws service-quotas get-service-quota --service-code aps --quota-code <code>` shows an
account's value). The gateway paces what it sends to each family within the rate set here:

```yaml
quotas:
  rates:
    query_metrics: {per_second: 20, burst: 20}  # or a number: per_second, with burst the same
    series_labels_metadata: 10
    other_apis: null                            # null or 0: not paced
    max_wait: 5s
    max_waiters: 64
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.config.limits import Rate
from gateway.config.readers import Reader


@dataclass(frozen=True)
class Family:
    """Operations AMP counts against one quota of a workspace's requests per second."""

    key: str  # its setting under quotas.rates
    title: str  # how messages name the operations
    quota_code: str  # AMP's Service Quotas code
    operations: tuple[str, ...]  # () for every operation the other families do not name


QUERY_METRICS = Family("query_metrics", "QueryMetrics", "L-D5FD0534", ("QueryMetrics",))
SERIES_LABELS_METADATA = Family(
    "series_labels_metadata",
    "GetSeries, GetLabels and GetMetricMetadata",
    "L-F6DD1217",
    ("GetSeries", "GetLabels", "GetMetricMetadata"),
)
OTHER_APIS = Family("other_apis", "other Prometheus-compatible API", "L-AA9AE19E", ())
FAMILIES = (QUERY_METRICS, SERIES_LABELS_METADATA, OTHER_APIS)


# The default of every family: AMP's default rates could not be read (README, "AMP's rates per
# API family"), and this is above any a workspace is likely to have, so it paces nothing in
# ordinary use; but AMP's own 429 holds the family's bucket, for every worker and replica, for
# burst / per_second = 1 s (or AMP's Retry-After), and those that wait then go 1 ms apart rather
# than all at once: no retry storm, without a rate set.
FEEDBACK_ONLY = Rate(per_second=1000.0, burst=1000.0)


@dataclass(frozen=True)
class RateQuotas:
    """A rate per family (None: that family is not paced), how long a request may wait for its
    turn (its own remaining time bounds it too), and how many may wait per workspace and family
    in one worker (past it a request that would wait is refused at once)."""

    query_metrics: Rate | None = FEEDBACK_ONLY
    series_labels_metadata: Rate | None = FEEDBACK_ONLY
    other_apis: Rate | None = FEEDBACK_ONLY
    max_wait: float = 5.0
    max_waiters: int = 64

    def paced(self, operation: str) -> tuple[Family, Rate] | None:
        """The family of AMP's `operation` and its rate; None when it is not paced ("": an
        endpoint the gateway answers itself)."""
        if not operation:
            return None
        family = next((f for f in FAMILIES if operation in f.operations), OTHER_APIS)
        rate: Rate | None = getattr(self, family.key)
        return None if rate is None else (family, rate)


RATE_KEYS: frozenset[str] = frozenset({*(f.key for f in FAMILIES), "max_wait", "max_waiters"})
_FAMILY_KEYS = frozenset({"per_second", "burst"})


def read_rates(raw: Reader) -> RateQuotas:
    raw.reject_unknown(RATE_KEYS)
    d = RateQuotas()
    rates = {f.key: _family_rate(raw, f.key, getattr(d, f.key)) for f in FAMILIES}
    return RateQuotas(
        **rates,
        max_wait=raw.seconds("max_wait", d.max_wait),
        max_waiters=raw.whole("max_waiters", d.max_waiters, maximum=100_000),
    )


def _family_rate(raw: Reader, key: str, default: Rate | None) -> Rate | None:
    """`{per_second, burst}`, or a number (per_second, burst the same); null or 0: off."""
    if not raw.has(key):
        return default
    value: Any = raw.raw[key]
    if value is None or (_is_number(value) and value == 0):
        return None
    if _is_number(value):
        per_second = raw.number(key, 0.0, 0.0, above=True)
        return Rate(per_second, max(1.0, per_second))
    if not isinstance(value, dict):
        raise raw.error(key, "must be requests per second, or a mapping like {per_second: 20, burst: 20}")
    reader = raw.mapping(key)
    reader.reject_unknown(_FAMILY_KEYS)
    if not reader.has("per_second"):
        raise reader.error("per_second", "required: AMP's requests per second for this family")
    per_second = reader.number("per_second", 0.0, 0.0)
    if per_second == 0:
        return None
    return Rate(per_second, reader.number("burst", max(1.0, per_second), 1.0))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
