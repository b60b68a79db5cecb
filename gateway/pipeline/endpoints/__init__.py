"""The facts of each Prometheus endpoint the gateway serves, one frozen row each (as
Prometheus's `Register` and Thanos's split by operation do): its route, the builder that
validates it, the AMP operation that meters and throttles it, where its PromQL is, how it is
cached and capped and enforced. Stages read the row a `Request` carries; adding an endpoint is
one row here and a builder in `builders.py`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gateway.pipeline.endpoints import builders
from gateway.pipeline.endpoints.builders import Call
from gateway.pipeline.endpoints.params import Params

# AMP's operations (IAM actions), which AMP meters and throttles by; "" for what the gateway answers.
QUERY_METRICS = "QueryMetrics"
GET_SERIES = "GetSeries"
GET_LABELS = "GetLabels"
GET_METRIC_METADATA = "GetMetricMetadata"
LIST_RULES = "ListRules"
LIST_ALERTS = "ListAlerts"
OPERATIONS = (QUERY_METRICS, GET_SERIES, GET_LABELS, GET_METRIC_METADATA, LIST_RULES, LIST_ALERTS)

Builder = Callable[[Params, str], Call]  # (parameters, the <name> of /label/<name>/values)


@dataclass(frozen=True, slots=True, eq=False)
class Endpoint:
    name: str  # in metrics and logs
    route: str  # the path under /api/v1/
    build: Builder
    operation: str = ""  # AMP's operation; "": answered by the gateway, never sent upstream
    selects: Literal["query", "match", ""] = ""  # its PromQL: one `query`, `match[]` selectors, none
    # With no match[], a principal with label enforcement asks with its own selector (rules do not).
    match_required: bool = False
    label_scoped: bool = True  # False: the answer cannot be limited to a principal's labels
    filtered: Literal["rules", "alerts", ""] = ""  # whose answer is filtered for such principals
    cache: Literal["range", "instant", "metadata", ""] = ""  # how the results cache keeps it
    result_cap: Literal["max_series", "max_labels", ""] = ""  # the principal's limit on its result
    workspace: bool = True  # answered for a workspace (False: buildinfo, format_query, parse_query)

    @property
    def local(self) -> bool:
        return not self.operation

    def __repr__(self) -> str:
        return f"Endpoint({self.name})"


def _plain(build: Callable[[Params], Call]) -> Builder:
    return lambda params, label: build(params)


ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        Endpoint("query", "query", _plain(builders.query), QUERY_METRICS, selects="query", cache="instant"),
        Endpoint(
            "query_range",
            "query_range",
            _plain(builders.query_range),
            QUERY_METRICS,
            selects="query",
            cache="range",
        ),
        Endpoint(
            "series",
            "series",
            _plain(builders.series),
            GET_SERIES,
            selects="match",
            match_required=True,
            cache="metadata",
            result_cap="max_series",
        ),
        Endpoint(
            "labels",
            "labels",
            _plain(builders.labels),
            GET_LABELS,
            selects="match",
            match_required=True,
            cache="metadata",
            result_cap="max_labels",
        ),
        Endpoint(
            "label_values",
            "label/{name}/values",
            builders.label_values,
            GET_LABELS,
            selects="match",
            match_required=True,
            cache="metadata",
            result_cap="max_labels",
        ),
        Endpoint(
            "metadata",
            "metadata",
            _plain(builders.metadata),
            GET_METRIC_METADATA,
            label_scoped=False,
            cache="metadata",
        ),
        Endpoint("query_exemplars", "query_exemplars", _plain(builders.query_exemplars), selects="query"),
        Endpoint("rules", "rules", _plain(builders.rules), LIST_RULES, selects="match", filtered="rules"),
        Endpoint("alerts", "alerts", _plain(builders.alerts), LIST_ALERTS, filtered="alerts"),
        Endpoint("buildinfo", "status/buildinfo", _plain(builders.buildinfo), workspace=False),
        Endpoint("format_query", "format_query", _plain(builders.local_query), workspace=False),
        Endpoint("parse_query", "parse_query", _plain(builders.local_query), workspace=False),
    )
}
# /-/ready's trivial query to each workspace: signed and sent, past every other stage.
READINESS_PROBE = Endpoint("ready", "", _plain(builders.query), QUERY_METRICS)
