"""The validate stage alone: what it decides, and that remembering it changes nothing but speed."""

from __future__ import annotations

from typing import Any

import pytest
from support.stages import PRINCIPAL, WORKSPACE, incoming

import gateway.pipeline.endpoints.builders as builders
from gateway.errors import GatewayError
from gateway.pipeline.validate import Validator
from gateway.promql import print_expr

RANGE = {"query": "sum(rate(up[5m]))", "start": "1700000000", "end": "1700003600", "step": "60"}


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The query texts the endpoint builders parse."""
    seen: list[str] = []
    original = builders.parse_printed

    def counting(text: str, param: str = "query") -> Any:
        seen.append(text)
        return original(text, param)

    monkeypatch.setattr(builders, "parse_printed", counting)
    return seen


async def test_identical_requests_are_validated_once_and_alike(parses: list[str]) -> None:
    validate = Validator(upstream_timeout=60)
    first = await validate(incoming("query_range", RANGE), PRINCIPAL, WORKSPACE)
    second = await validate(
        incoming("query_range", RANGE, headers={"accept-encoding": "gzip"}), PRINCIPAL, WORKSPACE
    )
    fresh = await Validator(upstream_timeout=60)(incoming("query_range", RANGE), PRINCIPAL, WORKSPACE)
    assert len(parses) == 2  # the second came from memory
    assert first == fresh
    assert second == first.replace(accept_gzip=True)
    assert first.params == (
        ("query", print_expr(first.expr)),
        *[(k, RANGE[k]) for k in ("start", "end", "step")],
    )
    assert first.timeout == 60 and first.window is not None and first.window.step_ns == 60 * 10**9


async def test_requests_differing_in_any_raw_part_are_separate(parses: list[str]) -> None:
    validate = Validator(upstream_timeout=60)
    for call in (
        incoming("query_range", RANGE),
        incoming("query_range", RANGE, method="POST"),
        incoming("query_range", {**RANGE, "step": "30"}),
        incoming("query", RANGE),
    ):
        await validate(call, PRINCIPAL, WORKSPACE)
    await validate(incoming("query_range", RANGE), PRINCIPAL.__class__(name="other"), WORKSPACE)
    assert len(parses) == 5


async def test_instant_query_without_time_is_never_remembered(parses: list[str]) -> None:
    validate = Validator(upstream_timeout=60)
    for _ in range(2):
        await validate(incoming("query", {"query": "up"}), PRINCIPAL, WORKSPACE)
    assert len(parses) == 2
    for _ in range(2):
        await validate(incoming("query", {"query": "up", "time": "1700000000"}), PRINCIPAL, WORKSPACE)
    assert len(parses) == 3


async def test_errors_are_not_remembered_and_keep_their_words(parses: list[str]) -> None:
    validate = Validator(upstream_timeout=60)
    errors = []
    for _ in range(2):
        with pytest.raises(GatewayError) as caught:
            await validate(incoming("query_range", {**RANGE, "query": "sum("}), PRINCIPAL, WORKSPACE)
        errors.append(caught.value)
    assert len(parses) == 2
    assert errors[0].message == errors[1].message
    assert (
        errors[0].message.startswith('invalid parameter "query": 1:') and "parse error" in errors[0].message
    )


async def test_a_client_timeout_over_the_cap_is_lowered_to_it() -> None:
    validate = Validator(upstream_timeout=30)
    request = await validate(incoming("query", {"query": "up", "timeout": "5m"}), PRINCIPAL, WORKSPACE)
    assert request.timeout == 30 and request.param("timeout") == "30s"
    request = await validate(incoming("query", {"query": "up", "timeout": "10s"}), PRINCIPAL, WORKSPACE)
    assert request.timeout == 10 and request.param("timeout") == "10s"


async def test_a_single_valued_parameter_goes_upstream_once_with_the_value_checked() -> None:
    validate = Validator(upstream_timeout=30)
    sent = [("query", "up"), ("time", "100"), ("time", "junk"), ("stats", "all"), ("stats", "")]
    request = await validate(incoming("query", sent), PRINCIPAL, WORKSPACE)
    assert request.params == (("query", "up"), ("time", "100"), ("stats", "all"))
