"""Stage: what the gateway answers itself, after validation and label enforcement.

buildinfo (AMP has none), format_query and parse_query (Prometheus's, from the validated tree),
and query_exemplars: AMP does not serve /api/v1/query_exemplars (it is not in its list of
Prometheus-compatible APIs), so it is answered as a Prometheus without exemplar storage does;
forwarding it would turn Grafana's exemplar probe into errors. Enforcement has run first, so
an exemplar query that contradicts the principal's labels is refused as a query would be.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gateway import __version__
from gateway.envelope import success_body
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.promql import Expr, offloop
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


NO_EXEMPLARS = success_body([])
# What the gateway answers for each endpoint of the table without an AMP operation.
_ANSWERS: dict[str, Callable[[Request], bytes]] = {
    "buildinfo": lambda request: success_body(buildinfo()),
    "query_exemplars": lambda request: NO_EXEMPLARS,  # AMP keeps no exemplars
    "format_query": lambda request: success_body(prettify(request.expr)) if request.expr else NO_EXEMPLARS,
    "parse_query": lambda request: success_body(translate(request.expr)) if request.expr else NO_EXEMPLARS,
}


def _body(request: Request) -> bytes:
    return _ANSWERS[request.endpoint.name](request)


def local_answers() -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            if not request.endpoint.local:
                return await next_handler(request)
            # Printing and translating walk the whole tree: off the loop for long texts.
            body = await offloop.run(len(request.param("query")), _body, request)
            # Exemplars are asked for a workspace's data; the others are the gateway's own.
            scoped = request.endpoint.workspace
            return Answer(body, cache="bypass; reason=answered-locally" if scoped else "")

        return handle

    return stage


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
