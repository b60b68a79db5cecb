"""Every endpoint, by GET and by POST, answers through the gateway exactly as Prometheus does."""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import orjson
import pytest
from support.amp_standin import AmpStandin
from support.prometheus import PrometheusServer

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _cases(prometheus: PrometheusServer) -> list[tuple[str, list[tuple[str, str]]]]:
    end = int(prometheus.data_end) - 60
    start = end - 3600
    return [
        (
            "/api/v1/query",
            [
                ("query", 'sum by (path) (rate(http_requests_total{job="recommender"}[5m]))'),
                ("time", str(end)),
            ],
        ),
        ("/api/v1/query", [("query", "demo_num_cpus"), ("time", f"{end}.5")]),
        (
            "/api/v1/query_range",
            [
                ("query", "rate(demo_cpu_usage_seconds_total[1m])"),
                ("start", str(start)),
                ("end", str(end)),
                ("step", "60"),
            ],
        ),
        (
            "/api/v1/query_range",
            [
                ("query", 'demo_memory_usage_bytes{type="used"}'),
                ("start", str(start)),
                ("end", str(end)),
                ("step", "1m30s"),
            ],
        ),
        (
            "/api/v1/series",
            [
                ("match[]", "demo_num_cpus"),
                ("match[]", 'up{job="x"}'),
                ("start", str(start)),
                ("end", str(end)),
            ],
        ),
        ("/api/v1/labels", [("start", str(start)), ("end", str(end))]),
        ("/api/v1/labels", [("match[]", 'http_requests_total{status="500"}')]),
        ("/api/v1/label/instance/values", [("match[]", "demo_num_cpus")]),
        ("/api/v1/label/__name__/values", [("start", str(start)), ("end", str(end))]),
        ("/api/v1/metadata", []),
        ("/api/v1/query_exemplars", [("query", "demo_num_cpus"), ("start", str(start)), ("end", str(end))]),
        ("/api/v1/rules", []),
        ("/api/v1/alerts", []),
    ]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_every_endpoint_matches_direct(
    method: str,
    gateway: httpx.AsyncClient,
    direct: httpx.AsyncClient,
    prometheus: PrometheusServer,
    fresh_amp: AmpStandin,
) -> None:
    for path, params in _cases(prometheus):
        expected = await direct.get(path, params=params)
        assert expected.status_code == 200, (path, expected.text)
        if method == "GET":
            answer = await gateway.get(path, params=params)
        else:
            answer = await gateway.post(path, content=urlencode(params), headers=FORM)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["content-type"] == "application/json"
        got, want = orjson.loads(answer.content), orjson.loads(expected.content)
        assert got["status"] == "success"
        assert got["data"] == want["data"], path
    assert all(r.signature_valid for r in fresh_amp.requests)
    # query_exemplars is answered by the gateway (AMP does not serve it), as Prometheus without
    # exemplar storage answers it (the comparison above); everything else went upstream.
    assert len(fresh_amp.forwarded) == len(_cases(prometheus)) - 1
    assert not any(r.raw_path.endswith(b"/query_exemplars") for r in fresh_amp.requests)


async def test_workspace_paths_and_alias(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    for prefix, workspace in (
        ("", "ws-test1"),
        ("/workspaces/ws-test1", "ws-test1"),
        ("/workspaces/test", "ws-test1"),
        ("/workspaces/ws-test2", "ws-test2"),
    ):
        fresh_amp.requests.clear()
        answer = await gateway.get(f"{prefix}/api/v1/query", params={"query": "demo_num_cpus"})
        assert answer.status_code == 200, answer.text
        assert [r.workspace for r in fresh_amp.requests] == [workspace]


async def test_unknown_workspace_is_404_and_never_forwarded(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    answer = await gateway.get("/workspaces/ws-other/api/v1/query", params={"query": "1"})
    assert answer.status_code == 404
    assert answer.json() == {
        "status": "error",
        "errorType": "not_found",
        "error": 'workspace "ws-other" is not configured in this gateway',
    }
    assert fresh_amp.requests == []


async def test_gzip_passes_through_to_clients_that_accept_it(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, prometheus: PrometheusServer
) -> None:
    params = {"query": "demo_memory_usage_bytes", "time": str(int(prometheus.data_end))}
    zipped = await gateway.get("/api/v1/query", params=params, headers={"accept-encoding": "gzip"})
    assert zipped.headers.get("content-encoding") == "gzip"
    plain = await gateway.get("/api/v1/query", params=params, headers={"accept-encoding": "identity"})
    assert "content-encoding" not in plain.headers
    reference = (await direct.get("/api/v1/query", params=params)).json()
    assert zipped.json() == plain.json() == reference


async def test_local_endpoints(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    info = (await gateway.get("/api/v1/status/buildinfo")).json()
    assert info["status"] == "success"
    assert set(info["data"]) == {"version", "revision", "branch", "buildUser", "buildDate", "goVersion"}
    assert "features" not in info["data"]  # Grafana would take the backend for Mimir

    formatted = await gateway.post("/api/v1/format_query", data={"query": "sum(rate(x{a='b'}[5m]))by(c)"})
    assert formatted.json() == {"status": "success", "data": 'sum by (c) (rate(x{a="b"}[5m]))'}

    parsed = (
        await gateway.get("/api/v1/parse_query", params={"query": 'rate(x{a=~"b"}[5m] offset 1m)'})
    ).json()
    selector = parsed["data"]["args"][0]
    assert parsed["data"]["type"] == "call" and parsed["data"]["func"]["name"] == "rate"
    assert selector == {
        "type": "matrixSelector",
        "name": "x",
        "range": 300000,
        "offset": 60000,
        # Prometheus's order: the name outside the braces is appended (assembleVectorSelector)
        "matchers": [
            {"name": "a", "value": "b", "type": "=~"},
            {"name": "__name__", "value": "x", "type": "="},
        ],
        "timestamp": None,
        "startOrEnd": None,
    }
    bad = await gateway.get("/api/v1/format_query", params={"query": "sum("})
    assert bad.status_code == 400 and bad.json()["errorType"] == "bad_data"
    assert fresh_amp.requests == []


async def test_deep_trees_are_formatted_and_translated(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    # 300 levels: deeper than orjson writes, within the gateway's bounds (as Prometheus answers it)
    deep = "-" * 300 + "demo_num_cpus"
    parsed = await gateway.post("/api/v1/parse_query", data={"query": deep})
    assert parsed.status_code == 200, parsed.text[:300]
    node, depth = parsed.json()["data"], 0
    while node["type"] == "unaryExpr":
        node, depth = node["expr"], depth + 1
    assert depth == 300 and node["type"] == "vectorSelector"
    chain = "x" + "+x" * 500
    formatted = await gateway.post("/api/v1/format_query", data={"query": chain})
    assert formatted.status_code == 200
    assert formatted.json()["data"].splitlines()[-1].strip() == "x"
    assert fresh_amp.requests == []


async def test_unknown_api_path_is_prometheus_404(gateway: httpx.AsyncClient) -> None:
    answer = await gateway.get("/api/v1/nonsense")
    assert answer.status_code == 404
    assert answer.json()["errorType"] == "not_found"
    other = await gateway.get("/not-an-api")
    assert other.status_code == 404 and other.json()["status"] == "error"
