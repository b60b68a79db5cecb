"""The `cost:` section: what AMP's query samples cost, who may spend how many, and how many
names each dimension of the cost view keeps.

```yaml
cost:
  price_per_billion_samples: 0.10
  budgets:
    - {principal: team-a, samples: 5000000000, per: day}
    - {dashboard: abc123, samples: 20000000000, per: month}
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from gateway.config.readers import Reader

# AMP's published price for query samples processed (QSP), us-east-1: README "Cost" cites it.
DEFAULT_PRICE_PER_BILLION = 0.10

Period = Literal["day", "month"]


@dataclass(frozen=True)
class Budget:
    """At most `samples` query samples per UTC day or calendar month (UTC) for one principal
    or one Grafana dashboard (by its uid), counted across workers and replicas."""

    kind: Literal["principal", "dashboard"]
    name: str
    samples: int
    per: Period

    @property
    def label(self) -> str:
        """How messages name it: `principal "team-a"'s daily budget`."""
        return f'{self.kind} "{self.name}"\'s {"daily" if self.per == "day" else "monthly"} budget'


@dataclass(frozen=True)
class CostSettings:
    price_per_billion_samples: float = DEFAULT_PRICE_PER_BILLION
    # Names kept per dimension (principal, dashboard, panel, user, ...) and hour; past them, the
    # samples of further names are counted under "other".
    top: int = 20
    # Past this share of a budget, answers carry a warning naming the budget.
    soft_share: float = 0.8
    budgets: tuple[Budget, ...] = ()

    def price(self, samples: int) -> float:
        return samples * self.price_per_billion_samples / 1e9


KEYS = frozenset({"price_per_billion_samples", "top", "soft_share", "budgets"})
_BUDGET_KEYS = frozenset({"principal", "dashboard", "samples", "per"})


def read_cost(raw: Reader) -> CostSettings:
    raw.reject_unknown(KEYS)
    d = CostSettings()
    share = raw.number("soft_share", d.soft_share, 0.0, above=True)
    if share > 1:
        raise raw.error("soft_share", "must be a share of the budget, at most 1")
    budgets = tuple(
        _budget(Reader(item, f"{raw.prefix}budgets[{i}].", raw.fail), item)
        for i, item in enumerate(raw.items("budgets"))
    )
    seen: set[tuple[str, str, str]] = set()
    for i, budget in enumerate(budgets):
        key = (budget.kind, budget.name, budget.per)
        if key in seen:
            raise raw.error(
                f"budgets[{i}]", f"a second {budget.per} budget for {budget.kind} {budget.name!r}"
            )
        seen.add(key)
    return CostSettings(
        price_per_billion_samples=raw.number("price_per_billion_samples", d.price_per_billion_samples, 0.0),
        top=raw.whole("top", d.top, minimum=1, maximum=1000),
        soft_share=share,
        budgets=budgets,
    )


def _budget(reader: Reader, item: Any) -> Budget:
    if not isinstance(item, dict):
        raise reader.error(None, "must be a mapping like {principal: team-a, samples: 5000000000, per: day}")
    reader.reject_unknown(_BUDGET_KEYS)
    kinds = [k for k in ("principal", "dashboard") if reader.has(k)]
    if len(kinds) != 1:
        raise reader.error(None, "names exactly one of principal or dashboard")
    kind: Literal["principal", "dashboard"] = "principal" if kinds[0] == "principal" else "dashboard"
    name = reader.text(kind, None, limit=256, numbers=True)
    if not name:
        raise reader.error(kind, "must not be empty")
    if not reader.has("samples"):
        raise reader.error("samples", "required: the query samples allowed per period")
    per = reader.text("per", "day")
    if per not in ("day", "month"):
        raise reader.error("per", f"must be day or month, got {per!r}")
    return Budget(kind, str(name), reader.whole("samples", 0, minimum=1), "day" if per == "day" else "month")
