"""Stage: size limits, per principal (`limits:` and `auth.principals[].limits`).

Refuses what is too large before it costs anything upstream (range, points, query length),
passes AMP's query-samples-processed thresholds so AMP refuses costly queries before they
are billed, and caps the `limit` of series and label requests (`max_series`, `max_labels`).
"""

from __future__ import annotations

from gateway.config import Limits
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.endpoints import QUERY_METRICS
from gateway.pipeline.endpoints.params import (
    ERROR_THRESHOLD,
    WARNING_THRESHOLD,
    check_points,
    positive_whole,
)
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.promql import Expr, walk
from gateway.promql.ast import MatrixSelector, SubqueryExpr

_THRESHOLDS = (
    ("samples_processed_warning_threshold", WARNING_THRESHOLD),
    ("samples_processed_error_threshold", ERROR_THRESHOLD),
)

Params = tuple[tuple[str, str], ...]


def _ranges(node: Expr) -> list[float]:
    """Seconds of every [range] in a query: range selectors and subqueries."""
    return [n.range_ms / 1000 for n in walk(node) if isinstance(n, (MatrixSelector, SubqueryExpr))]


def _duration_text(seconds: float) -> str:
    if seconds >= 86400 and seconds % 86400 == 0:
        return f"{seconds / 86400:g}d"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    return f"{seconds:g}s"


def _with_param(params: Params, name: str, value: str) -> Params:
    return (*((k, v) for k, v in params if k != name), (name, value))


def _refuse_size(request: Request, limits: Limits) -> None:
    who = request.principal.name
    for key, value in request.params:
        if key in ("query", "match[]") and len(value) > limits.max_query_length:
            raise GatewayError(
                "bad_data",
                f'"{key}" is {len(value)} characters long; the limit for "{who}" is '
                f"{limits.max_query_length}. Shorten the query",
            )
    window = request.window
    if window is not None:
        span = (window.end_ms - window.start_ms) / 1000
        if limits.max_range is not None and span > limits.max_range:
            raise GatewayError(
                "bad_data",
                f"the query range ({_duration_text(span)}) exceeds the limit of "
                f'{_duration_text(limits.max_range)} for "{who}"; narrow start and end',
            )
        check_points(window.start_ms, window.end_ms, window.step_ns, limits.max_points)
    if request.expr is not None and limits.max_range is not None:
        longest = max(_ranges(request.expr), default=0.0)
        if longest > limits.max_range:
            raise GatewayError(
                "bad_data",
                f"a range in the query ({_duration_text(longest)}) exceeds the limit of "
                f'{_duration_text(limits.max_range)} for "{who}"; use a shorter [range]',
            )


def check_request(request: Request, limits: Limits) -> Request:
    """Refuses requests over the limits; returns the request with capped parameters."""
    _refuse_size(request, limits)
    params = request.params
    if request.endpoint.operation == QUERY_METRICS and limits.has_thresholds:
        for setting, param in _THRESHOLDS:
            cap = getattr(limits, setting)
            if cap is None:
                continue
            given = positive_whole(request.param(param))
            # A client may lower the configured threshold, never raise it.
            value = cap if given is None else min(given, cap)
            params = _with_param(params, param, str(value))
    cap_name = request.endpoint.result_cap
    cap = getattr(limits, cap_name) if cap_name else None
    if cap is not None:
        given = positive_whole(request.param("limit"))
        value = cap if given is None else min(given, cap)
        params = _with_param(params, "limit", str(value))
    return request if params is request.params else request.replace(params=params)


def size_limits(metrics: Metrics) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            try:
                checked = check_request(request, request.principal.limits)
            except GatewayError:
                metrics.limited.labels(request.principal.name, "size").inc()
                raise
            return await next_handler(checked)

        return handle

    return stage
