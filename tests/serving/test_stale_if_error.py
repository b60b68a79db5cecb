"""Stale-if-error in real `serve` processes (2 workers, no Redis: the workers share the host's
store): under a 429 storm, 503s, timeouts and a stopped AMP stand-in, a request whose answer the
cache holds gets it, with `x-cache: stale` and a warning, and never anything it did not hold; a
request it does not hold gets the error. Entries expire for real (TTLs of a second or two)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from support.amp_standin import AmpStandin, start_amp
from support.gateway import GatewayProcess
from support.prometheus import PrometheusServer
from support.testenv import AMP_REGION

QUERY = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
TTL_MS = 1500  # results_ttl: entries expire within a test
TTL = TTL_MS / 1000


def _raw(amp: AmpStandin, results_ttl: str = f"{TTL_MS}ms") -> dict[str, Any]:
    return {
        "workspaces": [{"id": "ws-test1", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "upstream": {"retry_base": "10ms", "retries": 2, "timeout": "2s"},
        "access_log": False,
        "cache": {"mode": "memory", "results_ttl": results_ttl, "recent_ttl": "1s", "max_freshness": "30s"},
    }


def _post(gateway: GatewayProcess, endpoint: str, params: dict[str, str]) -> httpx.Response:
    """One request on a connection of its own (the workers take connections in turn)."""
    return httpx.post(f"{gateway.url}/api/v1/{endpoint}", data=params, timeout=30)


def _warning_added(body: bytes, original: bytes) -> str:
    """The warning put first in `original`'s warnings to make `body`; nothing else differs."""
    warning = orjson.loads(body)["warnings"][0]
    item = orjson.dumps(warning).replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    removals = (b',"warnings":[' + item + b"]", item + b",", item)
    assert any(body.replace(inserted, b"", 1) == original for inserted in removals), body[-300:]
    return str(warning)


def _stale_total(gateway: GatewayProcess, endpoint: str, cause: str) -> float:
    metrics = httpx.get(f"{gateway.url}/metrics", timeout=10).text
    found = re.search(rf'gateway_cache_stale_total{{cause="{cause}",endpoint="{endpoint}"}} (\S+)', metrics)
    assert found, f"no gateway_cache_stale_total for {endpoint}/{cause}"
    return float(found.group(1))


