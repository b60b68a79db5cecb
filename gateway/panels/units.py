"""Units of a panel's y axis: one prefix per axis (SI or binary), chosen from the largest value.

Unit names follow Grafana's ids (`reqps`, `Bps`, `bytes`, `s`, `percentunit`, ...) so that a
dashboard exports to Grafana unchanged; free text is used as a plain suffix with SI prefixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_SI = {-3: "n", -2: "µ", -1: "m", 0: "", 1: "k", 2: "M", 3: "G", 4: "T", 5: "P", 6: "E"}
_BINARY = {0: "", 1: "Ki", 2: "Mi", 3: "Gi", 4: "Ti", 5: "Pi", 6: "Ei"}


@dataclass(frozen=True)
class Unit:
    symbol: str  # shown after the number
    binary: bool = False  # 1024-based prefixes (KiB) instead of 1000-based (kB)
    attach: bool = True  # the prefix joins the symbol (`kB/s`) rather than the number (`1.5k req/s`)
    small: bool = False  # allow m, µ, n for values below one
    factor: float = 1.0  # values are multiplied by this first (percentunit: 100)
    prefixes: bool = True


UNITS: dict[str, Unit] = {
    "": Unit("", attach=False),
    "none": Unit("", attach=False),
    "short": Unit("", attach=False),
    "reqps": Unit("req/s", attach=False),
    "rps": Unit("req/s", attach=False),
    "ops": Unit("ops/s", attach=False),
    "cps": Unit("c/s", attach=False),
    "Bps": Unit("B/s", binary=True),
    "binBps": Unit("B/s", binary=True),
    "decBps": Unit("B/s"),
    "bps": Unit("b/s"),
    "bytes": Unit("B", binary=True),
    "decbytes": Unit("B"),
    "bits": Unit("b"),
    "s": Unit("s", small=True),
    "ms": Unit("s", small=True, factor=0.001),
    "percent": Unit("%", prefixes=False),
    "percentunit": Unit("%", prefixes=False, factor=100.0),
}
# Spellings people write by hand, mapped to the Grafana id.
ALIASES = {"req/s": "reqps", "B/s": "Bps", "B": "bytes", "%": "percent", "seconds": "s"}
MAX_UNIT_LENGTH = 24


def unit_id(name: str) -> str:
    """The Grafana unit id for what a user wrote (free text stays as it is)."""
    return ALIASES.get(name, name)


def resolve(name: str) -> Unit:
    name = unit_id(name)
    return UNITS.get(name) or Unit(name, attach=False)


@dataclass(frozen=True)
class Scale:
    divisor: float  # raw value / divisor = the number drawn
    suffix: str  # after the number, spaces included: `1.5 MiB/s`, `1.5k req/s`


def choose_scale(unit: Unit, largest: float) -> Scale:
    """The prefix that keeps the largest absolute value between 1 and 1000 (or 1024)."""
    base = 1024.0 if unit.binary else 1000.0
    power = 0
    largest = abs(largest * unit.factor)
    if unit.prefixes and math.isfinite(largest) and largest > 0:
        power = math.floor(math.log(largest, base) + 1e-9)
        table = _BINARY if unit.binary else _SI
        lowest = -3 if unit.small and not unit.binary else 0
        power = max(lowest, min(power, max(table)))
    prefix = (_BINARY if unit.binary else _SI)[power]
    divisor = base**power / unit.factor
    if unit.symbol == "%":
        suffix = "%"
    elif unit.attach:
        suffix = f" {prefix}{unit.symbol}" if unit.symbol or prefix else ""
    else:
        suffix = prefix + (f" {unit.symbol}" if unit.symbol else "")
    return Scale(divisor, suffix)
