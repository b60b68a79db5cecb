"""Label enforcement (what prom-label-proxy does): a principal sees only series carrying its labels.

The principal's `enforce` pairs become equality matchers in every selector of `query` (range,
subquery, @ and offset included), in every `match[]` (one is added when absent), and the
`rules`/`alerts` answers are filtered to the principal's labels. A matcher of the query on an
enforced label that contradicts the enforced value is refused (or dropped, with `override`).

The rewritten query is printed by `promql_print`, parsed again and checked selector by selector
before anything is forwarded: the check, not the rewrite, is what guarantees the property.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
import promql_parser as pp

from gateway.api.errors import ApiError
from gateway.pipeline.model import Handler, UpstreamRequest, UpstreamResponse
from gateway.pipeline.promql_print import (
    Groups,
    Triple,
    UnprintableQuery,
    label_name,
    quote,
    render,
    selector_groups,
    selectors,
)
from gateway.pipeline.rules_filter import filter_alerts, filter_rules

log = logging.getLogger("gateway.enforce")

Pairs = tuple[tuple[str, str], ...]
_QUERY_ENDPOINTS = ("query", "query_range", "query_exemplars")
_MATCH_ENDPOINTS = ("series", "labels", "label_values", "rules")


@dataclass(frozen=True)
class EnforceSettings:
    override: bool = False  # drop contradicting matchers instead of refusing the query


def _satisfies(op: str, pattern: str, value: str) -> bool | None:
    """Whether `value` passes the matcher; None when the regex cannot be judged here."""
    if op in ("=", "!="):
        return (pattern == value) == (op == "=")
    try:
        matched = re.fullmatch(pattern, value) is not None
    except re.error:
        return None
    return matched == (op == "=~")


def enforce_groups(groups: Groups, pairs: Pairs, override: bool) -> Groups:
    """Adds the enforced equality matchers to each OR-group, judging the group's own matchers."""
    out: Groups = []
    for group in groups:
        kept: list[Triple] = []
        enforced = {name: value for name, value in pairs}
        for name, op, value in group:
            if name not in enforced:
                kept.append((name, op, value))
                continue
            if override:
                continue
            ok = _satisfies(op, value, enforced[name])
            if not ok:
                raise ApiError(
                    "bad_data",
                    f'the query selects {name}{op}"{value}", but this principal may only read '
                    f'{name}="{enforced[name]}"; remove that matcher (it is added for you)',
                )
            if op != "=":
                kept.append((name, op, value))  # compatible: it can only narrow the selection
        kept.extend((name, "=", value) for name, value in pairs)
        out.append(kept)
    return out


def check_selector(selector: Any, pairs: Pairs) -> bool:
    """Every OR-group carries every enforced pair as an exact equality matcher."""
    for group in selector_groups(selector):
        for name, value in pairs:
            if (name, "=", value) not in group:
                return False
            if any(n == name and not _satisfies(op, v, value) for n, op, v in group):
                return False
    return True


def _rewrite(expr: Any, pairs: Pairs, override: bool, what: str) -> tuple[str, Any]:
    try:
        text = render(expr, lambda groups: enforce_groups(groups, pairs, override))
        checked = pp.parse(text)
        ok = render(checked) == text and all(check_selector(s, pairs) for s in selectors(checked))
    except (UnprintableQuery, ValueError):
        ok = False
    if not ok:
        log.warning("label enforcement could not rewrite a %s safely; refused", what)
        raise ApiError(
            "bad_data",
            f"the gateway cannot apply this principal's label matchers to this {what}; "
            "simplify it (plain selectors, functions and operators are supported)",
        )
    return text, checked


def enforce_query(expr: Any, pairs: Pairs, override: bool = False) -> tuple[str, Any]:
    """The PromQL text (and its AST) with the enforced matchers in every selector."""
    return _rewrite(expr, pairs, override, "query")


def enforce_match(text: str, pairs: Pairs, override: bool = False) -> str:
    try:
        expr = pp.parse(text)
    except ValueError:
        raise ApiError("bad_data", f"parse error in match[] {text!r}") from None
    if not isinstance(expr, pp.VectorSelector):
        raise ApiError("bad_data", f"match[] {text!r} must be a series selector")
    return _rewrite(expr, pairs, override, "match[] selector")[0]


def enforce_params(request: UpstreamRequest, override: bool) -> UpstreamRequest:
    """The request with every selector-bearing parameter rewritten; nothing else changes."""
    pairs = request.principal.enforce
    params = request.params
    expr = request.expr
    if request.endpoint in _QUERY_ENDPOINTS:
        if expr is None:
            expr = pp.parse(request.param("query"))
        text, expr = enforce_query(expr, pairs, override)
        # Exactly one `query` goes upstream, the one validated: a second copy (URL and body)
        # must not reach an upstream that might read the other one.
        out: list[tuple[str, str]] = []
        for key, value in params:
            if key == "query":
                if not any(k == "query" for k, _ in out):
                    out.append(("query", text))
            else:
                out.append((key, value))
        params = out
    elif request.endpoint in _MATCH_ENDPOINTS:
        params = [(k, enforce_match(v, pairs, override) if k == "match[]" else v) for k, v in params]
        if request.endpoint != "rules" and not any(k == "match[]" for k, _ in params):
            selector = "{" + ",".join(f"{label_name(n)}={quote(v)}" for n, v in pairs) + "}"
            params = [*params, ("match[]", enforce_match(selector, pairs, override))]
    return request.replace(params=params, expr=expr)


def _filtered(response: UpstreamResponse, endpoint: str, pairs: Pairs) -> UpstreamResponse:
    if not response.ok:
        return response
    try:
        document = orjson.loads(response.json_bytes())
    except orjson.JSONDecodeError:
        return UpstreamResponse(
            status=502,
            body=orjson.dumps(
                {"status": "error", "errorType": "internal", "error": "the upstream answer is not JSON"}
            ),
        )
    data = document.get("data") if isinstance(document, dict) else None
    if isinstance(data, dict):
        if endpoint == "rules":
            document["data"] = filter_rules(data, pairs)
        else:
            document["data"] = filter_alerts(data, pairs)
    return UpstreamResponse(status=response.status, body=orjson.dumps(document), headers=response.headers)


def enforcement_stage(settings: EnforceSettings):  # type: ignore[no-untyped-def]
    """Stage: rewrite selectors for principals with `enforce`; others pass unchanged."""

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: UpstreamRequest) -> UpstreamResponse:
            pairs = request.principal.enforce
            if not pairs:
                return await next_handler(request)
            if request.endpoint == "metadata":
                # Metadata is not label-scoped upstream; it would list every team's metrics.
                return UpstreamResponse(
                    status=200,
                    body=orjson.dumps(
                        {
                            "status": "success",
                            "data": {},
                            "warnings": ["metadata is not available to principals with label enforcement"],
                        }
                    ),
                )
            answer = await next_handler(enforce_params(request, settings.override))
            if request.endpoint in ("rules", "alerts"):
                return _filtered(answer, request.endpoint, pairs)
            return answer

        return handle

    return stage
