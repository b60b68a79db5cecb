"""PromQL validation with promql-parser, in Prometheus's error words."""

from __future__ import annotations

from typing import Any

import promql_parser

from gateway.api.errors import ApiError, bad_param


def parse_expr(text: str, param: str = "query") -> Any:
    try:
        return promql_parser.parse(text)
    except ValueError as err:
        raise bad_param(param, f"parse error: {err}") from None


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
