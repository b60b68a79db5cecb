"""Panels and dashboards in a real browser (Debian's chromium, headless), served by a gateway on
a socket over the AMP stand-in and the backfilled Prometheus."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from support.gateway import LiveGateway

RATE = {
    "metric": "http_requests_total",
    "by": "path",
    "match": 'job="recommender"',
    "window": "5m",
    "range": "1h",
}


async def wait_for_revision(page: Any, revision: int) -> None:
    """Until the page has drawn all its panels `revision` times (a function, not a string: the
    page's CSP forbids eval, and Playwright evaluates strings with it)."""
    await page.wait_for_function("n => Number(document.body.dataset.revision || 0) >= n", arg=revision)


async def open_page(tab: Any, url: str, revision: int = 1) -> Any:
    await tab.page.goto(url)
    await wait_for_revision(tab.page, revision)
    return tab.page


async def traces(page: Any, panel: str = "panel-0") -> list[dict[str, Any]]:
    return await page.evaluate(
        """id => document.querySelector('#' + id + ' .plot').data.map(
               t => ({name: t.name, points: t.y.filter(v => v !== null).length}))""",
        panel,
    )


async def text(page: Any, selector: str) -> str:
    return await page.locator(selector).first.text_content() or ""


async def test_rate_panel_draws_one_trace_per_path(live: LiveGateway, tab: Any) -> None:
    page = await open_page(tab, f"{live.url}/panels/rate?{urlencode(RATE)}")
    drawn = await traces(page)
    assert [t["name"] for t in drawn] == ["/api/items", "/api/recommend", "/healthz"]
    # Width-derived step: ~1200 px over 1h gives the 15 s minimum interval, about 240 points.
    assert all(200 <= t["points"] <= 241 for t in drawn), drawn
    assert await page.locator("#panel-0").get_attribute("data-state") == "drawn"
    assert await page.locator(".legend .traces").count() == 3
    assert (await text(page, ".ytick text")).endswith("req/s")
    assert tab.console_errors == [] and tab.failed_requests == []


async def test_refresh_updates_the_figure_and_pauses_while_hidden(live: LiveGateway, tab: Any) -> None:
    page = await open_page(tab, f"{live.url}/panels/rate?{urlencode({**RATE, 'refresh': '1s'})}")
    await page.evaluate("() => { window.plotElement = document.querySelector('#panel-0 .plot'); }")
    await wait_for_revision(page, 3)
    # Plotly.react updated the same element in place.
    assert await page.evaluate("() => window.plotElement === document.querySelector('#panel-0 .plot')")
    assert await page.evaluate("() => window.plotElement.layout.datarevision") >= 3
    assert len(await traces(page)) == 3

    await page.evaluate(
        """() => { Object.defineProperty(document, 'hidden', {value: true, configurable: true});
                   document.dispatchEvent(new Event('visibilitychange')); }"""
    )
    await page.wait_for_timeout(300)  # let a fetch already under way finish
    before = await page.evaluate("() => Number(document.body.dataset.revision)")
    await page.wait_for_timeout(2500)
    assert await page.evaluate("() => Number(document.body.dataset.revision)") <= before + 1
    await page.evaluate(
        """() => { Object.defineProperty(document, 'hidden', {value: false, configurable: true});
                   document.dispatchEvent(new Event('visibilitychange')); }"""
    )
    await wait_for_revision(page, before + 2)
    assert tab.console_errors == []


async def test_injection_in_query_and_legend_shows_as_text(live: LiveGateway, tab: Any) -> None:
    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    params = {**RATE, "legend": evil + "{{path}}", "title": evil}
    page = await open_page(tab, f"{live.url}/panels/rate?{urlencode(params)}")
    names = [t["name"] for t in await traces(page)]
    assert names[0].startswith("&lt;img src=x")  # Plotly shows the decoded text
    assert (await text(page, ".legend .traces text")).startswith('<img src=x onerror="window.pwned=1">')
    assert await page.locator(".plot img, .plot script").count() == 0

    shown = urlencode({"query": 'up{job="' + evil.replace('"', "'") + '"}'})
    page = await open_page(tab, f"{live.url}/panels/query?{shown}")
    assert "<img src=x onerror='window.pwned=1'>" in await text(page, ".panel-query")
    assert "<script>window.pwned=2</script>" in await text(page, ".annotation-text")
    assert await page.evaluate("() => window.pwned") is None
    assert await page.locator("main img, main script").count() == 0

    broken = await open_page(tab, f"{live.url}/panels/rate?{urlencode({'metric': evil})}", revision=0)
    assert "<img src=x" in await text(broken, ".page-error")
    assert await broken.evaluate("() => window.pwned") is None
    assert await broken.locator("main img, main script").count() == 0
    # the only complaint: the bad-input page's own status, 400
    assert [e for e in tab.console_errors if "400 (Bad Request)" not in e] == []


async def test_plotly_templates_in_user_text_stay_text(live: LiveGateway, tab: Any) -> None:
    # %{meta.query} would pull the query (and its label values) into the title as Plotly markup.
    query = 'sum by (path) (rate(http_requests_total{job="recommender",path!="<a href=//evil.example>x</a>"}[5m]))'
    params = {
        "query": query,
        "title": "%{meta.query} %{meta} 100%",
        "legend": "%{y} {{path}}",
        "unit": "%{x}",
    }
    page = await open_page(tab, f"{live.url}/panels/query?{urlencode(params)}")
    assert await text(page, ".gtitle") == "%{meta.query} %{meta} 100%"
    assert (await text(page, ".legend .traces text")).startswith("%{y} /api/")
    assert (await text(page, ".ytick text")).endswith("%{x}")
    assert await page.locator(".plot a, main a[href*='evil']").count() == 0
    assert tab.console_errors == []


async def test_errors_and_empty_results_are_visible(live: LiveGateway, tab: Any) -> None:
    query = "demo_cpu_usage_seconds_total + on(instance) demo_memory_usage_bytes"
    page = await open_page(tab, f"{live.url}/panels/query?{urlencode({'query': query})}")
    assert await page.locator("#panel-0").get_attribute("data-state") == "error"
    assert "many-to-many matching not allowed" in await text(page, "#panel-0 .panel-error")
    assert await page.locator("#panel-0 .panel-error").is_visible()

    absent = urlencode({"query": 'up{job="absent"}'})
    empty = await open_page(tab, f"{live.url}/panels/query?{absent}")
    assert await empty.locator("#panel-0").get_attribute("data-state") == "empty"
    assert await text(empty, ".annotation-text") == 'No data for up{job="absent"}'
    # the failed figure request is reported by the browser itself; nothing else is
    assert [e for e in tab.console_errors if "422" not in e] == []


async def test_demo_dashboard_draws_six_panels_and_follows_its_variable(live: LiveGateway, tab: Any) -> None:
    page = await open_page(tab, f"{live.url}/dashboards/demo")
    states = await page.eval_on_selector_all(".panel", "els => els.map(e => e.dataset.state)")
    assert states == ["drawn"] * 6
    assert [t["name"] for t in await traces(page, "panel-5")] == [
        "demo.promlabs.com:10000",
        "demo.promlabs.com:10001",
        "demo.promlabs.com:10002",
    ]
    await page.select_option("select[data-param='var-instance']", "demo.promlabs.com:10001")
    await wait_for_revision(page, 2)
    assert [t["name"] for t in await traces(page, "panel-5")] == ["demo.promlabs.com:10001"]
    assert "var-instance=demo.promlabs.com%3A10001" in page.url
    assert (await text(page, "#panel-1 .ytick text")).endswith("%")
    assert tab.console_errors == [] and tab.failed_requests == []


async def test_dark_compact_panel_for_iframes(live: LiveGateway, tab: Any) -> None:
    params = {**RATE, "theme": "dark", "compact": "1", "tz": "UTC"}
    page = await open_page(tab, f"{live.url}/panels/rate?{urlencode(params)}")
    assert await page.locator("header.chrome").is_hidden()
    assert await page.evaluate("() => getComputedStyle(document.body).backgroundColor") == "rgb(17, 18, 23)"
    assert (
        await page.evaluate("() => document.querySelector('#panel-0 .plot').layout.paper_bgcolor")
        == "#181b1f"
    )
    height = await page.evaluate(
        "() => document.querySelector('#panel-0 .plot').getBoundingClientRect().height"
    )
    assert height > 800  # fills the frame
    assert tab.console_errors == []
