"""Properties of the cost ledger, for any sequence of charges: every dimension's rows add up to
what was charged and saved, none has more than top + 1 rows, a principal's own rows add up to
its charges, a row never holds more than its name spent; the periods and spans tile time."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.cost.ledger import named
from gateway.pipeline.cost.periods import DAY, HOUR, HOURLY_RANGE, MAX_RANGE, period_end, period_start, span
from gateway.pipeline.cost.tally import DIMENSIONS, OTHER, Entry, Tally, fold, merge
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Request

from .conftest import BOUND, T0, Clock, ask, ledger_on, make_host_path

PRINCIPALS = ("team-a", "team-b", "team-c")
asks = st.builds(
    ask,
    principal=st.sampled_from(PRINCIPALS),
    dashboard=st.sampled_from(["", "d1", "d2", "d3", "d4"]),
    panel=st.sampled_from(["", "1", "2", "3"]),
    org=st.sampled_from(["", "1", "2"]),
    user=st.sampled_from(["", "u1", "u2", "u3", "u4", "u5"]),
    dashboard_title=st.sampled_from(["", "Title"]),
)
# (who, samples, charged or saved, flush after it, an hour later): at most 40 hours in all, so
# that 48 h read by the hour hold them all, as 31 days read by the day do.
events = st.lists(
    st.tuples(asks, st.integers(0, 10**12), st.booleans(), st.booleans(), st.integers(0, 1)),
    min_size=1,
    max_size=40,
)


def name_of(asked: Request, dim: str) -> str:
    origin = asked.origin
    if dim == "panel":
        return f"{origin.dashboard or '-'}/{origin.panel}" if origin.panel else ""
    if dim == "workspace":
        return asked.workspace.id
    if dim == "principal":
        return asked.principal.name
    return str(getattr(origin, dim))


@settings(max_examples=60, deadline=None)
@given(top=st.integers(1, 3), happened=events)
def test_rows_add_up_to_what_was_charged(
    tmp_path_factory: pytest.TempPathFactory,
    top: int,
    happened: list[tuple[Request, int, bool, bool, int]],
) -> None:
    store = HostStore(make_host_path(tmp_path_factory.mktemp("ledger") / "host"), BOUND)
    clock = Clock(T0)
    charged: Counter[str] = Counter()  # by principal, and "" for everyone
    saved: Counter[str] = Counter()
    truth: dict[tuple[str, str, str], Counter[str]] = {}  # (scope, dim, name) -> samples, saved

    async def run() -> None:
        ledger = ledger_on(store, clock, top=top)
        for asked, samples, is_charge, flush, later in happened:
            clock.now += later * HOUR
            if is_charge:
                await ledger.charge(asked, samples)
            else:
                await ledger.saved(asked, samples)
            kind = "samples" if is_charge else "saved"
            for scope in ("", asked.principal.name):
                (charged if is_charge else saved)[scope] += samples
                for dim in DIMENSIONS:
                    truth.setdefault((scope, dim, name_of(asked, dim)), Counter())[kind] += samples
            if flush:
                await ledger.flush()
        for scope, dim, range_seconds in itertools.product(
            ("", *PRINCIPALS), DIMENSIONS, (HOURLY_RANGE, MAX_RANGE)
        ):
            rows = await ledger.rows(dim, range_seconds, scope or None)
            assert len(rows) <= top + 1
            assert sum(r.samples for r in rows) == charged[scope], (scope, dim)
            assert sum(r.saved_samples for r in rows) == saved[scope], (scope, dim)
            for row in rows:
                if row.group != "other":
                    exact = truth[(scope, dim, named(row.key))]
                    assert row.samples <= exact["samples"] and row.saved_samples <= exact["saved"]
        await ledger.aclose()

    try:
        asyncio.run(run())
    finally:
        store.close()


tallies = st.dictionaries(
    st.sampled_from(DIMENSIONS[:2]),
    st.dictionaries(
        st.sampled_from(["", "a", "b", "c", "d", OTHER]),
        st.builds(Entry, st.integers(0, 100), st.integers(0, 100), st.sampled_from(["", "T"])),
        min_size=1,
    ),
)


@given(top=st.integers(1, 4), deltas=st.lists(tallies, max_size=8))
def test_merge_keeps_top_names_and_exact_sums(top: int, deltas: list[Tally]) -> None:
    kept: Tally = {}
    exact: dict[tuple[str, str], list[int]] = {}
    for delta in deltas:
        for dim, names in delta.items():
            for name, entry in names.items():
                sums = exact.setdefault((dim, name), [0, 0])
                sums[0] += entry.samples
                sums[1] += entry.saved
        merge(kept, delta, top)
    for dim in DIMENSIONS[:2]:
        names = kept.get(dim, {})
        assert len([n for n in names if n != OTHER]) <= top
        spent = [v for (d, _), v in exact.items() if d == dim]
        assert sum(e.samples for e in names.values()) == sum(v[0] for v in spent)
        assert sum(e.saved for e in names.values()) == sum(v[1] for v in spent)
        for name, entry in names.items():
            if name != OTHER:
                assert entry.samples <= exact[(dim, name)][0] and entry.saved <= exact[(dim, name)][1]
        folded = fold(names, top)
        assert len(folded) <= top + 1
        assert sum(e.samples for e in folded.values()) == sum(e.samples for e in names.values())


@given(now=st.floats(0, 4e9), per=st.sampled_from(["day", "month"]))
def test_periods_tile_time(now: float, per: str) -> None:
    start, end = period_start(per, now), period_end(per, now)
    assert start <= now < end
    assert period_start(per, end) == end  # the next period begins where this one ends
    length = end - start
    assert length == DAY if per == "day" else 28 * DAY <= length <= 31 * DAY


@given(now=st.floats(1e9, 4e9), range_seconds=st.floats(1, MAX_RANGE))
def test_a_span_covers_its_range_in_whole_buckets(now: float, range_seconds: float) -> None:
    buckets = span(range_seconds, now)
    assert buckets.step == (HOUR if range_seconds <= HOURLY_RANGE else DAY)
    assert buckets.start <= now - range_seconds and now < buckets.end
    assert list(buckets.starts) == list(range(buckets.start, buckets.end, buckets.step))
    assert len(buckets.starts) <= (HOURLY_RANGE // HOUR + 1 if buckets.step == HOUR else MAX_RANGE // DAY + 1)
