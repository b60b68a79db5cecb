"""Stage: pre-flight guards from AMP's documented query quotas (`quotas:`).

A query AMP would refuse is refused here, before it costs a round trip, a slot of the
workspace's rate or a billed sample, with the fix in the message:

- an instant query reading more than `quotas.max_instant_range` (32 days) of time: AMP answers
  those only as range queries; "use a range query";
- a range query reading more than `quotas.max_query_range` (95 days): "narrow start and end";
- a range query whose samples, estimated from what the same query cost at the same step before
  (`SampleHistory`), exceed `quotas.max_samples`: "raise the step to …". No history, no refusal.

The time a query reads is what AMP's "query time range" counts, as Cortex's querier (which AMP
runs) checks it: per selector, from the first to the last sample that selector reads (its
[range] and the ranges of the subqueries around it; an offset or `@` moves the span, it does not
widen it), and for a range query at least its window. The widest selector decides; the lookback
delta is not counted. So `x offset 40d` and `x @ <a year ago>` are sent (they read minutes),
`rate(x[40d])` is not. Counting less than AMP only lets AMP refuse what the gateway let through;
counting more would refuse queries AMP answers.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.config.quotas import QuotaSettings
from gateway.errors import ErrorType, GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.promql import Expr, walk
from gateway.promql.ast import MatrixSelector, SubqueryExpr, VectorSelector, children

INSTANT = "query"
RANGE = "query_range"
REASONS = ("instant_range", "query_range", "samples")
HISTORY_ENTRIES = 4096

_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1))


def duration_text(ms: int) -> str:
    """A Prometheus duration for `ms` milliseconds, largest units first: 95d, 31d23h, 2m30s."""
    if ms <= 0:
        return "0s"
    parts = []
    for unit, size in _UNITS:
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    return "".join(parts)


@dataclass(frozen=True, slots=True)
class Span:
    """The times of the samples the widest selector of a query reads, for evaluation from
    `start` to `end` (ms)."""

    earliest_ms: int
    latest_ms: int


def data_span(expr: Expr, start_ms: int, end_ms: int) -> Span | None:
    """Where the samples of the selector of `expr` that reads the longest span lie, evaluated
    from start to end (an instant query: start == end); None when it reads none. `@ start()`/
    `@ end()` are the query's own start and end, inside subqueries too, as in Prometheus."""
    widest: Span | None = None
    stack: list[tuple[Expr, int, int]] = [(expr, start_ms, end_ms)]
    while stack:
        node, lo, hi = stack.pop()
        if isinstance(node, (VectorSelector, MatrixSelector)):
            selector = node.selector if isinstance(node, MatrixSelector) else node
            reach = node.range_ms if isinstance(node, MatrixSelector) else 0
            first, last = _anchored(selector.at_ms, selector.start_or_end, lo, hi, start_ms, end_ms)
            first -= selector.offset_ms + reach
            last -= selector.offset_ms
            if widest is None or last - first > widest.latest_ms - widest.earliest_ms:
                widest = Span(first, last)
            continue
        if isinstance(node, SubqueryExpr):
            first, last = _anchored(node.at_ms, node.start_or_end, lo, hi, start_ms, end_ms)
            stack.append((node.expr, first - node.offset_ms - node.range_ms, last - node.offset_ms))
            continue
        stack.extend((child, lo, hi) for child in children(node))
    return widest


def _anchored(
    at_ms: int | None, start_or_end: str | None, lo: int, hi: int, start_ms: int, end_ms: int
) -> tuple[int, int]:
    """The evaluation times of a selector or subquery: pinned by `@`, else its context's."""
    if at_ms is not None:
        return at_ms, at_ms
    if start_or_end == "start":
        return start_ms, start_ms
    if start_or_end == "end":
        return end_ms, end_ms
    return lo, hi


def _pinned(expr: Expr) -> bool:
    """Whether an `@` pins some selector or subquery of `expr` to a time of its own."""
    return any(
        isinstance(n, (VectorSelector, SubqueryExpr)) and (n.at_ms is not None or n.start_or_end is not None)
        for n in walk(expr)
    )


PINNED = (0, -1)  # told apart by identity (and no selector reads a span that ends before it starts)


