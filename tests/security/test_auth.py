"""Inbound authentication and authorization: tokens, basic auth, trusted proxy, 401/403, config."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import LiveGateway, gateway_client, gateway_settings

from gateway.config import ConfigError, build_settings

from .conftest import (
    ADMIN_AUTH,
    EXPIRED_TOKEN,
    NODE_AUTH,
    NODE_TOKEN,
    REC_AUTH,
    REC_PASSWORD,
    REC_USER,
    basic,
    bearer,
    principals,
    sha,
)

QUERY = {"query": "1"}


def assert_error(response: httpx.Response, status: int, error_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == error_type, body
    return body


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer "},
        {"Authorization": "Token abc"},
        {"Authorization": "Basic"},
    ],
    ids=["none", "empty", "bearer-no-token", "bearer-blank", "other-scheme", "basic-empty"],
)
async def test_missing_credentials_get_401_in_the_prometheus_envelope(
    secure: httpx.AsyncClient, fresh_amp: AmpStandin, headers: dict[str, str]
) -> None:
    response = await secure.post("/api/v1/query", data=QUERY, headers=headers)
    body = assert_error(response, 401, "unauthorized")
    assert "Bearer" in body["error"]
    assert response.headers["www-authenticate"].startswith("Basic ")  # what browsers answer
    assert "Bearer" in response.headers["www-authenticate"]
    assert fresh_amp.requests == []


@pytest.mark.parametrize(
    "headers",
    [
        bearer(NODE_TOKEN + "x"),
        bearer(NODE_TOKEN[:-1]),
        bearer(NODE_TOKEN.upper()),
        bearer(sha(NODE_TOKEN)),  # the stored hash is not a credential
        basic(REC_USER, REC_PASSWORD + "x"),
        basic(REC_USER + "x", REC_PASSWORD),
        basic("team-rec", REC_PASSWORD),  # the principal name is not its username here
        basic(REC_USER, ""),
        {"Authorization": "Basic !!!not-base64"},
        {"Authorization": "Basic " + "bm9jb2xvbg=="},  # "nocolon"
        bearer(REC_PASSWORD),  # a password is not a token
    ],
)
async def test_wrong_credentials_get_401(
    secure: httpx.AsyncClient, fresh_amp: AmpStandin, headers: dict[str, str]
) -> None:
    response = await secure.get("/api/v1/query", params=QUERY, headers=headers)
    body = assert_error(response, 401, "unauthorized")
    assert body["error"] == "the credentials are not valid"
    assert fresh_amp.requests == []


async def test_expired_credentials_get_401_saying_so(
    secure: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    response = await secure.post("/api/v1/query", data=QUERY, headers=bearer(EXPIRED_TOKEN))
    body = assert_error(response, 401, "unauthorized")
    assert "expired" in body["error"]
    assert fresh_amp.requests == []


async def test_bearer_token_and_basic_auth_are_accepted(secure: httpx.AsyncClient) -> None:
    for headers in (NODE_AUTH, REC_AUTH, ADMIN_AUTH, {"Authorization": f"bearer  {NODE_TOKEN} "}):
        response = await secure.post("/api/v1/query", data=QUERY, headers=headers)
        assert response.status_code == 200, response.text


async def test_workspace_not_granted_is_403(secure: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    # team-node may query `test` (the alias of ws-test1), by id or alias, and nothing else.
    for path in ("/api/v1/query", "/workspaces/test/api/v1/query", "/workspaces/ws-test1/api/v1/query"):
        assert (await secure.post(path, data=QUERY, headers=NODE_AUTH)).status_code == 200
    fresh_amp.reset()
    response = await secure.post("/workspaces/ws-test2/api/v1/query", data=QUERY, headers=NODE_AUTH)
    body = assert_error(response, 403, "forbidden")
    assert "ws-test2" in body["error"]
    assert fresh_amp.requests == []
    ok = await secure.post("/workspaces/ws-test2/api/v1/query", data=QUERY, headers=REC_AUTH)
    assert ok.status_code == 200


async def test_local_endpoints_need_credentials_too(secure: httpx.AsyncClient) -> None:
    for path in ("/api/v1/status/buildinfo", "/api/v1/format_query", "/api/v1/parse_query"):
        assert_error(await secure.get(path, params={"query": "up"}), 401, "unauthorized")
        assert (await secure.get(path, params={"query": "up"}, headers=ADMIN_AUTH)).status_code == 200


async def test_no_credential_reaches_logs_metrics_errors_or_upstream(
    secure: httpx.AsyncClient, fresh_amp: AmpStandin, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = NODE_TOKEN + "-wrong"
    answers = [
        await secure.post("/api/v1/query", data=QUERY, headers=NODE_AUTH),
        await secure.post("/api/v1/query", data=QUERY, headers=bearer(wrong)),
        await secure.post("/api/v1/query", data=QUERY, headers=REC_AUTH),
        await secure.post("/api/v1/query", data={"query": "up{"}, headers=NODE_AUTH),
        await secure.post("/workspaces/ws-test2/api/v1/query", data=QUERY, headers=NODE_AUTH),
    ]
    metrics = (await secure.get("/metrics")).text
    assert 'gateway_auth_failures_total{reason="invalid"} 1.0' in metrics
    secrets = [NODE_TOKEN, wrong, REC_PASSWORD, sha(NODE_TOKEN), fresh_amp.secret_key]
    secrets += [REC_AUTH["Authorization"].split()[1]]
    texts = [metrics, caplog.text, *(a.text + str(a.headers) for a in answers)]
    texts += [repr(r.headers) + r.query + r.body.decode("latin-1") for r in fresh_amp.requests]
    assert fresh_amp.requests, "nothing was forwarded; the upstream check would be vacuous"
    for secret in secrets:
        for text in texts:
            assert secret not in text


# ---------------------------------------------------------------- trusted proxy header


def _proxy_settings(amp: AmpStandin, trusted: list[str]) -> Any:
    items = [*principals(), {"name": "alice@example.com", "workspaces": ["*"], "enforce": {"job": "node"}}]
    return gateway_settings(
        amp,
        {
            "auth": {
                "principals": items,
                "proxy": {"header": "X-Forwarded-User", "trusted_addresses": trusted},
            }
        },
    )


async def _live_get(settings: Any, headers: dict[str, str]) -> httpx.Response:
    gateway = LiveGateway(settings)
    # As `amp-gateway serve` runs it: the client address is the socket peer, X-Forwarded-For is
    # not believed (uvicorn's default would believe it from 127.0.0.1).
    gateway._server.config.proxy_headers = False
    gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            return await client.post("/api/v1/query", data={"query": "count(up)"}, headers=headers)
    finally:
        await asyncio.to_thread(gateway.stop)


async def test_proxy_header_from_a_trusted_address_names_the_principal(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    settings = _proxy_settings(fresh_amp, ["127.0.0.1/32"])
    response = await _live_get(settings, {"X-Forwarded-User": "alice@example.com"})
    assert response.status_code == 200, response.text
    # alice's enforcement applied: the forwarded query carries job="node".
    assert 'job="node"' in fresh_amp.forwarded[-1].body.decode().replace("%22", '"').replace("%3D", "=")
    unknown = await _live_get(settings, {"X-Forwarded-User": "mallory"})
    assert_error(unknown, 401, "unauthorized")


async def test_proxy_header_from_an_untrusted_address_is_ignored(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    settings = _proxy_settings(fresh_amp, ["10.0.0.0/8"])
    # The socket peer is 127.0.0.1, not a trusted proxy: the header proves nothing.
    response = await _live_get(settings, {"X-Forwarded-User": "admin", "X-Forwarded-For": "10.0.0.1"})
    assert_error(response, 401, "unauthorized")
    assert fresh_amp.requests == []
    # Credentials still work from there.
    assert (await _live_get(settings, NODE_AUTH)).status_code == 200


# ---------------------------------------------------------------- configuration


ONE = {"name": "a", "token_sha256": sha("t"), "workspaces": ["*"]}


def _build(raw: dict[str, Any], env: dict[str, str] | None = None) -> Any:
    base = {"upstream_url": "https://aps-workspaces.us-east-1.amazonaws.com/workspaces/ws-1"}
    return build_settings({**base, **raw}, env or {})


@pytest.mark.parametrize(
    ("raw", "env", "key"),
    [
        ({}, {"GATEWAY_LISTEN": "0.0.0.0:8080"}, "auth:"),
        ({"listen": ":8080"}, {}, "auth:"),
        ({"listen": "10.1.2.3:8080"}, {}, "auth:"),
        ({"auth": "yes"}, {}, "auth:"),
        ({"auth": {"principals": []}}, {}, "auth.principals:"),
        ({"auth": {"principals": [{"name": "a", "workspaces": ["*"]}]}}, {}, "auth.principals[0]:"),
        (
            {"auth": {"principals": [{"name": "a", "token_sha256": "abc", "workspaces": ["*"]}]}},
            {},
            "auth.principals[0].token_sha256:",
        ),
        (
            {"auth": {"principals": [{"name": "a", "token_sha256": sha("t")}]}},
            {},
            "auth.principals[0].workspaces:",
        ),
        (
            {"auth": {"principals": [{"name": "a", "token_sha256": sha("t"), "workspaces": ["ws-9"]}]}},
            {},
            "auth.principals[0].workspaces:",
        ),
        (
            {
                "auth": {
                    "principals": [
                        {"name": "a", "token_sha256": sha("t"), "workspaces": ["*"], "enforce": {"team": ""}}
                    ]
                }
            },
            {},
            "auth.principals[0].enforce.team:",
        ),
        (
            {
                "auth": {
                    "principals": [
                        {"name": "a", "token_sha256": sha("t"), "workspaces": ["*"]},
                        {"name": "b", "token_sha256": sha("t"), "workspaces": ["*"]},
                    ]
                }
            },
            {},
            "auth.principals:",
        ),
        ({"limits": {"max_points": 0}}, {}, "limits.max_points:"),
        ({"limits": {"rate": {"per_second": -1}}}, {}, "limits.rate.per_second:"),
        ({"limits": {"max_rnage": "1d"}}, {}, "limits.max_rnage:"),
        (
            {"auth": {"principals": [ONE], "cors": {"allow_origins": ["*"]}}},
            {},
            "auth.cors.allow_origins:",
        ),
        (
            {"auth": {"principals": [ONE], "proxy": {"header": "X-User"}}},
            {},
            "auth.proxy.trusted_addresses:",
        ),
    ],
)
def test_bad_access_settings_name_the_key(raw: dict[str, Any], env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _build(raw, env)
    assert str(caught.value).startswith(key), str(caught.value)
    assert "\n" not in str(caught.value)


def test_exposing_without_auth_needs_an_explicit_none(caplog: pytest.LogCaptureFixture) -> None:
    assert not _build({}).auth.enabled  # loopback by default: fine
    assert not _build({"auth": "none", "listen": "0.0.0.0:8080"}).auth.enabled
    settings = _build({}, {"GATEWAY_LISTEN": "0.0.0.0:8080", "GATEWAY_AUTH": "none"})
    from gateway.app import create_app

    with caplog.at_level(logging.WARNING, logger="gateway"):
        create_app(settings)
    assert "auth: none" in caplog.text


def test_token_hashes_are_only_hex_digests() -> None:
    item = {"name": "a", "token_sha256": NODE_TOKEN, "workspaces": ["*"]}
    with pytest.raises(ConfigError, match="64 hex digits"):
        _build({"auth": {"principals": [item]}})


async def test_anonymous_on_loopback_still_gets_limits(
    fresh_amp: AmpStandin, aws_env: dict[str, str]
) -> None:
    settings = gateway_settings(fresh_amp, {"limits": {"max_query_length": 10}})
    async with gateway_client(settings) as client:
        ok = await client.post("/api/v1/query", data={"query": "up"})
        too_long = await client.post("/api/v1/query", data={"query": "count(up) + 1"})
    assert ok.status_code == 200
    assert_error(too_long, 400, "bad_data")
