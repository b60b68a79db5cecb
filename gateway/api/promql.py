"""PromQL validation with promql-parser, in Prometheus's error words."""

from __future__ import annotations

import re
from typing import Any

import promql_parser

from gateway.api.errors import ApiError, bad_param

# String literals and comments, which may contain anything, including "@ -".
_NOT_CODE = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`|#[^\n]*')
_NEGATIVE_AT = re.compile(r"@\s*-")


def parse_expr(text: str, param: str = "query") -> Any:
    try:
        expr = promql_parser.parse(text)
    except ValueError as err:
        raise bad_param(param, f"parse error: {err}") from None
    # promql-parser prints `@ -100` as `@ 0.000` (and panics when asked for its time), so
    # a rewritten or cached query would silently mean something else: refuse it instead.
    if "@" in text and _NEGATIVE_AT.search(_NOT_CODE.sub("", text)):
        raise bad_param(
            param, "@ modifiers before 1970 (negative timestamps) are not supported by the gateway"
        )
    return expr


def parse_matchers(values: list[str]) -> list[Any]:
    """Each match[] must be a plain series selector (Prometheus's ParseMetricSelector)."""
    selectors = []
    for value in values:
        try:
            expr = promql_parser.parse(value)
        except ValueError as err:
            raise ApiError("bad_data", f"parse error: {err}") from None
        if not isinstance(expr, promql_parser.VectorSelector) or expr.at is not None or expr.offset:
            raise ApiError(
                "bad_data",
                f"parse error: {value!r} is not a series selector (write it like "
                'up{job="x"}, without functions, offsets or @)',
            )
        selectors.append(expr)
    return selectors
