"""`quotas.rates`: AMP's requests per second per workspace, for each API family."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.readers import Reader


@dataclass(frozen=True)
class RateQuotas:
    pass


RATE_KEYS: frozenset[str] = frozenset()


def read_rates(raw: Reader) -> RateQuotas:
    raw.reject_unknown(RATE_KEYS)
    return RateQuotas()
