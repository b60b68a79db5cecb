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


def wait_for_revision(page: Any, revision: int) -> None:
    """Until the page has drawn all its panels `revision` times (a function, not a string: the
    page's CSP forbids eval, and Playwright evaluates strings with it)."""
    page.wait_for_function("n => Number(document.body.dataset.revision || 0) >= n", arg=revision)


def open_page(tab: Any, url: str, revision: int = 1) -> Any:
    tab.page.goto(url)
    wait_for_revision(tab.page, revision)
    return tab.page


def traces(page: Any, panel: str = "panel-0") -> list[dict[str, Any]]:
    return page.evaluate(
        """id => document.querySelector('#' + id + ' .plot').data.map(
               t => ({name: t.name, points: t.y.filter(v => v !== null).length}))""",
        panel,
    )


def test_rate_panel_draws_one_trace_per_path(live: LiveGateway, tab: Any) -> None:
    page = open_page(tab, f"{live.url}/panels/rate?{urlencode(RATE)}")
    drawn = traces(page)
    assert [t["name"] for t in drawn] == ["/api/items", "/api/recommend", "/healthz"]
    # Width-derived step: ~1000 px over 1h gives the 15 s minimum interval, about 240 points.
    assert all(200 <= t["points"] <= 241 for t in drawn), drawn
    assert page.locator("#panel-0").get_attribute("data-state") == "drawn"
    assert page.locator(".legend .traces").count() == 3
    assert page.locator(".ytick text").first.text_content().endswith("req/s")
    assert tab.console_errors == [] and tab.failed_requests == []


def test_refresh_updates_the_figure_and_pauses_while_hidden(live: LiveGateway, tab: Any) -> None:
    page = open_page(tab, f"{live.url}/panels/rate?{urlencode({**RATE, 'refresh': '1s'})}")
    page.evaluate("window.plotElement = document.querySelector('#panel-0 .plot')")
    wait_for_revision(page, 3)
    # Plotly.react updated the same element in place.
    assert page.evaluate("window.plotElement === document.querySelector('#panel-0 .plot')")
    assert page.evaluate("window.plotElement.layout.datarevision") >= 3
    assert len(traces(page)) == 3

    page.evaluate(
        """() => { Object.defineProperty(document, 'hidden', {value: true, configurable: true});
                   document.dispatchEvent(new Event('visibilitychange')); }"""
    )
    page.wait_for_timeout(300)  # let a fetch already under way finish
    before = page.evaluate("Number(document.body.dataset.revision)")
    page.wait_for_timeout(2500)
    assert page.evaluate("Number(document.body.dataset.revision)") <= before + 1
    page.evaluate(
        """() => { Object.defineProperty(document, 'hidden', {value: false, configurable: true});
                   document.dispatchEvent(new Event('visibilitychange')); }"""
    )
    wait_for_revision(page, before + 2)
    assert tab.console_errors == []


def test_injection_in_query_and_legend_shows_as_text(live: LiveGateway, tab: Any) -> None:
    evil = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>'
    params = {**RATE, "legend": evil + "{{path}}", "title": evil}
    page = open_page(tab, f"{live.url}/panels/rate?{urlencode(params)}")
    names = [t["name"] for t in traces(page)]
    assert names[0].startswith("&lt;img src=x")  # Plotly shows the decoded text
    legend = page.locator(".legend .traces text").first.text_content()
    assert legend.startswith('<img src=x onerror="window.pwned=1">')
    assert page.locator(".plot img, .plot script").count() == 0

    shown = urlencode({"query": 'up{job="' + evil.replace('"', "'") + '"}'})
    page = open_page(tab, f"{live.url}/panels/query?{shown}")
    assert "<img src=x onerror='window.pwned=1'>" in page.locator(".panel-query").text_content()
    assert "<script>window.pwned=2</script>" in page.locator(".annotation-text").text_content()
    assert page.evaluate("window.pwned") is None and page.locator("main img, main script").count() == 0

    broken = open_page(tab, f"{live.url}/panels/rate?{urlencode({'metric': evil})}", revision=0)
    assert "<img src=x" in broken.locator(".page-error").text_content()
    assert broken.evaluate("window.pwned") is None and broken.locator("main img, main script").count() == 0
    # the only complaint: the bad-input page's own status, 400
    assert [e for e in tab.console_errors if "400 (Bad Request)" not in e] == []


def test_errors_and_empty_results_are_visible(live: LiveGateway, tab: Any) -> None:
    query = "demo_cpu_usage_seconds_total + on(instance) demo_memory_usage_bytes"
    page = open_page(tab, f"{live.url}/panels/query?{urlencode({'query': query})}")
    assert page.locator("#panel-0").get_attribute("data-state") == "error"
    assert "many-to-many matching not allowed" in page.locator("#panel-0 .panel-error").text_content()
    assert page.locator("#panel-0 .panel-error").is_visible()

    absent = urlencode({"query": 'up{job="absent"}'})
    empty = open_page(tab, f"{live.url}/panels/query?{absent}")
    assert empty.locator("#panel-0").get_attribute("data-state") == "empty"
    assert empty.locator(".annotation-text").text_content() == 'No data for up{job="absent"}'
    # the failed figure request is reported by the browser itself; nothing else is
    assert [e for e in tab.console_errors if "422" not in e] == []


def test_demo_dashboard_draws_six_panels_and_follows_its_variable(live: LiveGateway, tab: Any) -> None:
    page = open_page(tab, f"{live.url}/dashboards/demo")
    states = page.eval_on_selector_all(".panel", "els => els.map(e => e.dataset.state)")
    assert states == ["drawn"] * 6
    assert [t["name"] for t in traces(page, "panel-5")] == [
        "demo.promlabs.com:10000",
        "demo.promlabs.com:10001",
        "demo.promlabs.com:10002",
    ]
    page.select_option("select[data-param='var-instance']", "demo.promlabs.com:10001")
    wait_for_revision(page, 2)
    assert [t["name"] for t in traces(page, "panel-5")] == ["demo.promlabs.com:10001"]
    assert "var-instance=demo.promlabs.com%3A10001" in page.url
    assert page.locator("#panel-1 .ytick text").first.text_content().endswith("%")
    assert tab.console_errors == [] and tab.failed_requests == []


def test_dark_compact_panel_for_iframes(live: LiveGateway, tab: Any) -> None:
    params = {**RATE, "theme": "dark", "compact": "1", "tz": "UTC"}
    page = open_page(tab, f"{live.url}/panels/rate?{urlencode(params)}")
    assert page.locator("header.chrome").is_hidden()
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 18, 23)"
    assert page.evaluate("document.querySelector('#panel-0 .plot').layout.paper_bgcolor") == "#181b1f"
    height = page.evaluate("document.querySelector('#panel-0 .plot').getBoundingClientRect().height")
    assert height > 800  # fills the frame
    assert tab.console_errors == []
