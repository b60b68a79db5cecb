"""The `quotas:` section: AMP's documented per-workspace query quotas, which the gateway checks
before a query goes upstream (a query AMP would refuse costs a round trip and a slot of the
workspace's rate), and `quotas.rates`, AMP's requests per second per API family."""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.config.amp_rates import RATE_KEYS, RateQuotas, read_rates
from gateway.config.readers import Reader


@dataclass(frozen=True)
class QuotaSettings:
    rates: RateQuotas = field(default_factory=RateQuotas)


KEYS = frozenset({"rates"})


def read_quotas(raw: Reader) -> QuotaSettings:
    raw.reject_unknown(KEYS)
    return QuotaSettings(rates=read_rates(raw.mapping("rates")))


__all__ = ["KEYS", "RATE_KEYS", "QuotaSettings", "read_quotas"]
