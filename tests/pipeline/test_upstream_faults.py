"""Retries, throttling, timeouts and AMP's own errors, as a client of the gateway sees them."""

from __future__ import annotations

import asyncio
import logging

import httpx
import orjson
import pytest
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.netutil import free_port

from gateway.config import build_settings

QUERY = {"query": "demo_num_cpus"}


async def test_throttling_and_5xx_are_retried_until_success(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    fresh_amp.inject(429, count=2)
    fresh_amp.inject(503, count=1)
    answer = await gateway.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 200, answer.text
    assert [r.status for r in fresh_amp.requests] == [429, 429, 503, 200]
    metrics = (await gateway.get("/metrics")).text
    assert 'gateway_upstream_retries_total{reason="throttled",workspace="ws-test1"} 2.0' in metrics
    assert 'gateway_upstream_throttled_total{workspace="ws-test1"} 2.0' in metrics


async def test_throttling_that_outlives_retries_is_429_with_retry_after(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    fresh_amp.inject(429, count=None)
    answer = await gateway.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 429
    assert answer.headers["retry-after"].isdigit()
    body = answer.json()
    assert body["status"] == "error" and body["errorType"] == "too_many_requests"
    assert "throttling" in body["error"] and "ws-test1" in body["error"]
    assert "[AMP request id " in body["error"]
    assert len(fresh_amp.requests) == 4  # the first try and 3 retries (the default bound)


async def test_client_errors_are_not_retried(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    envelope = orjson.dumps(
        {"status": "error", "errorType": "execution", "error": "query processing would load too many samples"}
    )
    fresh_amp.inject(422, body=envelope)
    answer = await gateway.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 422
    assert answer.json() == orjson.loads(envelope)  # a Prometheus envelope passes through as it is
    assert len(fresh_amp.requests) == 1


@pytest.mark.parametrize(
    ("status", "errortype", "message", "code", "words"),
    [
        (
            403,
            "InvalidSignatureException",
            "The request signature we calculated does not match",
            502,
            "rejected the signature",
        ),
        (
            403,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
            502,
            "refused the gateway's AWS credentials",
        ),
        (
            403,
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/amp-query/i-0abc is not authorized to perform: aps:QueryMetrics",
            502,
            "aps:QueryMetrics",
        ),
        (404, "ResourceNotFoundException", "Workspace not found", 502, "has no workspace ws-test1"),
        (400, "ValidationException", "1 validation error detected", 400, "AMP rejected the request"),
        (500, "InternalServerException", "Internal failure", 502, "failed with HTTP 500"),
    ],
)
async def test_amp_errors_become_prometheus_envelopes_that_say_what_to_fix(
    status: int,
    errortype: str,
    message: str,
    code: int,
    words: str,
    gateway: httpx.AsyncClient,
    fresh_amp: AmpStandin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fresh_amp.inject(status, errortype=errortype, message=message)
    with caplog.at_level(logging.WARNING, logger="gateway.upstream"):
        answer = await gateway.get("/api/v1/query", params=QUERY)
    assert answer.status_code == code
    body = answer.json()
    assert set(body) == {"status", "errorType", "error"} and body["status"] == "error"
    assert words in body["error"]
    assert "[AMP request id " in body["error"]
    assert "arn:" not in body["error"] and "123456789012" not in body["error"]
    if code == 502 and status in (400, 403, 404):
        # About the gateway's own identity: AMP's words (role ARN, account) only in the log.
        assert message not in body["error"] and "gateway's log" in body["error"]
        assert any(message in r.getMessage() for r in caplog.records)
    else:
        assert message in body["error"]  # AMP's words about the request, for the client


async def test_wrong_secret_is_reported_as_a_signature_problem(
    fresh_amp: AmpStandin, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with gateway_client(gateway_settings(fresh_amp)) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
        metrics = (await client.get("/metrics")).text
    assert answer.status_code == 502
    assert "rejected the signature" in answer.json()["error"]
    assert "not-the-secret" not in answer.text and "not-the-secret" not in metrics
    assert 'gateway_signing_errors_total{workspace="ws-test1"} 1.0' in metrics


async def test_missing_signature_names_the_sigv4_setting(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    settings = gateway_settings(fresh_amp, raw={"workspaces": [
        {"id": "ws-test1", "url": fresh_amp.workspace_url("ws-test1"), "sigv4": False}]})  # fmt: skip
    async with gateway_client(settings) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 502
    assert "enable SigV4" in answer.json()["error"]


async def test_slow_upstream_times_out_with_the_clients_timeout(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    fresh_amp.inject_delay(3.0)
    answer = await gateway.get("/api/v1/query", params={**QUERY, "timeout": "500ms"})
    assert answer.status_code == 503
    body = answer.json()
    assert body["errorType"] == "timeout" and "0.5s" in body["error"]
    # The timeout went upstream too, so the upstream can stop work early.
    assert (
        fresh_amp.requests[0].body.decode().endswith("timeout=500ms")
        or "timeout=500ms" in fresh_amp.requests[0].body.decode()
    )


async def test_unreachable_upstream_is_503_unavailable(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    dead = f"http://127.0.0.1:{free_port()}/workspaces/ws-dead"
    settings = gateway_settings(
        fresh_amp, raw={"workspaces": [{"id": "ws-dead", "url": dead, "region": "us-east-1"}]}
    )
    async with gateway_client(settings) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
        ready = await client.get("/-/ready")
    assert answer.status_code == 503
    body = answer.json()
    assert (
        body["errorType"] == "unavailable"
        and "unreachable" in body["error"]
        and "4 attempt(s)" in body["error"]
    )
    assert ready.status_code == 503 and ready.json()["ready"] is False


async def test_timeout_is_capped_by_configuration(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> None:
    settings = gateway_settings(fresh_amp, raw={"upstream": {"timeout": "30s"}})
    async with gateway_client(settings) as client:
        answer = await client.get("/api/v1/query", params={**QUERY, "timeout": "10m"})
    assert answer.status_code == 200
    assert "timeout=30s" in fresh_amp.requests[0].body.decode()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: abc\r\n\r\n",  # a header aiohttp refuses
        b"HTTP/1.1 2OO OK\r\n\r\n",  # a bad status line
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{}",  # cut short
    ],
)
async def test_an_answer_the_gateway_cannot_read_is_a_502_not_a_crash(answer: bytes) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    raw = {"upstream_url": f"http://127.0.0.1:{port}", "sigv4": False, "upstream": {"retries": 0}}
    try:
        async with gateway_client(build_settings(raw, {})) as client:
            reply = await client.get("/api/v1/query", params=QUERY)
            again = await client.get("/api/v1/query", params=QUERY)
    finally:
        server.close()
    assert reply.status_code in (502, 503), reply.text
    assert reply.json()["errorType"] == "unavailable" and "127.0.0.1" in reply.json()["error"]
    assert again.status_code == reply.status_code
