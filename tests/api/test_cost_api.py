"""The cost API (/api/v1/gateway/cost and .../over_time) through the whole app in process: rows
and points as charged to the gateway's own ledger, every refusal in Prometheus's envelope, and
who sees what with authentication on."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from support.gateway import in_process
from support.stages import request

from gateway.app import Gateway
from gateway.config import Principal, Settings, build_settings
from gateway.pipeline.model import Origin

COST = "/api/v1/gateway/cost"
TOKENS = {name: f"{name}-token-0123456789abcdef" for name in ("team-a", "admin", "listed", "enforced", "one")}


def cost_settings(auth: bool = False) -> Settings:
    raw: dict[str, Any] = {
        "workspaces": [
            {
                "id": id_,
                "url": f"https://aps-workspaces.us-east-1.amazonaws.com/workspaces/{id_}",
                "region": "us-east-1",
            }
            for id_ in ("ws-test1", "ws-test2")
        ],
        "cache": {"mode": "off"},
        "access_log": False,
    }
    raw["workspaces"][0]["alias"] = "test"
    if auth:
        principals: list[dict[str, Any]] = [
            {"name": "team-a", "workspaces": ["test"], "enforce": {"team": "a"}},
            {"name": "admin", "workspaces": ["*"]},
            {"name": "listed", "workspaces": ["test", "ws-test2"]},  # every workspace, named
            {"name": "enforced", "workspaces": ["*"], "enforce": {"team": "e"}},
            {"name": "one", "workspaces": ["ws-test2"]},
        ]
        for principal in principals:
            principal["token_sha256"] = hashlib.sha256(TOKENS[principal["name"]].encode()).hexdigest()
        raw["auth"] = {"principals": principals}
    return build_settings(raw, {})


def as_(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


async def charge(gateway: Gateway, principal: str, samples: int, **origin: str) -> None:
    workspace = gateway.settings.workspaces[0]
    asked = request(
        "query", principal=Principal(name=principal), origin=Origin(**origin), workspace=workspace
    )
    await gateway.ledger.charge(asked, samples)


@pytest.fixture
async def open_gateway() -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    async with in_process(cost_settings()) as pair:
        yield pair


@pytest.fixture
async def secured() -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    async with in_process(cost_settings(auth=True)) as pair:
        yield pair


async def test_rows_by_dashboard_with_titles_and_the_unnamed(
    open_gateway: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, gateway = open_gateway
    await charge(gateway, "anonymous", 3_000_000_000, dashboard="abc", panel="4", dashboard_title="Nodes")
    await charge(gateway, "anonymous", 500)
    await gateway.ledger.saved(
        request("query", origin=Origin(dashboard="abc"), workspace=gateway.settings.workspaces[0]), 70
    )
    answer = await client.get(COST, params={"by": "dashboard", "range": "24h"})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"] == "no-store"
    assert answer.json() == {
        "status": "success",
        "data": {
            "by": "dashboard",
            "range": "24h",
            "rows": [
                {"key": "abc", "samples": 3_000_000_000, "cost": 0.3, "saved_samples": 70, "title": "Nodes"},
                {"key": "-", "samples": 500, "cost": 500 * 0.1 / 1e9, "saved_samples": 0, "group": "unnamed"},
            ],
        },
    }
    # range defaults to 24h; a form body is read as the API reads one.
    posted = await client.post(COST, data={"by": "panel"})
    assert posted.json()["data"]["range"] == "24h"
    assert [r["key"] for r in posted.json()["data"]["rows"]] == ["abc/4", "-"]


async def test_over_time_points_of_everything_or_one_row(
    open_gateway: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, gateway = open_gateway
    await charge(gateway, "anonymous", 10, dashboard="abc")
    await charge(gateway, "anonymous", 5, dashboard="xyz")
    everything = (await client.get(f"{COST}/over_time", params={"range": "6h"})).json()
    assert everything["status"] == "success"
    data = everything["data"]
    assert data["step"] == "1h" and data["range"] == "6h" and len(data["points"]) == 7
    assert data["points"][-1]["samples"] == 15 and sum(p["samples"] for p in data["points"]) == 15
    assert all(set(p) == {"time", "samples", "cost", "saved_samples"} for p in data["points"])
    one = (
        await client.get(f"{COST}/over_time", params={"range": "7d", "by": "dashboard", "key": "abc"})
    ).json()
    assert one["data"]["step"] == "1d" and one["data"]["key"] == "abc" and len(one["data"]["points"]) == 8
    assert sum(p["samples"] for p in one["data"]["points"]) == 10


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        (
            COST,
            {},
            400,
            'invalid parameter "by": must be one of workspace, principal, dashboard, panel, org, user; missing',
        ),
        (COST, {"by": "team"}, 400, "got 'team'"),
        (
            COST,
            {"by": "user", "range": "yesterday"},
            400,
            'invalid parameter "range": not a valid duration string',
        ),
        (COST, {"by": "user", "range": "0s"}, 400, 'invalid parameter "range": must be longer than 0'),
        (COST, {"by": "user", "range": "-1h"}, 400, 'invalid parameter "range"'),
        (COST, {"by": "user", "range": "32d"}, 400, 'invalid parameter "range": at most 31d'),
        (COST, {"by": "user", "range": "1h5"}, 400, 'invalid parameter "range"'),
        (f"{COST}/over_time", {"by": "dashboard"}, 400, 'invalid parameter "key": required with "by"'),
        (f"{COST}/over_time", {"key": "abc"}, 400, 'invalid parameter "by": must be one of'),
        (f"{COST}/over_time", {"by": "nope", "key": "abc"}, 400, 'invalid parameter "by"'),
        (f"{COST}/over_time", {"range": "744h1s"}, 400, "at most 31d"),
        (
            f"/workspaces/test{COST}",
            {"by": "user"},
            404,
            "unknown API endpoint /workspaces/test/api/v1/gateway/cost",
        ),
        (f"{COST}/nothing", {"by": "user"}, 404, "unknown API endpoint"),
    ],
)
async def test_refusals_are_prometheus_errors(
    open_gateway: tuple[httpx.AsyncClient, Gateway],
    path: str,
    params: dict[str, str],
    status: int,
    words: str,
) -> None:
    client, _ = open_gateway
    answer = await client.get(path, params=params)
    assert answer.status_code == status
    body = answer.json()
    assert body["status"] == "error" and body["errorType"] == ("bad_data" if status == 400 else "not_found")
    assert words in body["error"]


async def test_a_method_the_api_does_not_take(open_gateway: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = open_gateway
    answer = await client.delete(COST, params={"by": "user"})
    assert answer.status_code == 405 and answer.json()["errorType"] == "bad_data"


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer not-a-token-of-anyone"}])
async def test_without_valid_credentials_401(
    secured: tuple[httpx.AsyncClient, Gateway], headers: dict[str, str]
) -> None:
    client, _ = secured
    for path in (COST, f"{COST}/over_time"):
        answer = await client.get(path, params={"by": "user"}, headers=headers)
        assert answer.status_code == 401 and answer.json()["errorType"] == "unauthorized"
        assert "Bearer" in answer.headers["www-authenticate"]


async def test_a_principal_sees_its_own_and_an_unrestricted_one_sees_all(
    secured: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, gateway = secured
    spent = {"team-a": 100, "admin": 20, "listed": 3, "enforced": 2, "one": 1}
    for principal, samples in spent.items():
        await charge(gateway, principal, samples, dashboard=f"{principal}-board")

    async def seen(who: str) -> dict[str, int]:
        answer = await client.get(COST, params={"by": "principal"}, headers=as_(who))
        assert answer.status_code == 200
        return {row["key"]: row["samples"] for row in answer.json()["data"]["rows"]}

    everyone = dict(sorted(spent.items(), key=lambda item: -item[1]))
    assert await seen("admin") == everyone
    assert await seen("listed") == everyone  # every workspace named, no enforced labels
    for restricted in ("team-a", "enforced", "one"):
        assert await seen(restricted) == {restricted: spent[restricted]}
    boards = await client.get(COST, params={"by": "dashboard"}, headers=as_("team-a"))
    assert [row["key"] for row in boards.json()["data"]["rows"]] == ["team-a-board"]
    points = await client.get(f"{COST}/over_time", params={"range": "1h"}, headers=as_("one"))
    assert sum(p["samples"] for p in points.json()["data"]["points"]) == 1
    points = await client.get(f"{COST}/over_time", params={"range": "1h"}, headers=as_("admin"))
    assert sum(p["samples"] for p in points.json()["data"]["points"]) == sum(spent.values())
