"""Authenticate first, everywhere: pages and dashboards behind the API's auth; failed sign-ins
throttled per client address and per user name, known or not (the answers never tell a known
name), through Redis when it is there; the proxy header honours expiry and is refused when it
comes more than once or names several users."""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest
from starlette.datastructures import Headers
from support.amp_standin import AmpStandin
from support.gateway import gateway_settings
from support.redis_server import RedisServer

from gateway.app import create_app
from gateway.config import AuthSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.authenticate import Authenticator
from gateway.pipeline.shared import SharedRedis

from .conftest import NODE_AUTH, REC_PASSWORD, REC_USER, principals

FAILURES_PER_ADDRESS = AuthSettings(enabled=True).failures_per_address
FAILURES_PER_PRINCIPAL = AuthSettings(enabled=True).failures_per_principal


def _app(amp: AmpStandin, **panels: Any) -> Any:
    raw: dict[str, Any] = {"auth": {"principals": principals()}}
    if panels:
        raw["panels"] = panels
    return create_app(gateway_settings(amp, raw))


def _client(app: Any, address: str = "192.0.2.10") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30)


PAGES = [
    ("/dashboards", "html"),
    ("/dashboards/demo", "html"),
    ("/dashboards/demo/grafana.json", "json"),
    ("/dashboards/demo/panels/0.json", "json"),
    ("/panels/query?query=" + "(" * 3000, "html"),  # refused before the query is read
    ("/panels/query.json?query=up", "json"),
    ("/panels/rate?metric=up", "html"),
    ("/workspaces/test/panels/rate.json?metric=up", "json"),
]


@pytest.mark.parametrize(("path", "kind"), PAGES)
async def test_pages_and_dashboards_need_credentials(
    path: str, kind: str, fresh_amp: AmpStandin, aws_env
) -> None:
    app = _app(fresh_amp)
    async with app.router.lifespan_context(app), _client(app) as client:
        anonymous = await client.get(path)
        signed = await client.get(path, headers=NODE_AUTH)
    assert anonymous.status_code == 401, anonymous.text[:300]
    assert "Bearer" in anonymous.headers["www-authenticate"]
    if kind == "json":
        assert anonymous.json()["errorType"] == "unauthorized"
    else:
        assert "text/html" in anonymous.headers["content-type"]
        assert "demo" not in anonymous.text.lower() or "sign in" in anonymous.text.lower()
    assert signed.status_code != 401, signed.text[:300]
    assert fresh_amp.requests == [] or all(r.signature_valid for r in fresh_amp.requests)


async def test_public_pages_are_an_explicit_setting(fresh_amp: AmpStandin, aws_env) -> None:
    app = _app(fresh_amp, public=True)
    async with app.router.lifespan_context(app), _client(app) as client:
        assert (await client.get("/dashboards")).status_code == 200
        assert (await client.get("/dashboards/demo/grafana.json")).status_code == 200
        # the data behind a public page still needs the API's credentials
        assert (await client.get("/panels/query.json?query=up")).status_code == 401


async def test_failed_sign_ins_are_throttled_per_address(fresh_amp: AmpStandin, aws_env) -> None:
    app = _app(fresh_amp)
    bad = {"authorization": "Bearer not-a-token"}
    right_password = {
        "authorization": "Basic " + base64.b64encode(f"{REC_USER}:{REC_PASSWORD}".encode()).decode()
    }
    async with (
        app.router.lifespan_context(app),
        _client(app, "192.0.2.20") as guesser,
        _client(app, "192.0.2.21") as other,
    ):
        for _ in range(FAILURES_PER_ADDRESS):
            assert (await guesser.get("/api/v1/labels", headers=bad)).status_code == 401
        blocked = await guesser.get("/api/v1/labels", headers=bad)
        # From that address a password is refused even when right (passwords can be guessed);
        # a right token passes (tokens cannot be: others behind the same address keep working).
        password_blocked = await guesser.get("/api/v1/labels", headers=right_password)
        token_ok = await guesser.get("/api/v1/labels", headers=NODE_AUTH)
        elsewhere = await other.get("/api/v1/labels", headers=right_password)
        metrics = app.state.metrics
    for answer in (blocked, password_blocked):
        assert answer.status_code == 429, answer.text
        assert answer.json()["errorType"] == "too_many_requests"
        assert 1 <= int(answer.headers["retry-after"]) <= 60
    assert token_ok.status_code == 200
    assert elsewhere.status_code == 200
    assert metrics.auth_failures.labels("throttled")._value.get() == 2


async def test_failed_sign_ins_are_throttled_per_principal(fresh_amp: AmpStandin, aws_env) -> None:
    app = _app(fresh_amp)
    wrong = "Basic " + base64.b64encode(f"{REC_USER}:wrong".encode()).decode()
    right = "Basic " + base64.b64encode(f"{REC_USER}:{REC_PASSWORD}".encode()).decode()
    async with app.router.lifespan_context(app):
        for i in range(FAILURES_PER_PRINCIPAL):  # spread over addresses, each under its own limit
            async with _client(app, f"198.51.100.{i}") as client:
                assert (
                    await client.get("/api/v1/labels", headers={"authorization": wrong})
                ).status_code == 401
        async with _client(app, "203.0.113.7") as fresh:
            locked = await fresh.get("/api/v1/labels", headers={"authorization": right})
            others = await fresh.get("/api/v1/labels", headers=NODE_AUTH)
    assert locked.status_code == 429, locked.text
    assert "team-rec" not in locked.json()["error"]  # says "this user", not who it is
    assert "retry-after" in locked.headers
    assert others.status_code == 200


