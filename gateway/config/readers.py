"""Typed reads from a parsed YAML mapping, each error naming the key it is about.

Settings (`gateway.config`) and dashboard files (`gateway.panels.dashboards`) read YAML the
same way; they differ only in the error they raise (a dashboard's names its file and line),
which is what `Fail` makes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from gateway.golang import parse_duration_ms


class ConfigError(Exception):
    """A setting that cannot be used; the message names the key."""


# Makes the exception for a message about `key` of `raw` (the key may be None: the mapping).
Fail = Callable[[str, Mapping[str, Any], str | None], Exception]


def config_error(message: str, raw: Mapping[str, Any], key: str | None) -> Exception:
    return ConfigError(message)


_SIZE_RE = re.compile(r"^(\d+)\s*([KMG]i?B?)?$", re.IGNORECASE)
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class Reader:
    """One mapping of settings under `prefix` (such as "upstream.")."""

    def __init__(self, raw: Any, prefix: str = "", fail: Fail = config_error) -> None:
        self.raw: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
        self.prefix = prefix
        self.fail = fail

    def error(self, key: str | None, problem: str) -> Exception:
        where = f"{self.prefix}{key}" if key is not None else self.prefix.rstrip(".")
        return self.fail(f"{where}: {problem}", self.raw, key)

    def has(self, key: str) -> bool:
        return key in self.raw

    def reject_unknown(self, allowed: set[str] | frozenset[str], word: str = "setting") -> None:
        for key in self.raw:
            if key not in allowed:
                raise self.error(key, f"unknown {word} (expected one of {', '.join(sorted(allowed))})")

    def mapping(self, key: str) -> Reader:
        value = self.raw.get(key) or {}
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a mapping")
        return Reader(value, f"{self.prefix}{key}.", self.fail)

    def items(self, key: str) -> list[Any]:
        value = self.raw.get(key) or []
        if not isinstance(value, list):
            raise self.error(key, "must be a list")
        return value

    def text(self, key: str, default: str | None, limit: int | None = None, numbers: bool = False) -> Any:
        """A string (or None when absent and `default` is None); `numbers` takes 5 as "5"."""
        value = self.raw.get(key, default)
        if value is None:
            return default
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise self.error(key, "must be a string")
        if limit is not None and len(value) > limit:
            raise self.error(key, f"longer than {limit} characters")
        return value

    def whole(self, key: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
        value = self.raw.get(key, default)
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if ok and maximum is not None and value > maximum:
            ok = False
        if not ok:
            bound = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
            raise self.error(key, f"must be a whole number {bound}, got {value!r}")
        return int(value)

    def number(self, key: str, default: float, minimum: float, above: bool = False) -> float:
        value = self.raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            ok = False
        else:
            ok = value > minimum if above else value >= minimum
        if not ok:
            raise self.error(key, f"must be a number {'>' if above else '>='} {minimum:g}, got {value!r}")
        return float(value)

    def seconds(self, key: str, default: float) -> float:
        """A number of seconds, or a Prometheus duration such as 30s, 5m or 1h30m."""
        value = self.raw.get(key, default)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            return float(value)
        if isinstance(value, str):
            try:
                return parse_duration_ms(value) / 1000
            except ValueError:
                pass
        raise self.error(key, f"must be a duration such as 30s or 5m, got {value!r}")

    def size(self, key: str, default: int) -> int:
        """Bytes: a number, or a size such as 256MiB or 64K."""
        value = self.raw.get(key, default)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        match = _SIZE_RE.match(str(value).strip())
        if match and not isinstance(value, bool):
            unit = (match.group(2) or "").upper()[:1]
            return int(match.group(1)) * {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}[unit]
        raise self.error(key, f"must be a size such as 256MiB, got {value!r}")

    def flag(self, key: str, default: bool) -> bool:
        value = self.raw.get(key, default)
        return read_bool(value, f"{self.prefix}{key}", lambda message: self.fail(message, self.raw, key))


def read_bool(value: Any, name: str, fail: Callable[[str], Exception] = ConfigError) -> bool:
    """true/false, yes/no, on/off, 1/0 (environment variables arrive as text)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise fail(f"{name}: must be true or false, got {value!r}")
