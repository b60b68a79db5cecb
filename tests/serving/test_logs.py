"""What a real `amp-gateway serve` process writes: one JSON object per line, from every logger
(the supervisor's, uvicorn's, the workers', the libraries'), with time, level, logger and message,
and the request id on the lines of a request; probes not access-logged unless asked; one
start-up line saying what is served; a warning when no AWS credentials resolve."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import orjson
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.testenv import AMP_REGION


def _raw(amp: AmpStandin, **extra: Any) -> dict[str, Any]:
    return {
        "workspaces": [
            {"id": "ws-test1", "alias": "test", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}
        ],
        "log_level": "debug",
        "access_log": True,
        **extra,
    }


def _lines(process: GatewayProcess) -> list[dict[str, Any]]:
    lines = []
    for number, text in enumerate(process.log.read_text().splitlines(), 1):
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {text!r}") from None
        assert isinstance(line, dict) and {"time", "level", "logger", "message"} <= set(line), text
        assert line["level"] in ("debug", "info", "warning", "error", "critical"), text
        assert line["time"].endswith("Z") and "T" in line["time"], text
        lines.append(line)
    return lines


def test_every_line_is_json_requests_carry_their_id_and_probes_are_quiet(
    fresh_amp: AmpStandin, aws_env: dict[str, str], tmp_path: Path
) -> None:
    process = GatewayProcess(_raw(fresh_amp), tmp_path, aws_env, workers=2).start()

    def ask(path: str, request_id: str, **params: str) -> httpx.Response:
        return httpx.get(process.url + path, params=params, headers={"x-request-id": request_id}, timeout=10)

    try:
        for path in ("/-/healthy", "/-/ready", "/metrics"):
            httpx.get(process.url + path, timeout=10)
        assert ask("/api/v1/query", "logs-test-1", query="demo_num_cpus").status_code == 200
        ask("/no/such/page", "logs-test-3")
        fresh_amp.inject(403, errortype="AccessDeniedException", message="User: arn:aws:sts::123456789012:x")
        # The gateway's own identity refused: a 502, not the client's fault.
        assert ask("/api/v1/query", "logs-test-4", query="up").status_code == 502
        assert ask("/workspaces/ws-nope/api/v1/query", "logs-test-2", query="up").status_code == 404
    finally:
        process.stop()
    lines = _lines(process)
    loggers = {line["logger"] for line in lines}
    assert {"gateway", "gateway.access", "uvicorn.error"} <= loggers, loggers
    access = [line for line in lines if line["logger"] == "gateway.access"]
    assert [(a["path"], a["request_id"]) for a in access] == [
        ("/api/v1/query", "logs-test-1"),
        ("/no/such/page", "logs-test-3"),
        ("/api/v1/query", "logs-test-4"),
        ("/workspaces/ws-nope/api/v1/query", "logs-test-2"),
    ]
    # A line the pipeline writes while serving a request (AMP's refusal, logged) carries its id.
    (amp_line,) = [
        line for line in lines if line["logger"] != "gateway.access" and "123456789012" in line["message"]
    ]
    assert amp_line["request_id"] == "logs-test-4"
    assert access[0]["status"] == 200 and access[0]["message"] == "GET /api/v1/query 200"
    (started,) = [line["message"] for line in lines if "serving http://" in line["message"]]
    assert "with 2 workers" in started and "ws-test1 (test) at 127.0.0.1" in started
    assert "cache: memory" in started and "auth: none" in started
    assert not any(line["level"] == "warning" and "AWS credentials" in line["message"] for line in lines)
    text = process.log.read_text()
    for secret in (aws_env["AWS_SECRET_ACCESS_KEY"], "AWS4-HMAC-SHA256", "Traceback"):
        assert secret not in text


def test_probes_are_logged_when_asked_and_missing_credentials_are_warned_about(
    fresh_amp: AmpStandin, tmp_path: Path
) -> None:
    # No AWS_* credentials, no profile, no instance metadata: the chain finds nothing.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env |= {
        "HOME": str(tmp_path),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    process = GatewayProcess(_raw(fresh_amp, log_probes=True), tmp_path, env, inherit_env=False).start()
    try:
        httpx.get(process.url + "/-/healthy", timeout=10)
    finally:
        process.stop()
    lines = _lines(process)
    assert any(line.get("path") == "/-/healthy" for line in lines if line["logger"] == "gateway.access")
    warnings = [line["message"] for line in lines if line["level"] == "warning"]
    assert any(message.startswith("no AWS credentials found") for message in warnings), warnings
