"""The /cost page: its figures from the cost API's rows and points (pure functions), the page
and its figures' JSON through the whole app in process (who sees what, the API's refusals
passed on), and the page in Debian's chromium after a replay of Grafana-shaped traffic from
several dashboards through the AMP stand-in and the backfilled Prometheus."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import plotly.graph_objects as go
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.amp_standin import AmpStandin
from support.gateway import LiveGateway, gateway_settings, in_process
from support.grafana_replay import (
    Panel,
    Sent,
    Traffic,
    Viewer,
    by_dashboard,
    by_principal,
    charged_by,
    replay_async,
)
from support.prometheus import PrometheusServer
from support.stages import request

from gateway.app import Gateway
from gateway.config import Principal, Settings
from gateway.metrics import Metrics
from gateway.panels.cost_figures import (
    CHARGED,
    SAVED,
    labels,
    money_text,
    over_time_figure,
    price_text,
    rows_figure,
    samples_text,
)
from gateway.pipeline.cost.ledger import Ledger
from gateway.pipeline.model import Origin

PRICE = 0.2  # per billion samples: not the default, so the page's money is visibly this price's
SECRETS = {name: f"{name}-secret-0123456789abcdef" for name in ("admin", "team-a", "slow")}
CHARTS = ("over_time", "dashboard", "panel", "principal", "user")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots, as conftest's tab

# -- figures, pure ---------------------------------------------------------------------------------

ROWS: list[dict[str, Any]] = [
    {"key": "abc", "title": "Nodes", "samples": 3_000_000_000, "cost": 0.6, "saved_samples": 1_000_000},
    {"key": "def", "title": "Nodes", "samples": 20_000, "cost": 4e-6, "saved_samples": 0},
    {"key": "xyz", "samples": 500, "cost": 1e-7, "saved_samples": 0},
    {"key": "-", "samples": 70, "cost": 1.4e-8, "saved_samples": 30, "group": "unnamed"},
    {"key": "other", "samples": 1, "cost": 2e-10, "saved_samples": 0, "group": "other"},
]


def test_bars_name_dashboards_by_title_and_tell_repeated_titles_apart() -> None:
    figure = rows_figure("dashboard", ROWS, price=PRICE, range_text="24h")
    charged, saved, table = figure["data"]
    names = ["Nodes (abc)", "Nodes (def)", "xyz", "(none named)", "(all others)"]
    assert charged["name"] == CHARGED and saved["name"] == SAVED
    assert charged["y"] == saved["y"] == names
    assert charged["x"] == [3_000_000_000, 20_000, 500, 70, 1]
    assert saved["x"] == [1_000_000, 0, 0, 30, 0]
    assert charged["text"][:3] == ["3G · $0.60", "20k · $0.0000040", "500 · <$0.000001"]
    assert saved["text"] == ["1M · $0.00020", "", "", "30 · <$0.000001", ""]  # at PRICE
    assert charged["hovertext"][0] == (
        "Nodes (abc): 3,000,000,000 samples charged ($0.60), 1,000,000 saved by the cache ($0.00020)"
    )
    header, *columns = table["header"]["values"], *table["cells"]["values"]
    assert header == ["Dashboard", "Samples", "Cost", "Saved samples", "Saved"]
    assert columns[0] == names
    assert columns[1][0] == "3,000,000,000" and columns[2][0] == "$0.60" and columns[4][0] == "$0.00020"
    layout = figure["layout"]
    assert layout["title"]["text"] == "Top dashboards, last 24h"
    assert layout["yaxis"]["type"] == "category" and layout["yaxis"]["autorange"] == "reversed"
    assert layout["meta"] == {
        "dimension": "dashboard",
        "range": "24h",
        "price": PRICE,
        "rows": 5,
        "empty": False,
        "charged": 3_000_020_571,
        "saved": 1_000_030,
    }
    go.Figure(figure)  # Plotly's own validation of every property


def test_names_from_the_request_headers_stay_text() -> None:
    evil = "<b onmouseover=alert(1)>%{meta} 100%</b>"
    rows = [{"key": evil, "title": evil, "samples": 5, "cost": 1e-9, "saved_samples": 0}]
    charged, _, table = rows_figure("panel", rows, price=PRICE, range_text="7d")["data"]
    shown = "&lt;b onmouseover=alert(1)&gt;&#37;{meta} 100&#37;&lt;/b&gt;"
    assert charged["y"] == [shown]
    assert table["cells"]["values"][0] == [shown]
    assert charged["hovertext"][0].startswith(shown + ":")


def test_nothing_counted_is_said_instead_of_a_chart() -> None:
    figure = rows_figure("user", [], price=PRICE, range_text="31d")
    assert figure["data"] == []
    assert [a["text"] for a in figure["layout"]["annotations"]] == ["No queries counted yet in the last 31d"]
    assert figure["layout"]["meta"]["empty"] is True
    points = [
        {"time": 1_800_000_000 + 3600 * i, "samples": 0, "cost": 0.0, "saved_samples": 0} for i in range(3)
    ]
    figure = over_time_figure(
        points, step_ms=3_600_000, range_text="2h", price=PRICE, warnings=["Redis is away"]
    )
    assert figure["data"] == [] and figure["layout"]["meta"]["empty"] is True
    assert figure["layout"]["annotations"][0]["text"] == "No queries counted yet in the last 2h"
    assert figure["layout"]["meta"]["warnings"] == ["Redis is away"]


def test_over_time_stacks_charged_and_saved_per_bucket_in_the_callers_zone() -> None:
    start = 1_800_000_000 // 3600 * 3600
    points = [
        {"time": start + 3600 * i, "samples": samples, "cost": samples * PRICE / 1e9, "saved_samples": saved}
        for i, (samples, saved) in enumerate([(4_000_000, 0), (0, 0), (1_500_000, 2_500_000)])
    ]
    figure = over_time_figure(
        points,
        step_ms=3_600_000,
        range_text="2h",
        price=PRICE,
        tz="Europe/Berlin",
        warnings=["Redis is away"],
    )
    charged, saved = figure["data"]
    layout = figure["layout"]
    assert (charged["name"], saved["name"]) == (CHARGED, SAVED)
    assert charged["type"] == saved["type"] == "bar" and layout["barmode"] == "stack"
    assert charged["x"][0] == "2027-01-15 09:00:00"  # 08:00 UTC, in Berlin's winter time
    scale = layout["meta"]["scale"]
    assert [y * scale for y in charged["y"]] == pytest.approx([4_000_000, 0, 1_500_000])
    assert [y * scale for y in saved["y"]] == pytest.approx([0, 0, 2_500_000])
    assert charged["customdata"] == ["$0.00080", "$0", "$0.00030"]
    assert saved["customdata"] == ["$0", "$0", "$0.00050"]
    assert charged["width"] == 3_240_000 and charged["offset"] == 0
    assert (
        layout["title"]["text"]
        == "Last 2h: 5.5M samples charged ($0.0011), 2.5M saved by the cache ($0.00050)"
    )
    assert layout["meta"]["charged"] == 5_500_000 and layout["meta"]["saved"] == 2_500_000
    assert "Redis is away" in layout["annotations"][-1]["text"]
    go.Figure(figure)


def test_a_bar_a_day_is_labelled_with_its_date() -> None:
    day = 86_400
    points = [{"time": day * (20_000 + i), "samples": 10, "cost": 2e-9, "saved_samples": 0} for i in range(8)]
    daily = over_time_figure(points, step_ms=day * 1000, range_text="7d", price=PRICE)
    assert (
        daily["layout"]["xaxis"]["tickformat"] == "%b %d"
        and "tickformatstops" not in daily["layout"]["xaxis"]
    )
    assert daily["data"][0]["width"] == day * 900
    hourly = over_time_figure(points[:2], step_ms=3_600_000, range_text="1h", price=PRICE)
    assert "tickformat" not in hourly["layout"]["xaxis"]


@pytest.mark.parametrize(
    ("samples", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1k"),
        (12_345, "12.3k"),
        (999_499, "999k"),
        (999_999, "1M"),
        (15e11, "1.5T"),
    ],
)
def test_samples_text(samples: float, text: str) -> None:
    assert samples_text(samples) == text


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (0, "$0"),
        (1234.5, "$1,234.50"),
        (0.01, "$0.01"),
        (0.0099, "$0.0099"),
        (1e-6, "$0.0000010"),
        (9.9e-7, "<$0.000001"),
    ],
)
def test_money_text(amount: float, text: str) -> None:
    assert money_text(amount) == text


def test_price_text() -> None:
    assert [price_text(p) for p in (0.1, 0.125, 2, 0.0005)] == ["$0.10", "$0.125", "$2.00", "$0.0005"]


def _read_samples(text: str) -> float:
    factors = {"k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
    if text[-1] in factors:
        return float(text[:-1]) * factors[text[-1]]
    return float(text.replace(",", ""))


@given(st.integers(min_value=0, max_value=10**17))
def test_samples_text_keeps_three_significant_digits(samples: int) -> None:
    text = samples_text(samples)
    assert abs(_read_samples(text) - samples) <= 0.005 * samples + 0.5
    assert len(re.sub(r"[^0-9]", "", text.lstrip("0.")) or "0") <= 3 or samples < 1000


@given(st.floats(min_value=1e-12, max_value=1e9))
def test_money_text_never_says_nothing_was_spent(amount: float) -> None:
    text = money_text(amount)
    if amount < 1e-6:
        assert text == "<$0.000001"
    else:
        shown = float(text.removeprefix("$").replace(",", ""))
        assert shown > 0 and abs(shown - amount) <= max(0.05 * amount, 0.005)


_NAMES = st.text(st.sampled_from("ab (#)1"), max_size=6)
_ROWS = st.lists(  # keys as the API gives them: never empty ("-": none named)
    st.fixed_dictionaries(
        {"key": _NAMES.filter(bool), "title": _NAMES, "group": st.sampled_from(["", "", "unnamed", "other"])}
    ),
    max_size=12,
    unique_by=lambda row: row["key"],
)


@given(_ROWS)
def test_every_row_gets_a_label_of_its_own(rows: list[dict[str, str]]) -> None:
    shown = labels(rows)
    assert len(shown) == len(rows) and len(set(shown)) == len(rows) and all(shown)


# -- the page and its figures, in process ---------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def principals() -> list[dict[str, Any]]:
    """admin may query every workspace (sees everyone's spending); team-a one workspace (its
    own); slow is rate-limited to one API call now and then. Each has a token and a password."""
    out: list[dict[str, Any]] = [
        {"name": "admin", "workspaces": ["*"]},
        {"name": "team-a", "workspaces": ["test"]},
        {"name": "slow", "workspaces": ["*"], "limits": {"rate": {"per_second": 0.001, "burst": 1}}},
    ]
    for principal in out:
        secret = SECRETS[principal["name"]]
        principal.update(token_sha256=_sha(secret), password_sha256=_sha(secret))
    return out


def page_settings(amp: AmpStandin, **panels: Any) -> Settings:
    """The stand-in's two workspaces (nothing is sent to them: the ledger is charged directly),
    the principals, an authenticating proxy on loopback and PRICE."""
    auth = {
        "principals": principals(),
        "proxy": {"header": "X-Forwarded-User", "trusted_addresses": ["127.0.0.1/32"]},
    }
    return gateway_settings(
        amp, raw={"cost": {"price_per_billion_samples": PRICE}, "auth": auth, "panels": panels}
    )


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


async def spend(gateway: Gateway, principal: str, samples: int, saved: int = 0, **origin: str) -> None:
    """Charges (and savings) as the cost meter records them, on the gateway's own ledger."""
    asked = request(
        "query_range",
        principal=Principal(name=principal),
        origin=Origin(**origin),
        workspace=gateway.settings.workspaces[0],
    )
    await gateway.ledger.charge(asked, samples)
    await gateway.ledger.saved(asked, saved)


