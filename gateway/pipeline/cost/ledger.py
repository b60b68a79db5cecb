"""The cost ledger: the query samples AMP processed for the gateway's fetches (what AMP bills)
and the samples the cache saved, by workspace, principal, Grafana dashboard, panel, org and
user, in hourly and daily buckets; for everyone and for each principal apart (its own view);
and, exactly, what each configured budget's principal or dashboard spent this UTC day or month.

`charge` and `saved` only add to this worker's counts (a few µs, never a store's round trip);
the worker flushes them at most `flush_every` seconds later, in the background, in one write:
Redis when configured (every replica's totals), the host's store without it or while it is
away (this host's workers'); what neither takes is kept and tried again with the next flush.
Reads add up Redis and the host's store (each flush went to one of them) and this worker's
counts not yet flushed; other workers' are at most `flush_every` late. A worker killed loses
what it had not flushed.

Names: a request without X-Dashboard-Uid (or panel, org, user) counts under "" (shown as "-");
each dimension keeps `cost.top` names per bucket, the rest count under OTHER (shown as
"other"); a range's rows are folded to `top` again. Totals are exact: every dimension's rows
add up to what was charged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Counter

from gateway.config import Settings
from gateway.config.cost import CostSettings
from gateway.config.settings import deployment_identity
from gateway.metrics import Metrics
from gateway.pipeline.cost.periods import DAY, HOUR, KEEP, Span, bucket_start, period_start, span
from gateway.pipeline.cost.stores import EVERYONE, Batch, BudgetId, HostLedger, RecordId, RedisLedger
from gateway.pipeline.cost.tally import (
    DIMENSIONS,
    NOT_SAID,
    OTHER,
    Entry,
    Names,
    Tally,
    add_all,
    fold,
    merge,
    total,
)
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Request
from gateway.pipeline.shared import SharedRedis

log = logging.getLogger("gateway.cost")

# Distinct (hour, workspace, principal, dashboard, panel, org, user) a worker counts between two
# flushes; past it, new ones count with dashboard, panel, org and user as OTHER (a client
# making up a dashboard uid per request).
MAX_PENDING = 4096
_WARN_EVERY = 60.0
SHOWN = {NOT_SAID: "-", OTHER: "other"}
_NAMED = {shown: name for name, shown in SHOWN.items()}
_GROUPS = {NOT_SAID: "unnamed", OTHER: "other"}

_Attribution = tuple[int, str, str, str, str, str, str]  # hour, then one name per dimension


@dataclass(frozen=True, slots=True)
class Row:
    """One name's totals over a range. `key` is "-" for requests that did not name one and
    "other" for the names past `top`; `group` tells those two ("unnamed", "other") from a name
    that happens to be spelled so."""

    key: str
    samples: int
    cost: float
    saved_samples: int
    title: str = ""
    group: str = ""


@dataclass(frozen=True, slots=True)
class Point:
    """One bucket's totals: `time` is when it began (Unix seconds)."""

    time: int
    samples: int
    cost: float
    saved_samples: int


def shown(name: str) -> str:
    return SHOWN.get(name, name)


def named(key: str) -> str:
    """The name a row's key stands for ("-": not said, "other": the rest)."""
    return _NAMED.get(key, key)


def cost_namespace(settings: Settings) -> str:
    """What the cost totals on Redis are kept under: `cache.redis_namespace` when the operator
    set one; else the workspaces served, not the deployment's whole identity, so that a
    configuration change (a budget, a principal, the price) does not start the month's totals
    and budgets from 0."""
    if settings.cache.redis_namespace and settings.cache.redis_namespace != deployment_identity(settings):
        return settings.cache.redis_namespace
    workspaces = "\n".join(sorted(w.id for w in settings.workspaces))
    return "cost-" + hashlib.sha256(workspaces.encode()).hexdigest()[:16]


