"""Matrix results as the cache keeps them: series by label set, points by ms timestamp, and the
query samples AMP processed at each step (for what a hit saves; see savings.py).

Values stay the strings (or histogram objects) the upstream sent; only timestamps are turned
into integer ms and back, printed as Prometheus prints them (`timestamp_json`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from gateway.envelope import go_json

LabelKey = tuple[tuple[str, str], ...]
Point = tuple[int, Any]


class NotCacheable(Exception):
    """The answer is not a complete, successful matrix; the reason is the message."""


@dataclass
class Series:
    metric: dict[str, str]
    values: list[Point] = field(default_factory=list)
    histograms: list[Point] = field(default_factory=list)


@dataclass
class Matrix:
    series: dict[LabelKey, Series] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    infos: list[str] = field(default_factory=list)
    # The query samples processed at each step (ms) whose cost is known: the fetch's stats
    # (Answer.samples_per_step); a step fetched without stats has none, it is never guessed.
    per_step: dict[int, int] = field(default_factory=dict)

    def samples(self) -> int:
        return sum(len(s.values) + len(s.histograms) for s in self.series.values())


def label_key(metric: dict[str, str]) -> LabelKey:
    # Sorted (name, value) pairs compare exactly like Prometheus's labels.Compare.
    return tuple(sorted(metric.items()))


def _ms(ts: float | int) -> int:
    return ts * 1000 if isinstance(ts, int) else round(ts * 1000)


def parse_matrix(body: bytes | memoryview) -> Matrix:
    """A query_range answer; NotCacheable unless it is a successful matrix."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise NotCacheable("invalid-json") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise NotCacheable("error-not-cached")
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        raise NotCacheable("not-a-matrix")
    matrix = Matrix(warnings=list(doc.get("warnings") or ()), infos=list(doc.get("infos") or ()))
    for item in data.get("result") or ():
        metric = item.get("metric") or {}
        series = Series(
            metric,
            [(_ms(p[0]), p[1]) for p in item.get("values") or ()],
            [(_ms(p[0]), p[1]) for p in item.get("histograms") or ()],
        )
        matrix.series[label_key(metric)] = series
    return matrix


def _union(into: list[str], more: Iterable[str]) -> None:
    for text in more:
        if text not in into:
            into.append(text)


def clip(points: list[Point], first: int, last: int) -> list[Point]:
    return [p for p in points if first <= p[0] <= last]


def replace_range(target: Matrix, source: Matrix, first: int, last: int) -> None:
    """Make `target` hold `source`'s points (and per-step costs) in [first, last] and keep its
    own elsewhere."""
    for key in list(target.series):
        series = target.series[key]
        series.values = [p for p in series.values if not first <= p[0] <= last]
        series.histograms = [p for p in series.histograms if not first <= p[0] <= last]
    for key, incoming in source.series.items():
        values = clip(incoming.values, first, last)
        histograms = clip(incoming.histograms, first, last)
        if not values and not histograms:
            continue
        found = target.series.get(key)
        if found is None:
            target.series[key] = Series(incoming.metric, values, histograms)
            continue
        found.values = sorted(found.values + values, key=_first)
        found.histograms = sorted(found.histograms + histograms, key=_first)
    for key in [k for k, s in target.series.items() if not s.values and not s.histograms]:
        del target.series[key]
    costs = target.per_step
    for t in [t for t in costs if first <= t <= last]:
        del costs[t]
    costs.update((t, n) for t, n in source.per_step.items() if first <= t <= last)
    _union(target.warnings, source.warnings)
    _union(target.infos, source.infos)


def _first(point: Point) -> int:
    return point[0]


def assemble(parts: Iterable[tuple[Matrix, int, int]]) -> Matrix:
    """One matrix from parts that each contribute their points in [first, last]; the parts'
    ranges must not overlap. Points come out in timestamp order."""
    out = Matrix()
    for part, first, last in sorted(parts, key=lambda p: p[1]):
        for key, series in part.series.items():
            values = clip(series.values, first, last)
            histograms = clip(series.histograms, first, last)
            if not values and not histograms:
                continue
            target = out.series.get(key)
            if target is None:
                out.series[key] = Series(series.metric, values, histograms)
            else:
                target.values.extend(values)
                target.histograms.extend(histograms)
        _union(out.warnings, part.warnings)
        _union(out.infos, part.infos)
    return out


def timestamp_json(ms: int) -> bytes:
    """jsonutil.MarshalTimestamp: seconds, and the milliseconds as three digits when not zero
    (`256.500`, where a float would print `256.5`)."""
    sign = b"-" if ms < 0 else b""
    seconds, millis = divmod(abs(ms), 1000)
    if millis:
        return sign + b"%d.%03d" % (seconds, millis)
    return sign + b"%d" % seconds


# Prometheus writes JSON with jsoniter's ConfigCompatibleWithStandardLibrary, which escapes
# these as Go's encoding/json does; they can only occur inside strings.


def render(matrix: Matrix) -> bytes:
    """The answer byte for byte as Prometheus writes a range query's: series sorted by labels,
    timestamps as MarshalTimestamp prints them, Go's string escapes."""
    result = []
    for key in sorted(matrix.series):
        series = matrix.series[key]
        item: dict[str, Any] = {"metric": series.metric}
        if series.values:
            item["values"] = [[orjson.Fragment(timestamp_json(t)), v] for t, v in series.values]
        if series.histograms:
            item["histograms"] = [[orjson.Fragment(timestamp_json(t)), h] for t, h in series.histograms]
        result.append(item)
    doc: dict[str, Any] = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    if matrix.warnings:
        doc["warnings"] = matrix.warnings
    if matrix.infos:
        doc["infos"] = matrix.infos
    return go_json(doc)


# ---------------------------------------------------------------- storage form


def dump_extent(coverage: list[tuple[int, int]], matrix: Matrix) -> bytes:
    return orjson.dumps(
        {
            "c": coverage,
            "s": [[s.metric, s.values, s.histograms] for s in matrix.series.values()],
            "w": matrix.warnings,
            "i": matrix.infos,
            "q": sorted(matrix.per_step.items()),
        }
    )


def load_extent(blob: bytes) -> tuple[list[tuple[int, int]], Matrix]:
    doc = orjson.loads(blob)
    matrix = Matrix(warnings=doc["w"], infos=doc["i"], per_step={int(t): int(n) for t, n in doc["q"]})
    for metric, values, histograms in doc["s"]:
        matrix.series[label_key(metric)] = Series(
            metric, [(p[0], p[1]) for p in values], [(p[0], p[1]) for p in histograms]
        )
    return [(a, b) for a, b in doc["c"]], matrix
