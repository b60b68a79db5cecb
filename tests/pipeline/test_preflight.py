"""The pre-flight guards alone: what AMP's query time range and samples quotas refuse, the fix
each message names (and that the fix passes), the sample history, and the stage before an
upstream that records what reaches it."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from support.stages import FakeUpstream, request

from gateway.config import ConfigError, Workspace
from gateway.config.quotas import DAY_MS, QuotaSettings, read_quotas
from gateway.config.readers import Reader
from gateway.errors import GatewayError
from gateway.golang import parse_duration_ms
from gateway.metrics import Metrics
from gateway.pipeline.model import QueryWindow
from gateway.pipeline.preflight import (
    SampleHistory,
    Spans,
    check_instant,
    check_range,
    check_request,
    check_samples,
    data_span,
    duration_text,
    estimated,
    points,
    preflight,
    smallest_step_ms,
)
from gateway.promql import parse_query

T = 1_700_000_000_000  # a query's time, ms
HOUR = 3_600_000
durations = st.integers(1, 400 * DAY_MS)


@given(durations)
def test_duration_text_is_a_prometheus_duration_of_the_same_length(ms: int) -> None:
    assert parse_duration_ms(duration_text(ms)) == ms


@pytest.mark.parametrize(
    ("query", "back_ms", "read_ms"),
    [
        ("up", 0, 0),
        ("rate(up[40d])", 40 * DAY_MS, 40 * DAY_MS),
        ("up offset 40d", 40 * DAY_MS, 0),
        ("rate(up[5m] offset 1d)", DAY_MS + 5 * 60_000, 5 * 60_000),
        ("max_over_time(rate(up[5m])[40d:1h])", 40 * DAY_MS + 5 * 60_000, 40 * DAY_MS + 5 * 60_000),
        (
            "max_over_time(rate(up[5m] offset 1h)[2d:1h] offset 3d)",
            5 * DAY_MS + HOUR + 5 * 60_000,
            2 * DAY_MS + 5 * 60_000,
        ),
        (f"up @ {(T - 40 * DAY_MS) / 1000}", 40 * DAY_MS, 0),
        (f"rate(up[1d] @ {(T - 10 * DAY_MS) / 1000})", 11 * DAY_MS, DAY_MS),
        ("up + rate(up[3d])", 3 * DAY_MS, 3 * DAY_MS),
        ("rate(up[1d] offset 30d) + rate(up[3d])", 3 * DAY_MS, 3 * DAY_MS),
    ],
)
def test_what_an_instant_query_reads_is_its_widest_selector(query: str, back_ms: int, read_ms: int) -> None:
    """Offsets and `@` move a selector's span; only ranges widen it (Cortex checks each select)."""
    span = data_span(parse_query(query), T, T)
    assert span is not None and T - span.earliest_ms == back_ms
    assert span.latest_ms - span.earliest_ms == read_ms


def test_a_query_without_selectors_reads_nothing() -> None:
    assert data_span(parse_query("1 + time()"), T, T) is None
    assert check_instant(data_span(parse_query("vector(1)"), T, T), T, DAY_MS) is None


def test_at_start_and_end_are_the_query_s_own_even_inside_subqueries() -> None:
    start, end = T - 10 * DAY_MS, T
    span = data_span(parse_query("max_over_time(up[1h] @ start())"), start, end)
    assert span is not None and (span.earliest_ms, span.latest_ms) == (start - HOUR, start)
    span = data_span(parse_query("max_over_time((up @ end())[2d:1m])"), start, end)
    assert span is not None and (span.earliest_ms, span.latest_ms) == (end, end)


@given(range_ms=durations, offset_ms=st.integers(0, 400 * DAY_MS), limit_ms=durations)
def test_an_instant_query_is_refused_exactly_when_a_selector_reads_past_the_quota(
    range_ms: int, offset_ms: int, limit_ms: int
) -> None:
    query = f"rate(up[{duration_text(range_ms)}]" + (
        f" offset {duration_text(offset_ms)})" if offset_ms else ")"
    )
    refused = check_instant(data_span(parse_query(query), T, T), T, limit_ms)
    assert (refused is not None) == (range_ms > limit_ms)
    if refused is not None:
        assert refused.error().status == 422
        assert "use a range query" in refused.message
        assert f"at most {duration_text(limit_ms)}" in refused.message
        assert "quotas.max_instant_range" in refused.message


