"""Real Prometheus clients against a gateway on a socket: promtool, prometheus-api-client, Grafana's shapes."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import orjson
import pytest
from prometheus_api_client import PrometheusConnect
from support.amp_standin import AmpStandin
from support.gateway import LiveGateway, gateway_settings
from support.prometheus import PrometheusServer


@pytest.fixture
def live(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> Iterator[LiveGateway]:
    server = LiveGateway(gateway_settings(fresh_amp)).start()
    yield server
    server.stop()


def _promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_promtool_query_instant_and_range(live: LiveGateway, prometheus: PrometheusServer) -> None:
    at = str(int(prometheus.data_end))
    via = _promtool("query", "instant", "--time", at, live.url, "sum(demo_num_cpus)")
    direct = _promtool("query", "instant", "--time", at, prometheus.url, "sum(demo_num_cpus)")
    assert via == direct and "12" in via
    start, end = str(int(prometheus.data_end) - 600), at
    query = 'sum by (type) (demo_memory_usage_bytes{instance="demo.promlabs.com:10000"})'
    via = _promtool("query", "range", "--start", start, "--end", end, "--step", "1m", live.url, query)
    direct = _promtool(
        "query", "range", "--start", start, "--end", end, "--step", "1m", prometheus.url, query
    )
    assert via == direct and via.count("@[") >= 40
    labels = _promtool("query", "labels", live.url, "type")
    assert labels.split() == ["buffers", "cached", "free", "used"]


def test_prometheus_api_client(live: LiveGateway, prometheus: PrometheusServer) -> None:
    client = PrometheusConnect(url=live.url, disable_ssl=True)
    reference = PrometheusConnect(url=prometheus.url, disable_ssl=True)
    assert client.check_prometheus_connection()
    assert sorted(client.all_metrics()) == sorted(reference.all_metrics())
    end = datetime.fromtimestamp(prometheus.data_end, UTC)
    start = datetime.fromtimestamp(prometheus.data_end - 1800, UTC)
    via = client.custom_query_range("rate(demo_cpu_usage_seconds_total[5m])", start, end, "60")
    ref = reference.custom_query_range("rate(demo_cpu_usage_seconds_total[5m])", start, end, "60")
    assert via == ref and len(via) == 9


def test_grafana_request_shapes(
    live: LiveGateway, fresh_amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    """What Grafana's Prometheus data source sends (shared/reference/amp-and-grafana.md, section 3)."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    grafana = {
        "user-agent": "Grafana/11.3.0",
        "x-grafana-org-id": "1",
        "x-panel-id": "4",
        "x-dashboard-uid": "abc",
    }
    end = prometheus.data_end
    start = end - 6 * 3600
    with httpx.Client(base_url=live.url, headers=grafana, timeout=30) as http:
        # Save & test: instant query 1+1 at t=4, then buildinfo.
        health = http.post("/api/v1/query", content="query=1%2B1&time=4", headers=form)
        assert health.json() == {"status": "success", "data": {"resultType": "scalar", "result": [4, "2"]}}
        assert http.get("/api/v1/status/buildinfo").status_code == 200
        # A panel: POST query_range with float seconds and a timeout, then an exemplar query.
        panel = http.post(
            "/api/v1/query_range",
            content=f"query=sum%20by%20(path)%20(rate(http_requests_total%5B1m%5D))&start={start:.3f}&end={end:.3f}&step=30&timeout=2m",
            headers=form,
        )
        assert panel.status_code == 200 and len(panel.json()["data"]["result"]) == 3
        assert (
            http.post(
                "/api/v1/query_exemplars", content=f"query=up&start={start}&end={end}", headers=form
            ).status_code
            == 200
        )
        # Editor: metric names, label keys, filtered values, series, metadata, rules; the exemplar probe.
        names = http.get(
            "/api/v1/label/__name__/values", params={"start": int(start), "end": int(end), "limit": 40000}
        )
        assert "demo_num_cpus" in names.json()["data"]
        assert (
            "instance"
            in http.get(
                "/api/v1/labels", params={"start": int(start), "end": int(end), "match[]": "demo_num_cpus"}
            ).json()["data"]
        )
        values = http.get(
            "/api/v1/label/path/values",
            params={
                "match[]": 'http_requests_total{job="recommender"}',
                "start": int(start),
                "end": int(end),
            },
        )
        assert values.json()["data"] == ["/api/items", "/api/recommend", "/healthz"]
        series = http.post(
            "/api/v1/series", content="match%5B%5D=%7B__name__%21%3D%22%22%7D&limit=40000", headers=form
        )
        assert series.status_code == 200 and len(series.json()["data"]) > 100
        assert http.get("/api/v1/metadata").json()["status"] == "success"
        assert http.get("/api/v1/rules").json()["status"] == "success"
        probe = http.get(
            "/api/v1/query_exemplars",
            params={"query": "test", "start": "1700000000000", "end": "1700000060000"},
        )
        assert probe.json()["status"] == "success"
    assert all(r.signature_valid for r in fresh_amp.requests)
    assert not any(r.header("x-grafana-org-id") or r.header("x-dashboard-uid") for r in fresh_amp.requests)
    assert orjson.loads(health.content)["status"] == "success"
