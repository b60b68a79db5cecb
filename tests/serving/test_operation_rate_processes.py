"""AMP's rates per API family (`quotas.rates`) in real `serve` processes, in front of the
SigV4-checking AMP stand-in and the backfilled Prometheus: one family's bucket holds across the
two workers of a `serve --workers 2` (the host's store), and AMP's own 429 in one process holds
back another that shares the bucket on Redis. The cache is off: every answer is a request to
the stand-in. Each request opens its own connection, so the kernel spreads them over workers."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
from support.amp_standin import AmpStandin, unique_query
from support.gateway import GatewayProcess
from support.prometheus import PrometheusServer
from support.redis_server import RedisServer
from support.testenv import AMP_REGION

PER_SECOND, BURST = 2.0, 2


def _raw(
    amp: AmpStandin,
    tmp_path: Path,
    redis_url: str | None = None,
    per_second: float = PER_SECOND,
    **upstream: Any,
) -> dict[str, Any]:
    host_dir = tmp_path / "host"
    host_dir.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {
        "workspaces": [{"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "cache": {"mode": "off", "host_dir": str(host_dir)},
        "upstream": {"retry_base": "10ms", "timeout": "30s", **upstream},
        "quotas": {"rates": {"query_metrics": {"per_second": per_second, "burst": BURST}, "max_wait": "1s"}},
        "access_log": False,
    }
    if redis_url:
        raw["cache"]["redis_url"] = redis_url
    return raw


def _ask(url: str, query: str, at: str) -> httpx.Response:
    """One instant query on a connection of its own."""
    return httpx.post(f"{url}/api/v1/query", data={"query": query, "time": at}, timeout=60)


def _paced_refusal(answer: httpx.Response) -> bool:
    """The gateway's own 429 for AMP's QueryMetrics quota."""
    body = orjson.loads(answer.content)
    return (
        answer.status_code == 429
        and body["errorType"] == "too_many_requests"
        and "quota L-D5FD0534" in body["error"]
        and int(answer.headers["Retry-After"]) >= 1
    )


def test_a_familys_bucket_holds_across_the_workers_of_one_host(
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    start: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    gateway = start(_raw(fresh_amp, tmp_path), workers=2)
    # A worker's first request to AMP also resolves its credentials and opens its connections
    # (a third of a second here): asked of another family, unpaced, so that the turns below
    # reach the stand-in when they are taken.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        warm = list(pool.map(lambda _: httpx.get(f"{gateway.url}/api/v1/labels", timeout=60), range(8)))
    assert [a.status_code for a in warm] == [200] * 8
    queries = [unique_query() for _ in range(16)]
    at = str(prometheus.data_end - 600)
    with concurrent.futures.ThreadPoolExecutor(len(queries)) as pool:
        answers = list(pool.map(lambda q: _ask(gateway.url, q, at), queries))

    sent = [q for q, a in zip(queries, answers, strict=True) if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    # Those that would have waited more than max_wait got the 429 at once, and never reached AMP.
    assert refused and all(_paced_refusal(a) for a in refused), [a.text for a in refused]
    arrived = sorted(r.received_at for r in fresh_amp.requests if any(r.asks(q) for q in queries))
    assert len(arrived) == len(sent) == sum(fresh_amp.forwarded_count(q) for q in sent)
    # No more than the rate over the time between the first and the last arrival, plus the burst
    # (and one request's worth for the hop from the gateway's turn to the stand-in's clock). Two
    # workers with a bucket each would have sent twice the burst plus the rate over max_wait: 8 in that second.
    elapsed = arrived[-1] - arrived[0]
    assert len(arrived) <= PER_SECOND * elapsed + BURST + 1, (len(arrived), elapsed)


def test_amps_429_in_one_process_holds_back_another_on_redis(
    fresh_amp: AmpStandin,
    prometheus: PrometheusServer,
    redis_server: RedisServer,
    start: Callable[..., GatewayProcess],
    tmp_path: Path,
) -> None:
    # 0.2 a second in bursts of 2: AMP's 429 holds the bucket empty for burst / per_second =
    # 10 s, past max_wait. No retries: AMP's 429 goes straight back to its client.
    first, second = (
        start(_raw(fresh_amp, tmp_path / name, redis_server.url, per_second=0.2, retries=0))
        for name in ("a", "b")
    )
    at = str(prometheus.data_end - 600)
    throttled, held_back = unique_query(), unique_query()
    fresh_amp.inject(429, count=1, path_contains="/api/v1/query")  # AMP's ThrottlingException

    answer = _ask(first.url, throttled, at)
    assert answer.status_code == 429 and "AMP is throttling queries" in answer.text
    assert fresh_amp.received_count(throttled) == 1

    # The other process: its bucket on Redis had a request of its burst left, and is held.
    answer = _ask(second.url, held_back, at)
    assert _paced_refusal(answer), answer.text
    assert "the next turn is in" in orjson.loads(answer.content)["error"]
    assert fresh_amp.received_count(held_back) == 0
