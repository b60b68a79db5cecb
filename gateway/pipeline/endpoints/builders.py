"""One builder per Prometheus endpoint (its row in `ENDPOINTS` names it): validate like
Prometheus, then describe the upstream call.

Each builder takes the request's parameters and returns what goes upstream (a `Call`); nothing
reaches the upstream unless every check here passed. The parameters forwarded are the ones
each endpoint knows (AMP's query-cost thresholds included); anything else a client sends is
dropped, so it cannot alter the signed request or the cache key, and a parameter that takes
one value goes up once, with the value that was checked (the first, as Prometheus reads it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.errors import GatewayError
from gateway.golang import LABEL_NAME_RE, go_quote
from gateway.pipeline.endpoints.params import (
    ERROR_THRESHOLD,
    LIST_PARAMS,
    MAX_TIME_MS,
    MIN_TIME_MS,
    WARNING_THRESHOLD,
    Params,
    check_range,
    parse_duration_ns,
)
from gateway.pipeline.endpoints.promql_params import parse_matchers, parse_printed
from gateway.pipeline.model import QueryWindow, with_single
from gateway.promql import Expr, PromQLError, parse_canonical

MAX_MATCHES = 256
_QUERY_COMMON = (
    "query",
    "timeout",
    "limit",
    "stats",
    "lookback_delta",
    WARNING_THRESHOLD,
    ERROR_THRESHOLD,
)


@dataclass
class Call:
    """What a builder decides about one request."""

    path: str
    method: str
    params: tuple[tuple[str, str], ...]
    expr: Expr | None = None
    window: QueryWindow | None = None
    time_ms: int | None = None
    client_timeout: float | None = None
    at_now: bool = False  # evaluated at the time it arrives (an instant query without `time`)


def _keep(params: Params, names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    wanted = set(names)
    seen: set[str] = set()
    kept = []
    for key, value in params.items:
        if key in wanted and (key in LIST_PARAMS or key not in seen):
            seen.add(key)
            kept.append((key, value))
    return tuple(kept)


def _timeout(params: Params) -> float | None:
    if params.get("timeout") == "":
        return None
    seconds = params.duration_ns("timeout") / 1e9
    return seconds if seconds > 0 else None


def _common_query_checks(params: Params) -> None:
    """extractQueryOpts (lookback_delta; a negative one means the default, as in Prometheus),
    and `limit` (Prometheus 3's, which AMP may ignore)."""
    text = params.get("lookback_delta")
    if text != "":
        try:
            parse_duration_ns(text)
        except ValueError as err:
            raise GatewayError("bad_data", f"error parsing lookback delta duration: {err}") from None
    params.limit()


def query(params: Params) -> Call:
    now_ms = int(time.time() * 1000)
    time_ms = params.time_ms("time", default=now_ms)
    timeout = _timeout(params)
    _common_query_checks(params)
    expr, printed = parse_printed(params.get("query"))
    kept = with_single(_keep(params, (*_QUERY_COMMON, "time")), "query", printed)
    return Call(
        "/api/v1/query",
        "POST",
        kept,
        expr=expr,
        time_ms=time_ms if params.get("time") else None,
        client_timeout=timeout,
        at_now=not params.get("time"),
    )


def query_range(params: Params) -> Call:
    start_ms = params.time_ms("start")
    end_ms = params.time_ms("end")
    step_ns = params.duration_ns("step") if end_ms >= start_ms else 0
    check_range(start_ms, end_ms, step_ns)
    timeout = _timeout(params)
    _common_query_checks(params)
    expr, printed = parse_printed(params.get("query"))
    kept = with_single(_keep(params, (*_QUERY_COMMON, "start", "end", "step")), "query", printed)
    return Call(
        "/api/v1/query_range",
        "POST",
        kept,
        expr=expr,
        window=QueryWindow(start_ms, end_ms, step_ns),
        client_timeout=timeout,
    )


def _series_window(params: Params) -> None:
    params.time_ms("start", default=MIN_TIME_MS)
    params.time_ms("end", default=MAX_TIME_MS)
    params.limit()


def _count_matches(params: Params) -> None:
    """A cheap bound before any selector is parsed (Grafana sends one or two)."""
    count = sum(1 for key, _ in params.items if key == "match[]")
    if count > MAX_MATCHES:
        raise GatewayError(
            "bad_data", f"{count} match[] parameters; the gateway takes at most {MAX_MATCHES} in one request"
        )


def series(params: Params) -> Call:
    _count_matches(params)
    matches = params.get_all("match[]")
    if not matches:
        raise GatewayError("bad_data", "no match[] parameter provided")
    _series_window(params)
    parse_matchers(matches, prefixed=True)
    return Call("/api/v1/series", "POST", _keep(params, ("match[]", "start", "end", "limit")))


def labels(params: Params) -> Call:
    _count_matches(params)
    _series_window(params)
    parse_matchers(params.get_all("match[]"))
    return Call("/api/v1/labels", "POST", _keep(params, ("match[]", "start", "end", "limit")))


def label_values(params: Params, name: str) -> Call:
    if not LABEL_NAME_RE.match(name):
        raise GatewayError("bad_data", f"invalid label name: {go_quote(name)}")
    _count_matches(params)
    _series_window(params)
    parse_matchers(params.get_all("match[]"))
    # AMP serves label values by GET only.
    return Call(
        f"/api/v1/label/{name}/values",
        "GET",
        _keep(params, ("match[]", "start", "end", "limit")),
    )


def metadata(params: Params) -> Call:
    for name in ("limit", "limit_per_metric"):
        text = params.get(name)
        if text:
            try:
                int(text)
            except ValueError:
                raise GatewayError(
                    "bad_data", f'invalid parameter "{name}": "{text}" is not a whole number'
                ) from None
    return Call("/api/v1/metadata", "GET", _keep(params, ("limit", "limit_per_metric", "metric")))


def query_exemplars(params: Params) -> Call:
    # Grafana's probe sends millisecond timestamps; they parse as (far future) seconds here,
    # exactly as in Prometheus, and must not be refused.
    start_ms = params.time_ms("start", default=MIN_TIME_MS)
    end_ms = params.time_ms("end", default=MAX_TIME_MS)
    if end_ms < start_ms:
        raise GatewayError("bad_data", "end timestamp must not be before start timestamp")
    try:
        expr, printed = parse_canonical(params.get("query"))
    except PromQLError as err:
        raise GatewayError("bad_data", str(err)) from None  # no "invalid parameter" here in Prometheus
    return Call(
        "/api/v1/query_exemplars",
        "POST",
        with_single(_keep(params, ("query", "start", "end")), "query", printed),
        expr=expr,
    )


_RULES_PARAMS = (
    "type",
    "rule_name[]",
    "rule_group[]",
    "file[]",
    "exclude_alerts",
    "match[]",
    "group_limit",
    "group_next_token",
)


def rules(params: Params) -> Call:
    kind = params.get("type")
    if kind not in ("", "alert", "record"):
        raise GatewayError("bad_data", f'invalid parameter "type": not supported value "{kind}"')
    return Call("/api/v1/rules", "GET", _keep(params, _RULES_PARAMS))


def alerts(params: Params) -> Call:
    return Call("/api/v1/alerts", "GET", ())


def buildinfo(params: Params) -> Call:
    return Call("", "GET", ())


def local_query(params: Params) -> Call:
    """format_query and parse_query: the query, parsed, for the gateway to answer."""
    expr, _ = parse_printed(params.get("query"))
    return Call("", "GET", (("query", params.get("query")),), expr=expr)
