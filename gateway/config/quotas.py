"""The `quotas:` section: AMP's documented per-workspace query quotas, which the gateway checks
before a query goes upstream (a query AMP would refuse costs a round trip and a slot of the
workspace's rate), and `quotas.rates`, AMP's requests per second per API family.

Defaults are AMP's (README, "AMP's quotas, checked before sending", cites each); 0 or null turns
a check off, for a workspace whose quota AWS raised or a backend that is not AMP.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config.amp_rates import RATE_KEYS, RateQuotas, read_rates
from gateway.config.readers import Reader

DAY_MS = 86_400_000


@dataclass(frozen=True)
class QuotaSettings:
    rates: RateQuotas = field(default_factory=RateQuotas)
    # "Query time range in days": the span of time a range query reads (end - start, plus how far
    # its selectors reach back before start). AMP answers range queries up to 95 days.
    max_query_range_ms: int | None = 95 * DAY_MS
    # The same quota for instant queries: AMP answers those up to 32 days back and refuses longer
    # ones with "only supported for range type queries".
    max_instant_range_ms: int | None = 32 * DAY_MS
    # "Query samples" (12,000,000 in an old listing), off by default: AMP's quota bounds, as
    # Cortex's and Prometheus's max-samples do, the samples held in memory at once, while the
    # estimate here is of samples processed (QSP); compared with it, an ordinary 24 h panel over
    # 1,000 series (23 million processed) would be refused. Set it as a bound on QSP per query.
    max_samples: int | None = None


KEYS = frozenset({"rates", "max_query_range", "max_instant_range", "max_samples"})


def _duration_ms(raw: Reader, key: str, default: int | None) -> int | None:
    if not raw.has(key):
        return default
    if raw.raw[key] is None:
        return None
    return int(raw.seconds(key, 0.0) * 1000) or None


def _count(raw: Reader, key: str, default: int | None) -> int | None:
    if not raw.has(key):
        return default
    if raw.raw[key] is None:
        return None
    return raw.whole(key, 0) or None


def read_quotas(raw: Reader) -> QuotaSettings:
    raw.reject_unknown(KEYS)
    defaults = QuotaSettings()
    return QuotaSettings(
        rates=read_rates(raw.mapping("rates")),
        max_query_range_ms=_duration_ms(raw, "max_query_range", defaults.max_query_range_ms),
        max_instant_range_ms=_duration_ms(raw, "max_instant_range", defaults.max_instant_range_ms),
        max_samples=_count(raw, "max_samples", defaults.max_samples),
    )


__all__ = ["KEYS", "RATE_KEYS", "QuotaSettings", "read_quotas"]
