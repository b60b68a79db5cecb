"""The pre-flight guards end to end, against the AMP stand-in and the real Prometheus behind it:
a query AMP's quotas would refuse is answered with the fix and costs no upstream request; one
within the quota is sent. The quotas are set small, for the little data the test Prometheus has."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
from support.amp_standin import AmpStandin
from support.gateway import gateway_settings, in_process
from support.prometheus import PrometheusServer
from support.stages import incoming

from gateway.pipeline.model import ANONYMOUS
from gateway.promql import parse_query, print_expr

STEP = 60


def _query(template: str) -> str:
    """`template` with a selector no other test sends, as the gateway prints it upstream."""
    text = template.format(selector=f'demo_num_cpus{{instance!="{uuid.uuid4().hex}"}}')
    return print_expr(parse_query(text))


def _settings(amp: AmpStandin, **quotas: Any) -> Any:
    return gateway_settings(amp, {"quotas": quotas})


async def test_an_instant_query_reaching_past_the_quota_costs_no_upstream_request(
    fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus: PrometheusServer
) -> None:
    at = str(int(prometheus.data_end))
    over = _query("sum(rate({selector}[61m]))")
    within = _query("sum(rate({selector}[1h]))")
    async with in_process(_settings(fresh_amp, max_instant_range="1h")) as (client, _):
        refused = await client.post("/api/v1/query", data={"query": over, "time": at})
        sent = await client.post("/api/v1/query", data={"query": within, "time": at})
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["errorType"] == "execution"
    assert "use a range query" in body["error"] and "quotas.max_instant_range" in body["error"]
    assert fresh_amp.received_count(over) == 0
    assert sent.status_code == 200, sent.text
    assert sent.json()["data"]["result"], "the query within the quota was answered by Prometheus"
    assert fresh_amp.received_count(within) == 1


async def test_a_range_query_over_the_time_range_costs_no_upstream_request(
    fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus: PrometheusServer
) -> None:
    end = int(prometheus.data_end)
    query = _query("sum(rate({selector}[5m]))")
    async with in_process(_settings(fresh_amp, max_query_range="2h")) as (client, _):
        form = {"query": query, "end": str(end), "step": str(STEP)}
        refused = await client.post("/api/v1/query_range", data={**form, "start": str(end - 7200)})
        # the fix the message names: the window less the 5m the selector reads before start
        sent = await client.post("/api/v1/query_range", data={**form, "start": str(end - 7200 + 300)})
    assert refused.status_code == 400, refused.text
    assert refused.json()["errorType"] == "bad_data"
    assert "narrow start and end to at most 1h55m apart" in refused.json()["error"]
    assert sent.status_code == 200, sent.text
    assert fresh_amp.received_count(query) == 1  # the second only


async def _samples(client: httpx.AsyncClient, form: dict[str, str]) -> int:
    answer = await client.post("/api/v1/query_range", data={**form, "stats": "all"})
    assert answer.status_code == 200, answer.text
    return int(orjson.loads(answer.content)["data"]["stats"]["samples"]["totalQueryableSamples"])


async def test_a_range_query_estimated_over_the_samples_quota_costs_no_upstream_request(
    fresh_amp: AmpStandin, aws_env: dict[str, str], prometheus: PrometheusServer, direct: httpx.AsyncClient
) -> None:
    end = int(prometheus.data_end)
    query = _query("sum(rate({selector}[5m]))")
    base = {"query": query, "end": str(end), "step": str(STEP)}
    first = {**base, "start": str(end - 30 * STEP)}  # 31 steps
    samples = await _samples(direct, first)  # what Prometheus reports processing, as AMP would bill it
    assert samples > 0
    quota = -(-samples * 45 // 31)  # 45 steps at that rate fit, 90 do not
    settings = _settings(fresh_amp, max_samples=quota)
    async with in_process(settings) as (client, gateway):
        assert await _samples(client, first) == samples
        # What the cost meter does after each fetch: the request as sent, the samples it cost.
        sent_request = await gateway.validate(
            incoming("query_range", {**first, "stats": "all"}, method="POST"),
            ANONYMOUS,
            settings.workspaces[0],
        )
        gateway.sample_history.note(sent_request, samples)

        refused = await client.post("/api/v1/query_range", data={**base, "start": str(end - 89 * STEP)})
        assert refused.status_code == 422, refused.text
        assert fresh_amp.received_count(query) == 1  # the first ask only
        message = refused.json()["error"]
        assert f"{quota:,}" in message and "quotas.max_samples" in message and "raise the step to" in message

        just_under = await client.post("/api/v1/query_range", data={**base, "start": str(end - 44 * STEP)})
        assert just_under.status_code == 200, just_under.text
        assert fresh_amp.received_count(query) == 2

        step = message.split("raise the step to ", 1)[1].split(" ", 1)[0]
        at_the_step = await client.post(
            "/api/v1/query_range", data={**base, "start": str(end - 89 * STEP), "step": step}
        )
        assert at_the_step.status_code == 200, at_the_step.text
        assert fresh_amp.received_count(query) == 3
