"""Where the cost ledger keeps its totals: the host's store (the workers of one host) and Redis
(every replica's). A flush is one `Batch`: what one worker counted since its last, by record.

Records: one per (hourly or daily bucket, scope), the scope being everyone (`*`) or one
principal; each holds every dimension's `top` names and OTHER (tally.py). Budget counters: one
per configured budget and period, exact. On the host a record is a state record (`cost:h:<hour
start>:<scope>`), changed inside one write transaction with the whole batch; on Redis a hash
(fields `s|<dimension>|<name>`, `v|...` saved, `t|...` title) with, beside it, one sorted set
per dimension of the kept names' weights, changed by one script per record.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.pipeline.cost.periods import DAY, KEEP, STEP_NAMES, period_end
from gateway.pipeline.cost.tally import DIMENSIONS, OTHER, Entry, Tally, decode, encode, heaviest_first, merge
from gateway.pipeline.host import HostStore, StateTxn
from gateway.pipeline.shared import SharedRedis

RecordId = tuple[int, int, str]  # (bucket step in seconds, bucket start, scope)
BudgetId = tuple[str, int, str, str]  # (per, period start, kind, name)
EVERYONE = "*"  # the scope of everyone's totals (no principal is named "*")
_COUNT = struct.Struct("!q")


@dataclass
class Batch:
    """What one worker counted since its last flush; `now` is its clock when taken."""

    now: float
    records: dict[RecordId, Tally] = field(default_factory=dict)
    budgets: dict[BudgetId, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.records or self.budgets)


def record_ttl_ms(record: RecordId, now: float) -> int:
    step, start, _ = record
    return max(1000, int((start + KEEP[step] - now) * 1000))


def budget_ttl_ms(budget: BudgetId, now: float) -> int:
    """Kept a day past its period's end: the period just ended can still be read."""
    per, start, _, _ = budget
    return max(1000, int((period_end(per, start) + DAY - now) * 1000))


def host_record_key(record: RecordId) -> str:
    step, start, scope = record
    return f"cost:{STEP_NAMES[step]}:{start}:{scope}"


def host_budget_key(budget: BudgetId) -> str:
    per, start, kind, name = budget
    return f"cost:budget:{per}:{start}:{kind}:{name}"


class HostLedger:
    """On the host's store: a batch is one write transaction."""

    def __init__(self, store: HostStore) -> None:
        self._store = store

    def apply(self, batch: Batch, top: int) -> bool:
        def run(txn: StateTxn) -> bool:
            for record, delta in batch.records.items():
                key = host_record_key(record)
                found = txn.get(key)
                tally = decode(found) if found is not None else {}
                merge(tally, delta, top)
                txn.put(key, encode(tally), record_ttl_ms(record, batch.now))
            for budget, samples in batch.budgets.items():
                key = host_budget_key(budget)
                found = txn.get(key)
                count = _COUNT.unpack(found)[0] if found is not None and len(found) == _COUNT.size else 0
                txn.put(key, _COUNT.pack(count + samples), budget_ttl_ms(budget, batch.now))
            return True

        return self._store.transact(run) is not None

    def read(self, records: list[RecordId]) -> list[Tally] | None:
        found = self._store.peek_state([host_record_key(r) for r in records])
        if found is None:
            return None
        return [decode(f[0]) if f is not None else {} for f in found]

    def budget(self, budget: BudgetId) -> int | None:
        found = self._store.peek_state([host_budget_key(budget)])
        if found is None:
            return None
        value = found[0]
        if value is None or len(value[0]) != _COUNT.size:
            return 0
        return int(_COUNT.unpack(value[0])[0])


# KEYS[1]: the record's hash; KEYS[2..7]: the weights of the names each dimension keeps (sorted
# sets, in DIMENSIONS' order). ARGV: top, ms to keep, OTHER, then per name, heaviest first:
# dimension (1-6), name, samples, saved samples, title. tally.merge, on Redis.
_MERGE = """
local dims = {DIMENSIONS}
local h, top, ttl, other = KEYS[1], tonumber(ARGV[1]), ARGV[2], ARGV[3]
for i = 4, #ARGV, 5 do
  local d = tonumber(ARGV[i])
  local dim, z, name = dims[d], KEYS[d + 1], ARGV[i + 1]
  local samples, saved, title = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local weight = tonumber(samples) + tonumber(saved)
  if name ~= other and not redis.call('ZSCORE', z, name) and redis.call('ZCARD', z) >= top then
    local lightest = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    if weight <= tonumber(lightest[2]) then
      name = other
    else
      local f = dim .. '|' .. lightest[1]
      local moved = redis.call('HMGET', h, 's|' .. f, 'v|' .. f)
      redis.call('HINCRBY', h, 's|' .. dim .. '|' .. other, moved[1] or '0')
      redis.call('HINCRBY', h, 'v|' .. dim .. '|' .. other, moved[2] or '0')
      redis.call('HDEL', h, 's|' .. f, 'v|' .. f, 't|' .. f)
      redis.call('ZREM', z, lightest[1])
    end
  end
  local f = dim .. '|' .. name
  if name ~= other then redis.call('ZINCRBY', z, weight, name) end
  redis.call('HINCRBY', h, 's|' .. f, samples)
  redis.call('HINCRBY', h, 'v|' .. f, saved)
  if title ~= '' and name ~= other then redis.call('HSET', h, 't|' .. f, title) end
end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ttl) end
return 1
""".replace("DIMENSIONS", ", ".join(f"'{d}'" for d in DIMENSIONS))

