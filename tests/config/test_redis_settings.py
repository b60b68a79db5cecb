"""The Redis settings of issue 16: the deployment's identity in its keys, a namespace that replaces
it, the HMAC key (a secret: never shown), a second Redis for state."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from gateway.config import ConfigError
from gateway.config.settings import Settings, build_settings, deployment_identity

AMP_URL = "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1"
WORKSPACES = [{"url": AMP_URL}, {"url": AMP_URL.replace("ws-1", "ws-2"), "alias": "two"}]
REDIS = {"redis_url": "redis://redis:6379/0"}
PRINCIPALS: dict[str, Any] = {
    "principals": [
        {
            "name": "team-a",
            "token_sha256": "a" * 64,
            "workspaces": ["ws-1", "ws-2"],
            "enforce": {"team": "a"},
        },
        {"name": "team-b", "token_sha256": "b" * 64, "workspaces": ["*"]},
    ]
}


def settings(env: dict[str, str] | None = None, **raw: Any) -> Settings:
    return build_settings({"workspaces": WORKSPACES, "cache": REDIS, **raw}, env or {})


def test_the_identity_differs_whenever_a_setting_that_matters_does() -> None:
    base = settings(auth="none")
    assert base.fingerprint == base.cache.redis_namespace == deployment_identity(base)
    different = [
        settings(auth="none", limits={"rate": {"per_second": 5}}),
        settings(auth="none", limits={"max_concurrency": 2}),
        settings(auth="none", upstream={"max_concurrency": 4}),
        settings(auth="none", cache={**REDIS, "max_freshness": "5m"}),
        settings(auth="none", aws={"profile": "other"}),
        settings(auth="none", workspaces=[{**WORKSPACES[0], "role_arn": "arn:aws:iam::111122223333:role/r"}]),
        settings(auth="none", workspaces=[WORKSPACES[0], {**WORKSPACES[1], "alias": "deux"}]),
        settings(auth=PRINCIPALS),
        settings(auth={"principals": [{**PRINCIPALS["principals"][0], "enforce": {"team": "b"}}]}),
        settings(auth={"principals": [{**PRINCIPALS["principals"][0], "limits": {"max_concurrency": 1}}]}),
    ]
    prints = [base.fingerprint, *(s.fingerprint for s in different)]
    assert len(set(prints)) == len(prints)
    # Where it listens, logs and runs, and where Redis is, are not the deployment's identity.
    same = [
        settings(auth="none", listen="0.0.0.0:9000", log_level="debug", workers=3, shutdown_grace="5s"),
        settings(
            auth="none",
            cache={
                "redis_url": "redis://elsewhere:6379/1",
                "redis_state_url": "redis://state:6379/0",
                "redis_hmac_key": "k" * 32,
                "memory_bytes": "64MiB",
            },
        ),
    ]
    assert {s.fingerprint for s in same} == {base.fingerprint}


def test_a_configured_namespace_replaces_the_identity() -> None:
    blue = settings(auth="none", cache={**REDIS, "redis_namespace": "dashboards"})
    green = settings(auth=PRINCIPALS, env={"GATEWAY_REDIS_NAMESPACE": "dashboards"})
    assert blue.fingerprint == green.fingerprint == "dashboards"
    for bad in ("", "a{b}", "a:b", "x" * 65):
        with pytest.raises(ConfigError, match=r"cache\.redis_namespace"):
            settings(cache={**REDIS, "redis_namespace": bad})


def test_every_process_computes_the_same_identity() -> None:
    """Sets (a principal's workspaces) are sorted: string hashing differs between processes."""
    script = (
        "from gateway.config.settings import build_settings;"
        f"s = build_settings({{'workspaces': {WORKSPACES!r}, 'auth': {PRINCIPALS!r}}}, {{}});"
        "print(s.fingerprint)"
    )
    prints = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for seed in (1, 2, 3)
    }
    assert prints == {settings(cache={}, auth=PRINCIPALS).fingerprint}


def test_the_hmac_key_is_never_shown() -> None:
    key = "s3cr3t-" + "k" * 32
    loaded = settings(env={"GATEWAY_REDIS_HMAC_KEY": key})
    assert loaded.cache.redis_hmac_key == key
    assert key not in repr(loaded) and key not in str(loaded.cache)
    assert key[:10] not in loaded.fingerprint
    with pytest.raises(ConfigError, match="at least 32 characters") as refused:
        settings(env={"GATEWAY_REDIS_HMAC_KEY": "short-secret"})
    assert "short-secret" not in str(refused.value)


def test_the_state_redis_is_a_second_url_of_the_same_kind() -> None:
    loaded = settings(env={"GATEWAY_REDIS_STATE_URL": "redis://state:6379/0"})
    assert loaded.cache.redis_state_url == "redis://state:6379/0"
    assert settings().cache.redis_state_url is None
    with pytest.raises(ConfigError, match="GATEWAY_REDIS_STATE_URL: must start with"):
        settings(env={"GATEWAY_REDIS_STATE_URL": "http://state"})
    with pytest.raises(ConfigError, match="needs GATEWAY_REDIS_URL"):
        build_settings({"workspaces": WORKSPACES, "cache": {"redis_state_url": "redis://s"}}, {})


def test_results_are_kept_a_day_and_entries_capped_by_default() -> None:
    loaded = settings()
    assert loaded.cache.results_ttl == 24 * 3600
    assert loaded.cache.redis_max_entry_bytes == 4 * 1024 * 1024
    assert settings(cache={**REDIS, "redis_max_entry_bytes": "1MiB"}).cache.redis_max_entry_bytes == 1 << 20