@given(window_ms=st.integers(0, 200 * DAY_MS), range_ms=durations, limit_ms=durations)
def test_a_range_query_is_refused_when_window_and_reach_pass_the_quota_and_the_fix_fits(
    window_ms: int, range_ms: int, limit_ms: int
) -> None:
    expr = parse_query(f"sum(rate(up[{duration_text(range_ms)}]))")
    refused = check_range(data_span(expr, T - window_ms, T), T - window_ms, T, limit_ms)
    assert (refused is not None) == (window_ms + range_ms > limit_ms)
    if refused is None:
        return
    assert refused.error().status == 400 and refused.error().error_type == "bad_data"
    assert "quotas.max_query_range" in refused.message
    fix = re.search(r"narrow start and end to at most (\S+) apart", refused.message)
    if range_ms >= limit_ms:
        assert fix is None and "shorten the [range]" in refused.message
        return
    assert fix is not None
    allowed = parse_duration_ms(fix.group(1))
    assert check_range(data_span(expr, T - allowed, T), T - allowed, T, limit_ms) is None
    assert check_range(data_span(expr, T - allowed - 1, T), T - allowed - 1, T, limit_ms) is not None


def test_a_range_query_without_selectors_is_measured_by_its_window() -> None:
    assert check_range(None, T - 2 * DAY_MS, T, DAY_MS) is not None
    assert check_range(None, T - DAY_MS, T, DAY_MS) is None


@given(
    samples=st.integers(1, 10**9),
    seen_points=st.integers(1, 11_000),
    window_ms=st.integers(0, 95 * DAY_MS),
    limit=st.integers(1, 10**9),
)
def test_the_smallest_step_is_the_first_whose_estimate_fits(
    samples: int, seen_points: int, window_ms: int, limit: int
) -> None:
    step = smallest_step_ms(samples, seen_points, window_ms, limit)
    if step is None:
        assert estimated(samples, seen_points, 1) > limit
        return
    assert estimated(samples, seen_points, points(0, window_ms, step)) <= limit
    if step > 1:
        assert estimated(samples, seen_points, points(0, window_ms, step - 1)) > limit


@given(
    samples=st.integers(1, 10**8),
    seen_points=st.integers(1, 2000),
    steps=st.integers(1, 11_000),
    step_ms=st.sampled_from([1000, 15_000, 60_000, 300_000]),
    limit=st.integers(1, 10**8),
)
def test_a_range_query_over_the_samples_quota_is_refused_with_a_step_that_fits(
    samples: int, seen_points: int, steps: int, step_ms: int, limit: int
) -> None:
    end = T
    start = end - (steps - 1) * step_ms
    refused = check_samples(samples, seen_points, start, end, step_ms, limit)
    estimate = estimated(samples, seen_points, steps)
    assert (refused is not None) == (samples <= limit < estimate)
    if refused is None:
        return
    assert refused.error().status == 422
    assert f"{limit:,}" in refused.message and "quotas.max_samples" in refused.message
    fix = re.search(r"raise the step to (\S+) or more", refused.message)
    if fix is None:
        assert "one step alone" in refused.message
        return
    new_step = parse_duration_ms(fix.group(1))
    assert new_step > step_ms
    assert estimated(samples, seen_points, points(start, end, new_step)) <= limit


def test_an_answer_already_over_the_quota_is_no_evidence_for_refusing() -> None:
    # AMP answered 20M samples at 100 steps: it does not count samples as this guard does.
    assert check_samples(20_000_000, 100, T - 999 * 60_000, T, 60_000, 12_000_000) is None


