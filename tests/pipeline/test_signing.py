"""What the gateway signs is exactly what AWS recomputes, for the awkward cases too."""

from __future__ import annotations

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.prometheus import PrometheusServer

AWKWARD = [
    'demo_memory_usage_bytes{type="used", instance=~"demo.promlabs.com:1000[01]"}',
    "sum by (type) (demo_memory_usage_bytes)   /   1024",
    'label_replace(demo_num_cpus, "x", "ünïcødé ✓ \' \\" + & = %20 ; #", "", "")',
    'count({__name__=~"demo_.+", job!~"a|b"}) or vector(0)',
    # ~8 KB: what a Grafana multi-value variable expands to
    'count(demo_num_cpus{instance=~"' + "|".join(f"host-{i}.example.com:9100" for i in range(320)) + '|.+"})',
]


@pytest.mark.parametrize("query", AWKWARD)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_awkward_queries_are_signed_correctly(
    query: str,
    method: str,
    gateway: httpx.AsyncClient,
    direct: httpx.AsyncClient,
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
) -> None:
    params = {"query": query, "time": str(int(prometheus.data_end))}
    if method == "GET":
        answer = await gateway.get("/api/v1/query", params=params)
    else:
        answer = await gateway.post("/api/v1/query", data=params)
    assert answer.status_code == 200, answer.text
    assert [r.signature_valid for r in fresh_amp.requests] == [True]
    assert answer.json()["data"] == (await direct.post("/api/v1/query", data=params)).json()["data"]


async def test_repeated_match_and_label_values_by_get(
    gateway: httpx.AsyncClient, direct: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    matches = [("match[]", 'demo_memory_usage_bytes{type="free"}'), ("match[]", "demo_num_cpus"),
               ("match[]", 'http_requests_total{path="/api/items", status=~"5.."}')]  # fmt: skip
    for path in ("/api/v1/series", "/api/v1/labels", "/api/v1/label/instance/values"):
        answer = await gateway.get(path, params=matches)
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"] == (await direct.get(path, params=matches)).json()["data"]
    assert [r.method for r in fresh_amp.requests] == ["POST", "POST", "GET"]
    assert all(r.signature_valid for r in fresh_amp.requests)
    # The query string AMP sees is RFC 3986 strict: brackets and spaces percent-encoded.
    assert "match%5B%5D=" in fresh_amp.requests[2].query and "+" not in fresh_amp.requests[2].query


async def test_temporary_credentials_carry_the_session_token(
    fresh_amp: AmpStandin, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_amp.add_credentials("ASIATEMPORARY1", "temporary-secret", session_token="session-token-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ASIATEMPORARY1")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "temporary-secret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "session-token-1")
    async with gateway_client(gateway_settings(fresh_amp)) as client:
        answer = await client.get("/api/v1/query", params={"query": "demo_num_cpus"})
    assert answer.status_code == 200, answer.text
    (received,) = fresh_amp.requests
    assert received.signature_valid and received.access_key == "ASIATEMPORARY1"
    assert received.header("x-amz-security-token") == "session-token-1"


async def test_client_headers_never_go_upstream(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    await gateway.get(
        "/api/v1/query",
        params={"query": "1+1", "time": "4"},
        headers={
            "authorization": "Bearer client-secret",
            "cookie": "grafana_session=abc",
            "forwarded": "for=10.0.0.1",
            "x-forwarded-for": "10.0.0.1",
            "connection": "keep-alive, x-hop",
            "x-grafana-org-id": "1",
            "x-dashboard-uid": "d1",
        },
    )
    (received,) = fresh_amp.requests
    sent = {name.decode().lower() for name, _ in received.headers}
    assert not sent & {
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-grafana-org-id",
        "x-dashboard-uid",
        "x-hop",
    }
    assert received.header("authorization").startswith("AWS4-HMAC-SHA256 ")
    assert "client-secret" not in received.header("authorization")
    assert "SignedHeaders=host;x-amz-date," in received.header("authorization")
