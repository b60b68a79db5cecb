"""File-defined dashboards: the shipped ones work end to end; broken files are reported with
their line while the others keep working; edits are picked up; the Grafana export is sound."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings

from gateway.panels.dashboards import DashboardStore

SHIPPED = Path(__file__).resolve().parents[2] / "dashboards"


@pytest.fixture
def board_dir(tmp_path: Path) -> Path:
    for source in SHIPPED.glob("*.yml"):
        (tmp_path / source.name).write_text(source.read_text())
    return tmp_path


@pytest.fixture
async def gateway(
    fresh_amp: AmpStandin, aws_env: dict[str, str], board_dir: Path
) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(fresh_amp, raw={"panels": {"dashboards_dir": str(board_dir)}})
    async with gateway_client(settings) as client:
        yield client


def test_shipped_dashboards_load_cleanly() -> None:
    store = DashboardStore(str(SHIPPED))
    assert store.problems() == []
    names = {d.name for d in store.dashboards()}
    assert {"http-requests", "node-network", "demo"} <= names
    assert len(store.get("demo").panels) == 6  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["http-requests", "node-network", "demo"])
async def test_every_shipped_panel_draws_data(gateway: httpx.AsyncClient, name: str) -> None:
    page = await gateway.get(f"/dashboards/{name}")
    assert page.status_code == 200
    srcs = re.findall(r'"src":"([^"]+)"', page.text)
    assert srcs
    for src in srcs:
        figure = await gateway.get(src.replace("\\u0026", "&"), params={"range": "1h", "tz": "UTC"})
        assert figure.status_code == 200, (src, figure.text)
        assert figure.json()["data"], src
        assert not figure.json()["layout"]["meta"].get("empty")


async def test_variables_come_from_label_values(gateway: httpx.AsyncClient, fresh_amp: AmpStandin) -> None:
    page = await gateway.get("/dashboards/node-network")
    assert '<option value="node" selected>node</option>' in page.text
    assert '<option value=".*" selected>All</option>' in page.text
    assert '<option value="node-0:9100">node-0:9100</option>' in page.text
    asked = [r.path for r in fresh_amp.forwarded]
    assert any(p.endswith("/api/v1/label/job/values") for p in asked)
    assert any(p.endswith("/api/v1/label/instance/values") for p in asked)
    one = await gateway.get("/dashboards/node-network/panels/0.json", params={"var-instance": "node-1:9100"})
    assert [t["name"] for t in one.json()["data"]] == ["node-1:9100"]


async def test_a_variable_value_cannot_change_the_query(gateway: httpx.AsyncClient) -> None:
    evil = '"} or vector(1) or up{job="'
    response = await gateway.get("/dashboards/http-requests/panels/0.json", params={"var-job": evil})
    assert response.status_code == 200
    figure = response.json()
    assert figure["data"] == [] and figure["layout"]["meta"]["empty"]
    assert 'job="\\"} or vector(1) or up{job=\\""' in figure["layout"]["meta"]["query"]


async def test_broken_files_are_reported_and_the_others_keep_working(
    gateway: httpx.AsyncClient, board_dir: Path
) -> None:
    (board_dir / "syntax.yml").write_text("title: Broken\npanels:\n  - title: x\n    query: [unclosed\n")
    (board_dir / "semantic.yml").write_text(
        "title: Semantic\npanels:\n  - title: ok\n    query: up\n  - title: bad\n    query: sum(rate(up[5m])\n"
    )
    (board_dir / "unknown.yml").write_text("title: Typo\npanel:\n  - query: up\n")
    index = await gateway.get("/dashboards")
    assert index.status_code == 200
    text = index.text
    assert "syntax.yml line 5: not valid YAML" in text
    assert "semantic.yml line 6: panels[1]: invalid parameter &quot;query&quot;: 1:" in text
    assert "parse error" in text
    assert "unknown.yml line 2: panel: unknown key" in text
    assert "HTTP requests" in text and "Demo service" in text
    broken = await gateway.get("/dashboards/semantic")
    assert broken.status_code == 503 and 'role="alert"' in broken.text and "line 6" in broken.text
    assert (await gateway.get("/dashboards/demo")).status_code == 200
    assert (await gateway.get("/dashboards/nope")).status_code == 404


async def test_files_are_reloaded_when_they_change(gateway: httpx.AsyncClient, board_dir: Path) -> None:
    path = board_dir / "http-requests.yml"
    assert "HTTP requests" in (await gateway.get("/dashboards/http-requests")).text
    path.write_text(path.read_text().replace("title: HTTP requests", "title: Web traffic"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert "<h1>Web traffic</h1>" in (await gateway.get("/dashboards/http-requests")).text
    (board_dir / "extra.yml").write_text("title: Extra\npanels:\n  - query: up\n")
    assert "Extra" in (await gateway.get("/dashboards")).text
    path.unlink()
    assert (await gateway.get("/dashboards/http-requests")).status_code == 404


async def test_grafana_export(gateway: httpx.AsyncClient) -> None:
    response = await gateway.get("/dashboards/http-requests/grafana.json")
    assert response.status_code == 200
    assert "attachment" in response.headers["content-disposition"]
    board = response.json()
    assert (
        board["__inputs"][0]["name"] == "DS_PROMETHEUS" and board["__inputs"][0]["pluginId"] == "prometheus"
    )
    assert board["schemaVersion"] >= 36 and board["title"] == "HTTP requests"
    assert board["time"] == {"from": "now-1h", "to": "now"} and board["refresh"] == "30s"
    [variable] = board["templating"]["list"]
    assert variable["type"] == "query" and variable["name"] == "job"
    assert variable["query"]["query"] == "label_values(http_requests_total, job)"
    assert variable["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
    first, second, third = board["panels"]
    assert first["gridPos"] == {"x": 0, "y": 0, "w": 24, "h": 9}
    assert second["gridPos"] == {"x": 0, "y": 9, "w": 12, "h": 8}
    assert third["gridPos"] == {"x": 12, "y": 9, "w": 12, "h": 8}
    target = first["targets"][0]
    assert target["expr"] == 'sum by (path) (rate(http_requests_total{job="$job"}[5m]))'
    assert target["legendFormat"] == "{{path}}"
    assert second["targets"][0]["expr"].endswith("[$__rate_interval]))")
    assert first["fieldConfig"]["defaults"]["unit"] == "reqps"
    assert all(p["datasource"]["uid"] == "${DS_PROMETHEUS}" for p in board["panels"])


@pytest.mark.parametrize("exists", [True, False])
async def test_no_dashboards_says_where_it_looked(
    fresh_amp: AmpStandin,
    aws_env: dict[str, str],
    tmp_path: Path,
    exists: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tmp_path / "boards"
    if exists:
        folder.mkdir()
    settings = gateway_settings(fresh_amp, raw={"panels": {"dashboards_dir": str(folder)}})
    with caplog.at_level("WARNING", logger="gateway.dashboards"):
        async with gateway_client(settings) as client:
            page = await client.get("/dashboards")
    assert page.status_code == 200 and "No dashboards yet" in page.text
    warned = [r.getMessage() for r in caplog.records if r.name == "gateway.dashboards"]
    if exists:
        assert f"Put YAML files in {folder}/" in page.text and warned == []
    else:
        assert f"{folder} is not a directory" in page.text
        assert warned == [f"panels.dashboards_dir: {folder} is not a directory; no dashboards are served"]
