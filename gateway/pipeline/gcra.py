"""Token buckets as GCRA: `burst` requests at once, `per_second` on average, each bucket kept as
one "theoretical arrival time" (TAT), in the places a bucket can live:
- Redis: one bucket for every worker and replica (a Lua script on Redis's clock);
- the host's store (pipeline/host.py): one for the workers of this host, without Redis or while
  it is away (a function over one write transaction, on the host's monotonic clock);
- this process (`ProcessBuckets`), when the host's store fails too.

A request asks for a `Turn`. With `max_wait` 0 (a principal's rate, pipeline/rate.py) a request
that would have to wait is refused and charges nothing. With `max_wait` > 0 (AMP's rates,
pipeline/operation_rate.py) it may take a later turn instead: the bucket is charged now and the
request goes when its turn comes, so the requests that wait leave in order, at the rate.
`hold` keeps a bucket empty for a while (AMP said 429): the next turn is at least that far off,
and the bucket refills from there at its rate, not with a burst.
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.config import Rate
from gateway.pipeline.host import HostStore, StateTxn
from gateway.pipeline.shared import SharedRedis

# KEYS[1]: the bucket's TAT (µs); ARGV: µs per request, µs of tolerance ((burst - 1) requests), the
# most µs a request may wait for its turn. Answers 0 when the request may go now, minus the µs to
# its turn when it took a later one, else (refused, nothing charged) the µs until it may go.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, tolerance = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_wait = tonumber(ARGV[3] or '0')
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > max_wait then return math.ceil(wait) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
if wait > 0 then return -math.ceil(wait) end
return 0
"""

# KEYS[1]: the bucket's TAT (µs); ARGV[1]: µs of tolerance plus µs to hold the bucket empty.
_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local held = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < held then
  redis.call('SET', KEYS[1], string.format('%.0f', held), 'PX', math.ceil((held - now) / 1000) + 1000)
