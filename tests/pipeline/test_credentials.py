"""Credentials from the standard chain and assumed roles, against a local STS stand-in."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.sts_standin import StsStandin
from support.testenv import (
    AMP_REGION,
    EXTERNAL_ID,
    EXTERNAL_ROLE_ARN,
    ROLE_ARN,
    WEB_IDENTITY_TOKEN,
    WEB_ROLE_ARN,
)

QUERY = {"query": "demo_num_cpus"}


def _role_settings(amp: AmpStandin, sts: StsStandin, **workspace: str):  # type: ignore[no-untyped-def]
    return gateway_settings(
        amp,
        raw={
            "workspaces": [
                {"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION, **workspace}
            ],
            "aws": {"sts_region": AMP_REGION},
        },
    )


async def test_assume_role_with_external_id_and_session_name(
    fresh_amp: AmpStandin, fresh_sts: StsStandin, aws_env: dict[str, str]
) -> None:
    settings = _role_settings(
        fresh_amp, fresh_sts, role_arn=EXTERNAL_ROLE_ARN, external_id=EXTERNAL_ID, session_name="grafana-gw"
    )
    async with gateway_client(settings) as client:
        for _ in range(3):
            answer = await client.get("/api/v1/query", params=QUERY)
            assert answer.status_code == 200, answer.text
    (call,) = fresh_sts.calls_for("AssumeRole")  # cached: one STS call for three queries
    assert (call.role_arn, call.external_id, call.session_name) == (
        EXTERNAL_ROLE_ARN,
        EXTERNAL_ID,
        "grafana-gw",
    )
    assert {r.access_key for r in fresh_amp.requests} == {call.issued_access_key}
    assert all(r.signature_valid for r in fresh_amp.requests)


async def test_wrong_external_id_is_a_clear_credentials_error(
    fresh_amp: AmpStandin, fresh_sts: StsStandin, aws_env: dict[str, str]
) -> None:
    settings = _role_settings(fresh_amp, fresh_sts, role_arn=EXTERNAL_ROLE_ARN, external_id="wrong")
    async with gateway_client(settings) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
        metrics = (await client.get("/metrics")).text
    assert answer.status_code == 502
    body = answer.json()
    assert body["errorType"] == "unavailable"
    assert f"assuming role {EXTERNAL_ROLE_ARN} failed: AccessDenied" in body["error"]
    assert aws_env["AWS_SECRET_ACCESS_KEY"] not in answer.text
    assert 'gateway_credential_errors_total{workspace="ws-test1"} 1.0' in metrics
    assert fresh_amp.requests == []


async def test_assumed_credentials_are_refreshed_before_they_expire(
    fresh_amp: AmpStandin, fresh_sts: StsStandin, aws_env: dict[str, str]
) -> None:
    # 10 minutes of validity is inside the 15-minute refresh margin: every use refreshes.
    fresh_sts.issued_duration = 600
    async with gateway_client(_role_settings(fresh_amp, fresh_sts, role_arn=ROLE_ARN)) as client:
        for _ in range(2):
            assert (await client.get("/api/v1/query", params=QUERY)).status_code == 200
    calls = fresh_sts.calls_for("AssumeRole")
    assert len(calls) >= 2
    keys = [r.access_key for r in fresh_amp.requests]
    assert keys[0] != keys[-1]  # the second query used the refreshed credentials


async def test_irsa_web_identity_from_the_environment(
    fresh_amp: AmpStandin,
    fresh_sts: StsStandin,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(WEB_IDENTITY_TOKEN)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AWS_ROLE_ARN", WEB_ROLE_ARN)
    monkeypatch.setenv("AWS_ROLE_SESSION_NAME", "irsa-pod")
    async with gateway_client(gateway_settings(fresh_amp)) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
    assert answer.status_code == 200, answer.text
    (call,) = fresh_sts.calls_for("AssumeRoleWithWebIdentity")
    assert call.role_arn == WEB_ROLE_ARN
    assert fresh_amp.requests[0].access_key == call.issued_access_key


async def test_no_credentials_anywhere(
    fresh_amp: AmpStandin, aws_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    async with gateway_client(gateway_settings(fresh_amp)) as client:
        answer = await client.get("/api/v1/query", params=QUERY)
        ready = await client.get("/-/ready")
    assert answer.status_code == 502
    assert "no AWS credentials found" in answer.json()["error"]
    assert ready.status_code == 503
    assert fresh_amp.requests == []
