"""Cost attribution end to end: Grafana-shaped traffic from several dashboards, panels, users and
principals through a real `serve` with two workers and the results cache, against the AMP
stand-in and the real Prometheus (which says what each query processed). What the cost API then
reports, by every dimension, is what the stand-in billed, totalled the same way."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.grafana_replay import (
    Panel,
    Sent,
    Traffic,
    Viewer,
    by_dashboard,
    by_panel,
    by_principal,
    by_user,
    charged_by,
    replay,
)
from support.testenv import AMP_REGION

TOKENS = {
    "team-a": "team-a-token-0123456789",
    "team-b": "team-b-token-0123456789",
    "admin": "admin-0123456789",
}
CPU = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
PANELS = [
    Panel("nodes", "Nodes", 1, "CPU", CPU),
    Panel("nodes", "Nodes", 2, "Memory", "avg(demo_memory_usage_bytes)"),
    Panel("api", "API", 7, "Requests", "sum(rate(demo_api_request_duration_seconds_count[5m]))"),
    Panel("disks", "Disks", 3, "Usage", "max by (instance) (demo_disk_usage_bytes)"),
]
VIEWERS = [
    Viewer("alice", 1, TOKENS["team-a"], "team-a"),
    Viewer("bob", 1, TOKENS["team-a"], "team-a"),
    Viewer("carol", 2, TOKENS["team-b"], "team-b"),
]


def _raw(amp: AmpStandin, host_dir: Path) -> dict[str, Any]:
    host_dir.mkdir(exist_ok=True)
    # The teams query one of the two workspaces: each sees its own spending; admin sees all.
    principals = [
        {
            "name": name,
            "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
            "workspaces": ["*"] if name == "admin" else ["ws-test1"],
        }
        for name, token in TOKENS.items()
    ]
    return {
        "workspaces": [
            {"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION},
            {"id": "ws-test2", "url": amp.workspace_url("ws-test2"), "region": AMP_REGION},
        ],
        "cache": {"mode": "memory", "host_dir": str(host_dir)},
        "upstream": {"retry_base": "10ms", "timeout": "30s"},
        "auth": {"principals": principals},
        "access_log": False,
    }


def _rows(gateway: GatewayProcess, by: str, token: str) -> dict[str, tuple[int, int]]:
    answer = httpx.get(
        f"{gateway.url}/api/v1/gateway/cost",
        params={"by": by, "range": "24h"},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return {row["key"]: (row["samples"], row["saved_samples"]) for row in answer.json()["data"]["rows"]}


def _settled(read: Callable[[], dict[str, tuple[int, int]]], total: int) -> dict[str, tuple[int, int]]:
    """The rows once every worker's charges are written (each writes within a second)."""
    deadline = time.monotonic() + 15
    while True:
        rows = read()
        if sum(samples for samples, _ in rows.values()) >= total or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


def test_totals_by_every_dimension_are_what_amp_billed(
    start: Callable[..., GatewayProcess], fresh_amp: AmpStandin, prometheus: Any, tmp_path: Path
) -> None:
    gateway = start(_raw(fresh_amp, tmp_path / "host"), workers=2)
    end = prometheus.data_end - 600
    traffic = Traffic(VIEWERS, PANELS, refreshes=3, start=end - 3600, end=end, step=30, refresh_every=60)
    with httpx.Client(timeout=30) as client:
        sent: list[Sent] = replay(client, gateway.url, traffic, fresh_amp)
    assert all(one.status == 200 for one in sent), [one.content[:200] for one in sent if one.status != 200]
    billed = fresh_amp.charged_samples()
    assert billed == sum(one.charged_samples for one in sent) > 0
    # Some panels' loads were answered (in part) by the cache: fewer fetches than loads.
    assert sum(1 for one in sent if not one.upstream) > 0

    admin = TOKENS["admin"]
    for by, key in (
        ("dashboard", by_dashboard),
        ("panel", by_panel),
        ("user", by_user),
        ("principal", by_principal),
    ):
        rows = _settled(lambda by=by: _rows(gateway, by, admin), billed)
        expected = {name: samples for name, samples in charged_by(sent, key).items() if samples}
        assert {name: samples for name, (samples, _) in rows.items() if samples} == expected, by
    assert {k: s for k, (s, _) in _rows(gateway, "workspace", admin).items()} == {"ws-test1": billed}

    # What the cache saved: with what AMP billed, each load costs what it would have cost alone
    # (Prometheus's stats for the same request), per user and in all.
    fresh: dict[str, int] = {}
    with httpx.Client(timeout=30) as direct:
        for one in sent:
            stats = direct.post(
                f"{prometheus.url}/api/v1/query_range", data={**dict(one.form), "stats": "all"}
            )
            cost = stats.json()["data"]["stats"]["samples"]["totalQueryableSamples"]
            fresh[one.viewer.user] = fresh.get(one.viewer.user, 0) + cost
    users = _rows(gateway, "user", admin)
    assert {user: samples + saved for user, (samples, saved) in users.items()} == fresh
    assert sum(saved for _, saved in users.values()) > 0

    # A team sees its own spending only: its users, its share.
    own = _rows(gateway, "user", TOKENS["team-b"])
    assert set(own) == {"carol"}
    assert own["carol"][0] == charged_by(sent, by_user)["carol"]
    team_a = _rows(gateway, "dashboard", TOKENS["team-a"])
    assert {k: s for k, (s, _) in team_a.items() if s} == {
        k: s
        for k, s in charged_by([o for o in sent if o.viewer.principal == "team-a"], by_dashboard).items()
        if s
    }
