"""Budgets of query samples per principal and per Grafana dashboard, per UTC day or month
(`cost.budgets`), counted by the ledger across workers and replicas.

A budget is enforced where AMP bills: before a query goes upstream (the cost meter) it is
refused with a 429 once spent, and otherwise sent with AMP's max_samples_processed_error_threshold
at what is left, so that AMP refuses, without charging, a query that would overspend. Past
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
from gateway.pipeline.model import Answer, Handler, Request, Stage

Spent = Callable[[str, str, str, float], Awaitable[int]]  # (kind, name, per, now) -> samples


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Budgets:
    def __init__(self, settings: CostSettings, spent: Spent, clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._spent = spent
        self._clock = clock
        self._by_principal: dict[str, list[Budget]] = {}
        self._by_dashboard: dict[str, list[Budget]] = {}
        for budget in settings.budgets:
            owners = self._by_principal if budget.kind == "principal" else self._by_dashboard
            owners.setdefault(budget.name, []).append(budget)

    def __bool__(self) -> bool:
        return bool(self._settings.budgets)

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
        """The samples the request may still spend (the least left of its budgets); None: no
        budget applies. Raises the 429 when one is spent."""
        least: int | None = None
        for budget, spent in await self.standing(request):
            remaining = budget.samples - spent
            if remaining <= 0:
                raise self.refusal(budget, spent)
            least = remaining if least is None else min(least, remaining)
        return least

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
            if not warnings or answer.status != 200:
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