@pytest.fixture
async def secured(amp: AmpStandin) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    async with in_process(page_settings(amp)) as pair:
        yield pair


async def test_the_page_states_the_price_and_asks_for_each_chart(
    secured: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = secured
    page = await client.get("/cost", params={"range": "7d", "theme": "dark"}, headers=bearer("team-a"))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "script-src 'self';" in page.headers["content-security-policy"]
    html = page.text
    assert "at $0.20 per billion samples (cost.price_per_billion_samples)" in html
    assert '<body class="theme-dark">' in html
    options = re.findall(
        r'<option value="([^"]+)"( selected)?>', html.split('data-param="range"')[1].split("</select>")[0]
    )
    assert options == [("24h", ""), ("7d", " selected"), ("31d", "")]
    found = re.search(r'<script type="application/json" id="panel-config">(.*?)</script>', html)
    assert found is not None
    config = orjson.loads(found.group(1))
    assert [p["src"] for p in config["panels"]] == [
        f"/cost/{chart}.json?range=7d&theme=dark" for chart in CHARTS
    ]
    assert config["controls"] == ["range"] and config["fixedRange"] is False
    # Every script is a file of the gateway's or the JSON data block: nothing inline runs.
    scripts = re.findall(r"<script([^>]*)>", html)
    assert scripts and all('type="application/json"' in s or 'src="/panels/static/' in s for s in scripts)

    refused = await client.get("/cost")
    assert refused.status_code == 401 and refused.headers["content-type"].startswith("text/html")
    assert "Basic" in refused.headers["www-authenticate"]  # a browser may ask its user
    assert "/cost/" not in refused.text  # the sign-in page, not the charts


async def test_each_caller_sees_its_own_spending(secured: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, gateway = secured
    await spend(
        gateway,
        "team-a",
        2_000_000_000,
        500_000,
        dashboard="pay",
        dashboard_title="Payments",
        panel="2",
        panel_title="Latency",
        user="ann",
    )
    await spend(
        gateway, "admin", 40_000_000, dashboard="ops", dashboard_title="Operations", panel="7", user="bob"
    )
    await spend(gateway, "admin", 3_000)  # no dashboard named

    async def bars(chart: str, headers: dict[str, str]) -> dict[str, list[Any]]:
        answer = await client.get(
            f"/cost/{chart}.json", params={"range": "24h", "tz": "UTC"}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        charged, saved, _ = answer.json()["data"]
        return {"y": charged["y"], "x": charged["x"], "saved": saved["x"], "text": charged["text"]}

    everyone = await bars("dashboard", bearer("admin"))
    assert everyone == {
        "y": ["Payments", "Operations", "(none named)"],
        "x": [2_000_000_000, 40_000_000, 3_000],
        "saved": [500_000, 0, 0],
        "text": ["2G · $0.40", "40M · $0.0080", "3k · <$0.000001"],
    }
    assert (await bars("panel", bearer("admin")))["y"] == ["Latency", "ops/7", "(none named)"]
    assert (await bars("user", bearer("admin")))["y"] == ["ann", "bob", "(none named)"]
    assert (await bars("principal", bearer("admin")))["y"] == ["team-a", "admin"]
    for team_a in (bearer("team-a"), {"X-Forwarded-User": "team-a"}):  # a token, or the proxy's word
        assert (await bars("dashboard", team_a))["y"] == ["Payments"]
        assert await bars("principal", team_a) == {
            "y": ["team-a"],
            "x": [2_000_000_000],
            "saved": [500_000],
            "text": ["2G · $0.40"],
        }
        over_time = await client.get("/cost/over_time.json", headers=team_a)
        assert over_time.json()["layout"]["meta"]["charged"] == 2_000_000_000
    over_time = (
        await client.get("/cost/over_time.json", params={"range": "7d"}, headers=bearer("admin"))
    ).json()
    meta = over_time["layout"]["meta"]
    assert (meta["range"], meta["charged"], meta["saved"], meta["empty"]) == (
        "7d",
        2_040_003_000,
        500_000,
        False,
    )
    assert over_time["layout"]["title"]["text"].startswith("Last 7d: 2.04G samples charged ($0.41)")


async def test_figures_need_credentials_even_where_pages_are_public(amp: AmpStandin) -> None:
    async with in_process(page_settings(amp, public=True)) as (client, gateway):
        await spend(gateway, "admin", 1_000, dashboard="ops")
        page = await client.get("/cost")
        assert page.status_code == 200 and '"src":"/cost/dashboard.json"' in page.text
        for headers in ({}, {"Authorization": "Bearer not-a-token-of-anyone"}):
            figure = await client.get("/cost/dashboard.json", headers=headers)
            assert figure.status_code == 401 and figure.json()["errorType"] == "unauthorized"
            assert "ops" not in figure.text


async def test_the_apis_refusals_reach_the_chart(secured: tuple[httpx.AsyncClient, Gateway]) -> None:
    client, _ = secured
    for path, params, status, words in [
        ("/cost/dashboard.json", {"range": "40d"}, 400, 'invalid parameter "range": at most 31d'),
        (
            "/cost/over_time.json",
            {"range": "yesterday"},
            400,
            'invalid parameter "range": not a valid duration',
        ),
        ("/cost/user.json", {"tz": "Mars/Base"}, 400, "unknown time zone 'Mars/Base'"),
        ("/cost/team.json", {}, 404, "no such cost chart: 'team'; there are over_time, dashboard, panel"),
    ]:
        answer = await client.get(path, params=params, headers=bearer("admin"))
        assert answer.status_code == status, answer.text
        assert answer.json()["status"] == "error" and words in answer.json()["error"]
    # The API's rate limit is the caller's: its 429 and Retry-After come through.
    first = await client.get("/cost/dashboard.json", headers=bearer("slow"))
    second = await client.get("/cost/dashboard.json", headers=bearer("slow"))
    assert first.status_code == 200
    assert second.status_code == 429 and second.json()["errorType"] == "too_many_requests"
    assert int(second.headers["retry-after"]) > 0


# -- the page in chromium ---------------------------------------------------------------------------

RATE = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
PAYMENTS = [
    Panel("pay", "Payments", 1, "CPU by instance", RATE),
    Panel("pay", "Payments", 2, "CPUs", "sum(demo_num_cpus)"),
]
API = [Panel("api", "API latency", 4, "Buckets", "sum by (le) (demo_api_request_duration_seconds_bucket)")]
TITLES = {"pay": "Payments", "api": "API latency"}
SAVED_BY_ANOTHER_WORKER = 4_000_000


@pytest.fixture(scope="module")
def costly(amp: AmpStandin, module_aws_env: None) -> Iterator[LiveGateway]:
    settings = gateway_settings(
        amp,
        raw={
            "cache": {"mode": "memory"},
            "cost": {"price_per_billion_samples": PRICE},
            "auth": {"principals": principals()},
            "panels": {"frame_ancestors": ["'self'"]},
        },
    )
    gateway = LiveGateway(settings).start()
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
async def replayed(costly: LiveGateway, amp: AmpStandin, prometheus: PrometheusServer) -> list[Sent]:
    """team-a's Grafana user ann looks at Payments twice, admin's bob at API latency once (their
    bearer tokens, as Grafana's data source sends them); then another worker of the host
    records samples the cache saved for ann's first Payments panel."""
    end = prometheus.data_end - 1200
    ann = Viewer("ann", 1, SECRETS["team-a"], "team-a")
    bob = Viewer("bob", 2, SECRETS["admin"], "admin")
    sent: list[Sent] = []
    async with httpx.AsyncClient(base_url=costly.url, timeout=60) as client:
        for viewer, panels, refreshes in ((ann, PAYMENTS, 2), (bob, API, 1)):
            traffic = Traffic([viewer], panels, refreshes, end - 1800, end, 30)
            sent += await replay_async(client, costly.url, traffic, amp)
    assert {s.status for s in sent} == {200} and all(s.charged_samples > 0 for s in sent if s.refresh == 0)
    gateway: Gateway = costly.app.state.gateway
    worker = Ledger(gateway.settings.cost, gateway.host, None, Metrics())  # on the host's store
    asked = request(
        "query_range",
        principal=Principal(name="team-a"),
        origin=Origin(dashboard="pay", panel="1", org="1", user="ann"),
        workspace=gateway.settings.workspaces[0],
    )
    await worker.saved(asked, SAVED_BY_ANOTHER_WORKER)
    await worker.aclose()  # flushed
    return sent


@dataclass
class Watched:
    """A page and every complaint: console errors and warnings, page errors, failed requests."""

    page: Any
    complaints: list[str] = field(default_factory=list)

    async def open(self, url: str, revision: int = 1) -> None:
        """`url`, once its charts are drawn `revision` times (a function, not a string: the
        page's CSP forbids eval, and Playwright evaluates strings with it)."""
        await self.page.goto(url)
        await self.settled(revision)

    async def settled(self, revision: int) -> None:
        await self.page.wait_for_function(
            "n => Number(document.body.dataset.revision || 0) >= n", arg=revision
        )

    async def clean(self) -> bool:
        violations = await self.page.evaluate("() => window.cspViolations || []")
        return self.complaints == [] and violations == []


def basic(user: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{SECRETS[user]}".encode()).decode()


@contextlib.asynccontextmanager
async def signed_in(browser: Any, user: str) -> AsyncIterator[Watched]:
    """A tab signed in as `user` (HTTP basic: every request carries the credentials, as a
    browser's do once its user signed in), that notes every Content-Security-Policy violation
    (an init script runs outside the page's CSP)."""
    context = await browser.new_context(
        viewport={"width": 1280, "height": 900}, extra_http_headers={"Authorization": basic(user)}
    )
    await context.add_init_script(
        "document.addEventListener('securitypolicyviolation',"
        " e => (window.cspViolations = window.cspViolations || []).push(e.violatedDirective));"
    )
    page = await context.new_page()
    page.set_default_timeout(15_000)
    tab = Watched(page)
    page.on("console", lambda m: tab.complaints.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda err: tab.complaints.append(f"page error: {err}"))
    page.on("requestfailed", lambda r: tab.complaints.append(f"failed: {r.url}"))
    try:
        yield tab
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        try:
            await page.screenshot(path=str(ARTIFACTS / f"panels-cost-as-{user}.png"), full_page=True)
        finally:
            await context.close()


async def drawn(page: Any, chart: str) -> dict[str, Any]:
    """What Plotly drew for a chart: its state, bars (names, samples, texts), table and title."""
    return await page.evaluate(
        """id => {
            const box = document.getElementById(id), plot = box.querySelector('.plot');
            const bars = (plot.data || []).filter(t => t.type === 'bar');
            return {
                state: box.dataset.state,
                names: bars.length ? Array.from(bars[0].y) : [],
                charged: bars.length ? Array.from(bars[0].x) : [],
                saved: bars.length > 1 ? Array.from(bars[1].x) : [],
                texts: Array.from(plot.querySelectorAll('.bars .bartext')).map(t => t.textContent),
                ticks: Array.from(plot.querySelectorAll('.ytick text')).map(t => t.textContent),
                cells: Array.from(plot.querySelectorAll('.table .cell-text')).map(t => t.textContent),
                title: (plot.querySelector('.gtitle') || {}).textContent || '',
                notes: Array.from(plot.querySelectorAll('.annotation-text')).map(t => t.textContent),
            };
        }""",
        f"cost-{chart.replace('_', '-')}",
    )


async def api_rows(gateway: LiveGateway, user: str, by: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        answer = await client.get("/api/v1/gateway/cost", params={"by": by}, headers=bearer(user))
    rows: list[dict[str, Any]] = answer.json()["data"]["rows"]
    return rows


async def test_after_a_grafana_replay_the_page_shows_who_spends_what(
    costly: LiveGateway, replayed: list[Sent], browser: Any
) -> None:
    charged = charged_by(replayed, by_dashboard)
    async with signed_in(browser, "admin") as tab:
        page = tab.page
        await tab.open(f"{costly.url}/cost")
        dashboards = await drawn(page, "dashboard")
        assert dashboards["state"] == "drawn"
        order = sorted(charged, key=lambda uid: -charged[uid])  # most samples first
        assert dashboards["names"] == [TITLES[uid] for uid in order]  # the titles Grafana sent
        assert dashboards["charged"] == [charged[uid] for uid in order] and min(charged.values()) > 0
        rows = {row["key"]: row for row in await api_rows(costly, "admin", "dashboard")}
        assert dashboards["saved"] == [rows[uid]["saved_samples"] for uid in order]
        assert rows["pay"]["saved_samples"] >= SAVED_BY_ANOTHER_WORKER
        assert set(dashboards["ticks"]) == {"Payments", "API latency"}
        for uid in order:
            assert (
                f"{samples_text(charged[uid])} · {money_text(charged[uid] * PRICE / 1e9)}"
                in dashboards["texts"]
            )
            assert {f"{TITLES[uid]} ({uid})", f"{charged[uid]:,}"} <= set(dashboards["cells"])

        panels = await drawn(page, "panel")
        assert set(panels["names"]) == {"CPU by instance", "CPUs", "Buckets"}
        principals_ = await drawn(page, "principal")
        by_who = charged_by(replayed, by_principal)
        assert dict(zip(principals_["names"], principals_["charged"], strict=True)) == by_who
        users = await drawn(page, "user")
        assert dict(zip(users["names"], users["charged"], strict=True)) == {
            "ann": by_who["team-a"],
            "bob": by_who["admin"],
        }
        over_time = await drawn(page, "over_time")
        assert over_time["state"] == "drawn"
        assert over_time["title"].startswith(
            f"Last 24h: {samples_text(sum(charged.values()))} samples charged"
        )
        assert "at $0.20 per billion samples" in await page.locator(".subtitle").text_content()

        await page.select_option("select[data-param='range']", "7d")
        await tab.settled(2)
        assert "range=7d" in page.url
        assert (await drawn(page, "over_time"))["title"].startswith("Last 7d: ")
        assert (await drawn(page, "dashboard"))["charged"] == dashboards["charged"]
        assert await tab.clean(), tab.complaints


async def test_a_team_sees_only_its_own_spending(
    costly: LiveGateway, replayed: list[Sent], browser: Any
) -> None:
    async with signed_in(browser, "team-a") as tab:
        page = tab.page
        await tab.open(f"{costly.url}/cost")
        assert (await drawn(page, "dashboard"))["names"] == ["Payments"]
        assert (await drawn(page, "principal"))["names"] == ["team-a"]
        assert (await drawn(page, "user"))["names"] == ["ann"]
        assert "bob" not in await page.content() and "API latency" not in await page.content()
        assert await tab.clean(), tab.complaints


async def test_before_any_query_the_page_says_so(live: LiveGateway, tab: Any) -> None:
    await Watched(tab.page).open(f"{live.url}/cost")
    for chart in CHARTS:
        seen = await drawn(tab.page, chart)
        assert seen["state"] == "empty" and seen["names"] == []
        assert seen["notes"] == ["No queries counted yet in the last 24h"]
    assert tab.console_errors == [] and tab.failed_requests == []


async def test_chromium_answers_the_sign_in_challenge(costly: LiveGateway, browser: Any) -> None:
    """Chromium reads the first challenge only: with Bearer first it showed the 401 page."""
    context = await browser.new_context(http_credentials={"username": "admin", "password": SECRETS["admin"]})
    try:
        page = await context.new_page()
        answer = await page.goto(f"{costly.url}/cost")
        assert answer is not None and answer.status == 200 and await page.title() == "Cost"
    finally:
        await context.close()
