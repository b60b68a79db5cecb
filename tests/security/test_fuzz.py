"""Property-based fuzzing of every parameter: never a 500, never an unenforced selector upstream."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.amp_standin import AmpStandin
from support.gateway import gateway_client

from gateway.errors import GatewayError
from gateway.pipeline.enforce import enforce_query
from gateway.promql import PromQLError, parse_query, print_expr

from .conftest import (
    NODE,
    NODE_AUTH,
    all_selectors,
    assert_all_enforced,
    secure_settings,
    selector_is_enforced,
)

LABELS = st.sampled_from(["job", "instance", "__name__", "path", "j\u043eb", "Job", "job\u200b", "team"])
VALUES = st.one_of(
    st.sampled_from(
        ["node", "recommender", "", ".+", ".*", "node|recommender", "rec.*", "n\u043ede", 'x"} or {']
    ),
    st.text(max_size=8),
)
OPS = st.sampled_from(["=", "!=", "=~", "!~"])
NAMES = st.sampled_from(
    ["", "http_requests_total", "node_network_transmit_bytes_total", "up", "demo_num_cpus"]
)
DURATIONS = st.sampled_from(["1m", "5m", "1h", "30s", "0s", "1d"])


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@st.composite
def selectors(draw: Any) -> str:
    matchers = draw(st.lists(st.tuples(LABELS, OPS, VALUES), max_size=3))
    body = ",".join(f"{_quote(n) if not n.isascii() else n}{op}{_quote(v)}" for n, op, v in matchers)
    if draw(st.booleans()) and matchers:
        body += " or " + body.split(",")[0]
    text = draw(NAMES) + "{" + body + "}"
    if draw(st.booleans()):
        text += f"[{draw(DURATIONS)}]"
    if draw(st.booleans()):
        text += draw(st.sampled_from([" offset 5m", " offset -1m", " @ 100", " @ end()", " @ start()"]))
    return text


@st.composite
def queries(draw: Any) -> str:
    leaf = draw(selectors())
    depth = draw(st.integers(0, 3))
    for _ in range(depth):
        leaf = draw(
            st.sampled_from(
                [
                    f"rate({leaf})",
                    f"sum by (job) ({leaf})",
                    f"({leaf})[10m:1m]",
                    f"max_over_time(({leaf})[10m:])",
                    f'label_replace({leaf}, "job", "recommender", "", "")',
                    f"{leaf} or vector(1)",
                    f"{leaf} + on() group_left {draw(selectors())}",
                    f"absent({leaf})",
                    f"-{leaf}",
                    f"topk(2, {leaf})",
                    f"{leaf} unless {draw(selectors())}",
                ]
            )
        )
    mangle = draw(st.sampled_from(["none"] * 6 + ["text", "suffix"]))
    if mangle == "text":
        return draw(st.text(max_size=30))
    return leaf + draw(st.text(max_size=3)) if mangle == "suffix" else leaf


ENDPOINTS = st.sampled_from(
    [
        "query",
        "query_range",
        "series",
        "labels",
        "label/job/values",
        "label/__name__/values",
        "query_exemplars",
        "rules",
        "alerts",
        "metadata",
        "format_query",
    ]
)
TIMES = st.one_of(
    st.sampled_from(["", "0", "-1", "1e12", "NaN", "2024-01-01T00:00:00Z", "abc"]), st.text(max_size=6)
)
PARAM_NAMES = st.sampled_from(
    ["query", "match[]", "time", "start", "end", "step", "limit", "timeout", "lookback_delta", "stats", "x"]
)


@st.composite
def requests(draw: Any) -> dict[str, Any]:
    endpoint = draw(ENDPOINTS)
    params: list[tuple[str, str]] = []
    if endpoint in ("query", "query_range", "query_exemplars", "format_query"):
        params.append(("query", draw(queries())))
    if endpoint == "query_range":
        params += [
            ("start", "1000"),
            ("end", draw(st.sampled_from(["1600", "5000", "1000"]))),
            ("step", "60"),
        ]
    for _ in range(draw(st.integers(0, 3))):
        params.append(("match[]", draw(selectors())))
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 2]))):
        name = draw(PARAM_NAMES)
        value = draw(st.one_of(TIMES, queries()) if name in ("query", "match[]") else TIMES)
        params.append((name, value))
    in_body = draw(st.lists(st.booleans(), min_size=len(params), max_size=len(params)))
    method = draw(st.sampled_from(["GET", "POST"]))
    return {"endpoint": endpoint, "params": params, "in_body": in_body, "method": method}


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=requests())
async def test_fuzzed_requests_never_500_and_never_leak_an_unenforced_selector(
    fresh_amp: AmpStandin, aws_env: dict[str, str], case: dict[str, Any]
) -> None:
    fresh_amp.reset()
    url_params = [p for p, body in zip(case["params"], case["in_body"], strict=True) if not body]
    body_params = [p for p, body in zip(case["params"], case["in_body"], strict=True) if body]
    path = f"/api/v1/{case['endpoint']}"
    if url_params:
        path += "?" + urlencode(url_params)
    async with gateway_client(secure_settings(fresh_amp)) as client:
        response = await client.request(
            case["method"],
            path,
            content=urlencode(body_params).encode(),
            headers={**NODE_AUTH, "content-type": "application/x-www-form-urlencoded"},
        )
    assert response.status_code != 500, response.text
    body = response.json()
    assert body["status"] in ("success", "error"), body
    if body["status"] == "error":
        assert "Traceback" not in body["error"]
    checked = assert_all_enforced(fresh_amp, NODE)
    event(f"status {response.status_code}; selectors checked upstream: {min(checked, 3)}")


@settings(max_examples=400, deadline=None)
@given(text=queries())
def test_rewritten_queries_parse_print_stably_and_are_enforced(text: str) -> None:
    try:
        expr = parse_query(text)
    except PromQLError:
        return
    printed = print_expr(expr)
    assert parse_query(printed) == expr
    assert print_expr(parse_query(printed)) == printed
    try:
        rewritten, _ = enforce_query(expr, NODE)
    except GatewayError as err:
        assert err.status == 400
        return
    assert all(selector_is_enforced(s, NODE) for s in all_selectors(rewritten))


async def test_the_fuzzer_reaches_the_upstream(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> None:
    # A fuzzer whose requests were all refused early would prove little; this shape gets through.
    async with gateway_client(secure_settings(fresh_amp)) as client:
        response = await client.post(
            "/api/v1/query", data={"query": 'rate(up{job=~".+"}[5m])'}, headers=NODE_AUTH
        )
    assert response.status_code == 200
    assert assert_all_enforced(fresh_amp, NODE) == 1
