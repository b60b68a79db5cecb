"""Hygiene: security headers, CORS allow-list, client headers not forwarded, only configured hosts,
and label enforcement that leaves a principal's own answers exactly as Prometheus gives them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import orjson
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.prometheus import PrometheusServer

from .conftest import ADMIN_AUTH, forwarded_params, principals, secure_settings, sha

QUERIES = Path(__file__).resolve().parents[3] / "shared" / "promql-compliance" / "queries.jsonl"


async def test_security_headers_on_every_response(secure: httpx.AsyncClient) -> None:
    for response in (
        await secure.get("/api/v1/query", params={"query": "1"}, headers=ADMIN_AUTH),
        await secure.get("/api/v1/query", params={"query": "1"}),
        await secure.get("/no/such/page"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
    page = await secure.get("/")
    if page.headers.get("content-type", "").startswith("text/html"):
        assert page.headers["content-security-policy"]


async def test_cors_is_off_unless_origins_are_allowed(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> None:
    origin = {"Origin": "https://grafana.example.com"}
    preflight = {
        **origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization",
    }
    async with gateway_client(secure_settings(fresh_amp)) as client:
        plain = await client.get("/api/v1/query", params={"query": "1"}, headers={**ADMIN_AUTH, **origin})
        assert "access-control-allow-origin" not in plain.headers
        assert (
            "access-control-allow-origin"
            not in (await client.options("/api/v1/query", headers=preflight)).headers
        )
    settings = secure_settings(fresh_amp, {"cors": {"allow_origins": ["https://grafana.example.com"]}})
    async with gateway_client(settings) as client:
        allowed = await client.options("/api/v1/query", headers=preflight)
        assert allowed.headers["access-control-allow-origin"] == "https://grafana.example.com"
        assert "access-control-allow-credentials" not in allowed.headers
        evil = await client.get(
            "/api/v1/query", params={"query": "1"}, headers={**ADMIN_AUTH, "Origin": "https://evil.example"}
        )
        assert "access-control-allow-origin" not in evil.headers


async def test_client_headers_are_not_forwarded(secure: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    sneaky = {
        "X-Scope-OrgID": "other-tenant",
        "X-Amz-Security-Token": "forged",
        "Cookie": "session=abc",
        "X-Forwarded-For": "1.2.3.4",
        "X-Custom": "1",
        "Host": "evil.example",
    }
    response = await secure.post("/api/v1/query", data={"query": "1"}, headers={**ADMIN_AUTH, **sneaky})
    assert response.status_code == 200
    [record] = fresh_amp.requests
    names = {k.decode().lower() for k, _ in record.headers}
    assert not names & {"x-scope-orgid", "x-amz-security-token", "cookie", "x-forwarded-for", "x-custom"}
    values = b" ".join(v for _, v in record.headers)
    for value in (b"other-tenant", b"forged", b"evil.example", ADMIN_AUTH["Authorization"].encode()):
        assert value not in values
    assert record.signature_valid


async def test_only_configured_workspaces_and_hosts_are_contacted(
    secure: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    for path in (
        "/workspaces/evil.example/api/v1/query",
        "/workspaces/ws-test3/api/v1/query",
        "/workspaces/..%2F..%2Fws-test2/api/v1/query",
        "/api/v1/label/..%2F..%2Fquery/values",
        "/api/v1/admin/tsdb/delete_series",
        "/api/v1/write",
    ):
        response = await secure.post(path, data={"query": "1"}, headers=ADMIN_AUTH)
        assert response.status_code in (400, 404), (path, response.text)
        assert response.json()["status"] == "error"
    assert fresh_amp.requests == []
    # Parameters the endpoint does not know are dropped, not forwarded.
    await secure.post(
        "/api/v1/query", data={"query": "1", "evil": "x", "X-Amz-Date": "1"}, headers=ADMIN_AUTH
    )
    [record] = fresh_amp.requests
    # (and stats=all, which the cost meter asks of every query: AMP says what it billed)
    assert forwarded_params(record) == [("query", "1"), ("stats", "all")]


async def test_errors_carry_no_stack_trace_and_upstream_errors_no_signature(
    secure: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    fresh_amp.inject(
        403, errortype="InvalidSignatureException", message="The request signature we calculated"
    )
    response = await secure.post("/api/v1/query", data={"query": "1"}, headers=ADMIN_AUTH)
    text = response.text
    assert response.status_code >= 400 and response.json()["status"] == "error"
    assert "Traceback" not in text and "Signature=" not in text and fresh_amp.access_key not in text


async def test_enforcement_keeps_the_principals_own_answers_identical(
    fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus: PrometheusServer
) -> None:
    """All 539 compliance queries only read job="demo" data: a principal enforced to job="demo"
    must get exactly what Prometheus answers directly (the rewrite changes nothing else), except
    that absent() shows the enforced label, as it does behind prom-label-proxy."""
    items = [
        *principals(),
        {"name": "demo", "token_sha256": sha("demo-token"), "workspaces": ["*"], "enforce": {"job": "demo"}},
    ]
    settings = gateway_settings(fresh_amp, {"auth": {"principals": items}})
    cases = [json.loads(line) for line in QUERIES.read_text().splitlines() if line.strip()]
    end = int(prometheus.data_end) - 12 * 60
    window = {"start": str(end - 600), "end": str(end), "step": "10s"}
    limit = asyncio.Semaphore(8)
    mismatches: list[str] = []
    async with gateway_client(settings) as gateway, httpx.AsyncClient(base_url=prometheus.url) as direct:

        async def check(case: dict[str, object]) -> None:
            if case["should_fail"]:
                return
            data = {"query": str(case["query"]), **window}
            async with limit:
                via, ref = await asyncio.gather(
                    gateway.post(
                        "/api/v1/query_range", data=data, headers={"Authorization": "Bearer demo-token"}
                    ),
                    direct.post("/api/v1/query_range", data=data),
                )
            if via.status_code != ref.status_code:
                mismatches.append(
                    f"{case['query']}: {via.status_code} != {ref.status_code}: {via.text[:150]}"
                )
            else:
                got, want = orjson.loads(via.content).get("data"), orjson.loads(ref.content).get("data")
                if "absent" in str(case["query"]):
                    # absent() builds its labels from equality matchers: the enforced one shows.
                    for item in got["result"]:
                        assert item["metric"].pop("job") == "demo"
                if got != want:
                    mismatches.append(f"{case['query']}: data differs")

        await asyncio.gather(*(check(case) for case in cases))
    assert mismatches == []
    assert len(fresh_amp.requests) > 400