class Spans:
    """`data_span` remembered per query text, the LRU forgotten past `capacity`. Without `@`,
    where a query's samples lie moves with its start and end: one walk of the tree per query
    text, and a dict lookup per request after that (a cache hit passes this stage too). With
    `@`, it does not: such a text is remembered as pinned, and its span walked for each request
    (once: not a second time to find it pinned)."""

    def __init__(self, capacity: int = HISTORY_ENTRIES) -> None:
        self.capacity = capacity
        # text -> (before, after): samples from start - before to end + after; None: reads none;
        # PINNED: an `@` pins some selector or subquery
        self._relative: OrderedDict[str, tuple[int, int] | None] = OrderedDict()

    def span(self, text: str, expr: Expr, start_ms: int, end_ms: int) -> Span | None:
        if text in self._relative:
            self._relative.move_to_end(text)
            relative = self._relative[text]
            if relative is PINNED:
                return data_span(expr, start_ms, end_ms)
            return None if relative is None else Span(start_ms - relative[0], end_ms + relative[1])
        pinned = _pinned(expr)
        at_zero = data_span(expr, start_ms, end_ms) if pinned else data_span(expr, 0, 0)
        if pinned:
            self._relative[text] = PINNED
        else:
            self._relative[text] = None if at_zero is None else (-at_zero.earliest_ms, at_zero.latest_ms)
        while len(self._relative) > self.capacity:
            self._relative.popitem(last=False)
        if pinned or at_zero is None:
            return at_zero
        return Span(start_ms + at_zero.earliest_ms, end_ms + at_zero.latest_ms)


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str  # one of REASONS
    error_type: ErrorType
    message: str

    def error(self) -> GatewayError:
        return GatewayError(self.error_type, self.message)


def check_instant(span: Span | None, time_ms: int, limit_ms: int) -> Refusal | None:
    """An instant query at `time_ms` reading the samples in `span`. AMP answers one reading more
    than 32 days of time with a 422, "queries with long day range (32d to 95d) are currently
    only supported for range type queries"."""
    if span is None:
        return None
    read = span.latest_ms - span.earliest_ms
    if read <= limit_ms:
        return None
    back = time_ms - span.earliest_ms
    reaches = f" (it reaches back {duration_text(back)} from its time)" if back > 0 else ""
    return Refusal(
        "instant_range",
        "execution",
        f"this instant query reads {duration_text(read)} of data{reaches}; AMP answers instant "
        f"queries over at most {duration_text(limit_ms)} (AMP's query time range quota, "
        "quotas.max_instant_range): use a range query (query_range) over the window with a step, "
        "or a shorter [range], subquery or offset",
    )


def check_range(span: Span | None, start_ms: int, end_ms: int, limit_ms: int) -> Refusal | None:
    """A range query from `start_ms` to `end_ms` reading the samples in `span`, against AMP's
    query time range quota."""
    window = end_ms - start_ms
    read = window if span is None else max(window, span.latest_ms - span.earliest_ms)
    if read <= limit_ms:
        return None
    around = read - window  # what the selectors read before start (and after end)
    if around < limit_ms:
        fix = f"narrow start and end to at most {duration_text(limit_ms - around)} apart"
    else:
        fix = f"shorten the [range], subquery or offset, which alone read {duration_text(around)}"
    extra = f", plus {duration_text(around)} its selectors read outside it" if around else ""
    return Refusal(
        "query_range",
        "bad_data",
        f"this range query reads {duration_text(read)} of data ({duration_text(window)} from start "
        f"to end{extra}); AMP's query time range quota is {duration_text(limit_ms)} "
        f"(quotas.max_query_range): {fix}",
    )


def points(start_ms: int, end_ms: int, step_ms: int) -> int:
    """Evaluation steps of a range query, as Prometheus counts them: start, start+step, … ≤ end."""
    return (end_ms - start_ms) // step_ms + 1


