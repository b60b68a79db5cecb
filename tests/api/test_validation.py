"""Bad requests get Prometheus's exact error, and never cost an upstream call."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.prometheus import PrometheusServer

NO_ENTRY = 'invalid parameter "end": end timestamp must not be before start time'
ZERO_STEP = (
    'invalid parameter "step": zero or negative query resolution step widths are not accepted. '
    "Try a positive integer"
)
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
        'invalid parameter "query": 1:5: parse error: unclosed left parenthesis',
    ),
    (
        "/api/v1/query_range",
        {"start": "1", "end": "2", "step": "1"},
        # Prometheus 2.53's words (2.42 says "1:1:" where 2.53 says "unknown position:")
        'invalid parameter "query": unknown position: parse error: no expression found in input',
    ),
    (
        "/api/v1/query",
        {"query": "up", "time": "yesterday"},
        'invalid parameter "time": Invalid time value for \'time\': cannot parse "yesterday" to a valid timestamp',
    ),
    (
        "/api/v1/query",
        {"query": 'up{job="a"'},
        'invalid parameter "query": 1:11: parse error: unexpected end of input inside braces',
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
        'invalid parameter "start": Invalid time value for \'start\': cannot parse "later" to a valid timestamp',
    ),
    (
        "/api/v1/series",
        {"match[]": "rate(up[5m])"},
        'invalid parameter "match[]": 1:5: parse error: unexpected "("',
    ),
    ("/api/v1/labels", {"match[]": "{"}, "1:2: parse error: unexpected end of input inside braces"),
    (
        "/api/v1/series",
        {"match[]": '{job=~".*"}'},
        'invalid parameter "match[]": match[] must contain at least one non-empty matcher',
    ),
    ("/api/v1/labels", {"match[]": '{job=~".*"}'}, "match[] must contain at least one non-empty matcher"),
    ("/api/v1/label/bad-name/values", {}, 'invalid label name: "bad-name"'),
    ("/api/v1/label/job%0A/values", {}, 'invalid label name: "job\\n"'),
    (
        "/api/v1/query_exemplars",
        {"query": "up", "start": "10", "end": "5"},
        "end timestamp must not be before start timestamp",
    ),
    ("/api/v1/query_exemplars", {"query": "up{"}, "1:4: parse error: unexpected end of input inside braces"),
    (
        "/api/v1/query",
        {"query": "up", "lookback_delta": "x"},
        'error parsing lookback delta duration: cannot parse "x" to a valid duration',
    ),
    (
        "/api/v1/query",
        {"query": "up", "time": "2026-11-22t09:00:00z"},
        'invalid parameter "time": Invalid time value for \'time\': cannot parse "2026-11-22t09:00:00z" to a valid timestamp',
    ),
    (
        "/api/v1/query",
        {"query": "holt_winters(up[5m], 0.5)"},
        'invalid parameter "query": 1:1: parse error: expected 3 argument(s) in call to "holt_winters", got 2',
    ),
    ("/api/v1/rules", {"type": "both"}, 'invalid parameter "type": not supported value "both"'),
]


@pytest.mark.parametrize(("path", "params", "message"), CASES)
async def test_bad_input_is_rejected_like_prometheus_without_upstream_call(
    path: str,
    params: dict[str, str],
    message: str,
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
        assert body["error"] == message
    assert fresh_amp.requests == []


# Prometheus 2.42 predates `limit` and `lookback_delta` on queries and ignores an unknown rules `type`.
_NEWER_THAN_242 = {"/api/v1/rules", "/api/v1/query"}


# Where Prometheus 2.42 (the tests' reference) words an error unlike 2.53 (whose API the gateway
# speaks, from web/api/v1/api.go and promql/parser of v2.53.0): 2.53 added the "invalid
# parameter" prefix to query_range's parse errors and says "unknown position" for an empty query.
_AS_242 = {
    'invalid parameter "query": 1:5: parse error: unclosed left parenthesis': "1:5: parse error: unclosed left parenthesis",
    'invalid parameter "query": unknown position: parse error: no expression found in input': "1:1: parse error: no expression found in input",
}


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        c
        for c in CASES
        if "lookback_delta" not in c[1]
        and (c[0] not in _NEWER_THAN_242 or ("limit" not in c[1] and "type" not in c[1]))
    ],
)
async def test_prometheus_itself_rejects_the_same_requests_in_the_same_words(
    path: str, params: dict[str, str], message: str, direct: httpx.AsyncClient
) -> None:
    """The reference: each case above is also a 400 bad_data from a real Prometheus, word for word."""
    answer = await direct.get(path, params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["errorType"] == "bad_data"
    assert answer.json()["error"] == _AS_242.get(message, message)


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


async def test_match_parameters_are_counted_before_any_is_parsed(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    body = "&".join(["match[]=up{"] * 257)
    answer = await gateway.post(
        "/api/v1/series", content=body, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 400
    assert "at most 256" in answer.json()["error"]  # not the parse error of the first one
    assert fresh_amp.requests == []


async def test_oversized_body_is_refused(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    answer = await gateway.post(
        "/api/v1/query",
        content=b"query=" + b"a" * (2 * 1024 * 1024),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert answer.json()["errorType"] == "bad_data"
    assert fresh_amp.requests == []


async def test_negative_at_timestamps_keep_their_meaning_upstream(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, fresh_amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    """promql-parser printed `@ -100` as `@ 0.000`; the gateway's printer keeps it."""
    at = int(prometheus.data_start) + 600
    for query in (
        f"demo_num_cpus @ {at}",
        "demo_num_cpus @ -100",
        f'count(demo_num_cpus{{job!="@ -1"}} @ {at}.5)',
    ):
        params = {"query": query, "time": str(int(prometheus.data_end))}
        answer = await gateway.get("/api/v1/query", params=params)
        expected = await direct.get("/api/v1/query", params=params)
        assert answer.status_code == expected.status_code == 200, answer.text
        assert answer.json()["data"] == expected.json()["data"]
    sent = [dict(parse_qsl(r.body.decode())).get("query") for r in fresh_amp.forwarded]
    assert sent == [
        f"demo_num_cpus @ {at}.000",
        "demo_num_cpus @ -100.000",
        f'count(demo_num_cpus{{job!="@ -1"}} @ {at}.500)',
    ]
