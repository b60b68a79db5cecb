"""`panels.public: true` opens the pages, not their data, and nothing of a request is compiled
before it is authenticated: a public page does not parse its query, a figure's JSON (a panel's,
a dashboard panel's with variables) is authenticated before its regexes are compiled."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import httpx
from support.amp_standin import AmpStandin
from support.gateway import gateway_settings

from gateway.app import create_app
from gateway.promql.regex import COMPILED

from .conftest import NODE_AUTH, principals


def _app(amp: AmpStandin) -> Any:
    raw: dict[str, Any] = {"auth": {"principals": principals()}, "panels": {"public": True}}
    return create_app(gateway_settings(amp, raw))


def _client(app: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.30", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway", timeout=30)


def _fresh_regex() -> str:
    """A pattern no other test compiled, heavy enough to matter (`\\pL{60}`: 50 ms, 570 KiB)."""
    return f"{uuid.uuid4().hex}\\pL{{60}}"


async def test_nothing_is_compiled_before_authentication(fresh_amp: AmpStandin, aws_env: Any) -> None:
    app = _app(fresh_amp)
    patterns = [_fresh_regex() for _ in range(5)]
    promql = [p.replace("\\", "\\\\") for p in patterns]  # in a PromQL string literal
    unauthenticated = [
        # the page is public: answered, its query not read
        (f'/panels/query?query=up{{a=~"{promql[0]}"}}', 200),
        (f'/panels/rate?metric=up&match=a=~"{promql[0]}"', 200),
        # the data is not: refused before its query is read
        (f'/panels/query.json?query=up{{a=~"{promql[1]}"}}', 401),
        (f'/panels/rate.json?metric=up&match=a=~"{promql[2]}"', 401),
        (f"/dashboards/node-network/panels/0.json?var-instance={quote(patterns[3])}", 401),
        (f'/api/v1/query?query=up{{a=~"{promql[4]}"}}', 401),
    ]
    async with app.router.lifespan_context(app), _client(app) as client:
        entries, charged = len(COMPILED), COMPILED.bytes
        for path, status in unauthenticated:
            answer = await client.get(path)
            assert answer.status_code == status, (path, answer.text[:300])
        assert not any(p in COMPILED for p in patterns)
        assert (len(COMPILED), COMPILED.bytes) == (entries, charged)
        # signed in, the same figure compiles its regex (the check above can see a compile)
        signed = await client.get(f'/panels/query.json?query=up{{a=~"{promql[1]}"}}', headers=NODE_AUTH)
        assert signed.status_code == 200, signed.text[:300]
        assert patterns[1] in COMPILED


async def test_a_public_page_leaves_query_errors_to_its_authenticated_figure(
    fresh_amp: AmpStandin, aws_env: Any
) -> None:
    app = _app(fresh_amp)
    async with app.router.lifespan_context(app), _client(app) as client:
        page = await client.get('/panels/query?query=up{a=~"("}')
        anonymous = await client.get('/panels/query.json?query=up{a=~"("}')
        signed = await client.get('/panels/query.json?query=up{a=~"("}', headers=NODE_AUTH)
    assert page.status_code == 200
    assert anonymous.status_code == 401 and anonymous.json()["errorType"] == "unauthorized"
    assert signed.status_code == 400
    assert "missing closing )" in signed.json()["error"]
