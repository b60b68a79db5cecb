"""Filters Prometheus `rules` and `alerts` answers down to what a label-enforced principal may see.

Like prom-label-proxy: a rule is kept when its labels carry every enforced pair, or when every
selector of its expression carries them; an alert is kept when its labels carry them.
"""

from __future__ import annotations

from typing import Any

from gateway.promql import PromQLError, parse_query, selectors
from gateway.promql.rewrite import carries

Pairs = tuple[tuple[str, str], ...]


def _labels_carry(labels: Any, pairs: Pairs) -> bool:
    return isinstance(labels, dict) and all(labels.get(name) == value for name, value in pairs)


def _query_carries(query: Any, pairs: Pairs) -> bool:
    if not isinstance(query, str):
        return False
    try:
        found = selectors(parse_query(query))
    except PromQLError:
        return False
    return bool(found) and all(carries(selector, pairs) for selector in found)


def _alert_list(alerts: Any, pairs: Pairs) -> list[Any]:
    return [a for a in alerts if isinstance(a, dict) and _labels_carry(a.get("labels"), pairs)]


def filter_rules(data: dict[str, Any], pairs: Pairs) -> dict[str, Any]:
    groups = []
    for group in data.get("groups") or []:
        if not isinstance(group, dict):
            continue
        rules = []
        for rule in group.get("rules") or []:
            if not isinstance(rule, dict):
                continue
            if not (_labels_carry(rule.get("labels"), pairs) or _query_carries(rule.get("query"), pairs)):
                continue
            if isinstance(rule.get("alerts"), list):
                rule = {**rule, "alerts": _alert_list(rule["alerts"], pairs)}
            rules.append(rule)
        if rules:
            groups.append({**group, "rules": rules})
    return {**data, "groups": groups}


def filter_alerts(data: dict[str, Any], pairs: Pairs) -> dict[str, Any]:
    return {**data, "alerts": _alert_list(data.get("alerts") or [], pairs)}
