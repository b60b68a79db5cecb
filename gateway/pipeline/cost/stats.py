"""Prometheus's query statistics in an answer: the samples AMP processed (`totalQueryableSamples`,
what it bills, and `totalQueryableSamplesPerStep`), read and, when the client did not ask for
them, removed byte for byte.

Prometheus writes `stats` as the last member of `data` (`QueryData{ResultType, Result, Stats}`),
and the bytes `,"stats":{` cannot occur inside a JSON string (its quote would be escaped) nor as
a label (label values are strings): the last of them begins the member. Its value holds numbers
and fixed keys only, so its end is where its braces balance.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

_MEMBER = b',"stats":'
MAX_SAMPLES = 1 << 62


@dataclass(frozen=True, slots=True)
class Stats:
    body: bytes  # the answer, without the stats when they were to be removed
    samples: int  # totalQueryableSamples; -1: the answer had none
    per_step: tuple[tuple[int, int], ...] = ()  # (step time in ms, samples)


def _span(body: bytes) -> tuple[int, int] | None:
    """(start, end) of `,"stats":{...}` in a success answer: body[end] closes `data`. (Brace by
    brace with bytes.find: a regex scan over the per-step arrays cost 14 times as much,
    1.1 ms of 10,800 steps; bench/README.md, issue 18.)"""
    start = body.rfind(_MEMBER + b"{")
    if start < 0:
        return None
    depth = 0
    at = start + len(_MEMBER)
    closing = body.find(b"}", at)  # each searched for once: linear however deep the nesting
    while closing >= 0:
        opening = body.find(b"{", at, closing)
        if opening >= 0:
            depth, at = depth + 1, opening + 1
            continue
        depth, at = depth - 1, closing + 1
        if depth == 0:
            return (start, at) if body[at : at + 1] == b"}" else None
        closing = body.find(b"}", at)
    return None


def _count(value: object) -> int:
    """A sample count as Prometheus writes one: a whole number, within what counters hold (a
    1e300 from a broken upstream would stop every later total from being stored)."""
    if type(value) is not int or not 0 <= value < MAX_SAMPLES:
        raise ValueError(f"not a sample count: {value!r}")
    return value


def take_stats(body: bytes, remove: bool) -> Stats:
    """The answer's samples processed, and the answer without its stats when `remove`: every
    other byte as Prometheus wrote it. An answer without readable stats is returned as it came,
    with samples -1."""
    span = _span(body)
    if span is None:
        return Stats(body, -1)
    start, end = span
    try:
        samples = orjson.loads(body[start + len(_MEMBER) : end]).get("samples") or {}
        total = _count(samples["totalQueryableSamples"])
        steps = samples.get("totalQueryableSamplesPerStep") or ()
        per_step = tuple([(round(t * 1000), _count(n)) for t, n in steps])
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError, ValueError, OverflowError):
        return Stats(body, -1)
    return Stats(body[:start] + body[end:] if remove else body, total, per_step)
