"""Bad requests get Prometheus's exact error, and never cost an upstream call."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.prometheus import PrometheusServer

NO_ENTRY = "end timestamp must not be before start time"
ZERO_STEP = "zero or negative query resolution step widths are not accepted. Try a positive integer"
TOO_MANY = "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"

CASES: list[tuple[str, dict[str, str], str]] = [
    (
        "/api/v1/query_range",
        {"query": "up", "start": "x", "end": "2", "step": "1"},
        'invalid parameter "start": cannot parse "x" to a valid timestamp',
    ),
    (
        "/api/v1/query_range",
        {"query": "up", "start": "1", "end": "", "step": "1"},
        'invalid parameter "end": cannot parse "" to a valid timestamp',
    ),
    ("/api/v1/query_range", {"query": "up", "start": "2", "end": "1", "step": "1"}, NO_ENTRY),
    (
        "/api/v1/query_range",
        {"query": "up", "start": "1", "end": "2", "step": "1x"},
        'invalid parameter "step": cannot parse "1x" to a valid duration',
    ),
    ("/api/v1/query_range", {"query": "up", "start": "1", "end": "2", "step": "0"}, ZERO_STEP),
    ("/api/v1/query_range", {"query": "up", "start": "1", "end": "2", "step": "-5"}, ZERO_STEP),
    ("/api/v1/query_range", {"query": "up", "start": "0", "end": "11001", "step": "1"}, TOO_MANY),
    (
        "/api/v1/query_range",
        {"query": "up", "start": "2023-01-01T00:00:00Z", "end": "2023-01-02T00:00:00Z", "step": "7s"},
        TOO_MANY,
    ),
    (
        "/api/v1/query_range",
        {"query": "up", "start": "1", "end": "2", "step": "1", "timeout": "soon"},
        'invalid parameter "timeout": cannot parse "soon" to a valid duration',
    ),
    (
        "/api/v1/query_range",
        {"query": "sum(", "start": "1", "end": "2", "step": "1"},
        'invalid parameter "query": parse error: unclosed left parenthesis',
    ),
    (
        "/api/v1/query_range",
        {"start": "1", "end": "2", "step": "1"},
        'invalid parameter "query": parse error: no expression found in input',
    ),
    (
        "/api/v1/query",
        {"query": "up", "time": "yesterday"},
        'invalid parameter "time": cannot parse "yesterday" to a valid timestamp',
    ),
    (
        "/api/v1/query",
        {"query": 'up{job="a"'},
        'invalid parameter "query": parse error: unexpected end of input inside braces',
    ),
    (
        "/api/v1/query",
        {"query": "up", "limit": "-1"},
        'invalid parameter "limit": limit must be non-negative',
    ),
    ("/api/v1/series", {}, "no match[] parameter provided"),
    (
        "/api/v1/series",
        {"match[]": "up", "start": "later"},
        'invalid parameter "start": cannot parse "later" to a valid timestamp',
    ),
    ("/api/v1/series", {"match[]": "rate(up[5m])"}, None),
    ("/api/v1/labels", {"match[]": "{"}, None),
    ("/api/v1/label/bad-name/values", {}, 'invalid label name: "bad-name"'),
    ("/api/v1/query_exemplars", {"query": "up", "start": "10", "end": "5"}, NO_ENTRY),
    ("/api/v1/rules", {"type": "both"}, 'invalid parameter "type": not supported value "both"'),
]


@pytest.mark.parametrize(("path", "params", "message"), CASES)
async def test_bad_input_is_rejected_like_prometheus_without_upstream_call(
    path: str,
    params: dict[str, str],
    message: str | None,
    gateway: httpx.AsyncClient,
    fresh_amp: AmpStandin,
) -> None:
    for answer in (
        await gateway.get(path, params=params),
        await gateway.post(
            path, content=urlencode(params), headers={"content-type": "application/x-www-form-urlencoded"}
        ),
    ):
        assert answer.status_code == 400, answer.text
        body = answer.json()
        assert body["status"] == "error" and body["errorType"] == "bad_data"
        if message is not None:
            assert body["error"] == message
        else:
            assert body["error"].startswith("parse error: ")
    assert fresh_amp.requests == []


# Prometheus 2.42 predates `limit` on queries and ignores an unknown rules `type`.
_NEWER_THAN_242 = {"/api/v1/rules", "/api/v1/query"}


@pytest.mark.parametrize(
    ("path", "params"),
    [(p, q) for p, q, _ in CASES if p not in _NEWER_THAN_242 or ("limit" not in q and "type" not in q)],
)
async def test_prometheus_itself_rejects_the_same_requests(
    path: str, params: dict[str, str], direct: httpx.AsyncClient
) -> None:
    """The reference: each case above is also a 400 bad_data from a real Prometheus."""
    answer = await direct.get(path, params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["errorType"] == "bad_data"


async def test_body_wins_over_url_like_go_form_values(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, fresh_amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    answer = await gateway.post(
        "/api/v1/query?query=demo_num_cpus&query=nonexistent",
        content=urlencode({"query": "count(demo_num_cpus)", "time": str(int(prometheus.data_end))}),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200
    assert answer.json()["data"]["result"][0]["value"][1] == "3"


async def test_grafana_exemplar_probe_with_millisecond_timestamps_is_not_refused(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    answer = await gateway.get(
        "/api/v1/query_exemplars", params={"query": "test", "start": "1700000000000", "end": "1700003600000"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"status": "success", "data": []}


async def test_oversized_body_is_refused(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    answer = await gateway.post(
        "/api/v1/query",
        content=b"query=" + b"a" * (2 * 1024 * 1024),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert answer.json()["errorType"] == "bad_data"
    assert fresh_amp.requests == []


async def test_negative_at_timestamps_are_refused_not_silently_changed(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    """promql-parser would print `@ -100` as `@ 0.000`: a rewritten query would mean something else."""
    answer = await gateway.get("/api/v1/query", params={"query": "demo_num_cpus @ -100"})
    assert answer.status_code == 400
    assert "before 1970" in answer.json()["error"]
    assert fresh_amp.requests == []
    literal = await gateway.get("/api/v1/query", params={"query": 'count(demo_num_cpus{job!="@ -1"} @ 100)'})
    assert literal.status_code == 200
