"""PromQL parameters of the API, parsed by the PromQL core, refused in Prometheus's words."""

from __future__ import annotations

from gateway.errors import GatewayError, bad_param
from gateway.promql import Expr, PromQLError, VectorSelector, parse_canonical, parse_match
from gateway.promql.parser import matches_empty


def parse_expr(text: str, param: str = "query") -> Expr:
    """`invalid parameter "query": 1:5: parse error: …`, as Prometheus's query endpoints say."""
    return parse_printed(text, param)[0]


def parse_printed(text: str, param: str = "query") -> tuple[Expr, str]:
    """The tree and the canonical text that goes upstream in place of the client's."""
    try:
        return parse_canonical(text)
    except PromQLError as err:
        raise bad_param(param, str(err)) from None


def parse_matchers(values: list[str], prefixed: bool = False) -> list[VectorSelector]:
    """Each match[] is a series selector (Prometheus's parseMatchersParam, same errors; /series
    says `invalid parameter "match[]":` before them, the label endpoints do not)."""

    def refuse(message: str) -> GatewayError:
        return bad_param("match[]", message) if prefixed else GatewayError("bad_data", message)

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
