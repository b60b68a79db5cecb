"""Panel figures over HTTP, through the gateway's query path to the AMP stand-in and Prometheus."""

from __future__ import annotations

import gzip
import re
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

import httpx
import orjson
import plotly.graph_objects as go
import pytest
from support.amp_standin import AmpStandin
from support.gateway import gateway_client, gateway_settings
from support.prometheus import PrometheusServer

from gateway.panels import build_figure
from gateway.panels.pages import json_script

RATE_QUERY = 'sum by (path) (rate(http_requests_total{job="recommender"}[5m]))'


@pytest.fixture
async def gateway(fresh_amp: AmpStandin, aws_env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    settings = gateway_settings(
        fresh_amp, raw={"panels": {"frame_ancestors": ["'self'", "https://status.example.com"]}}
    )
    async with gateway_client(settings) as client:
        yield client


def window(prometheus: PrometheusServer, hours: float = 1.0) -> dict[str, str]:
    end = int(prometheus.data_end) // 60 * 60
    return {"start": str(end - int(hours * 3600)), "end": str(end)}


async def test_rate_panel_figure_matches_prometheus(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    times = window(prometheus)
    params = {
        "metric": "http_requests_total",
        "by": "path",
        "match": 'job="recommender"',
        "window": "5m",
        "step": "60s",
        "tz": "UTC",
        **times,
    }
    response = await gateway.get("/panels/rate.json", params=params)
    assert response.status_code == 200, response.text
    figure = response.json()
    assert figure["layout"]["meta"]["query"] == RATE_QUERY
    assert [t["name"] for t in figure["data"]] == ["/api/items", "/api/recommend", "/healthz"]

    # The query went out signed, to the default workspace, as a range query with our window.
    sent = [r for r in fresh_amp.forwarded if r.path.endswith("/api/v1/query_range")]
    assert len(sent) == 1 and sent[0].signature_valid and sent[0].workspace == "ws-test1"
    form = parse_qs(sent[0].body.decode())
    assert form["query"] == [RATE_QUERY] and form["step"] == ["60.000"]

    async with httpx.AsyncClient(base_url=prometheus.url) as direct:
        answer = (
            await direct.get("/api/v1/query_range", params={"query": RATE_QUERY, "step": "60", **times})
        ).json()
    expected = {s["metric"]["path"]: s["values"] for s in answer["data"]["result"]}
    divisor = figure["layout"]["meta"]["scale"]
    assert figure["layout"]["yaxis"]["ticksuffix"] == " req/s" and divisor == 1
    for trace in figure["data"]:
        values = expected[trace["name"]]
        assert len(trace["x"]) == len(values) == 61
        assert trace["y"] == pytest.approx([float(v) / divisor for _, v in values])
        assert trace["x"][0].endswith(":00") and trace["connectgaps"] is False
    go.Figure(figure)  # Plotly's own validation of every property


async def test_missing_points_break_the_line(
    gateway: httpx.AsyncClient, prometheus: PrometheusServer
) -> None:
    # demo_intermittent_metric has samples in even minutes only: one gap per odd minute.
    params = {
        "query": "count_over_time(demo_intermittent_metric[10s])",
        "step": "15s",
        "tz": "UTC",
        **window(prometheus, 0.25),
    }
    figure = (await gateway.get("/panels/query.json", params=params)).json()
    assert len(figure["data"]) == 3
    for trace in figure["data"]:
        ys = trace["y"]
        gaps = sum(1 for y in ys if y is None)
        assert 6 <= gaps <= 8, ys
        assert all(y in (1, None) for y in ys)
        # a gap is one null between two drawn points, never at the ends
        assert ys[0] is not None and ys[-1] is not None


async def test_units_time_zone_and_legend_template(
    gateway: httpx.AsyncClient, prometheus: PrometheusServer
) -> None:
    times = window(prometheus)
    base = {
        "metric": "node_network_transmit_bytes_total",
        "by": "instance",
        "legend": "host {{instance}}",
        "step": "5m",
        **times,
    }
    utc = (await gateway.get("/panels/rate.json", params={**base, "tz": "UTC"})).json()
    india = (await gateway.get("/panels/rate.json", params={**base, "tz": "Asia/Kolkata"})).json()
    assert [t["name"] for t in utc["data"]] == ["host node-0:9100", "host node-1:9100"]
    assert utc["layout"]["yaxis"]["ticksuffix"] == " MiB/s"  # ~1.5e6 B/s, binary prefixes
    assert utc["data"][0]["y"][-1] == pytest.approx(1.5e6 / 1024**2, rel=0.2)
    hour, minute = (int(p) for p in utc["data"][0]["x"][0][11:16].split(":"))
    shifted_hour, shifted_minute = (int(p) for p in india["data"][0]["x"][0][11:16].split(":"))
    assert (shifted_hour * 60 + shifted_minute - hour * 60 - minute) % (24 * 60) == 330


async def test_empty_result_says_so(gateway: httpx.AsyncClient) -> None:
    figure = (
        await gateway.get("/panels/query.json", params={"query": 'up{job="nothing-here"}', "tz": "UTC"})
    ).json()
    assert figure["data"] == []
    assert figure["layout"]["meta"]["empty"] is True
    assert figure["layout"]["annotations"][0]["text"] == 'No data for up{job="nothing-here"}'


async def test_upstream_error_is_passed_through(gateway: httpx.AsyncClient) -> None:
    query = "demo_cpu_usage_seconds_total + on(instance) demo_memory_usage_bytes"
    response = await gateway.get("/panels/query.json", params={"query": query})
    assert response.status_code == 422
    assert response.json()["errorType"] == "execution"
    assert "many-to-many matching not allowed" in response.json()["error"]


@pytest.mark.parametrize(
    ("path", "params", "param"),
    [
        ("/panels/rate.json", {"metric": "<script>"}, "metric"),
        ("/panels/rate.json", {"metric": "up", "by": "a-b"}, "by"),
        ("/panels/rate.json", {"metric": "up", "match": 'job="x'}, "match"),
        ("/panels/rate.json", {"metric": "up", "window": "soon"}, "window"),
        ("/panels/query.json", {"query": "sum("}, "query"),
        ("/panels/query.json", {"query": "up", "range": "forever"}, "range"),
        ("/panels/query.json", {"query": "up", "tz": "Mars/Olympus"}, "tz"),
        ("/panels/query.json", {"query": "up", "width": "-3"}, "width"),
        ("/panels/query.json", {"query": "up", "theme": "neon"}, "theme"),
        ("/panels/query.json", {"query": "up", "start": "yesterday"}, "start"),
    ],
)
async def test_bad_input_gets_the_error_envelope(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin, path: str, params: dict[str, str], param: str
) -> None:
    response = await gateway.get(path, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["status"] == "error" and body["errorType"] == "bad_data"
    assert f'"{param}"' in body["error"] or param in body["error"]
    assert fresh_amp.forwarded == []


async def test_workspace_prefix_selects_the_workspace(
    gateway: httpx.AsyncClient, fresh_amp: AmpStandin
) -> None:
    response = await gateway.get("/workspaces/ws-test2/panels/query.json", params={"query": "demo_num_cpus"})
    assert response.status_code == 200
    assert {r.workspace for r in fresh_amp.forwarded} == {"ws-test2"}
    missing = await gateway.get("/workspaces/nope/panels/query.json", params={"query": "demo_num_cpus"})
    assert missing.status_code == 404 and missing.json()["errorType"] == "not_found"


async def test_python_builds_the_same_figure(
    gateway: httpx.AsyncClient, prometheus: PrometheusServer
) -> None:
    times = window(prometheus)
    params = {
        "query": "sum by (mode) (rate(demo_cpu_usage_seconds_total[5m]))",
        "step": "60",
        "legend": "{{mode}}",
        "tz": "UTC",
        **times,
    }
    served = (await gateway.get("/panels/query.json", params=params)).json()
    answer = (
        await gateway.get("/api/v1/query_range", params={"query": params["query"], "step": "60", **times})
    ).json()
    built = build_figure(
        answer,
        start_ms=int(times["start"]) * 1000,
        end_ms=int(times["end"]) * 1000,
        step_ms=60_000,
        legend="{{mode}}",
        query=params["query"],
    )
    assert orjson.dumps(built) == orjson.dumps(served)


def test_text_plotly_would_render_as_html_is_escaped() -> None:
    data = {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"path": '<img src=x onerror="alert(1)">'},
                "values": [[1700000000, "1"], [1700000015, "2"]],
            }
        ],
    }
    figure = build_figure(
        data,
        start_ms=1700000000000,
        end_ms=1700000015000,
        step_ms=15000,
        legend="{{path}} <b>",
        title="<script>alert(1)</script>",
    )
    assert figure["data"][0]["name"] == '&lt;img src=x onerror="alert(1)"&gt; &lt;b&gt;'
    assert figure["layout"]["title"]["text"] == "&lt;script&gt;alert(1)&lt;/script&gt;"