end
return 0
"""

_TAT = struct.Struct("!d")  # the theoretical arrival time, µs of the host's monotonic clock


@dataclass(frozen=True, slots=True)
class Turn:
    """A bucket's answer: `taken`, the request goes in `wait` seconds (0: now); else it was
    refused, nothing charged, and `wait` is how long it would have had to wait."""

    wait: float
    taken: bool


def gcra_turn(
    tat: float | None, now: float, interval: float, tolerance: float, max_wait: float = 0.0
) -> tuple[float, float | None]:
    """(wait, the bucket's next TAT), all in one unit: a turn `wait` (0 or up to `max_wait`) from
    `now` with the TAT to store, or (the wait, None) when that is past `max_wait`."""
    tat = now if tat is None or tat < now else tat
    wait = tat - tolerance - now
    if wait > max_wait:
        return wait, None
    return max(0.0, wait), tat + interval


def gcra_hold(tat: float | None, now: float, tolerance: float, hold: float) -> float | None:
    """The TAT that keeps the bucket empty until `now + hold`; None when it already is."""
    held = now + tolerance + hold
    return held if tat is None or tat < held else None


def _stored_tat(txn: StateTxn, key: str) -> float | None:
    found = txn.get(key)
    return None if found is None else float(_TAT.unpack(found)[0])


def _ttl_ms(tat: float, now: float) -> int:
    return math.ceil((tat - now) / 1000) + 1000


def gcra(txn: StateTxn, key: str, interval: float, tolerance: float, max_wait: float = 0.0) -> float:
    """_GCRA over the host's state (µs): 0 when the request may go now, minus the µs to its turn
    when it took a later one, else the µs until it may."""
    now = time.monotonic_ns() / 1000
    wait, next_tat = gcra_turn(_stored_tat(txn, key), now, interval, tolerance, max_wait)
    if next_tat is None:
        return math.ceil(wait)
    txn.put(key, _TAT.pack(next_tat), _ttl_ms(next_tat, now))
    return -math.ceil(wait)


def gcra_hold_txn(txn: StateTxn, key: str, tolerance: float, hold: float) -> bool:
    """_HOLD over the host's state (µs); True."""
    now = time.monotonic_ns() / 1000
    held = gcra_hold(_stored_tat(txn, key), now, tolerance, hold)
    if held is not None:
        txn.put(key, _TAT.pack(held), _ttl_ms(held, now))
    return True


def gcra_args(rate: Rate) -> tuple[float, float]:
    """µs per request, µs of tolerance ((burst - 1) requests)."""
    interval = 1_000_000 / rate.per_second
    return interval, (rate.burst - 1) * interval


def _turn(answer: float) -> Turn:
    """The scripts' signed µs as a Turn."""
    return Turn(abs(answer) / 1_000_000, answer <= 0)


class SharedBuckets(Protocol):
    """Buckets shared by several processes; each call answers None when their store failed
    (the next one answers)."""

    async def wait(self, who: str, rate: Rate) -> float | None:
        """0 when `who` may send a request now (and it is counted), else the seconds until it
        may."""
        ...

    async def take(self, who: str, rate: Rate, max_wait: float) -> Turn | None:
        """A turn within `max_wait` seconds, or the refusal."""
        ...

    async def hold(self, who: str, rate: Rate, seconds: float) -> bool | None:
        """Keeps the bucket empty for `seconds`; True when done."""
        ...


class RedisBuckets:
    """On Redis, every worker and replica's; a bucket there is never evicted (the state's Redis).
    `feature`: what its failures count as (gateway_redis_fallbacks_total)."""

    def __init__(self, shared: SharedRedis, prefix: str, feature: str = "rate") -> None:
        self._shared = shared
        self._prefix = prefix
        self._feature = feature
        self._gcra = shared.client.register_script(_GCRA)
        self._hold = shared.client.register_script(_HOLD)

    async def wait(self, who: str, rate: Rate) -> float | None:
        turn = await self.take(who, rate, 0.0)
        return None if turn is None else turn.wait

    async def take(self, who: str, rate: Rate, max_wait: float) -> Turn | None:
        args = [*gcra_args(rate), max_wait * 1_000_000]
        script, key = self._gcra, self._prefix + who
        answer = await self._shared.call(self._feature, lambda: script(keys=[key], args=args))
        return None if answer is None else _turn(int(answer))

    async def hold(self, who: str, rate: Rate, seconds: float) -> bool | None:
        args = [gcra_args(rate)[1] + seconds * 1_000_000]
        script, key = self._hold, self._prefix + who
        done = await self._shared.call(self._feature, lambda: script(keys=[key], args=args))
        return None if done is None else True


class HostBuckets:
    """In the host's store, the workers of this host's."""

    def __init__(self, store: HostStore, prefix: str = "rate:") -> None:
        self._store = store
        self._prefix = prefix

    async def wait(self, who: str, rate: Rate) -> float | None:
        turn = await self.take(who, rate, 0.0)
        return None if turn is None else turn.wait

    async def take(self, who: str, rate: Rate, max_wait: float) -> Turn | None:
        interval, tolerance = gcra_args(rate)
        key, most = self._prefix + who, max_wait * 1_000_000
        answer = self._store.transact(lambda txn: gcra(txn, key, interval, tolerance, most))
        return None if answer is None else _turn(answer)

    async def hold(self, who: str, rate: Rate, seconds: float) -> bool | None:
        tolerance, key = gcra_args(rate)[1], self._prefix + who
        return self._store.transact(lambda txn: gcra_hold_txn(txn, key, tolerance, seconds * 1_000_000))


class ProcessBuckets:
    """This process's own, on `clock` (seconds), when no shared store answers; one bucket per
    name, for names from the configuration (not from requests: they are never dropped)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tats: dict[str, float] = {}

    def take(self, who: str, rate: Rate, max_wait: float) -> Turn:
        interval, tolerance = 1 / rate.per_second, (rate.burst - 1) / rate.per_second
        wait, next_tat = gcra_turn(self._tats.get(who), self._clock(), interval, tolerance, max_wait)
        if next_tat is None:
            return Turn(wait, False)
        self._tats[who] = next_tat
        return Turn(wait, True)

    def hold(self, who: str, rate: Rate, seconds: float) -> None:
        held = gcra_hold(self._tats.get(who), self._clock(), (rate.burst - 1) / rate.per_second, seconds)
        if held is not None:
            self._tats[who] = held