# KEYS[1]: a budget's counter; ARGV: samples, ms to keep.
_ADD = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
"""

_DIMENSION_INDEX = {d: str(i + 1) for i, d in enumerate(DIMENSIONS)}


class RedisLedger:
    """On Redis: one script call per record and per budget counter, all at once; what Redis
    did not take is handed back (for the host's store)."""

    def __init__(self, shared: SharedRedis, namespace: str) -> None:
        self._shared = shared
        self._prefix = f"amp-gateway:{namespace}:cost:"
        self._merge = shared.client.register_script(_MERGE)
        self._add = shared.client.register_script(_ADD)

    def record_key(self, record: RecordId) -> str:
        step, start, scope = record
        # One hash tag for the hash and its sorted sets: one script's keys, in one cluster slot.
        return f"{self._prefix}{{{STEP_NAMES[step]}:{start}:{scope}}}"

    def budget_key(self, budget: BudgetId) -> str:
        per, start, kind, name = budget
        return f"{self._prefix}budget:{per}:{start}:{kind}:{name}"

    async def apply(self, batch: Batch, top: int) -> Batch:
        """The part of `batch` Redis did not take (empty when it took it all)."""
        records = list(batch.records.items())
        budgets = list(batch.budgets.items())
        calls = [self._apply_record(r, delta, top, batch.now) for r, delta in records]
        calls += [self._apply_budget(b, samples, batch.now) for b, samples in budgets]
        done = await asyncio.gather(*calls)
        left = Batch(batch.now)
        for (record, delta), ok in zip(records, done[: len(records)], strict=True):
            if not ok:
                left.records[record] = delta
        for (budget, samples), ok in zip(budgets, done[len(records) :], strict=True):
            if not ok:
                left.budgets[budget] = samples
        return left

    async def _apply_record(self, record: RecordId, delta: Tally, top: int, now: float) -> bool:
        base = self.record_key(record)
        keys = [base, *(f"{base}:{d}" for d in DIMENSIONS)]
        args: list[Any] = [top, record_ttl_ms(record, now), OTHER]
        for dim, names in delta.items():
            for name, entry in sorted(names.items(), key=heaviest_first):
                args += [_DIMENSION_INDEX[dim], name, entry.samples, entry.saved, entry.title]
        script = self._merge
        return await self._call(lambda: script(keys=keys, args=args)) is not None

    async def _apply_budget(self, budget: BudgetId, samples: int, now: float) -> bool:
        args = [samples, budget_ttl_ms(budget, now)]
        key, script = self.budget_key(budget), self._add
        return await self._call(lambda: script(keys=[key], args=args)) is not None

    async def _call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        return await self._shared.call("cost", operation)

    async def read(self, records: list[RecordId]) -> list[Tally] | None:
        keys = [self.record_key(r) for r in records]
        client = self._shared.client

        async def run() -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hgetall(key)
                return list(await pipe.execute())

        found = await self._call(run)
        if found is None:
            return None
        return [from_hash(f) for f in found]

    async def budget(self, budget: BudgetId) -> int | None:
        key, client = self.budget_key(budget), self._shared.client

        async def run() -> int:
            found = await client.get(key)
            return int(found) if found is not None else 0

        counted: int | None = await self._call(run)
        return counted


def from_hash(found: dict[bytes, bytes]) -> Tally:
    """A record's hash as a tally; fields that do not read are left out."""
    tally: Tally = {}
    for raw_field, value in found.items():
        try:
            kind, dim, name = raw_field.decode().split("|", 2)
            if dim not in DIMENSIONS:
                continue
            entry = tally.setdefault(dim, {}).setdefault(name, Entry())
            if kind == "s":
                entry.samples = int(value)
            elif kind == "v":
                entry.saved = int(value)
            elif kind == "t":
                entry.title = value.decode()
        except (UnicodeDecodeError, ValueError):
            continue
    return tally
