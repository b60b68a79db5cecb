"""Endpoints the gateway answers itself: buildinfo (AMP has none), format_query, parse_query."""

from __future__ import annotations

import math
from typing import Any

from gateway import __version__
from gateway.api.params import Params
from gateway.api.promql import parse_expr
from gateway.promql import Expr
from gateway.promql.ast import (
    AggregateExpr,
    BinaryExpr,
    Call,
    MatrixSelector,
    NumberLiteral,
    ParenExpr,
    StringLiteral,
    SubqueryExpr,
    UnaryExpr,
    VectorSelector,
)
from gateway.promql.prettier import prettify

# The Prometheus API level the gateway speaks. Grafana reads `version` to pick features
# (label matchers on label values need >= 2.24); no `features` key, so Grafana treats the
# backend as Prometheus, not Mimir.
PROMETHEUS_API_VERSION = "2.53.0"


def buildinfo() -> dict[str, Any]:
    return {
        "version": PROMETHEUS_API_VERSION,
        "revision": f"amp-gateway-{__version__}",
        "branch": "amp-gateway",
        "buildUser": "amp-gateway",
        "buildDate": "",
        "goVersion": "",
    }


def format_query(params: Params) -> str:
    return prettify(parse_expr(params.get("query")))


def parse_query(params: Params) -> Any:
    return translate(parse_expr(params.get("query")))


def _at(timestamp: int | None, start_or_end: str | None) -> dict[str, Any]:
    return {"timestamp": timestamp, "startOrEnd": start_or_end}


def _matchers(selector: VectorSelector) -> list[dict[str, str]]:
    return [{"name": m.name, "value": m.value, "type": m.op} for m in selector.matchers]


def translate(node: Expr) -> Any:
    """The tree in the JSON shape of Prometheus's /api/v1/parse_query (translate_ast.go)."""
    if isinstance(node, AggregateExpr):
        return {
            "type": "aggregation",
            "op": node.op,
            "expr": translate(node.expr),
            "param": translate(node.param) if node.param is not None else None,
            "grouping": list(node.grouping),
            "without": node.without,
        }
    if isinstance(node, BinaryExpr):
        vm = node.matching
        matching = None
        if vm is not None:
            matching = {
                "card": vm.card,
                "labels": list(vm.matching_labels),
                "on": vm.on,
                "include": list(vm.include),
            }
        return {
            "type": "binaryExpr",
            "op": node.op,
            "lhs": translate(node.lhs),
            "rhs": translate(node.rhs),
            "matching": matching,
            "bool": node.return_bool,
        }
    if isinstance(node, Call):
        func = node.func
        return {
            "type": "call",
            "func": {
                "name": func.name,
                "argTypes": list(func.arg_types),
                "variadic": func.variadic,
                "returnType": func.return_type,
            },
            "args": [translate(arg) for arg in node.args],
        }
    if isinstance(node, MatrixSelector):
        vs = node.selector
        return {
            "type": "matrixSelector",
            "name": vs.name,
            "range": node.range_ms,
            "offset": vs.offset_ms,
            "matchers": _matchers(vs),
            **_at(vs.at_ms, vs.start_or_end),
        }
    if isinstance(node, SubqueryExpr):
        return {
            "type": "subquery",
            "expr": translate(node.expr),
            "range": node.range_ms,
            "offset": node.offset_ms,
            "step": node.step_ms,
            **_at(node.at_ms, node.start_or_end),
        }
    if isinstance(node, NumberLiteral):
        return {"type": "numberLiteral", "val": _go_float(node.val)}
    if isinstance(node, ParenExpr):
        return {"type": "parenExpr", "expr": translate(node.expr)}
    if isinstance(node, StringLiteral):
        return {"type": "stringLiteral", "val": node.val}
    if isinstance(node, UnaryExpr):
        return {"type": "unaryExpr", "op": node.op, "expr": translate(node.expr)}
    return {
        "type": "vectorSelector",
        "name": node.name,
        "offset": node.offset_ms,
        "matchers": _matchers(node),
        **_at(node.at_ms, node.start_or_end),
    }


def _go_float(value: float) -> str:
    """strconv.FormatFloat(v, 'f', -1, 64)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
    return text[:-2] if text.endswith(".0") else text
