"""An answer's warnings are drawn on its panel: a stale answer's (the upstream failed, the cache
answered) on panels and dashboards, as JSON figures and in a real browser."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import orjson
from support.amp_standin import AmpStandin
from support.gateway import LiveGateway, cached_gateway, gateway_settings
from support.prometheus import PrometheusServer

from gateway.panels import build_figure

STALE = "served from the gateway's cache, 95s old: the upstream failed (HTTP 503)"
DATA = {"resultType": "matrix", "result": [{"metric": {"a": "b"}, "values": [[60, "1"], [120, "2"]]}]}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def _open(tab: Any, url: str) -> Any:
    """The page once it has drawn its panels (a function for Playwright: the CSP forbids eval)."""
    await tab.page.goto(url)
    await tab.page.wait_for_function("() => Number(document.body.dataset.revision || 0) >= 1")
    return tab.page


def _annotations(figure: dict[str, Any]) -> list[dict[str, Any]]:
    return list(figure["layout"].get("annotations", ()))


def test_warnings_are_drawn_above_the_plot_and_escaped() -> None:
    envelope = {"status": "success", "data": DATA, "warnings": [STALE, "<b>bold</b> 100% sure"]}
    figure = build_figure(envelope, start_ms=60_000, end_ms=120_000, step_ms=60_000, theme="dark")
    assert figure["layout"]["meta"]["warnings"] == [STALE, "<b>bold</b> 100% sure"]
    (note,) = _annotations(figure)
    assert note["text"] == f"⚠ {STALE} (+1 more)"
    assert note["hovertext"] == f"{STALE}<br>&lt;b&gt;bold&lt;/b&gt; 100&#37; sure"
    assert note["yref"] == "paper" and note["y"] == 1 and note["yanchor"] == "bottom"
    assert figure["layout"]["margin"]["t"] == 8 + 24  # room for it above the plot

    long = "x" * 300
    shown = _annotations(build_figure(DATA, start_ms=0, end_ms=1, step_ms=1, warnings=[long]))[0]
    assert shown["text"] == "⚠ " + "x" * 99 + "…" and shown["hovertext"] == long

    plain = build_figure({"status": "success", "data": DATA}, start_ms=60_000, end_ms=120_000, step_ms=60_000)
    assert _annotations(plain) == [] and "warnings" not in plain["layout"]["meta"]
    empty = build_figure(
        {"resultType": "matrix", "result": []}, start_ms=0, end_ms=1, step_ms=1, warnings=["w"]
    )
    assert [a["text"] for a in _annotations(empty)] == ["No data", "⚠ w"]


async def test_a_panel_answered_stale_says_so(
    fresh_amp: AmpStandin, aws_env: Any, prometheus: PrometheusServer
) -> None:
    end = int(prometheus.data_end) // 60 * 60 - 3600
    clock = Clock(prometheus.data_end + 60)
    settings = gateway_settings(
        fresh_amp,
        raw={
            "cache": {"mode": "memory", "results_ttl": "30s"},
            "upstream": {"retry_base": "10ms", "retries": 1},
        },
    )
    times = {"start": str(end - 1800), "end": str(end), "step": "60s"}
    urls = [
        ("/panels/query.json", {"query": "sum(demo_num_cpus)", **times}),
        ("/dashboards/demo/panels/0.json", times),  # a dashboard's panel: the same figure code
    ]
    async with cached_gateway(settings, clock=clock) as (client, _):
        drawn = [await client.get(url, params=params) for url, params in urls]
        for figure in drawn:
            assert figure.status_code == 200 and figure.json()["data"] and _annotations(figure.json()) == []
        clock.now += 120
        fresh_amp.inject(503, count=None)
        for (url, params), before in zip(urls, drawn, strict=True):
            stale = await client.get(url, params=params)
            assert stale.status_code == 200 and stale.headers["x-cache"] == "stale"
            figure = stale.json()
            assert figure["data"] == before.json()["data"]
            (note,) = _annotations(figure)
            assert note["text"].startswith("⚠ served from the gateway's cache, 120s old: the upstream failed")


async def test_the_warning_is_visible_in_the_browser(live: LiveGateway, tab: Any, amp: AmpStandin) -> None:
    warned = orjson.dumps({"status": "success", "data": DATA, "warnings": [STALE]})
    amp.inject(200, body=warned, path_contains="query_range")
    try:
        # a query of its own: nothing cached for it in the live gateway, so it goes to the stand-in
        query = "sum(demo_num_cpus) * 1.5"
        page = await _open(tab, f"{live.url}/panels/query?{urlencode({'query': query, 'range': '1h'})}")
    finally:
        amp.reset()
    assert await page.locator("#panel-0").get_attribute("data-state") == "drawn"
    shown = page.locator(".annotation-text", has_text="served from the gateway's cache")
    assert await shown.count() == 1 and await shown.first.is_visible()
    assert (await shown.first.text_content() or "").startswith("⚠ served from the gateway's cache, 95s old")