async def test_plotly_js_is_served_compressed_and_cacheable(gateway: httpx.AsyncClient) -> None:
    page = await gateway.get("/panels/query", params={"query": "up"})
    src = re.search(r'src="(/panels/static/plotly\.min\.js\?v=[0-9a-f]+)"', page.text)
    assert src, page.text
    response = await gateway.get(src.group(1), headers={"accept-encoding": "gzip"})
    assert response.status_code == 200
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert response.headers["content-type"].startswith("text/javascript")
    assert int(response.headers["content-length"]) < len(response.content)  # httpx decoded it
    assert b"plotly.js v" in response.content[:200]
    again = await gateway.get(src.group(1), headers={"if-none-match": response.headers["etag"]})
    assert again.status_code == 304
    unknown = await gateway.get("/panels/static/../../etc/passwd")
    assert unknown.status_code == 404
    assert (await gateway.get("/panels/static/secret.py")).status_code == 404
    assert gzip.decompress(gzip.compress(b"x")) == b"x"


async def test_pages_have_a_strict_policy_and_escape_everything(gateway: httpx.AsyncClient) -> None:
    evil = "</script><script>alert(1)</script><img src=x onerror=alert(2)>"
    response = await gateway.get(
        "/panels/query", params={"query": f'up{{job="{evil}"}}', "title": evil, "legend": evil}
    )
    assert response.status_code == 200
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp
    assert "frame-ancestors 'self' https://status.example.com" in csp
    assert "unsafe-eval" not in csp and "script-src 'self' 'unsafe-inline'" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "x-frame-options" not in response.headers  # would forbid the allowed ancestor
    html = response.text
    assert "<script>alert" not in html and "<img src=x" not in html
    scripts = re.findall(r"<script[^>]*>(.*?)</script>", html, re.S)
    inline = [s for s in scripts if s.strip()]
    assert len(inline) == 1 and "<" not in inline[0]  # only the JSON data block
    assert json_script({"q": "</script><!--"}) == '{"q":"\\u003c/script\\u003e\\u003c!--"}'
    bad = await gateway.get("/panels/rate", params={"metric": evil})
    assert bad.status_code == 400
    assert 'role="alert"' in bad.text and "&lt;/script&gt;&lt;script&gt;alert(1)" in bad.text
    assert "<script>alert" not in bad.text


async def test_a_panel_too_large_to_draw_says_what_to_do(
    gateway: httpx.AsyncClient, prometheus: PrometheusServer
) -> None:
    # Every series over 3 h at 8 s: ~21 MB of JSON, over what a panel draws (16 MiB).
    params = {
        "query": '{__name__=~".+"}',
        "start": str(int(prometheus.data_start)),
        "end": str(int(prometheus.data_end)),
        "step": "8s",
    }
    response = await gateway.get("/panels/query.json", params=params)
    assert response.status_code == 422, response.text[:300]
    error = response.json()
    assert error["errorType"] == "execution"
    assert "too large to draw" in error["error"] and "raise the step" in error["error"]
