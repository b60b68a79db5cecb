"""The README's `limits` example (AMP's sample thresholds added to every request) with the cache,
in a real `serve` with 2 workers and no Redis: the thresholds no longer switch the cache off."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from urllib.parse import parse_qsl

import httpx
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.prometheus import PrometheusServer
from support.testenv import AMP_REGION

QUERY = 'sum by (instance) (rate(demo_cpu_usage_seconds_total{mode="user"}[1m]))'
GUARDS = {
    "max_samples_processed_warning_threshold": "1000000000",
    "max_samples_processed_error_threshold": "5000000000",
}


def test_threshold_requests_hit_the_cache(
    start: Callable[..., GatewayProcess], fresh_amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    gateway = start(
        {
            "workspaces": [
                {"id": "ws-test1", "url": fresh_amp.workspace_url("ws-test1"), "region": AMP_REGION}
            ],
            "upstream": {"retry_base": "10ms"},
            "access_log": False,
            "cache": {"mode": "memory", "split_interval": "10m"},
            "limits": {
                "samples_processed_warning_threshold": 1000000000,
                "samples_processed_error_threshold": 5000000000,
            },
        },
        workers=2,
    )
    end = int(prometheus.data_end) // 60 * 60 - 3600
    window = {"query": QUERY, "start": str(end - 1800), "end": str(end), "step": "15"}
    seen = [httpx.post(f"{gateway.url}/api/v1/query_range", data=window, timeout=30) for _ in range(6)]
    assert [r.headers["x-cache"] for r in seen] == ["miss"] + ["hit"] * 5
    assert len({r.content for r in seen}) == 1
    shifted = {**window, "start": str(end - 1500), "end": str(end + 900)}
    assert (
        httpx.post(f"{gateway.url}/api/v1/query_range", data=shifted, timeout=30).headers["x-cache"]
        == "partial"
    )
    sent = [dict(parse_qsl((r.body or r.raw_query).decode())) for r in fresh_amp.forwarded]
    # the cold window, then only the 15 new minutes, cut at the 10-minute boundaries
    assert (sent[0]["start"], sent[0]["end"]) == (window["start"], window["end"])
    runs = sorted((float(p["start"]), float(p["end"])) for p in sent[1:])
    assert runs[0][0] == end + 15 and runs[-1][1] == end + 900
    assert all(b[0] == a[1] + 15 for a, b in itertools.pairwise(runs))
    for params in sent:
        assert params.items() >= GUARDS.items(), params
