"""The cost meter against the AMP stand-in and the real Prometheus behind it: answers byte for
byte what Prometheus sends without stats, the samples charged are what AMP billed, budgets cap
AMP's error threshold and then refuse before anything is sent."""

from __future__ import annotations

import asyncio
import gzip

import httpx
import orjson
from hypothesis import given
from hypothesis import strategies as st
from support.amp_standin import AmpStandin
from support.gateway import gateway_settings, in_process
from support.prometheus import PrometheusServer
from support.stages import request

from gateway.app import Gateway
from gateway.config import Settings
from gateway.pipeline.cost.budget import capped
from gateway.pipeline.cost.large import metered_large
from gateway.pipeline.cost.meter import _metered
from gateway.pipeline.cost.stats import take_stats
from gateway.pipeline.endpoints.params import ERROR_THRESHOLD
from gateway.pipeline.model import Answer, Origin, Request

QUERY = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
GRAFANA = {"X-Dashboard-Uid": "d1", "X-Panel-Id": "4", "X-Grafana-User": "alice", "X-Grafana-Org-Id": "1"}

labels = st.dictionaries(
    st.text(min_size=1, max_size=8), st.text(max_size=12), max_size=4
)  # any text: quotes, braces, `,"stats":{` itself


@given(
    series=st.lists(labels, max_size=4),
    steps=st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)), max_size=6),
    warnings=st.lists(st.text(max_size=12), max_size=2),
    asked=st.booleans(),
)
def test_stats_come_off_byte_for_byte_and_are_read(
    series: list[dict[str, str]], steps: list[tuple[int, int]], warnings: list[str], asked: bool
) -> None:
    data = {"resultType": "vector", "result": [{"metric": m, "value": [1, "1"]} for m in series]}
    without = orjson.dumps(
        {"status": "success", "data": data, **({"warnings": warnings} if warnings else {})}
    )
    total = sum(n for _, n in steps)
    stats = {
        "timings": {"evalTotalTime": 0.1},
        "samples": {
            "totalQueryableSamplesPerStep": [[t / 1000, n] for t, n in steps],
            "totalQueryableSamples": total,
            "peakSamples": 3,
        },
    }
    with_stats = orjson.dumps(
        {
            "status": "success",
            "data": {**data, "stats": stats},
            **({"warnings": warnings} if warnings else {}),
        }
    )
    taken = take_stats(with_stats, remove=not asked)
    assert taken.body == (with_stats if asked else without)
    assert taken.samples == total
    assert taken.per_step == tuple(steps)
    assert take_stats(without, remove=True).samples == -1
    assert take_stats(without, remove=True).body is without


async def _direct(prometheus_url: str, form: dict[str, str], path: str, gz: bool) -> bytes:
    headers = {"Accept-Encoding": "gzip" if gz else "identity"}
    async with httpx.AsyncClient() as client:
        return (await client.post(prometheus_url + path, data=form, headers=headers)).content


async def test_answers_are_prometheus_own_bytes_and_samples_are_charged(
    fresh_amp, aws_env, prometheus
) -> None:
    end = prometheus.data_end - 600
    forms = {
        "/api/v1/query": {"query": QUERY, "time": str(end)},
        "/api/v1/query_range": {"query": QUERY, "start": str(end - 1800), "end": str(end), "step": "15"},
    }
    async with in_process(gateway_settings(fresh_amp)) as (client, gateway):
        for path, form in forms.items():
            for gz in (False, True):
                fresh_amp.reset()
                answer = await client.post(
                    path, data=form, headers={**GRAFANA, "Accept-Encoding": "gzip" if gz else "identity"}
                )
                assert answer.status_code == 200, answer.text
                assert answer.content == await _direct(prometheus.url, form, path, gz), (path, gz)
                [sent] = fresh_amp.forwarded
                assert sent.param("stats") == "all"
            # Asked for: the client's stats, as Prometheus wrote them (timings differ run to run).
            asked = await client.post(path, data={**form, "stats": "all"}, headers=GRAFANA)
            direct = await _direct(prometheus.url, {**form, "stats": "all"}, path, False)
            assert _untimed(asked.content) == _untimed(direct)
        await gateway.ledger.flush()
        billed = fresh_amp.charged_samples()
        assert billed > 0
    fresh_amp.reset()
    # Everything the stand-in billed over the test, attributed: the two queries, 3 times each.
    async with in_process(gateway_settings(fresh_amp)) as (client, gateway):
        for path, form in forms.items():
            await client.post(path, data=form, headers=GRAFANA)
        await gateway.ledger.flush()
        billed = fresh_amp.charged_samples()
        rows = {by: await gateway.ledger.rows(by, 3600, None) for by in ("dashboard", "panel", "user")}
    assert [(r.key, r.samples) for r in rows["dashboard"]] == [("d1", billed)]
    assert [(r.key, r.samples) for r in rows["panel"]] == [("d1/4", billed)]
    assert [(r.key, r.samples) for r in rows["user"]] == [("alice", billed)]