def estimated(samples: int, seen_points: int, new_points: int) -> int:
    """Samples for `new_points` steps at the rate of `samples` over `seen_points` (rounded up)."""
    return -(-samples * new_points // seen_points)


def smallest_step_ms(samples: int, seen_points: int, window_ms: int, limit: int) -> int | None:
    """The smallest step (ms) at which the estimate for a window of `window_ms` is within
    `limit`; None when even one step is over it."""
    most = limit * seen_points // samples  # steps whose estimate fits: estimated(...) <= limit
    if most < 1:
        return None
    return window_ms // most + 1


def check_samples(
    samples: int, seen_points: int, start_ms: int, end_ms: int, step_ms: int, limit: int
) -> Refusal | None:
    """A range query estimated over AMP's query samples quota, from a past answer of the same
    query at the same step (`samples` over `seen_points` steps). Never refused when that answer
    itself was over the quota: AMP evidently counts otherwise."""
    if samples <= 0 or samples > limit:
        return None
    steps = points(start_ms, end_ms, step_ms)
    estimate = estimated(samples, seen_points, steps)
    if estimate <= limit:
        return None
    per_step = -(-samples // seen_points)
    smallest = smallest_step_ms(samples, seen_points, end_ms - start_ms, limit)
    if smallest is None:
        fix = "narrow its selectors or shorten its [range]: one step alone is over the quota"
    else:
        shown = -(-smallest // 1000) * 1000 if smallest > 1000 else smallest  # whole seconds, rounded up
        fix = f"raise the step to {duration_text(shown)} or more, or narrow start and end"
    return Refusal(
        "samples",
        "execution",
        f"this query is estimated to process {estimate:,} samples ({per_step:,} a step when it "
        f"last ran, over {steps:,} steps); AMP's query samples quota is {limit:,} "
        f"(quotas.max_samples): {fix}",
    )


Key = tuple[str, str, int]


def _step_ms(request: Request) -> int:
    return max(1, request.window.step_ns // 1_000_000) if request.window else 1


def _points(request: Request) -> int:
    window = request.window
    return 1 if window is None else points(window.start_ms, window.end_ms, _step_ms(request))


class SampleHistory:
    """What queries cost before, per process: for (workspace id, query text as sent, step), the
    samples the last answer processed and over how many steps, the least recently used forgotten
    past `capacity`. The cost meter calls `note` after each fetch; the guard reads `seen`."""

    def __init__(self, capacity: int = HISTORY_ENTRIES) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[Key, tuple[int, int]] = OrderedDict()

    @staticmethod
    def key(request: Request) -> Key | None:
        if request.endpoint.name not in (INSTANT, RANGE):
            return None
        step = request.window.step_ns if request.window else 0
        return (request.workspace.id, request.param("query"), step)

    def note(self, request: Request, samples: int) -> None:
        """`samples` processed by `request` as it was sent upstream (AMP's totalQueryableSamples)."""
        key = self.key(request)
        if key is None or samples < 0:
            return
        self._entries[key] = (samples, _points(request))
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def seen(self, request: Request) -> tuple[int, int] | None:
        """(samples, steps) of the last answer of this query at this step, if remembered."""
        key = self.key(request)
        found = self._entries.get(key) if key is not None else None
        if found is not None and key is not None:
            self._entries.move_to_end(key)
        return found

    def estimate(self, request: Request) -> int | None:
        """Samples `request` would process, at the rate its last answer did; None: no history."""
        found = self.seen(request)
        if found is None:
            return None
        return estimated(found[0], found[1], _points(request))

    def __len__(self) -> int:
        return len(self._entries)


def check_request(
    request: Request, quotas: QuotaSettings, history: SampleHistory, now_ms: int, spans: Spans
) -> Refusal | None:
    """The first quota `request` would break, if any."""
    expr = request.expr
    if expr is None:
        return None
    name = request.endpoint.name
    window = request.window
    text = request.param("query")
    if name == INSTANT and quotas.max_instant_range_ms:
        at = request.time_ms if request.time_ms is not None else now_ms
        return check_instant(spans.span(text, expr, at, at), at, quotas.max_instant_range_ms)
    if name != RANGE or window is None:
        return None
    if quotas.max_query_range_ms:
        span = spans.span(text, expr, window.start_ms, window.end_ms)
        refused = check_range(span, window.start_ms, window.end_ms, quotas.max_query_range_ms)
        if refused is not None:
            return refused
    if quotas.max_samples:
        seen = history.seen(request)
        if seen is not None:
            return check_samples(
                seen[0], seen[1], window.start_ms, window.end_ms, _step_ms(request), quotas.max_samples
            )
    return None


def preflight(
    quotas: QuotaSettings,
    history: SampleHistory,
    metrics: Metrics,
    clock: Callable[[], float] = time.time,
) -> Stage:
    spans = Spans()

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            refused = check_request(request, quotas, history, int(clock() * 1000), spans)
            if refused is not None:
                metrics.preflight_refused.labels(refused.reason).inc()
                raise refused.error()
            return await next_handler(request)

        return handle

    return stage
