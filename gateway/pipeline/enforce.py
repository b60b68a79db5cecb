"""Label enforcement (what prom-label-proxy does): a principal sees only series carrying its labels.

The principal's `enforce` pairs become equality matchers in every selector of `query` (range,
subquery, @ and offset included), in every `match[]` (one is added when absent), and the
`rules`/`alerts` answers are filtered to the principal's labels. A matcher of the query on an
enforced label that contradicts the enforced value is refused (or dropped, with `override`).

The rewrite is done on the tree (`gateway.promql.rewrite`) and printed by the one printer.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.envelope import edit_data, success_body
from gateway.errors import GatewayError
from gateway.pipeline.answers import json_size, work
from gateway.pipeline.model import Answer, Handler, Request, Stage, promql_chars, with_single
from gateway.pipeline.rules_filter import filter_alerts, filter_rules
from gateway.promql import Expr, PromQLError, offloop, parse_match, parse_query, print_expr
from gateway.promql.ast import Matcher, VectorSelector
from gateway.promql.rewrite import EnforcementConflict, enforce, enforce_selector

log = logging.getLogger("gateway.enforce")

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class EnforceSettings:
    override: bool = False  # drop contradicting matchers instead of refusing the query


def _conflict(err: EnforcementConflict) -> GatewayError:
    return GatewayError("bad_data", str(err))


def enforce_query(expr: Expr, pairs: Pairs, override: bool = False) -> tuple[str, Expr]:
    """The PromQL text (and its tree) with the enforced matchers in every selector."""
    try:
        enforced = enforce(expr, pairs, override)
    except EnforcementConflict as err:
        raise _conflict(err) from None
    return print_expr(enforced), enforced


def enforce_match(text: str, pairs: Pairs, override: bool = False) -> str:
    try:
        selector = parse_match(text)
        return print_expr(enforce_selector(selector, pairs, override))
    except EnforcementConflict as err:
        raise _conflict(err) from None
    except PromQLError as err:
        raise GatewayError("bad_data", str(err)) from None


def enforce_params(request: Request, override: bool) -> Request:
    """The request with every selector-bearing parameter rewritten; nothing else changes."""
    pairs = request.principal.enforce
    params = request.params
    expr = request.expr
    if request.endpoint.selects == "query":
        if expr is None:
            try:
                expr = parse_query(request.param("query"))
            except PromQLError as err:
                raise GatewayError("bad_data", str(err)) from None
        text, expr = enforce_query(expr, pairs, override)
        params = with_single(params, "query", text)
    elif request.endpoint.selects == "match":
        params = tuple((k, enforce_match(v, pairs, override) if k == "match[]" else v) for k, v in params)
        if request.endpoint.match_required and not any(k == "match[]" for k, _ in params):
            only = VectorSelector("", tuple(Matcher(name, "=", value) for name, value in pairs))
            params = (*params, ("match[]", print_expr(only)))
    return request.replace(params=params, expr=expr)


_FILTERS = {"rules": filter_rules, "alerts": filter_alerts}


def _filtered(answer: Answer, filtered: str, pairs: Pairs) -> Answer:
    keep = _FILTERS[filtered]

    def visible(data: Any) -> tuple[Any, list[str]] | None:
        if not isinstance(data, dict):
            return None
        return keep(data, pairs), []

    edited = edit_data(answer.json_bytes(), visible)
    if edited is None:
        raise GatewayError("internal", "the upstream answer is not JSON", 502)
    return answer.replace(body=edited, gzipped=False)


_METADATA_REFUSED = success_body({}, ["metadata is not available to principals with label enforcement"])


def enforcement(settings: EnforceSettings) -> Stage:
    """Stage: rewrite selectors for principals with `enforce`; others pass unchanged."""

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            pairs = request.principal.enforce
            if not pairs:
                return await next_handler(request)
            if not request.endpoint.label_scoped:
                # Metadata is not label-scoped upstream; it would list every team's metrics.
                return Answer(_METADATA_REFUSED)
            enforced = await offloop.run(
                promql_chars(request.params), enforce_params, request, settings.override
            )
            answer = await next_handler(enforced)
            if request.endpoint.filtered:
                return await work(json_size(answer), _filtered, answer, request.endpoint.filtered, pairs)
            return answer

        return handle

    return stage