class Ledger:
    def __init__(
        self,
        settings: CostSettings,
        host: HostStore,
        shared: SharedRedis | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        *,
        namespace: str | None = None,
        flush_every: float = 1.0,
    ) -> None:
        """`namespace`: the Redis keys' (`cost_namespace`); default, `shared`'s."""
        self.settings = settings
        self.top = settings.top
        self._host = HostLedger(host)
        self._shared = shared
        self._redis = RedisLedger(shared, namespace or shared.namespace) if shared is not None else None
        self._metrics = metrics
        self._clock = clock
        self._flush_every = flush_every
        self._pending: dict[_Attribution, list[int]] = {}
        self._titles: dict[tuple[str, str], str] = {}  # (dimension, name) -> title
        self._budgets: dict[BudgetId, int] = {}
        self._unsaved: Batch | None = None  # a flush no store took
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()
        self._warned = -_WARN_EVERY
        self._principal_budgets: dict[str, list[str]] = {}
        self._dashboard_budgets: dict[str, list[str]] = {}
        for budget in settings.budgets:
            kind = self._principal_budgets if budget.kind == "principal" else self._dashboard_budgets
            kind.setdefault(budget.name, []).append(budget.per)
        self._owners: dict[tuple[str, str], tuple[Counter, Counter]] = {}
        self._dashboards: dict[str, tuple[Counter, Counter]] = {}

    # ------------------------------------------------------------------ counting

    async def charge(self, request: Request, samples: int) -> None:
        """AMP processed `samples` for an upstream fetch made for `request`."""
        try:
            if samples > 0:
                now = self._clock()
                self._count(request, now, samples, 0)
                self._charge_budgets(request, now, samples)
                self._count_metrics(request, samples, 0)
        except Exception:  # counting must never fail the client's request
            self._warn("counting a charge failed", exc_info=True)

    async def saved(self, request: Request, samples: int) -> None:
        """The cache (or another request's fetch) answered `request`, saving `samples`."""
        try:
            if samples > 0:
                self._count(request, self._clock(), 0, samples)
                self._count_metrics(request, 0, samples)
        except Exception:  # see charge
            self._warn("counting saved samples failed", exc_info=True)

    def _count(self, request: Request, now: float, samples: int, saved: int) -> None:
        origin = request.origin
        panel = f"{origin.dashboard or '-'}/{origin.panel}" if origin.panel else NOT_SAID
        hour = bucket_start(now, HOUR)
        who = (request.workspace.id, request.principal.name)
        key: _Attribution = (hour, *who, origin.dashboard, panel, origin.org, origin.user)
        cell = self._pending.get(key)
        if cell is None:
            if len(self._pending) >= MAX_PENDING:
                key = (hour, *who, OTHER, OTHER, OTHER, OTHER)
                cell = self._pending.get(key)
            if cell is None:
                cell = self._pending[key] = [0, 0]
        cell[0] += samples
        cell[1] += saved
        if key[3] != OTHER and len(self._titles) < MAX_PENDING:
            if origin.dashboard_title and origin.dashboard:
                self._titles[("dashboard", origin.dashboard)] = origin.dashboard_title
            if origin.panel_title and panel:
                self._titles[("panel", panel)] = origin.panel_title
        self._schedule()

    def _charge_budgets(self, request: Request, now: float, samples: int) -> None:
        for kind, name, periods in (
            ("principal", request.principal.name, self._principal_budgets.get(request.principal.name)),
            ("dashboard", request.origin.dashboard, self._dashboard_budgets.get(request.origin.dashboard)),
        ):
            for per in periods or ():
                budget = (per, period_start(per, now), kind, name)
                self._budgets[budget] = self._budgets.get(budget, 0) + samples

    def _count_metrics(self, request: Request, samples: int, saved: int) -> None:
        """gateway_query_samples_* by workspace and principal (both bounded by the settings), and
        by dashboard: the first `top` this worker sees, the rest as "other"."""
        owner = (request.workspace.id, request.principal.name)
        counters = self._owners.get(owner)
        if counters is None:
            counters = self._owners[owner] = (
                self._metrics.query_samples.labels(*owner),
                self._metrics.query_samples_saved.labels(*owner),
            )
        dashboard = shown(request.origin.dashboard)
        by_dashboard = self._dashboards.get(dashboard)
        if by_dashboard is None:
            if len(self._dashboards) - ("other" in self._dashboards) >= self.top:
                dashboard = "other"
                by_dashboard = self._dashboards.get(dashboard)
            if by_dashboard is None:
                by_dashboard = self._dashboards[dashboard] = (
                    self._metrics.dashboard_query_samples.labels(dashboard),
                    self._metrics.dashboard_query_samples_saved.labels(dashboard),
                )
        for pair in (counters, by_dashboard):
            if samples:
                pair[0].inc(samples)
            if saved:
                pair[1].inc(saved)

    # ------------------------------------------------------------------ flushing

    def _schedule(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._flush_every, self._flush_in_background)

    def _flush_in_background(self) -> None:
        self._timer = None
        task = asyncio.ensure_future(self.flush())
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def flush(self) -> None:
        """Writes what this worker counted since its last flush; never raises."""
        batch = self._take()
        if not batch:
            return
        try:
            left = batch
            if self._redis is not None:
                left = await self._redis.apply(batch, self.top)
            if left and not self._host.apply(left, self.top):
                self._keep(left)
        except Exception:  # a bug here must not lose the counts nor fail anyone's request
            self._keep(batch)
            self._warn("flushing cost totals failed", exc_info=True)

    def _take(self) -> Batch:
        """This worker's counts as one batch of records: each count goes to its hour's and its
        day's record, for everyone and for its principal."""
        pending, self._pending = self._pending, {}
        titles, self._titles = self._titles, {}
        batch = self._unsaved or Batch(self._clock())
        self._unsaved = None
        batch.now = self._clock()
        for budget, samples in self._budgets.items():
            batch.budgets[budget] = batch.budgets.get(budget, 0) + samples
        self._budgets = {}
        hourly: dict[tuple[int, str], Tally] = {}
        for (hour, *names), (samples, saved) in pending.items():
            for scope in (EVERYONE, names[1]):
                tally = hourly.get((hour, scope))
                if tally is None:
                    tally = hourly[(hour, scope)] = {dim: {} for dim in DIMENSIONS}
                for dim, name in zip(DIMENSIONS, names, strict=True):
                    entry = tally[dim].get(name)
                    if entry is None:
                        entry = tally[dim][name] = Entry()
                    entry.samples += samples
                    entry.saved += saved
        if titles:
            for tally in hourly.values():
                for dim in ("dashboard", "panel"):
                    for name, entry in tally[dim].items():
                        entry.title = titles.get((dim, name), "")
        hours_of_day: dict[tuple[int, str], int] = {}
        for hour, scope in hourly:
            hours_of_day[(bucket_start(hour, DAY), scope)] = (
                hours_of_day.get((bucket_start(hour, DAY), scope), 0) + 1
            )
        for (hour, scope), tally in hourly.items():
            day = bucket_start(hour, DAY)
            for record in ((HOUR, hour, scope), (DAY, day, scope)):
                found = batch.records.get(record)
                if found is not None:
                    add_all(found, tally)
                elif record[0] == HOUR or hours_of_day[(day, scope)] == 1:
                    batch.records[record] = tally  # the day's delta is its one hour's: shared, read only
                else:
                    add_all(batch.records.setdefault(record, {}), tally)
        return batch

    def _keep(self, batch: Batch) -> None:
        """A batch no store took, kept for the next flush: each record folded to a few times
        `top` names, and only while its bucket or period would still be read."""
        self._metrics.cost_unsaved_flushes.inc()
        self._warn("neither Redis nor the host's store took the cost totals: kept in this worker for now")
        now = self._clock()
        kept = self._unsaved or Batch(now)  # another flush's, failed meanwhile
        for record, delta in batch.records.items():
            step, start, _ = record
            if start + KEEP[step] > now:
                merge(kept.records.setdefault(record, {}), delta, 4 * self.top)
        for budget, samples in batch.budgets.items():
            if budget[1] + 32 * DAY > now:
                kept.budgets[budget] = kept.budgets.get(budget, 0) + samples
        self._unsaved = kept

    def _warn(self, message: str, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning("cost ledger: %s", message, exc_info=exc_info)

    async def aclose(self) -> None:
        """Flushes what is left (the app is stopping)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        await self.flush()

    # ------------------------------------------------------------------ reading

    @property
    def degraded(self) -> bool:
        """Redis is configured and away: what is read is this host's only."""
        return self._shared is not None and not self._shared.available

    async def rows(self, by: str, range_seconds: float, principal: str | None) -> list[Row]:
        """Everyone's (principal None) or one principal's totals over the last `range_seconds`
        (rounded out to whole hours, or UTC days past 48 h) by `by`, most samples first."""
        if by not in DIMENSIONS:
            raise ValueError(f"no such dimension: {by}")
        tallies = await self._read(span(range_seconds, self._clock()), principal)
        names: Names = {}
        for tally in tallies:
            add_all({by: names}, {by: tally.get(by, {})})
        rows = [self._row(name, entry) for name, entry in fold(names, self.top).items()]
        rows.sort(key=lambda r: (-r.samples, -r.saved_samples, r.key))
        return rows

    async def over_time(
        self, range_seconds: float, principal: str | None, by: str | None = None, key: str | None = None
    ) -> tuple[Span, list[Point]]:
        """Each bucket's totals over the range (hourly, daily past 48 h), oldest first, every
        bucket included: all of them, or those of row `key` of dimension `by` (the part of it
        that kept its own row in each bucket)."""
        if by is not None and by not in DIMENSIONS:
            raise ValueError(f"no such dimension: {by}")
        buckets = span(range_seconds, self._clock())
        tallies = await self._read(buckets, principal)
        points = []
        for start, tally in zip(buckets.starts, tallies, strict=True):
            entry = total(tally) if by is None else tally.get(by, {}).get(named(key or ""), Entry())
            points.append(Point(start, entry.samples, self.settings.price(entry.samples), entry.saved))
        return buckets, points

    async def _read(self, buckets: Span, principal: str | None) -> list[Tally]:
        """The records of these buckets: Redis's, the host's and what this worker could not
        flush added up, this worker's counts flushed first."""
        await self.flush()
        scope = EVERYONE if principal is None else principal
        records: list[RecordId] = [(buckets.step, start, scope) for start in buckets.starts]
        out: list[Tally] = [{} for _ in records]
        found: list[list[Tally] | None] = [self._host.read(records)]
        if self._redis is not None:
            found.append(await self._redis.read(records))
        if self._unsaved is not None:
            found.append([self._unsaved.records.get(record, {}) for record in records])
        for tallies in found:
            for into, tally in zip(out, tallies or (), strict=False):
                add_all(into, tally)
        return out

    def _row(self, name: str, entry: Entry) -> Row:
        return Row(
            shown(name),
            entry.samples,
            self.settings.price(entry.samples),
            entry.saved,
            entry.title,
            _GROUPS.get(name, ""),
        )

    async def spent(self, kind: str, name: str, per: str, now: float) -> int:
        """The samples charged to a configured budget's principal or dashboard `name` in the UTC
        day or calendar month holding `now`: exact, whatever the other names did (0 for a
        budget that is not configured: only those are counted)."""
        budget: BudgetId = (per, period_start(per, now), kind, name)
        counted = self._budgets.get(budget, 0)
        if self._unsaved is not None:
            counted += self._unsaved.budgets.get(budget, 0)
        counted += self._host.budget(budget) or 0
        if self._redis is not None:
            counted += await self._redis.budget(budget) or 0
        return counted