def test_no_history_no_refusal_and_the_history_is_per_query_step_and_workspace() -> None:
    history = SampleHistory()
    asked = request(
        "query_range",
        (("query", "sum(up)"), ("step", "60")),
        expr=parse_query("sum(up)"),
        window=QueryWindow(T - 99 * 60_000, T, 60_000_000_000),
    )
    quotas = QuotaSettings(max_samples=10_000)
    assert history.estimate(asked) is None
    assert check_request(asked, quotas, history, T, Spans()) is None
    history.note(asked, 5_000)  # 100 steps, 50 a step
    assert history.estimate(asked) == 5_000
    wider = asked.replace(window=QueryWindow(T - 299 * 60_000, T, 60_000_000_000))  # 300 steps
    assert history.estimate(wider) == 15_000
    refused = check_request(wider, quotas, history, T, Spans())
    assert refused is not None and refused.reason == "samples"
    # 200 steps of 50 fit in 10,000: over 299 minutes a step above 89.7 s makes 200
    assert "raise the step to 1m30s or more" in refused.message
    other_step = wider.replace(window=QueryWindow(T - 299 * 60_000, T, 30_000_000_000))
    assert history.estimate(other_step) is None
    elsewhere = wider.replace(workspace=Workspace("ws-2", "https://x", "us-east-1"))
    assert history.estimate(elsewhere) is None
    assert check_request(wider, QuotaSettings(max_samples=None), history, T, Spans()) is None


def test_the_history_forgets_the_least_recently_used_past_its_capacity() -> None:
    history = SampleHistory(capacity=3)
    asked = [
        request("query", (("query", f"up{{n='{n}'}}"),), expr=parse_query(f"up{{n='{n}'}}")) for n in range(4)
    ]
    for one in asked[:3]:
        history.note(one, 10)
    assert history.estimate(asked[0]) == 10  # read: now the most recent
    history.note(asked[3], 10)
    assert len(history) == 3
    assert history.estimate(asked[1]) is None
    assert all(history.estimate(one) == 10 for one in (asked[0], asked[2], asked[3]))


def test_only_queries_are_remembered() -> None:
    history = SampleHistory()
    history.note(request("series", (("match[]", "up"),)), 10)
    history.note(request("query", (("query", "up"),), expr=parse_query("up")), -1)
    assert len(history) == 0


@pytest.mark.parametrize("endpoint", ["format_query", "parse_query", "query_exemplars"])
def test_endpoints_amp_does_not_evaluate_as_queries_are_not_checked(endpoint: str) -> None:
    asked = request(endpoint, (("query", "rate(up[400d])"),), expr=parse_query("rate(up[400d])"))
    assert check_request(asked, QuotaSettings(), SampleHistory(), T, Spans()) is None


async def test_the_stage_refuses_before_the_upstream_and_counts_by_reason() -> None:
    metrics = Metrics()
    upstream = FakeUpstream()
    history = SampleHistory()
    handle = preflight(QuotaSettings(), history, metrics, clock=lambda: T / 1000)(upstream)
    long_instant = request("query", (("query", "rate(up[40d])"),), expr=parse_query("rate(up[40d])"))
    with pytest.raises(GatewayError) as refused:
        await handle(long_instant)
    assert refused.value.status == 422
    assert upstream.requests == []
    assert metrics.preflight_refused.labels("instant_range")._value.get() == 1
    long_range = request(
        "query_range",
        (("query", "up"),),
        expr=parse_query("up"),
        window=QueryWindow(T - 96 * DAY_MS, T, 3_600_000_000_000),
    )
    with pytest.raises(GatewayError) as refused:
        await handle(long_range)
    assert refused.value.status == 400
    assert metrics.preflight_refused.labels("query_range")._value.get() == 1
    within = long_instant.replace(expr=parse_query("rate(up[31d])"), params=(("query", "rate(up[31d])"),))
    await handle(within)
    assert upstream.requests == [within]