async def _costed(amp: AmpStandin, prometheus: PrometheusServer) -> tuple[dict[str, str], int]:
    """A 30 min range query's form, and what it costs AMP, measured first (then forgotten)."""
    end = prometheus.data_end - 600
    form = {"query": QUERY, "start": str(end - 1800), "end": str(end), "step": "15"}
    async with in_process(gateway_settings(amp)) as (client, _):
        await client.post("/api/v1/query_range", data=form)
    cost = amp.charged_samples()
    amp.reset()
    return form, cost


def _untimed(body: bytes) -> object:
    document = orjson.loads(body)
    del document["data"]["stats"]["timings"]
    return document


def _budgeted(amp: AmpStandin, samples: int, share: float = 0.5) -> Settings:
    return gateway_settings(
        amp,
        raw={
            "cost": {
                "soft_share": share,
                "budgets": [{"dashboard": "d1", "samples": samples, "per": "day"}],
            }
        },
    )


async def test_a_budget_caps_amps_threshold_warns_past_its_share_and_then_refuses(
    fresh_amp, aws_env, prometheus
) -> None:
    form, cost = await _costed(fresh_amp, prometheus)
    budget = cost * 2 + cost // 2  # two queries fit, a third does not
    async with in_process(_budgeted(fresh_amp, budget)) as (client, gateway):
        first = await client.post("/api/v1/query_range", data=form, headers=GRAFANA)
        assert first.status_code == 200 and "warnings" not in orjson.loads(first.content)
        assert fresh_amp.forwarded[-1].error_threshold == budget
        await gateway.ledger.flush()
        second = await client.post("/api/v1/query_range", data=form, headers=GRAFANA)
        assert fresh_amp.forwarded[-1].error_threshold == budget - cost
        [warning] = orjson.loads(second.content)["warnings"]
        assert warning.startswith('dashboard "d1"\'s daily budget: ') and "(80%)" in warning, warning
        await gateway.ledger.flush()
        # Left: half a query's samples. AMP is asked with that threshold and refuses, unbilled.
        third = await client.post("/api/v1/query_range", data=form, headers=GRAFANA)
        assert fresh_amp.forwarded[-1].error_threshold == budget - 2 * cost
        assert third.status_code == 422 and not fresh_amp.forwarded[-1].charged
        # Spent in full: refused before anything is sent.
        await gateway.ledger.charge(gateway_request(gateway), budget)
        await gateway.ledger.flush()
        sent = len(fresh_amp.forwarded)
        refused = await client.post("/api/v1/query_range", data=form, headers=GRAFANA)
        assert refused.status_code == 429
        error = orjson.loads(refused.content)
        assert error["errorType"] == "too_many_requests"
        assert error["error"].startswith(
            f'dashboard "d1"\'s daily budget of {budget:,} query samples is spent'
        )
        assert "it resets at" in error["error"] and int(refused.headers["retry-after"]) > 0
        assert len(fresh_amp.forwarded) == sent
        # Other dashboards are not refused.
        other = await client.post(
            "/api/v1/query_range", data=form, headers={**GRAFANA, "X-Dashboard-Uid": "d2"}
        )
        assert other.status_code == 200


def gateway_request(gateway: Gateway) -> Request:
    """A request of dashboard d1, as the meter charges it."""
    return request("query_range", origin=Origin(dashboard="d1"), workspace=gateway.settings.workspaces[0])