def _basic(user: str, password: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def _failures(app: Any, user: str, count: int, same_address: bool) -> list[tuple[int, str, str, str]]:
    """(status, body, WWW-Authenticate, Retry-After present) of `count` wrong passwords for `user`."""
    seen = []
    for i in range(count):
        address = "192.0.2.50" if same_address else f"198.51.100.{i}"
        async with _client(app, address) as client:
            answer = await client.get("/api/v1/labels", headers=_basic(user, f"guess-{i}"))
        retry = answer.headers.get("retry-after")
        if retry is not None:
            assert 1 <= int(retry) <= 60
        body = answer.text.replace(f"in {retry} s", "in N s") if retry else answer.text
        seen.append(
            (answer.status_code, body, answer.headers.get("www-authenticate", ""), str(retry is not None))
        )
    return seen


@pytest.mark.parametrize("same_address", [False, True])
async def test_a_known_and_an_unknown_user_name_get_the_same_answers(
    same_address: bool, fresh_amp: AmpStandin, aws_env
) -> None:
    # 40 wrong passwords for a configured user name and for one nobody has, each in a fresh
    # gateway: spread over addresses (the user name's limit, 30), or from one (the address's, 10).
    answers = []
    for user in (REC_USER, "nobody-has-this-name"):
        app = _app(fresh_amp)
        async with app.router.lifespan_context(app):
            answers.append(await _failures(app, user, 40, same_address))
    known, unknown = answers
    assert known == unknown
    limit = FAILURES_PER_ADDRESS if same_address else FAILURES_PER_PRINCIPAL
    assert [status for status, *_ in known] == [401] * limit + [429] * (40 - limit)
    assert ("this address" if same_address else "this user") in known[-1][1]


def _authenticator(
    settings: Any, redis: RedisServer | None = None
) -> tuple[Authenticator, SharedRedis | None]:
    metrics = Metrics()
    shared = SharedRedis(settings.cache, metrics) if redis is not None else None
    return Authenticator(settings.auth, metrics, shared=shared), shared


async def _sign_in(authenticator: Authenticator, user: str, password: str, address: str) -> int:
    try:
        await authenticator.authenticate(Headers(_basic(user, password)), address)
    except GatewayError as err:
        return err.status
    return 200


@pytest.mark.parametrize("user", [REC_USER, "nobody-has-this-name"])
async def test_failed_sign_ins_are_counted_in_redis_by_every_process(
    user: str, fresh_amp: AmpStandin, aws_env, redis_server: RedisServer
) -> None:
    # Two processes' authenticators on one Redis: failures alternate between them and the
    # user name is throttled after the configured count in all, not after twice as many.
    raw = {"auth": {"principals": principals()}, "cache": {"mode": "off", "redis_url": redis_server.url}}
    settings = gateway_settings(fresh_amp, raw)
    pairs = [_authenticator(settings, redis_server) for _ in range(2)]
    for _, shared in pairs:
        assert shared is not None
        await shared.connect()
    try:
        codes = [
            await _sign_in(pairs[i % 2][0], user, "wrong", f"198.51.100.{i}")
            for i in range(FAILURES_PER_PRINCIPAL + 2)
        ]
        assert codes == [401] * FAILURES_PER_PRINCIPAL + [429] * 2
        # Right credentials are refused too while the name is throttled, in either process.
        if user == REC_USER:
            assert await _sign_in(pairs[0][0], REC_USER, REC_PASSWORD, "203.0.113.9") == 429
        # Redis holds digests, never the names or addresses.
        stored = b" ".join(redis_server.keys())
        assert b"sign_in:user:" in stored and user.encode() not in stored and b"198.51.100" not in stored

        # Redis goes: each process counts on its own (it kept its own counts meanwhile).
        redis_server.stop()
        fresh = [
            await _sign_in(pairs[0][0], "another-name", "wrong", f"192.0.2.{i}")
            for i in range(FAILURES_PER_PRINCIPAL + 1)
        ]
        assert fresh == [401] * FAILURES_PER_PRINCIPAL + [429]
    finally:
        for _, shared in pairs:
            assert shared is not None
            await shared.aclose()


def _proxy_app(amp: AmpStandin) -> Any:
    items = [
        *principals(),
        {"name": "alice", "workspaces": ["*"]},
        {"name": "gone", "workspaces": ["*"], "expires": "2020-01-01T00:00:00Z"},
    ]
    raw = {
        "auth": {
            "principals": items,
            "proxy": {"header": "X-Forwarded-User", "trusted_addresses": ["192.0.2.0/24"]},
        }
    }
    return create_app(gateway_settings(amp, raw))


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ([("x-forwarded-user", "alice")], 200),
        ([("x-forwarded-user", "gone")], 401),
        ([("x-forwarded-user", "alice"), ("x-forwarded-user", "admin")], 401),
        ([("x-forwarded-user", "admin"), ("x-forwarded-user", "alice")], 401),
        ([("x-forwarded-user", "alice, admin")], 401),
        ([("x-forwarded-user", "")], 401),
    ],
)
async def test_the_proxy_header_names_exactly_one_current_user(
    headers: list[tuple[str, str]], status: int, fresh_amp: AmpStandin, aws_env
) -> None:
    app = _proxy_app(fresh_amp)
    async with app.router.lifespan_context(app), _client(app, "192.0.2.5") as client:
        answer = await client.get("/api/v1/labels", headers=httpx.Headers(headers))
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.json()["errorType"] == "unauthorized"
