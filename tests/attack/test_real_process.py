"""Hostile requests against real gateway processes: two `python -m gateway serve` processes
(a crash cannot hide in the test process) with the cache on and shared through a real Redis,
inbound auth on with label-enforced principals, DEBUG logging, behind the SigV4-checking AMP
stand-in and the backfilled Prometheus.

Hypothesis fuzzes every parameter of every route (API, cost API, panels, dashboards, the cost
page), with Grafana's headers hostile or not, under budgets. After each example both processes
are alive, no answer is a 5xx, and every request that reached the stand-in
carries the enforced matchers of the principal that caused it. Windows are drawn from a small
set so that the cache fetches sub-ranges; identical requests are sent concurrently so that they
coalesce; requests alternate between the processes so that they read each other's entries
from Redis. Then the logs: no traceback, no secret, no signing material.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.netutil import free_port
from support.prometheus import PrometheusServer
from support.redis_server import RedisServer
from support.testenv import AMP_REGION, static_aws_env

from gateway.promql import parse_match, parse_query, selectors
from gateway.promql.rewrite import carries

NODE_TOKEN = "attack-node-token-0123456789"
REC_USER, REC_PASSWORD = "attack-rec", "attack-rec-password"
ADMIN_TOKEN = "attack-admin-token-0123456789"
AUTHS = {
    "node": ({"authorization": f"Bearer {NODE_TOKEN}"}, (("job", "node"),)),
    "rec": (
        {"authorization": "Basic " + base64.b64encode(f"{REC_USER}:{REC_PASSWORD}".encode()).decode()},
        (("job", "recommender"),),
    ),
    "admin": ({"authorization": f"Bearer {ADMIN_TOKEN}"}, ()),
    "bad": ({"authorization": "Bearer wrong"}, None),
    "none": ({}, None),
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _raw_config(amp: AmpStandin, redis_url: str) -> dict[str, Any]:
    return {
        "workspaces": [
            {"id": "ws-test1", "alias": "test", "url": amp.workspace_url("ws-test1"), "region": AMP_REGION},
            {"id": "ws-test2", "url": amp.workspace_url("ws-test2"), "region": AMP_REGION},
        ],
        "cache": {"mode": "redis", "redis_url": redis_url, "split_interval": "10m"},
        "upstream": {"retry_base": "10ms", "timeout": "20s"},
        "log_level": "debug",
        "access_log": True,
        "panels": {"dashboards_dir": str(Path(__file__).resolve().parents[2] / "dashboards")},
        "auth": {
            "principals": [
                {
                    "name": "team-node",
                    "token_sha256": _sha(NODE_TOKEN),
                    "workspaces": ["*"],
                    "enforce": {"job": "node"},
                },
                {
                    "name": "team-rec",
                    "username": REC_USER,
                    "password_sha256": _sha(REC_PASSWORD),
                    "workspaces": ["test"],
                    "enforce": {"job": "recommender"},
                },
                {"name": "admin", "token_sha256": _sha(ADMIN_TOKEN), "workspaces": ["*"]},
            ],
            "failed_sign_ins": {"per_address": 100000, "per_principal": 100000},
        },
        # Budgets large enough never to refuse, so that every fetch meets the budget stage.
        "cost": {
            "budgets": [
                {"principal": "team-node", "samples": 10**15, "per": "day"},
                {"dashboard": "d1", "samples": 10**15, "per": "month"},
            ]
        },
    }


@pytest.fixture(scope="module")
def attacked(
    amp: AmpStandin, sts: Any, prometheus: PrometheusServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    workdir = tmp_path_factory.mktemp("attack")
    server = RedisServer(free_port(), workdir).start()
    env = static_aws_env(amp.access_key, amp.secret_key, sts.url, workdir)
    processes = []
    for name in ("one", "two"):
        (workdir / name).mkdir()
        processes.append(GatewayProcess(_raw_config(amp, server.url), workdir / name, env).start())
    yield processes[0], processes[1]
    for process in processes:
        process.stop()
    server.stop()


# ------------------------------------------------------------------ what the fuzzer sends


def _windows(prometheus: PrometheusServer) -> list[tuple[str, str]]:
    end = int(prometheus.data_end) - 3600
    return [(str(end - 1800 + s), str(end + s)) for s in (0, 300, 600)] + [(str(end - 600), str(end + 1200))]


QUERIES = [
    "http_requests_total",
    'sum by (job) (rate({__name__=~"http_requests_total|node_network_transmit_bytes_total"}[5m]))',
    'count by (job) ({__name__=~".+_total"} @ end())',
    "max_over_time(sum(http_requests_total)[10m:1m] @ start())",
    'http_requests_total{job="recommender"}',
    'http_requests_total{job=~"node|recommender"}',
    '{job!="node"}',
    "vector(1) or http_requests_total",
    'label_replace(http_requests_total, "job", "node", "", "")',
    "holt_winters(node_network_transmit_bytes_total[10m], 0.5, 0.5)",
    'up{job="\\"} or {job=\\"x"}',
    "(" * 200 + "up" + ")" * 200,
    "up" + "+up" * 600,
    'up{a=~"(a+)+$"}',
    'up{a=~"' + "x|" * 3000 + 'y"}',
    "sum(",
    "",
    "1e400",
    "up[5m] offset -1900ms @ -100",
]
HOSTILE = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "1e400",
            "NaN",
            "Inf",
            "x",
            "\n",
            "'\"",
            "%",
            "%{meta.query}",
            "<a href=x>",
            "😀",
            "a" * 5000,
            "³",
            "١٢",
            "9" * 5000,
        ]
    ),
    st.text(max_size=20),
)
PARAM_NAMES = st.sampled_from(
    [
        "query",
        "time",
        "start",
        "end",
        "step",
        "timeout",
        "match[]",
        "limit",
        "lookback_delta",
        "stats",
        "title",
        "legend",
        "unit",
        "metric",
        "by",
        "match",
        "window",
        "range",
        "refresh",
        "tz",
        "theme",
        "compact",
        "var-instance",
        "type",
        "rule_name[]",
        "max_samples_processed_error_threshold",
        "max_samples_processed_warning_threshold",
        "key",
    ]
)
# Grafana's headers, which the cost view counts by: as Grafana sends them, or hostile.
ORIGINS = st.dictionaries(
    st.sampled_from(
        ["x-dashboard-uid", "x-panel-id", "x-grafana-user", "x-grafana-org-id", "x-dashboard-title"]
    ),
    st.one_of(
        st.sampled_from(["d1", "4", "ann", "other", "-", "x" * 4000, "Nœuds", '"}\n{']), st.text(max_size=20)
    ),
    max_size=3,
)
API = [
    "query",
    "query_range",
    "series",
    "labels",
    "label/job/values",
    "label/job%0A/values",
    "metadata",
    "query_exemplars",
    "rules",
    "alerts",
    "format_query",
    "parse_query",
    "status/buildinfo",
]
PAGES = [
    "/panels/query",
    "/panels/query.json",
    "/panels/rate",
    "/panels/rate.json",
    "/dashboards",
    "/dashboards/demo",
    "/dashboards/demo/panels/0.json",
    "/dashboards/demo/panels/5.json",
    "/dashboards/demo/grafana.json",
    "/dashboards/%2e%2e",
    "/dashboards/demo/panels/99.json",
    "/api/v1/gateway/cost",
    "/api/v1/gateway/cost/over_time",
    "/cost",
    "/cost/dashboard.json",
    "/cost/over_time.json",
    "/cost/nope.json",
]


@st.composite
def requests(draw: st.DrawFn, windows: list[tuple[str, str]]) -> dict[str, Any]:
    if draw(st.booleans()):
        prefix = draw(st.sampled_from(["", "/workspaces/test", "/workspaces/ws-test2", "/workspaces/nope"]))
        path = f"{prefix}/api/v1/{draw(st.sampled_from(API))}"
    else:
        path = draw(st.sampled_from(PAGES))
    params: list[tuple[str, str]] = []
    if draw(st.booleans()):
        params.append(("query", draw(st.sampled_from(QUERIES))))
        start, end = draw(st.sampled_from(windows))
        params += [("start", start), ("end", end), ("step", draw(st.sampled_from(["30", "15s", "1m"])))]
    if draw(st.booleans()):
        params.append(("match[]", draw(st.sampled_from([*QUERIES[:9], "{__name__=~'.+'}", "up{"]))))
    for _ in range(draw(st.integers(0, 3))):
        params.append((draw(PARAM_NAMES), draw(st.one_of(HOSTILE, st.sampled_from(QUERIES)))))
    return {
        "path": path,
        "params": params,
        "method": draw(st.sampled_from(["GET", "POST"])),
        "who": draw(st.sampled_from(list(AUTHS))),
        "process": draw(st.integers(0, 1)),
        "copies": draw(st.sampled_from([1, 1, 1, 3])),
        "origin": draw(ORIGINS),
    }


def _printable(origin: dict[str, str]) -> dict[str, bytes]:
    """Header values an HTTP client can send (no control characters), in UTF-8 as Grafana sends
    titles."""
    return {
        name: "".join(c for c in value if c.isprintable()).strip().encode() for name, value in origin.items()
    }


def _forwarded(record: Any) -> list[tuple[str, str]]:
    items = parse_qsl(record.query, keep_blank_values=True)
    if record.body:
        items += parse_qsl(record.body.decode(), keep_blank_values=True)
    return items


def _assert_enforced(records: list[Any], pairs: tuple[tuple[str, str], ...]) -> None:
    for record in records:
        for key, value in _forwarded(record):
            if key == "query":
                tree = parse_query(value)
                assert all(carries(s, pairs) for s in selectors(tree)), value
            elif key == "match[]":
                assert carries(parse_match(value), pairs), value


async def _send(client: httpx.AsyncClient, case: dict[str, Any]) -> list[httpx.Response]:
    headers = {**AUTHS[case["who"]][0], **_printable(case["origin"])}
    if case["method"] == "GET" or case["path"].startswith(("/panels", "/dashboards")):
        calls = [
            client.get(case["path"], params=case["params"], headers=headers) for _ in range(case["copies"])
        ]
    else:
        body = "&".join(f"{quote(k)}={quote(v)}" for k, v in case["params"])
        form = {**headers, "content-type": "application/x-www-form-urlencoded"}
        calls = [client.post(case["path"], content=body, headers=form) for _ in range(case["copies"])]
    return list(await asyncio.gather(*calls))


PROMETHEUS_TIMEOUT = "query timed out in query execution"


def test_fuzzed_requests_against_real_processes(
    attacked: tuple[GatewayProcess, GatewayProcess], amp: AmpStandin, prometheus: PrometheusServer
) -> None:
    windows = _windows(prometheus)
    seen = {"statuses": set(), "upstream": 0}

    @settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck))
    @given(case=requests(windows))
    def one(case: dict[str, Any]) -> None:
        before = len(amp.requests)
        process = attacked[case["process"]]

        async def run() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=process.url, timeout=60) as client:
                return await _send(client, case)

        answers = asyncio.run(run())
        assert all(p.alive for p in attacked), "a gateway process died"
        for answer in answers:
            if answer.status_code == 503 and answer.json().get("error") == PROMETHEUS_TIMEOUT:
                continue  # Prometheus's own answer to a `timeout` it cannot meet (such as 0), passed on
            assert answer.status_code < 500, (case, answer.status_code, answer.text[:300])
            seen["statuses"].add(answer.status_code)
        new = amp.requests[before:]
        seen["upstream"] += len(new)
        pairs = AUTHS[case["who"]][1]
        if pairs:
            _assert_enforced(new, pairs)
        elif pairs is None:
            assert new == [], "an unauthenticated request reached the upstream"

    one()
    # The fuzzer got through to the upstream, and was refused too.
    assert seen["upstream"] >= 10, seen
    assert {200, 400, 401} <= seen["statuses"], seen


def _post_and_leave(port: int, body: bytes, declared: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(
            b"POST /api/v1/query_range HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + ADMIN_TOKEN.encode()
            + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
            + str(declared).encode()
            + b"\r\n\r\n"
            + body
        )
        time.sleep(0.05)  # gone before the answer (or before the rest of the body)


def test_a_client_that_disconnects_is_one_info_line(
    attacked: tuple[GatewayProcess, GatewayProcess], prometheus: PrometheusServer
) -> None:
    process = attacked[0]
    start = int(prometheus.data_end) - 7000
    body = f"query=sum(rate(http_requests_total[5m]))&start={start}&end={start + 6000}&step=1".encode()
    before = process.log.read_text().count("went away")
    for _ in range(3):
        _post_and_leave(process.port, body, len(body))  # leaves while the answer is made
        _post_and_leave(process.port, body[:20], len(body))  # leaves in the middle of its body
    deadline = time.monotonic() + 10
    while process.log.read_text().count("went away") < before + 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    log = process.log.read_text()
    assert log.count("went away") == before + 3, log[-3000:]
    assert "Traceback" not in log
    assert process.alive
    assert httpx.get(f"{process.url}/-/healthy").status_code == 200


def test_the_logs_hold_no_traceback_and_no_secret(
    attacked: tuple[GatewayProcess, GatewayProcess], amp: AmpStandin
) -> None:
    for process in attacked:
        log = process.log.read_text()
        assert log, "nothing logged at DEBUG?"
        for forbidden in (
            "Traceback",
            amp.secret_key,
            "Canonical Request",
            "CanonicalRequest",
            "StringToSign",
            "String to sign",
            "Signature=",
            NODE_TOKEN,
            REC_PASSWORD,
            ADMIN_TOKEN,
        ):
            assert forbidden not in log, f"{forbidden!r} in {process.log}"
