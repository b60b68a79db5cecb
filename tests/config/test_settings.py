"""Settings: YAML and environment (env wins); a bad setting stops start-up with one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, build_settings, load_settings

AMP_URL = "https://aps-workspaces.eu-west-2.amazonaws.com/workspaces/ws-0123abcd-4567/"


def test_single_workspace_from_environment() -> None:
    settings = build_settings({}, {"GATEWAY_UPSTREAM_URL": AMP_URL, "GATEWAY_LISTEN": "127.0.0.1:9999"})
    (workspace,) = settings.workspaces
    assert workspace.id == "ws-0123abcd-4567" and workspace.region == "eu-west-2"
    assert workspace.url == AMP_URL.rstrip("/") and workspace.sigv4
    assert settings.default_workspace == workspace.id
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 9999)


def test_yaml_workspaces_with_env_winning(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        """
listen: 127.0.0.1:7000
workspaces:
  - url: https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-aaa
    alias: prod
    role_arn: arn:aws:iam::111122223333:role/query
    external_id: xyz
  - id: ws-bbb
    url: https://aps-workspaces.ap-south-1.api.aws/workspaces/ws-bbb
upstream: {timeout: 90s, retries: 5}
cache: {mode: memory, memory_bytes: 64MiB}
"""
    )
    settings = load_settings(str(config), env={"GATEWAY_LISTEN": "127.0.0.1:7001", "GATEWAY_CACHE": "off"})
    assert settings.listen_port == 7001 and settings.cache.mode == "off"
    assert settings.cache.memory_bytes == 64 * 1024 * 1024
    assert [w.id for w in settings.workspaces] == ["ws-aaa", "ws-bbb"]
    assert settings.workspace("prod") is settings.workspaces[0]
    assert settings.workspaces[0].role_arn == "arn:aws:iam::111122223333:role/query"
    assert settings.workspaces[1].region == "ap-south-1"
    assert settings.upstream.timeout == 90 and settings.upstream.retries == 5


@pytest.mark.parametrize(
    ("raw", "env", "message"),
    [
        ({}, {}, "GATEWAY_UPSTREAM_URL: no upstream configured"),
        (
            {},
            {"GATEWAY_UPSTREAM_URL": "ftp://x"},
            "GATEWAY_UPSTREAM_URL: must be an http(s) URL, got 'ftp://x'",
        ),
        ({}, {"GATEWAY_UPSTREAM_URL": "http://127.0.0.1:9090"}, "GATEWAY_REGION: required"),
        (
            {},
            {"GATEWAY_UPSTREAM_URL": AMP_URL, "GATEWAY_LISTEN": "8080"},
            "GATEWAY_LISTEN: must be host:port",
        ),
        (
            {},
            {"GATEWAY_UPSTREAM_URL": AMP_URL, "GATEWAY_SIGV4": "maybe"},
            "GATEWAY_SIGV4: must be true or false",
        ),
        (
            {},
            {"GATEWAY_UPSTREAM_URL": AMP_URL, "GATEWAY_ROLE_ARN": "admin"},
            "GATEWAY_ROLE_ARN: must be an IAM role ARN",
        ),
        (
            {},
            {"GATEWAY_UPSTREAM_URL": AMP_URL, "GATEWAY_CACHE": "disk"},
            "GATEWAY_CACHE: must be off, memory or redis",
        ),
        (
            {"workspaces": [{"url": AMP_URL}], "upstream": {"timeout": "soon"}},
            {},
            "upstream.timeout: must be a duration",
        ),
        (
            {"workspaces": [{"url": AMP_URL}], "upstream": {"retries": -1}},
            {},
            "upstream.retries: must be a whole number",
        ),
        ({"workspaces": [{"url": AMP_URL}], "upstreams": {}}, {}, "upstreams: unknown setting"),
        (
            {"workspaces": [{"url": AMP_URL}, {"url": AMP_URL}]},
            {},
            "workspaces: id or alias 'ws-0123abcd-4567' is used twice",
        ),
        ({"workspaces": [{"url": "http://prom:9090"}]}, {}, "workspaces[0].region: required"),
        (
            {"workspaces": [{"url": AMP_URL}], "default_workspace": "nope"},
            {},
            "default_workspace: 'nope' is not",
        ),
    ],
)
def test_bad_settings_name_the_key(raw: dict[str, object], env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as failure:
        build_settings(raw, env)
    assert str(failure.value).startswith(message)
    assert "\n" not in str(failure.value)


def test_cli_reports_a_bad_setting_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("workspaces:\n  - url: [not, a, url]\n")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 2
    assert (
        done.stderr
        == "amp-gateway: configuration error: workspaces[0].url: must be a URL string, got ['not', 'a', 'url']\n"
    )


def test_cli_reports_broken_yaml_with_its_line(tmp_path: Path) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("listen: 127.0.0.1:1\nworkspaces: [\n")
    done = subprocess.run([sys.executable, "-m", "gateway", "check-config", "--config", str(config)],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 2
    assert "broken.yaml line 3: not valid YAML" in done.stderr
