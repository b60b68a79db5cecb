"""Stage: the cost meter, just above the upstream. Every QueryMetrics fetch (query, query_range)
asks AMP for `stats=all`, so that AMP says what it billed (`totalQueryableSamples`); the stats
are removed again unless the client asked for them, and the samples are charged to the request's
workspace, principal, dashboard, panel, org and user (the ledger). Budgets are the `budgeting`
stage's (budget.py), above coalescing.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable

from gateway.pipeline.answers import json_size, work
from gateway.pipeline.cost.large import metered_large
from gateway.pipeline.cost.stats import take_stats
from gateway.pipeline.endpoints import QUERY_METRICS
from gateway.pipeline.model import Answer, Handler, Request, Stage, with_one
from gateway.pipeline.spill import SPILL_BYTES, AnswerNoRoom, refusal

Charge = Callable[[Request, int], Awaitable[None]]
Note = Callable[[Request, int], None]


def metering(charge: Charge, note: Note | None = None) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            if request.endpoint.operation != QUERY_METRICS:
                return await next_handler(request)
            # Asked for by the client: a non-empty first `stats`, as Prometheus reads it. Else
            # exactly one stats=all goes up (an empty `stats=` first would hide it from AMP).
            asked = request.param("stats") != ""
            sent = request
            if not asked:
                sent = request.replace(params=with_one(request.params, "stats", "all"))
            answer = await next_handler(sent)
            if answer.status != 200:
                return answer
            try:
                metered = await work(json_size(answer), _metered, answer, not asked)
            except AnswerNoRoom as err:
                raise refusal(request.workspace, err) from None
            if metered.samples_processed >= 0:
                await charge(request, metered.samples_processed)
                if note is not None:
                    note(sent, metered.samples_processed)
            return metered

        return handle

    return stage


def _metered(answer: Answer, remove: bool) -> Answer:
    """The answer with its samples processed read, and its stats removed when `remove` (then
    gzip again when it came gzip, for the client and the cache that keeps it so). A large one is
    worked on in temporary files (`large.py`)."""
    if isinstance(answer.body, memoryview) or json_size(answer) > SPILL_BYTES:
        return metered_large(answer, remove)
    data = bytes(answer.json_bytes())
    stats = take_stats(data, remove)
    if stats.samples < 0:
        return answer
    if stats.body is data:
        return answer.replace(samples_processed=stats.samples, samples_per_step=stats.per_step)
    body = gzip.compress(stats.body, compresslevel=1, mtime=0) if answer.gzipped else stats.body
    return answer.replace(
        body=body,
        size=len(stats.body),
        samples_processed=stats.samples,
        samples_per_step=stats.per_step,
    )
