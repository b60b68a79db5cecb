"""Each stage alone, in front of a fake next handler: what it passes on, answers or refuses."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest
from support.stages import PRINCIPAL, WORKSPACE, FakeUpstream, request

from gateway.config import Limits, Principal, Rate, UpstreamSettings, build_settings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.amp_errors import translate_error
from gateway.pipeline.authorize import authorizer
from gateway.pipeline.coalesce import coalescing
from gateway.pipeline.compose import compose
from gateway.pipeline.limits import size_limits
from gateway.pipeline.local import local_answers
from gateway.pipeline.model import Answer, QueryWindow, Request
from gateway.pipeline.rate import RateLimiter
from gateway.pipeline.result_caps import result_caps
from gateway.pipeline.retry import backoff, retrying
from gateway.pipeline.slots import principal_slots, workspace_slots
from gateway.promql import parse_query


def _sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class Failing:
    """Raises the given errors one after another, then answers."""

    def __init__(self, *errors: GatewayError) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, request: Request) -> Answer:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Answer(b'{"status":"success","data":[]}')


FAST = UpstreamSettings(retries=3, retry_base=0.001, retry_budget=1.0)


async def test_retry_asks_again_for_retryable_errors_only() -> None:
    metrics = Metrics()
    throttled = GatewayError("too_many_requests", "slow down", 429, retry="throttled")
    flaky = Failing(throttled, GatewayError("unavailable", "gone", 503, retry="503"))
    assert (await retrying(FAST, metrics)(flaky)(request())).status == 200
    assert flaky.calls == 3
    assert (
        _sample(metrics, "gateway_upstream_retries_total", {"workspace": "ws-1", "reason": "throttled"}) == 1
    )

    final = Failing(GatewayError("bad_data", "no", 400))
    with pytest.raises(GatewayError) as caught:
        await retrying(FAST, metrics)(final)(request())
    assert final.calls == 1 and caught.value.status == 400


async def test_retry_gives_up_after_its_count_and_says_how_often() -> None:
    down = [GatewayError("unavailable", "unreachable", 503, retry="connection") for _ in range(10)]
    failing = Failing(*down)
    with pytest.raises(GatewayError) as caught:
        await retrying(FAST, Metrics())(failing)(request())
    assert failing.calls == FAST.retries + 1
    assert caught.value.message == f"unreachable after {FAST.retries + 1} attempt(s)"


async def test_retry_keeps_the_request_deadline() -> None:
    async def slow(request: Request) -> Answer:
        await asyncio.sleep(5)
        return Answer(b"{}")

    with pytest.raises(GatewayError) as caught:
        await retrying(FAST, Metrics())(slow)(request(timeout=0.05))
    assert caught.value.error_type == "timeout" and caught.value.status == 503


async def test_workspace_slots_queue_then_refuse_past_the_deadline() -> None:
    release = asyncio.Event()

    async def held(request: Request) -> Answer:
        await release.wait()
        return Answer(b"{}")

    handler = workspace_slots(UpstreamSettings(max_concurrency=1, queue_timeout=0.05), Metrics())(held)
    first = asyncio.create_task(handler(request()))
    await asyncio.sleep(0)
    with pytest.raises(GatewayError) as caught:
        await handler(request())
    assert caught.value.status == 429 and caught.value.headers["Retry-After"] == "1"
    release.set()
    assert (await first).status == 200
    assert (await handler(request())).status == 200  # the slot came back


async def test_principal_slots_apply_only_with_max_concurrency() -> None:
    upstream = FakeUpstream()
    limited = Principal(name="a", limits=Limits(max_concurrency=1, queue_timeout=0.01))
    handler = principal_slots(Metrics())(upstream)
    await asyncio.gather(*(handler(request(principal=p)) for p in (PRINCIPAL, PRINCIPAL, limited)))
    assert len(upstream.requests) == 3


async def test_rate_limiter_allows_bursts_then_refuses_per_principal() -> None:
    metrics = Metrics()
    limiter = RateLimiter(metrics)
    slow = Principal(name="slow", limits=Limits(rate=Rate(per_second=0.01, burst=2)))
    await limiter.admit(slow)
    await limiter.admit(slow)
    with pytest.raises(GatewayError) as caught:
        await limiter.admit(slow)
    assert caught.value.status == 429 and int(caught.value.headers["Retry-After"]) >= 1
    await limiter.admit(PRINCIPAL)  # no rate: never refused
    assert _sample(metrics, "gateway_limited_total", {"principal": "slow", "reason": "rate"}) == 1


async def test_size_limits_cap_thresholds_and_result_limits() -> None:
    strict = Principal(
        name="a", limits=Limits(max_series=10, samples_processed_error_threshold=1000, max_range=3600)
    )
    upstream = FakeUpstream()
    stage = size_limits(Metrics())(upstream)
    await stage(request("series", (("match[]", "up"), ("limit", "50")), principal=strict))
    await stage(
        request(
            "query", (("query", "up"), ("max_samples_processed_error_threshold", "5000")), principal=strict
        )
    )
    assert upstream.requests[0].param("limit") == "10"
    assert upstream.requests[1].param("max_samples_processed_error_threshold") == "1000"
    with pytest.raises(GatewayError, match="exceeds the limit of 1h"):
        await stage(
            request("query", (("query", "rate(up[2h])"),), principal=strict, expr=parse_query("rate(up[2h])"))
        )
    with pytest.raises(GatewayError, match="11,000 points"):
        window = QueryWindow(0, 20_000_000, 1_000_000_000)
        await stage(request("query_range", (("query", "up"),), window=window))


async def test_result_caps_truncate_with_a_warning() -> None:
    body = orjson.dumps({"status": "success", "data": [{"n": i} for i in range(5)]})
    handler = result_caps()(FakeUpstream(Answer(body)))
    capped = orjson.loads((await handler(request("series", (("match[]", "up"), ("limit", "3"))))).body)
    assert capped["data"] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert capped["warnings"] == ["results truncated to 3 series by the gateway's limit"]
    assert (await handler(request("series", (("match[]", "up"),)))).body == body


async def test_local_answers_never_go_upstream() -> None:
    upstream = FakeUpstream()
    handler = local_answers()(upstream)
    expr = parse_query("sum(up)by(job)")
    formatted = await handler(request("format_query", (("query", "sum(up)by(job)"),), expr=expr))
    exemplars = await handler(request("query_exemplars", (("query", "up"),), expr=parse_query("up")))
    buildinfo = await handler(request("buildinfo", ()))
    assert orjson.loads(formatted.body) == {"status": "success", "data": "sum by (job) (up)"}
    assert exemplars.body == b'{"status":"success","data":[]}' and exemplars.cache.startswith("bypass")
    assert orjson.loads(buildinfo.body)["data"]["version"].startswith("2.")
    assert upstream.requests == []
    await handler(request())
    assert len(upstream.requests) == 1


async def test_coalescing_shares_one_answer_or_one_error_per_label_scope() -> None:
    calls = 0

    async def once(request: Request) -> Answer:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if request.param("query") == "bad":
            raise GatewayError("bad_data", "bad query")
        return Answer(b'{"status":"success","data":[]}')

    shared = 0

    def count() -> None:
        nonlocal shared
        shared += 1

    handler = coalescing(count)(once)
    scoped = Principal(name="b", enforce=(("team", "b"),))
    answers = await asyncio.gather(
        *(handler(request()) for _ in range(3)), handler(request(principal=scoped))
    )
    assert calls == 2 and shared == 2 and len({a.body for a in answers}) == 1
    errors = await asyncio.gather(
        *(handler(request(params=(("query", "bad"),))) for _ in range(2)), return_exceptions=True
    )
    assert all(isinstance(e, GatewayError) and e.message == "bad query" for e in errors)


async def test_authorize_finds_the_workspace_and_checks_the_principal() -> None:
    settings = build_settings({"workspaces": [{"url": WORKSPACE.url, "alias": "main"}]}, {})
    authorize = authorizer(settings)
    assert (await authorize(PRINCIPAL, None)).id == "ws-1"
    assert (await authorize(PRINCIPAL, "main")).id == "ws-1"
    with pytest.raises(GatewayError) as missing:
        await authorize(PRINCIPAL, "other")
    with pytest.raises(GatewayError) as forbidden:
        await authorize(dataclasses.replace(PRINCIPAL, workspaces=frozenset({"x"})), "main")
    assert (missing.value.status, forbidden.value.status) == (404, 403)


async def test_compose_names_the_refusing_stage() -> None:

    def passing(next_handler):  # type: ignore[no-untyped-def]
        return next_handler

    def refusing(next_handler):  # type: ignore[no-untyped-def]
        async def handle(request: Request) -> Answer:
            raise GatewayError("forbidden", "no")

        return handle

    handler = compose([("outer", passing), ("inner", refusing)], ("last", FakeUpstream()))
    with pytest.raises(GatewayError) as caught:
        await handler(request())
    assert caught.value.stage == "inner"


def test_backoff_follows_the_upstreams_retry_after_not_the_clients_default() -> None:
    throttled = translate_error(429, {}, b'{"message":"Rate exceeded"}', WORKSPACE, "/api/v1/query")
    assert throttled.headers["Retry-After"] == "1"  # for the client, should retries not get through
    assert all(backoff(0, 0.01, throttled) <= 0.01 for _ in range(50))  # full jitter, not 1 s
    told = translate_error(429, {"retry-after": "3"}, b"{}", WORKSPACE, "/api/v1/query")
    assert backoff(0, 0.01, told) == 3.0
