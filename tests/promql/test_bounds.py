"""Bounded parsing, against a real gateway process: any input is answered, a query past a bound
is a 400 naming the bound and the fix, and the process and its keep-alive connection survive."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.amp_standin import AmpStandin
from support.gateway import GatewayProcess
from support.testenv import AMP_REGION

from gateway.promql import PromQLError, QueryTooComplex, parse_query
from gateway.promql.guard import DEFAULT_BOUNDS

HOSTILE = {
    "nesting": "(" * 5000 + "up" + ")" * 5000,
    "function nesting": "abs(" * 3000 + "up" + ")" * 3000,
    "operator chain": "up" + "+up" * 5000,
    "unary chain": "-" * 15000 + "1",
    "subquery nesting": "(" * 200 + "up" + ")[5m:]" * 200,
    "length": 'up{a="' + "x" * 20000 + '"}',
    "match[] chain": "up and " * 3000 + "up",
}
WITHIN = {
    "deepest": "(" * 63 + "up" + ")" * 63,
    "longest chain": "up" + "+up" * (DEFAULT_BOUNDS.max_operators - 1),
    "longest regex": 'up{a=~"' + "x|" * 8000 + 'y"}',
    "most matchers": "up{" + 'a="b",' * 2700 + "}",
}


@pytest.fixture
def gateway_process(
    fresh_amp: AmpStandin, aws_env: dict[str, str], tmp_path: Path
) -> Iterator[GatewayProcess]:
    raw = {
        "workspaces": [{"id": "ws-test1", "url": fresh_amp.workspace_url("ws-test1"), "region": AMP_REGION}],
        "cache": {"mode": "memory"},
        "access_log": False,
    }
    process = GatewayProcess(raw, tmp_path, aws_env).start()
    yield process
    process.stop()


def test_the_bounds_refuse_in_words_that_name_them() -> None:
    for name, text in HOSTILE.items():
        with pytest.raises(QueryTooComplex) as refused:
            parse_query(text)
        message = str(refused.value)
        assert any(word in message for word in ("characters long", "nests brackets", "operators")), name
        assert "limit" in message or "more than" in message
    for text in WITHIN.values():
        parse_query(text)  # within the bounds: parsed


def test_hostile_queries_never_kill_or_stall_the_process(
    gateway_process: GatewayProcess, fresh_amp: AmpStandin
) -> None:
    with httpx.Client(base_url=gateway_process.url, timeout=30) as client:
        for name, text in HOSTILE.items():
            for method in ("GET", "POST"):
                if method == "GET" and len(text) > 6000:
                    continue  # past common URL limits; the POST carries it
                params = {"query": text, "start": "1", "end": "100", "step": "10"}
                if method == "GET":
                    answer = client.get("/api/v1/query_range", params=params)
                else:
                    answer = client.post("/api/v1/query_range", data=params)
                assert answer.status_code == 400, (name, answer.text[:200])
                body = answer.json()
                assert body["errorType"] == "bad_data"
                assert body["error"].startswith('invalid parameter "query": the query'), body["error"]
            series = client.post("/api/v1/series", data={"match[]": text})
            assert series.status_code == 400, (name, series.text[:200])
            panel = client.get("/panels/query.json", params={"query": text[:6000]})
            assert panel.status_code < 500, (name, panel.text[:200])
            assert gateway_process.alive, name
        # The keep-alive connection that carried the refusals still works.
        assert client.get("/-/healthy").status_code == 200
    for name, text in WITHIN.items():
        answer = httpx.post(
            f"{gateway_process.url}/api/v1/query", data={"query": text, "time": "100"}, timeout=60
        )
        assert answer.status_code == 200, (name, answer.text[:300])
    assert gateway_process.alive
    log = gateway_process.log.read_text()
    assert "Traceback" not in log, log[-3000:]
    # Only the queries within the bounds went upstream.
    assert len(fresh_amp.requests) == len(WITHIN)


def test_numbers_and_durations_take_go_syntax() -> None:
    for text in ("1_0", "1e400", "0x", "1e", "x[1.5m]", "x[5mm]", "x[0s]"):
        with pytest.raises(PromQLError):
            parse_query(text)


def test_regex_compilation_is_bounded_per_query() -> None:
    # RE2 builds Unicode classes byte by byte: each of these takes milliseconds to compile
    many = "x{" + ",".join(f'a{i}=~"\\\\pL{{{20 + i}}}"' for i in range(110)) + "}"
    with pytest.raises(QueryTooComplex) as refused:
        parse_query(many)
    assert "regular expressions" in str(refused.value)
    with pytest.raises(PromQLError) as large:
        parse_query('x{a=~"\\\\pL{400}"}')  # one program over RE2's 2 MiB cap
    assert "expression too large" in str(large.value)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ('x{a=~"\\\\C"}', "invalid escape sequence: `\\C`"),  # RE2 takes \C, Go does not
        ('x{a=~"' + "(" * 1001 + "a" + ")" * 1001 + '"}', "expression nests too deeply"),
        ('x{a=~"\\xff"}', "invalid UTF-8"),
        ("x[" + "1" * 5000 + "s]", "not a valid duration string"),  # not Python's int() words
    ],
)
def test_errors_keep_go_words(query: str, words: str) -> None:
    with pytest.raises(PromQLError) as refused:
        parse_query(query)
    assert words in str(refused.value)
    assert "sys.set_int_max_str_digits" not in str(refused.value)
