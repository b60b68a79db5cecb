"""The parsed-request memo and the hit path's hand-built responses change nothing but speed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

import gateway.api.endpoints as endpoints
from gateway.api.routes import PrometheusApi, _general_response, to_response
from gateway.config import build_settings
from gateway.metrics import Metrics
from gateway.pipeline.auth import Authenticator
from gateway.pipeline.model import UpstreamRequest, UpstreamResponse
from gateway.promql import print_expr

RANGE = {"query": "sum(rate(up[5m]))", "start": "1700000000", "end": "1700003600", "step": "60"}


class Recorder:
    """A pipeline that remembers what it was given and answers a fixed success."""

    def __init__(self) -> None:
        self.requests: list[UpstreamRequest] = []

    async def __call__(self, request: UpstreamRequest) -> UpstreamResponse:
        self.requests.append(request)
        request.params.append(("mutated", "by-a-stage"))  # must not leak into the next request
        return UpstreamResponse(200, b'{"status":"success","data":{"resultType":"matrix","result":[]}}')


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    original = endpoints.parse_printed

    def counting(text: str, param: str = "query") -> Any:
        seen.append(text)
        return original(text, param)

    monkeypatch.setattr(endpoints, "parse_printed", counting)
    return seen


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    settings = build_settings({"upstream_url": "http://upstream.invalid", "sigv4": False}, {})
    api = PrometheusApi(settings, recorder, Authenticator(), Metrics())
    app = Starlette(routes=api.routes())
    app.state.api = api
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        yield http


def _memo(client: httpx.AsyncClient) -> Any:
    return client._transport.app.state.api._memo  # type: ignore[attr-defined]


def _same(a: UpstreamRequest, b: UpstreamRequest) -> None:
    assert a.params == b.params and a.window == b.window and a.time_ms == b.time_ms
    assert a.timeout == b.timeout and a.endpoint == b.endpoint and a.path == b.path
    assert print_expr(a.expr) == print_expr(b.expr)


async def test_identical_requests_are_validated_once(
    client: httpx.AsyncClient, recorder: Recorder, parses: list[str]
) -> None:
    for _ in range(3):
        assert (await client.get("/api/v1/query_range", params=RANGE)).status_code == 200
    assert parses == [RANGE["query"]]
    first, second, third = recorder.requests
    assert first.params[:-1] == second.params[:-1] == third.params[:-1]  # each got its own list
    assert ("mutated", "by-a-stage") not in second.params[:-1]
    _same(second, third)
    assert len(_memo(client)) == 1


async def test_memo_equals_fresh_validation(client: httpx.AsyncClient, recorder: Recorder) -> None:
    params = {**RANGE, "timeout": "500s", "extra": "dropped"}
    await client.get("/api/v1/query_range", params=params)
    _memo(client).clear()
    await client.get("/api/v1/query_range", params=params)
    await client.get("/api/v1/query_range", params=params)
    fresh, memoized = recorder.requests[1], recorder.requests[2]
    fresh.params.pop()
    memoized.params.pop()
    _same(fresh, memoized)
    assert ("timeout", f"{fresh.timeout:g}s") in memoized.params  # capped to the upstream timeout


async def test_requests_differing_in_any_raw_part_are_separate(
    client: httpx.AsyncClient, parses: list[str]
) -> None:
    await client.get("/api/v1/query_range", params=RANGE)
    await client.post("/api/v1/query_range", data=RANGE)
    await client.post("/api/v1/query_range", content=b"", params=RANGE)
    await client.get("/api/v1/query_range", params={**RANGE, "step": "30"})
    await client.get("/workspaces/default/api/v1/query_range", params=RANGE)
    assert len(parses) == 5


async def test_instant_query_without_time_is_never_memoized(
    client: httpx.AsyncClient, parses: list[str]
) -> None:
    for _ in range(2):
        await client.get("/api/v1/query", params={"query": "up"})
        await client.get("/api/v1/query", params={"query": "up", "time": ""})
    assert len(parses) == 4
    for _ in range(2):
        await client.get("/api/v1/query", params={"query": "up", "time": "1700000000"})
    assert len(parses) == 5


async def test_errors_are_not_memoized_and_keep_their_words(
    client: httpx.AsyncClient, parses: list[str]
) -> None:
    answers = [await client.get("/api/v1/query_range", params={**RANGE, "query": "sum("}) for _ in range(2)]
    assert [a.status_code for a in answers] == [400, 400]
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["error"].startswith('invalid parameter "query": 1:')
    assert "parse error" in answers[0].json()["error"]
    assert len(parses) == 2 and len(_memo(client)) == 0


async def test_request_ids_are_unique_or_the_clients(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/api/v1/query_range", params=RANGE)).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5 and all(re.fullmatch(r"[0-9a-f]{17,}", i) for i in ids)
    given = await client.get("/api/v1/query_range", params=RANGE, headers={"x-request-id": "req-7"})
    assert given.headers["x-request-id"] == "req-7"
    odd = await client.get("/api/v1/query_range", params=RANGE, headers={"x-request-id": "a b"})
    assert odd.headers["x-request-id"] != "a b"


@pytest.mark.parametrize("status", [200, 204, 400, 503])
@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("cache", ["", "hit", "bypass; reason=no-time"])
@pytest.mark.parametrize("accept", ["", "gzip", "GZIP", "br, gzip"])
def test_hand_built_response_equals_starlettes(status: int, gzipped: bool, cache: str, accept: str) -> None:
    import gzip

    body = b'{"status":"success","data":[]}'

    def answer() -> UpstreamResponse:
        return UpstreamResponse(
            status, gzip.compress(body) if gzipped else body, gzipped=gzipped, cache=cache
        )

    fast, general = to_response(answer(), accept), _general_response(answer(), accept)
    assert fast.status_code == general.status_code
    assert fast.raw_headers == general.raw_headers
    assert fast.body == general.body


def test_memo_is_bounded_by_bytes_least_recently_used_first() -> None:
    from gateway.api.routes import Prepared, _Memo

    def prepared(size: int) -> Prepared:
        return Prepared("query", "/api/v1/query", "POST", (), 1.0, None, None, None, size)

    memo = _Memo(1000)
    memo.put(("a",), prepared(400))
    memo.put(("b",), prepared(400))
    assert memo.get(("a",)) is not None  # a is now the most recent
    memo.put(("c",), prepared(400))
    assert memo.get(("b",)) is None and memo.get(("a",)) is not None and memo.get(("c",)) is not None
    assert memo.bytes == 800
    memo.put(("huge",), prepared(2000))
    assert memo.get(("huge",)) is None and len(memo) == 2
    memo.put(("a",), prepared(100))
    assert memo.bytes == 500


PATHS = [
    "/api/v1/query_range",
    "/api/v1/query",
    "/api/v1/label/job/values",
    "/api/v1/label//values",
    "/api/v1/status/buildinfo",
    "/api/v1/nope",
    "/api/v1/",
    "/api/v1",
    "/api/v1/query_range/",
    "/api/v2/query",
    "/workspaces/default/api/v1/query_range",
    "/workspaces/default/api/v1/label/job/values",
    "/workspaces/default/api/v1/other/thing",
    "/workspaces/nope/api/v1/query",
    "/workspaces//api/v1/query",
    "/workspaces/a/b/api/v1/query",
    "/workspaces/default/api/v1",
    "/workspaces/default",
    "/elsewhere",
]


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_route_groups_route_like_the_plain_list(method: str, recorder: Recorder) -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    settings = build_settings({"upstream_url": "http://upstream.invalid", "sigv4": False}, {})
    api = PrometheusApi(settings, recorder, Authenticator(), Metrics())

    async def elsewhere(request: Any) -> PlainTextResponse:
        return PlainTextResponse("elsewhere")

    tail = [Route("/elsewhere", elsewhere), Route("/api/v1/query_range/", elsewhere)]
    groups = api.routes()
    flat = [route for group in groups for route in group.routes]  # type: ignore[attr-defined]
    answers = []
    for routes in (groups, flat):
        app = Starlette(routes=[*routes, *tail])
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            got = []
            for path in PATHS:
                answer = await http.request(method, path, params=RANGE)
                got.append((path, answer.status_code, answer.headers.get("allow"), answer.text))
            answers.append(got)
    grouped, plain = ([(p, s, a, _without_request_id(t)) for p, s, a, t in got] for got in answers)
    assert grouped == plain
    assert {status for _, status, _, _ in plain} >= ({200, 404, 307} if method in ("GET", "POST") else {405})


def _without_request_id(text: str) -> str:
    return re.sub(r"[0-9a-f]{17,}", "<id>", text)
