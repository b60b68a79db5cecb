"""The cache stage's key memo returns exactly the digest it would compute, and stays bounded."""

from __future__ import annotations

from gateway.config import build_settings
from gateway.metrics import Metrics
from gateway.pipeline.cache import stage as stage_module
from gateway.pipeline.cache.stage import ResultsCache
from gateway.pipeline.model import Principal, UpstreamRequest, UpstreamResponse

SETTINGS = build_settings(
    {"upstream_url": "http://upstream.invalid", "sigv4": False, "cache": {"mode": "memory"}}, {}
)


async def _upstream(request: UpstreamRequest) -> UpstreamResponse:
    raise AssertionError("not called")


def _cache() -> ResultsCache:
    return ResultsCache(SETTINGS.cache, Metrics(), _upstream)


def _request(query: str = "up", **changes: object) -> UpstreamRequest:
    request = UpstreamRequest(
        workspace=SETTINGS.workspaces[0],
        endpoint="query_range",
        path="/api/v1/query_range",
        method="POST",
        params=[("query", query), ("start", "1"), ("end", "2"), ("step", "1")],
        timeout=10,
    )
    return request.replace(**changes)


def test_memoized_key_is_the_digest() -> None:
    cache = _cache()
    request = _request()
    first = cache._key(request, "range", "up", 15000, 0)
    assert first == cache._key(_request(), "range", "up", 15000, 0)
    assert first == ResultsCache._digest(request, "range", ("up", 15000, 0))
    assert len(cache._keys) == 1


def test_every_input_still_separates_keys() -> None:
    cache = _cache()
    base = cache._key(_request(), "range", "up", 15000, 0)
    variants = [
        cache._key(_request(), "instant", "up", 15000, 0),
        cache._key(_request(), "range", "up", 15000, 1),
        cache._key(_request(), "range", "down", 15000, 0),
        cache._key(_request(params=[("query", "up"), ("limit", "5")]), "range", "up", 15000, 0),
        cache._key(_request(principal=Principal("a", enforce=(("team", "a"),))), "range", "up", 15000, 0),
        cache._key(_request(workspace=SETTINGS.workspaces[0].__class__(**{
            **SETTINGS.workspaces[0].__dict__, "id": "other"})), "range", "up", 15000, 0),
    ]  # fmt: skip
    assert len({base, *variants}) == len(variants) + 1


def test_other_part_types_and_long_queries_are_not_memoized() -> None:
    cache = _cache()
    request = _request()
    assert cache._key(request, "range", "up", 15000.0, 0) == ResultsCache._digest(
        request, "range", ("up", 15000.0, 0)
    )
    assert cache._key(request, "range", "up", 15000, 0) != cache._key(request, "range", "up", 15000.0, 0)
    assert cache._key(request, "meta", request.params) == ResultsCache._digest(
        request, "meta", (request.params,)
    )
    long_query = "x" * (stage_module._KEY_MEMO_TEXT + 1)
    cache._key(_request(long_query), "range", long_query, 15000, 0)
    assert len(cache._keys) == 1  # only the int/str one


def test_memo_is_bounded() -> None:
    cache = _cache()
    for i in range(stage_module._KEY_MEMO_ENTRIES + 10):
        cache._key(_request(f"up{i}"), "range", f"up{i}", 15000, 0)
    assert len(cache._keys) <= stage_module._KEY_MEMO_ENTRIES