async def test_quotas_turned_off_refuse_nothing() -> None:
    upstream = FakeUpstream()
    off = QuotaSettings(max_query_range_ms=None, max_instant_range_ms=None, max_samples=None)
    handle = preflight(off, SampleHistory(), Metrics())(upstream)
    asked = request("query", (("query", "rate(up[400d])"),), expr=parse_query("rate(up[400d])"))
    await handle(asked)
    assert upstream.requests == [asked]


def test_settings_default_to_amp_s_quotas_and_turn_off_with_0_or_null() -> None:
    defaults = read_quotas(Reader({}, "quotas."))
    assert defaults.max_instant_range_ms == 32 * DAY_MS
    assert defaults.max_query_range_ms == 95 * DAY_MS
    assert defaults.max_samples is None  # off: AMP's quota is not a bound on QSP
    off = read_quotas(Reader({"max_query_range": 0, "max_instant_range": None, "max_samples": 0}, "quotas."))
    assert (off.max_query_range_ms, off.max_instant_range_ms, off.max_samples) == (None, None, None)
    set_ = read_quotas(
        Reader({"max_query_range": "2h", "max_instant_range": 60, "max_samples": 5}, "quotas.")
    )
    assert (set_.max_query_range_ms, set_.max_instant_range_ms, set_.max_samples) == (2 * HOUR, 60_000, 5)
    with pytest.raises(ConfigError, match=r"quotas\.max_samples"):
        read_quotas(Reader({"max_samples": "many"}, "quotas."))
    with pytest.raises(ConfigError, match=r"quotas\.max_query_range"):
        read_quotas(Reader({"max_query_range": "soon"}, "quotas."))


def test_an_instant_query_at_now_is_measured_at_now() -> None:
    far = f"rate(up[40d] @ {(T - 40 * DAY_MS) / 1000})"
    asked = request("query", (("query", far),), expr=parse_query(far))
    assert check_request(asked, QuotaSettings(), SampleHistory(), T, Spans()) is not None
    near = "rate(up[40d])"  # without `time`: at now, wherever now is
    asked = request("query", (("query", near),), expr=parse_query(near))
    assert check_request(asked, QuotaSettings(), SampleHistory(), T, Spans()) is not None
    # A selector pinned 40 days back reads its lookback, not 40 days: AMP answers it.
    pinned = f"up @ {(T - 40 * DAY_MS) / 1000}"
    asked = request("query", (("query", pinned),), expr=parse_query(pinned))
    assert check_request(asked, QuotaSettings(), SampleHistory(), T, Spans()) is None


@given(shift=st.integers(-(10**12), 10**12), range_ms=durations, offset_ms=st.integers(-DAY_MS, DAY_MS))
def test_the_span_moves_with_the_query_s_time(shift: int, range_ms: int, offset_ms: int) -> None:
    assume(offset_ms != 0)
    sign = "-" if offset_ms < 0 else ""
    expr = parse_query(f"rate(up[{duration_text(range_ms)}] offset {sign}{duration_text(abs(offset_ms))})")
    here, there = data_span(expr, T, T), data_span(expr, T + shift, T + shift)
    assert here is not None and there is not None
    assert (there.earliest_ms - here.earliest_ms, there.latest_ms - here.latest_ms) == (shift, shift)


queries = st.sampled_from(
    [
        "up",
        "vector(1)",
        "rate(up[5m] offset 1h)",
        "max_over_time(rate(up[5m])[2d:1h] offset 3d)",
        "up @ 1700000000",
        "max_over_time(up[1h] @ start()) - up",
        "max_over_time((up @ end())[2d:1m])",
        "max_over_time(rate(up[5m])[1d:5m] @ 1699990000) + rate(up[3d] offset -1d)",
    ]
)


@given(
    text=queries,
    windows=st.lists(
        st.tuples(st.integers(-(10**12), 10**12), st.integers(0, 100 * DAY_MS)), min_size=1, max_size=4
    ),
)
def test_remembered_spans_are_the_spans(text: str, windows: list[tuple[int, int]]) -> None:
    spans = Spans()
    expr = parse_query(text)
    for shift, length in windows:
        start, end = T + shift, T + shift + length
        assert spans.span(text, expr, start, end) == data_span(expr, start, end)
