"""PromQL parameters of the API, parsed by the PromQL core, refused in Prometheus's words."""

from __future__ import annotations

from gateway.api.errors import ApiError, bad_param
from gateway.promql import Expr, PromQLError, VectorSelector, parse_match, parse_query
from gateway.promql.parser import matches_empty


def parse_expr(text: str, param: str = "query") -> Expr:
    """`invalid parameter "query": 1:5: parse error: …`, as Prometheus's query endpoints say."""
    try:
        return parse_query(text)
    except PromQLError as err:
        raise bad_param(param, str(err)) from None


def parse_matchers(values: list[str], prefixed: bool = False) -> list[VectorSelector]:
    """Each match[] is a series selector (Prometheus's parseMatchersParam, same errors; /series
    says `invalid parameter "match[]":` before them, the label endpoints do not)."""

    def refuse(message: str) -> ApiError:
        return bad_param("match[]", message) if prefixed else ApiError("bad_data", message)

    selectors = []
    for value in values:
        try:
            selector = parse_match(value)
        except PromQLError as err:
            raise refuse(str(err)) from None
        selectors.append(selector)
    for selector in selectors:
        if all(matches_empty(m) for m in selector.matchers):
            raise refuse("match[] must contain at least one non-empty matcher")
    return selectors
