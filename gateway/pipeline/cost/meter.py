"""Stage: the cost meter, just above the upstream. Every QueryMetrics fetch (query, query_range)
asks AMP for `stats=all`, so that AMP says what it billed (`totalQueryableSamples`); the stats
are removed again unless the client asked for them, and the samples are charged to the request's
workspace, principal, dashboard, panel, org and user (the ledger). Budgets are enforced here,
where AMP bills: a spent one refuses, one with samples left caps AMP's error threshold.
"""

from __future__ import annotations

import gzip
from collections.abc import Awaitable, Callable

from gateway.pipeline.answers import json_size, work
from gateway.pipeline.cost.budget import Budgets
from gateway.pipeline.cost.large import metered_large
from gateway.pipeline.cost.stats import take_stats
from gateway.pipeline.endpoints import QUERY_METRICS
from gateway.pipeline.model import Answer, Handler, Request, Stage, with_single

ERROR_THRESHOLD = "max_samples_processed_error_threshold"
# Larger answers are worked on in temporary files, as `send` keeps them (its SPILL_BYTES).
SPILL_BYTES = 16 << 20
Charge = Callable[[Request, int], Awaitable[None]]
Note = Callable[[Request, int], None]


def capped(request: Request, left: int) -> Request:
    """The request with AMP's error threshold at most `left` samples."""
    given = request.param(ERROR_THRESHOLD)
    if given.isdigit() and int(given) <= left:
        return request
    return request.replace(
        params=with_single((*request.params, (ERROR_THRESHOLD, "")), ERROR_THRESHOLD, str(left))
    )


def metering(charge: Charge, budgets: Budgets, note: Note | None = None) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            if request.endpoint.operation != QUERY_METRICS:
                return await next_handler(request)
            sent = request
            if budgets:
                left = await budgets.left(request)
                if left is not None:
                    sent = capped(sent, left)
            asked = bool(request.param("stats"))
            if not asked:
                sent = sent.replace(params=(*sent.params, ("stats", "all")))
            answer = await next_handler(sent)
            if answer.status != 200:
                return answer
            metered = await work(json_size(answer), _metered, answer, not asked)
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