@given(
    series=st.lists(labels, max_size=4),
    steps=st.lists(st.tuples(st.integers(0, 2**40), st.integers(0, 2**40)), max_size=6),
    asked=st.booleans(),
    members=st.integers(1, 3),
)
def test_a_large_answer_is_metered_in_files_as_a_small_one_in_memory(
    series: list[dict[str, str]], steps: list[tuple[int, int]], asked: bool, members: int
) -> None:
    data = {"resultType": "vector", "result": [{"metric": m, "value": [1, "1"]} for m in series]}
    stats = {
        "samples": {
            "totalQueryableSamplesPerStep": [[t / 1000, n] for t, n in steps],
            "totalQueryableSamples": 7,
        }
    }
    body = orjson.dumps({"status": "success", "data": {**data, "stats": stats}})
    small = _metered(Answer(body, size=len(body)), not asked)
    large = metered_large(Answer(body, size=len(body)), not asked)
    assert bytes(large.body) == bytes(small.body) and large.size == len(bytes(small.body))
    assert (large.samples_processed, large.samples_per_step) == (7, tuple(steps))
    # gzip in several members (gzip.decompress reads them all, as `send` does)
    cut = [body[i * len(body) // members : (i + 1) * len(body) // members] for i in range(members)]
    packed = b"".join(gzip.compress(part) for part in cut)
    large = metered_large(Answer(packed, gzipped=True, size=len(body)), not asked)
    assert large.gzipped and gzip.decompress(bytes(large.body)) == bytes(small.body)


async def test_an_empty_stats_from_the_client_does_not_hide_the_samples(
    fresh_amp, aws_env, prometheus
) -> None:
    """`stats=` (empty) first: Prometheus reads no stats from it, and a second stats=all after
    it would be ignored; exactly one stats=all goes up, and the samples are charged."""
    end = prometheus.data_end - 600
    form = [("query", QUERY), ("time", str(end)), ("stats", "")]
    async with in_process(gateway_settings(fresh_amp)) as (client, gateway):
        answer = await client.post("/api/v1/query", data=dict(form), headers=GRAFANA)
        assert answer.status_code == 200 and b'"stats"' not in answer.content
        [sent] = fresh_amp.forwarded
        assert [v for k, v in sent.params if k == "stats"] == ["all"]
        await gateway.ledger.flush()
        [row] = await gateway.ledger.rows("dashboard", 3600, None)
        assert row.samples == fresh_amp.charged_samples() > 0


@given(
    st.one_of(
        st.sampled_from(["³", "١٢", "0", "-5", "1e6", " 7", "9" * 5000, "", "12a"]),
        st.text(max_size=30),
    )
)
def test_a_threshold_is_sent_as_checked_whatever_the_client_wrote(given_threshold: str) -> None:
    budgeted, cap = capped(
        request("query", params=(("query", "up"), (ERROR_THRESHOLD, given_threshold))), 500
    )
    sent = [v for k, v in budgeted.params if k == ERROR_THRESHOLD]
    assert sent == [str(cap)] and 1 <= cap <= 500
    if given_threshold.isascii() and given_threshold.isdigit() and 0 < int(given_threshold[:6]) <= 500:
        assert cap == int(given_threshold)


def test_a_sample_count_is_a_whole_number_a_counter_holds() -> None:
    for bad in (b"1e300", b"-1", b"1.5", b'"7"', str(1 << 62).encode()):
        body = (
            b'{"status":"success","data":{"resultType":"vector","result":[],"stats":{"samples":{"totalQueryableSamples":'
            + bad
            + b"}}}}"
        )
        assert take_stats(body, remove=True).samples == -1, bad
    nested = (
        b'{"status":"success","data":{"result":[],"stats":{"samples":' + b"{" * 20000 + b"}" * 20000 + b"}}}"
    )
    assert take_stats(nested, remove=True).samples == -1  # (linear in the nesting: once each brace)


async def test_fetches_in_flight_together_cannot_overspend_a_budget_twice_over(
    fresh_amp, aws_env, prometheus
) -> None:
    form, cost = await _costed(fresh_amp, prometheus)
    budget = cost * 2 + cost // 2
    fresh_amp.inject_delay(0.5, count=20)  # ten at once, all in flight together
    async with in_process(_budgeted(fresh_amp, budget)) as (client, gateway):
        answers = await asyncio.gather(
            *(client.post("/api/v1/query_range", data=form, headers=GRAFANA) for _ in range(10))
        )
        await gateway.ledger.flush()
        spent = await gateway.ledger.spent("dashboard", "d1", "day", gateway.clock())
    assert spent == fresh_amp.charged_samples() <= 2 * budget
    thresholds = [r.error_threshold for r in fresh_amp.forwarded]
    assert sum(t for t in thresholds if t is not None) <= 2 * budget, thresholds
    assert {a.status_code for a in answers} <= {200, 422, 429}
    assert sum(a.status_code == 200 for a in answers) >= 2


async def test_only_fetches_with_the_same_threshold_share_one(fresh_amp, aws_env, prometheus) -> None:
    """A request without a budget never joins a budgeted one in flight (and gets its refusal)."""
    form, cost = await _costed(fresh_amp, prometheus)
    fresh_amp.inject_delay(0.5, count=2)
    async with in_process(_budgeted(fresh_amp, cost // 2)) as (client, _):
        budgeted, free = await asyncio.gather(
            client.post("/api/v1/query_range", data=form, headers=GRAFANA),
            client.post("/api/v1/query_range", data=form),
        )
    assert budgeted.status_code == 422 and free.status_code == 200, free.text
    assert len(fresh_amp.forwarded) == 2


async def test_a_request_that_joins_anothers_fetch_counts_it_as_saved(fresh_amp, aws_env, prometheus) -> None:
    """Two users ask for the same query at once: AMP is asked once; the first is charged, the
    second saved what AMP processed."""
    form, cost = await _costed(fresh_amp, prometheus)
    fresh_amp.inject_delay(0.5, count=1)
    async with in_process(gateway_settings(fresh_amp)) as (client, gateway):
        first, second = await asyncio.gather(
            client.post("/api/v1/query_range", data=form, headers=GRAFANA),
            client.post("/api/v1/query_range", data=form, headers={**GRAFANA, "X-Grafana-User": "bob"}),
        )
        assert first.status_code == second.status_code == 200
        assert first.content == second.content and len(fresh_amp.forwarded) == 1
        await gateway.ledger.flush()
        users = {r.key: (r.samples, r.saved_samples) for r in await gateway.ledger.rows("user", 3600, None)}
    assert sorted(users.values()) == [(0, cost), (cost, 0)]
