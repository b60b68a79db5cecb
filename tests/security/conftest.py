"""Fixtures for the security tests: principals with tokens, passwords and label enforcement."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import httpx
import promql_parser as pp
import pytest
from support.amp_standin import AmpStandin, RecordedRequest
from support.gateway import gateway_client, gateway_settings

from gateway.config import Settings

NODE_TOKEN = "node-team-token-0123456789abcdef"
ADMIN_TOKEN = "admin-token-fedcba9876543210"
EXPIRED_TOKEN = "expired-token-00000000000000"
REC_USER, REC_PASSWORD = "grafana-rec", "rec-password-Zx9!"
NODE = (("job", "node"),)
REC = (("job", "recommender"),)


def sha(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


NODE_AUTH = bearer(NODE_TOKEN)
REC_AUTH = basic(REC_USER, REC_PASSWORD)
ADMIN_AUTH = bearer(ADMIN_TOKEN)


def principals() -> list[dict[str, Any]]:
    return [
        {
            "name": "team-node",
            "token_sha256": sha(NODE_TOKEN),
            "workspaces": ["test"],
            "enforce": {"job": "node"},
        },
        {
            "name": "team-rec",
            "username": REC_USER,
            "password_sha256": sha(REC_PASSWORD),
            "workspaces": ["*"],
            "enforce": {"job": "recommender"},
        },
        {"name": "admin", "token_sha256": sha(ADMIN_TOKEN), "workspaces": ["*"]},
        {
            "name": "former",
            "token_sha256": sha(EXPIRED_TOKEN),
            "workspaces": ["*"],
            "expires": "2020-01-01T00:00:00Z",
        },
    ]


def secure_settings(
    amp: AmpStandin, auth: Mapping[str, Any] | None = None, limits: Mapping[str, Any] | None = None
) -> Settings:
    raw: dict[str, Any] = {"auth": {"principals": principals(), **(auth or {})}}
    if limits is not None:
        raw["limits"] = dict(limits)
    return gateway_settings(amp, raw)


@pytest.fixture
async def secure(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway with the principals above, default limits, cache off."""
    async with gateway_client(secure_settings(fresh_amp)) as client:
        yield client


# ------------------------------------------------------------- checks at the AMP stand-in


def forwarded_params(record: RecordedRequest) -> list[tuple[str, str]]:
    """The parameters the stand-in received: URL query and form body."""
    items = parse_qsl(record.query, keep_blank_values=True)
    if record.body:
        items += parse_qsl(record.body.decode(), keep_blank_values=True)
    return items


def all_selectors(text: str) -> list[Any]:
    """Every vector selector of a query, found with promql_parser.walk (not the gateway's code)."""
    found: list[Any] = []

    def visit(node: Any) -> None:
        if isinstance(node, pp.VectorSelector):
            found.append(node)

    try:
        tree = pp.parse(text)
    except ValueError:
        # A match[] may name the metric twice (`up{__name__="x"}`): Prometheus's selector parser
        # takes it, promql-parser does not. Read the name as one more matcher.
        match = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{", text)
        if match is None:
            raise
        tree = pp.parse('{__name__="' + match.group(1) + '",' + text[match.end() :])
    pp.walk(tree, pre_visit=visit)
    return found


def selector_is_enforced(selector: Any, pairs: Iterable[tuple[str, str]]) -> bool:
    """Each OR-group of the selector has name="value" for every pair, and no `=` contradicting it."""
    matchers = selector.matchers
    for group in matchers.or_matchers or [matchers.matchers]:
        for name, value in pairs:
            equal = [m.value for m in group if m.name == name and m.op == pp.MatchOp.Equal]
            if value not in equal or any(v != value for v in equal):
                return False
    return True


def assert_all_enforced(amp: AmpStandin, pairs: Iterable[tuple[str, str]]) -> int:
    """Every query and match[] that reached the stand-in carries the enforced matchers.
    Returns how many selectors were checked, so a test can also assert something was sent."""
    pairs = tuple(pairs)
    checked = 0
    for record in amp.requests:
        params = forwarded_params(record)
        queries = [v for k, v in params if k == "query"]
        assert len(queries) <= 1, f"more than one query forwarded: {queries}"
        for key, value in params:
            if key in ("query", "match[]"):
                for selector in all_selectors(value):
                    assert selector_is_enforced(selector, pairs), f"unenforced selector in {value!r}"
                    checked += 1
        api = record.path.split("/api/v1/", 1)[-1]
        if api in ("labels", "series") or api.startswith("label/"):
            assert any(k == "match[]" for k, _ in params), f"{api} forwarded without match[]"
    return checked


def series_labels(response: httpx.Response) -> list[dict[str, str]]:
    body = response.json()
    assert body["status"] == "success", body
    data = body["data"]
    if isinstance(data, dict):
        return [item["metric"] for item in data.get("result", []) if isinstance(item, dict)]
    return data
