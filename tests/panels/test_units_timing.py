"""Step and unit arithmetic (pure functions: Grafana's tables, prefixes)."""

from __future__ import annotations

import pytest

from gateway.panels import timing, units
from gateway.panels.figure import legend_name
from gateway.panels.spec import parse_panel, parse_time_range, rate_expr, substitute
from gateway.pipeline.endpoints.params import Params


@pytest.mark.parametrize(
    ("interval_ms", "rounded"),
    [
        (3600, 5000),
        (14_999, 15000),
        (21_600, 20000),
        (604_800, 600000),
        (86_400_000, 86400000),
        (4e9, 31536000000),
    ],
)
def test_round_interval_follows_grafanas_table(interval_ms: float, rounded: int) -> None:
    assert timing.round_interval(interval_ms) == rounded


def test_step_from_range_and_width_like_grafana() -> None:
    hour = 3600_000
    # 1h over 1000 px: 3.6 s rounds to 5 s, raised to the 15 s minimum interval.
    assert timing.step_ms(hour, timing.auto_interval_ms(hour, 1000, 15_000)) == 15_000
    # 6h over 1000 px: 21.6 s rounds to 20 s.
    assert timing.step_ms(6 * hour, timing.auto_interval_ms(6 * hour, 1000, 15_000)) == 20_000
    # 30 days over 20000 px would be 2 m; Prometheus's 11,000 points limit needs 236 s.
    month = 30 * 24 * hour
    assert timing.step_ms(month, timing.auto_interval_ms(month, 20_000, 15_000)) == 236_000
    assert timing.rate_interval_ms(15_000, 15_000) == 60_000
    assert timing.rate_interval_ms(120_000, 15_000) == 135_000


def test_time_range_is_aligned_to_the_step() -> None:
    params = Params([("range", "6h"), ("width", "1000")])
    now = 1_700_000_123_456
    window = parse_time_range(params, now_ms=now)
    assert window.step_ms == 20_000
    assert window.end_ms % 20_000 == 0 and window.start_ms % 20_000 == 0
    assert now - 20_000 < window.end_ms <= now
    assert window.relative
    absolute = parse_time_range(Params([("start", "1700000000"), ("end", "1700003600"), ("step", "30s")]))
    assert (absolute.start_ms, absolute.end_ms, absolute.step_ms) == (1699999980000, 1700003580000, 30000)
    assert not absolute.relative


def test_rate_panel_builds_the_classic_query() -> None:
    assert (
        rate_expr("http_requests_total", ("path",), 'job="recommender"', "5m")
        == 'sum by (path) (rate(http_requests_total{job="recommender"}[5m]))'
    )
    params = Params([("metric", "http_requests_total"), ("by", "path"), ("match", 'job="recommender"')])
    panel = parse_panel(params, "rate", now_ms=1_700_000_000_000)
    # window defaults to $__rate_interval: max(15s + 15s, 4 x 15s)
    assert panel.expr == 'sum by (path) (rate(http_requests_total{job="recommender"}[1m]))'
    assert panel.legend == "{{path}}"
    assert panel.unit == "reqps"


def test_variables_cannot_break_out_of_a_string() -> None:
    text = substitute('up{job="$job"}', {"job": '"} or vector(1) or up{a="'})
    assert text == 'up{job="\\"} or vector(1) or up{a=\\""}'


@pytest.mark.parametrize(
    ("unit", "largest", "divisor", "suffix"),
    [
        ("Bps", 3e6, 1024**2, " MiB/s"),
        ("B/s", 900, 1, " B/s"),
        ("bytes", 16e9, 1024**3, " GiB"),
        ("reqps", 1500, 1000, "k req/s"),
        ("reqps", 0.2, 1, " req/s"),
        ("s", 0.012, 0.001, " ms"),
        ("percentunit", 0.04, 0.01, "%"),
        ("", 2.5e6, 1e6, "M"),
        ("widgets", 12, 1, " widgets"),
    ],
)
def test_one_prefix_per_axis(unit: str, largest: float, divisor: float, suffix: str) -> None:
    scale = units.choose_scale(units.resolve(unit), largest)
    assert scale.divisor == pytest.approx(divisor)
    assert scale.suffix == suffix


def test_legend_templates_like_grafana() -> None:
    metric = {"__name__": "http_requests_total", "path": "/api", "status": "200"}
    assert legend_name("{{path}} ({{ status }})", metric, "q") == "/api (200)"
    assert legend_name("{{missing}}x", metric, "q") == "x"
    assert legend_name("", metric, "q") == 'http_requests_total{path="/api", status="200"}'
    assert legend_name("", {}, "sum(x)") == "sum(x)"