FAILURES: dict[str, tuple[str, str, int, Callable[[AmpStandin], None]]] = {
    "429-storm": (
        "throttled",
        "the upstream throttled the query past the gateway's retries",
        429,
        lambda amp: amp.inject(429, count=None),
    ),
    "503s": ("server-error", "the upstream failed", 503, lambda amp: amp.inject(503, count=None)),
    "timeouts": (
        "timeout",
        "the upstream did not answer in time",
        503,
        lambda amp: amp.inject_delay(4, count=None),
    ),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_cached_answer_is_served_stale_and_an_uncached_one_is_the_error(
    start: Callable[..., GatewayProcess], fresh_amp: AmpStandin, prometheus: PrometheusServer, failure: str
) -> None:
    cause, says, status, inject = FAILURES[failure]
    gateway = start(_raw(fresh_amp), workers=2)
    held = {"query": QUERY, "time": str(prometheus.data_end - 3600)}
    warm = _post(gateway, "query", held)
    assert warm.status_code == 200 and warm.headers["x-cache"] == "miss"
    time.sleep(TTL + 0.5)
    inject(fresh_amp)
    for _ in range(4):  # whichever worker takes it: the host's store is theirs
        answer = _post(gateway, "query", held)
        assert answer.status_code == 200 and answer.headers["x-cache"] == "stale"
        warning = _warning_added(answer.content, warm.content)
        assert re.match(rf"served from the gateway's cache, \d+s old: {re.escape(says)} \(", warning), warning
    other = _post(gateway, "query", {**held, "time": str(prometheus.data_end - 7200)})
    assert other.status_code == status and other.json()["status"] == "error"
    assert other.headers["x-cache"] == "bypass; reason=error-not-cached"
    assert _stale_total(gateway, "query", cause) == 4


def test_a_stopped_upstream(start: Callable[..., GatewayProcess], prometheus: PrometheusServer) -> None:
    own = start_amp({"ws-test1": prometheus.url}, region=AMP_REGION)
    try:
        gateway = start(_raw(own), workers=2)
        held = {"query": QUERY, "time": str(prometheus.data_end - 3600)}
        warm = _post(gateway, "query", held)
        assert warm.headers["x-cache"] == "miss"
        own.stop()
        time.sleep(TTL + 0.5)
        for _ in range(3):
            answer = _post(gateway, "query", held)
            assert answer.status_code == 200 and answer.headers["x-cache"] == "stale"
            assert "the upstream could not be reached" in _warning_added(answer.content, warm.content)
        other = _post(gateway, "query", {**held, "time": str(prometheus.data_end - 7200)})
        assert other.status_code == 503 and other.json()["errorType"] == "unavailable"
        assert _stale_total(gateway, "query", "unreachable") == 3
    finally:
        own.stop()


def test_a_dashboard_refresh_gets_all_but_the_fresh_tail(
    start: Callable[..., GatewayProcess], fresh_amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    """A window ending now, then the same window a step later while AMP answers 503: the points
    the extents hold (all but the newest, which were fresh and never kept), nothing after them."""
    gateway = start(_raw(fresh_amp, results_ttl="1h"), workers=2)  # the extents live on
    step = 15
    t0 = int(time.time()) // step * step
    window = {"query": "vector(1)", "start": str(t0 - 600), "end": str(t0), "step": str(step)}
    warmed_at = time.time()
    assert _post(gateway, "query_range", window).headers["x-cache"] == "miss"
    fresh_amp.inject(503, count=None)
    moved = {**window, "start": str(t0 - 600 + step), "end": str(t0 + step)}
    answer = _post(gateway, "query_range", moved)
    assert answer.status_code == 200 and answer.headers["x-cache"] == "stale"
    doc = answer.json()
    found = re.match(
        r"served from the gateway's cache, its newest point \d+s old; the (\d+) points after it are missing: "
        r"the upstream failed \(",
        doc["warnings"][0],
    )
    assert found, doc["warnings"][0]
    held_until = t0 + step - int(found.group(1)) * step
    # what the extents held: the points final when the window was first fetched, none after
    assert t0 - 600 + step <= held_until <= warmed_at - 30
    (series,) = doc["data"]["result"]
    assert [p[0] for p in series["values"]] == list(range(t0 - 600 + step, held_until + 1, step))
    truth = httpx.post(
        f"{prometheus.url}/api/v1/query_range", data={**moved, "end": str(held_until)}, timeout=30
    ).json()
    assert doc["data"] == truth["data"]
    assert _stale_total(gateway, "query_range", "server-error") == 1

    # a window reaching back past what is held has a gap, not a tail: the error
    wider = _post(gateway, "query_range", {**moved, "start": str(t0 - 1200)})
    assert wider.status_code == 503


def test_refusals_are_not_answered_from_the_cache(
    start: Callable[..., GatewayProcess], fresh_amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    gateway = start(_raw(fresh_amp), workers=2)
    held = {"query": QUERY, "time": str(prometheus.data_end - 3600)}
    assert _post(gateway, "query", held).status_code == 200
    time.sleep(TTL + 0.5)
    refusal = orjson.dumps({"status": "error", "errorType": "execution", "error": "too many samples"})
    fresh_amp.inject(422, count=None, body=refusal)
    answer = _post(gateway, "query", held)
    assert answer.status_code == 422 and answer.content == refusal
    fresh_amp.reset()
    fresh_amp.inject(403, count=None, errortype="AccessDeniedException", message="not allowed")
    assert _post(gateway, "query", held).status_code == 502
    assert _stale_total(gateway, "query", "server-error") == 0
