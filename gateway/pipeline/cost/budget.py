"""Budgets of query samples per principal and per Grafana dashboard, per UTC day or month
(`cost.budgets`), counted by the ledger across workers and replicas.

A budget is enforced before each fetch from AMP (`budgeting`, below the cache and above
coalescing, so that only fetches with the same threshold share one): refused with a 429 once
spent, and otherwise sent with AMP's max_samples_processed_error_threshold at what is left, so
that AMP refuses, without charging, a query that would overspend. Fetches in flight together
share what is left: each may spend what the others have not reserved and reserves half of it
until its answer is charged, so that they cannot overspend it more than twice over. Past
`cost.soft_share` of a budget, every answer of its principal or dashboard (cache hits too) says
so in a warning (`budget_warnings`). A dashboard is known by what Grafana says (X-Dashboard-Uid):
its budget steers honest traffic; a principal's budget is the one a client cannot step around.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from gateway.config.cost import Budget, CostSettings
from gateway.envelope import with_warning
from gateway.errors import GatewayError
from gateway.pipeline.answers import json_size, work
from gateway.pipeline.cost.periods import period_end
from gateway.pipeline.endpoints import QUERY_METRICS
from gateway.pipeline.endpoints.params import ERROR_THRESHOLD, positive_whole
from gateway.pipeline.model import Answer, Handler, Request, Stage, with_one

Spent = Callable[[str, str, str, float], Awaitable[int]]  # (kind, name, per, now) -> samples


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Budgets:
    def __init__(self, settings: CostSettings, spent: Spent, clock: Callable[[], float] = time.time) -> None:
        self._spent = spent
        self._clock = clock
        self._reserved: dict[Budget, int] = {}  # by this worker's fetches in flight
        self._by_principal: dict[str, list[Budget]] = {}
        self._by_dashboard: dict[str, list[Budget]] = {}
        for budget in settings.budgets:
            owners = self._by_principal if budget.kind == "principal" else self._by_dashboard
            owners.setdefault(budget.name, []).append(budget)

    def __bool__(self) -> bool:
        return bool(self._by_principal or self._by_dashboard)

    def applying(self, request: Request) -> list[Budget]:
        found = list(self._by_principal.get(request.principal.name, ()))
        if request.origin.dashboard:
            found += self._by_dashboard.get(request.origin.dashboard, ())
        return found

    async def standing(self, request: Request) -> list[tuple[Budget, int]]:
        """Each budget that applies to the request, with the samples spent of it so far."""
        now = self._clock()
        return [(b, await self._spent(b.kind, b.name, b.per, now)) for b in self.applying(request)]

    async def left(self, request: Request) -> int | None:
        """The samples the request may still spend (the least left of its budgets, less what
        fetches in flight reserved); None: no budget applies. Raises the 429 when one is spent,
        or when what is left is all reserved."""
        least: int | None = None
        for budget, spent in await self.standing(request):
            remaining = budget.samples - spent
            if remaining <= 0:
                raise self.refusal(budget, spent)
            free = remaining - self._reserved.get(budget, 0)
            if free <= 0:
                raise GatewayError(
                    "too_many_requests",
                    f"the {remaining:,} query samples left of {budget.label} are reserved by queries "
                    "in flight; retry when they are answered",
                    headers={"Retry-After": "1"},
                )
            least = free if least is None else min(least, free)
        return least

    def reserve(self, request: Request, samples: int) -> list[tuple[Budget, int]]:
        held = [(budget, samples) for budget in self.applying(request)]
        for budget, amount in held:
            self._reserved[budget] = self._reserved.get(budget, 0) + amount
        return held

    def release(self, held: list[tuple[Budget, int]]) -> None:
        for budget, amount in held:
            rest = self._reserved.get(budget, 0) - amount
            if rest > 0:
                self._reserved[budget] = rest
            else:
                self._reserved.pop(budget, None)

    def refusal(self, budget: Budget, spent: int) -> GatewayError:
        resets = period_end(budget.per, self._clock())
        wait = max(1, int(resets - self._clock()))
        return GatewayError(
            "too_many_requests",
            f"{budget.label} of {budget.samples:,} query samples is spent ({spent:,} used); "
            f"it resets at {_when(resets)}",
            headers={"Retry-After": str(wait)},
        )

    def warning(self, budget: Budget, spent: int) -> str:
        share = spent / budget.samples
        resets = _when(period_end(budget.per, self._clock()))
        return (
            f"{budget.label}: {spent:,} of {budget.samples:,} query samples used ({share:.0%}); "
            f"queries that reach AMP are refused once it is spent, until {resets}"
        )


def capped(request: Request, left: int) -> tuple[Request, int]:
    """The request with exactly one error threshold, at most `left`, and that threshold (the
    client's when it is a positive whole number, else the gateway's in its place)."""
    given = positive_whole(request.param(ERROR_THRESHOLD))
    cap = left if given is None else min(given, left)
    return request.replace(params=with_one(request.params, ERROR_THRESHOLD, str(cap))), cap


def budgeting(budgets: Budgets) -> Stage:
    """Stage: each QueryMetrics fetch within its budgets, as the module says."""

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            if request.endpoint.operation != QUERY_METRICS:
                return await next_handler(request)
            left = await budgets.left(request)
            if left is None:
                return await next_handler(request)
            sent, cap = capped(request, left)
            held = budgets.reserve(request, -(-cap // 2))
            try:
                return await next_handler(sent)
            finally:
                budgets.release(held)

        return handle

    return stage


def budget_warnings(budgets: Budgets, soft_share: float) -> Stage:
    """Stage: a warning first in the answer's warnings while a budget of its principal or
    dashboard is past `soft_share`."""

    def stage(next_handler: Handler) -> Handler:
        async def handle(request: Request) -> Answer:
            if not budgets.applying(request):
                return await next_handler(request)
            answer = await next_handler(request)
            warnings = [
                budgets.warning(b, spent)
                for b, spent in await budgets.standing(request)
                if spent >= soft_share * b.samples
            ]
            # (not on an answer mapped from a file: its copy in the heap is what `send` avoids)
            if not warnings or answer.status != 200 or isinstance(answer.body, memoryview):
                return answer
            return await work(json_size(answer), _warned, answer, warnings)

        return handle

    return stage


def _warned(answer: Answer, warnings: list[str]) -> Answer:
    body = bytes(answer.json_bytes())
    try:
        for warning in reversed(warnings):
            body = with_warning(body, warning)
    except ValueError:
        return answer
    return answer.replace(body=body, gzipped=False, size=len(body))
