"""Endpoints the gateway answers itself: buildinfo (AMP has none), format_query, parse_query."""

from __future__ import annotations

import math
from typing import Any

import promql_parser as pp

from gateway import __version__
from gateway.api.params import Params
from gateway.api.promql import parse_expr

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
    return str(parse_expr(params.get("query")).prettify())


def parse_query(params: Params) -> Any:
    return translate(parse_expr(params.get("query")))


def _ms(duration: Any) -> int:
    return 0 if duration is None else round(duration.total_seconds() * 1000)


def _at(at: Any) -> tuple[int | None, str | None]:
    """(timestamp ms, "start"/"end") of an @ modifier, as Prometheus's translateAST gives it."""
    if at is None:
        return None, None
    text = str(at).strip()
    if text.endswith("start()"):
        return None, "start"
    if text.endswith("end()"):
        return None, "end"
    return round(float(text.lstrip("@ ")) * 1000), None


MATCH_OPS = {"Equal": "=", "NotEqual": "!=", "Re": "=~", "NotRe": "!~"}


def _value_type(value_type: Any) -> str:
    return str(value_type).rsplit(".", 1)[-1].lower()


def _matchers(selector: Any) -> list[dict[str, str]]:
    out = []
    if selector.name:
        out.append({"name": "__name__", "value": selector.name, "type": "="})
    for matcher in selector.matchers.matchers:
        out.append(
            {
                "name": matcher.name,
                "value": matcher.value,
                "type": MATCH_OPS[str(matcher.op).rsplit(".", 1)[-1]],
            }
        )
    return out


def _labels(items: Any) -> list[str]:
    return list(items or [])


def translate(node: Any) -> Any:
    """The AST in the JSON shape of Prometheus's /api/v1/parse_query (translate_ast.go)."""
    if isinstance(node, pp.AggregateExpr):
        modifier = node.modifier
        without = modifier is not None and "without" in str(modifier.type).lower()
        grouping = _labels(modifier.labels) if modifier is not None else []
        return {
            "type": "aggregation",
            "op": str(node.op),
            "expr": translate(node.expr),
            "param": translate(node.param) if node.param is not None else None,
            "grouping": grouping,
            "without": without,
        }
    if isinstance(node, pp.BinaryExpr):
        matching = None
        modifier = node.modifier
        if modifier is not None and (modifier.matching is not None or modifier.card is not None):
            labels_mod = modifier.matching
            matching = {
                "card": str(modifier.card)
                .lower()
                .replace("vectormatchcardinality.", "")
                .replace("onetoone", "one-to-one")
                .replace("manytoone", "many-to-one")
                .replace("onetomany", "one-to-many")
                .replace("manytomany", "many-to-many"),
                "labels": _labels(labels_mod.labels) if labels_mod is not None else [],
                "on": labels_mod is not None and "include" in str(labels_mod.type).lower(),
                "include": [],
            }
        return {
            "type": "binaryExpr",
            "op": str(node.op),
            "lhs": translate(node.lhs),
            "rhs": translate(node.rhs),
            "matching": matching,
            "bool": bool(modifier.return_bool) if modifier is not None else False,
        }
    if isinstance(node, pp.Call):
        func = node.func
        return {
            "type": "call",
            "func": {
                "name": func.name,
                "argTypes": [_value_type(t) for t in func.arg_types],
                "variadic": func.variadic,
                "returnType": _value_type(func.return_type),
            },
            "args": [translate(arg) for arg in node.args],
        }
    if isinstance(node, pp.MatrixSelector):
        vs = node.vector_selector
        timestamp, start_or_end = _at(vs.at)
        return {
            "type": "matrixSelector",
            "name": vs.name or "",
            "range": _ms(node.range),
            "offset": _ms(vs.offset),
            "matchers": _matchers(vs),
            "timestamp": timestamp,
            "startOrEnd": start_or_end,
        }
    if isinstance(node, pp.SubqueryExpr):
        timestamp, start_or_end = _at(node.at)
        return {
            "type": "subquery",
            "expr": translate(node.expr),
            "range": _ms(node.range),
            "offset": _ms(node.offset),
            "step": _ms(node.step),
            "timestamp": timestamp,
            "startOrEnd": start_or_end,
        }
    if isinstance(node, pp.NumberLiteral):
        return {"type": "numberLiteral", "val": _go_float(node.val)}
    if isinstance(node, pp.ParenExpr):
        return {"type": "parenExpr", "expr": translate(node.expr)}
    if isinstance(node, pp.StringLiteral):
        return {"type": "stringLiteral", "val": node.val}
    if isinstance(node, pp.UnaryExpr):
        return {"type": "unaryExpr", "op": "-", "expr": translate(node.expr)}
    if isinstance(node, pp.VectorSelector):
        timestamp, start_or_end = _at(node.at)
        return {
            "type": "vectorSelector",
            "name": node.name or "",
            "offset": _ms(node.offset),
            "matchers": _matchers(node),
            "timestamp": timestamp,
            "startOrEnd": start_or_end,
        }
    raise ValueError(f"unsupported PromQL node {type(node).__name__}")


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
