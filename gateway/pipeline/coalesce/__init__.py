"""Stage: identical upstream requests in flight at the same time share one round trip, in this
process and, through Redis, across workers and replicas.

In a process, the fetch runs in its own task, so a client that goes away does not cancel it for
the others. Answers and errors are immutable: every caller gets the same one.

Across processes, the first to take the request's lock in Redis fetches; the others wait for the
answer it leaves there, for at most `wait` seconds, then fetch themselves. They also fetch
themselves when the lock's holder is gone without leaving an answer (a holder renews its lock
while it fetches: a dead one's ends within `shared.LEASE`), when the answer they read
is damaged, and while Redis is away. An answer is only taken from the round the waiter saw:
each holder's answer carries the holder's token.

The lock and the waiters' count are state (`SharedRedis`, never evicted); the answer goes to
the cache's Redis (`SharedRedis.cache`, which may evict it: the waiters then fetch themselves),
sealed with the deployment's HMAC key when one is configured. An answer larger than
`cache.redis_max_entry_bytes` is not written: the waiters fetch themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import NamedTuple

import orjson
import xxhash
from redis.commands.core import AsyncScript

from gateway.errors import GatewayError
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.pipeline.shared import LEASE, SharedRedis

_Key = tuple[str, str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]

ANSWER_TTL_MS = 10_000  # how long an answer waits in Redis for the waiters to read it
# KEYS: the lock, the waiters' count. The holder extends both while it fetches (if it dies, the
# lock ends within LEASE and the waiters fetch themselves); a waiter counts itself in only while
# a holder has the lock; a holder with nobody counted in lets go without writing its answer.
_SCRIPTS = {
    "extend": """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('PEXPIRE', KEYS[1], ARGV[2])
        redis.call('PEXPIRE', KEYS[2], ARGV[2])
        return 1
    """,
    "join": """
        local holder = redis.call('GET', KEYS[1])
        if holder then
            redis.call('INCR', KEYS[2])
            redis.call('PEXPIRE', KEYS[2], ARGV[1])
        end
        return holder
    """,
    "alone": """
        if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
        if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
        return 1
    """,
    "release": """
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('DEL', KEYS[1], KEYS[2])
        return 1
    """,
}
_POLL_FIRST, _POLL_MAX = 0.005, 0.05  # waiters read Redis at these intervals, doubling


def coalescing(
    on_shared: Callable[[], None],
    shared: SharedRedis | None = None,
    wait: float = 30.0,
    on_shared_remotely: Callable[[], None] = lambda: None,
) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        in_flight: dict[_Key, asyncio.Task[Answer]] = {}
        fetch = next_handler
        if shared is not None:
            fetch = _across_processes(next_handler, shared, wait, on_shared_remotely)

        async def handle(request: Request) -> Answer:
            # The enforced labels are part of the key: a request only joins one made for the
            # same label scope, so every request still meets the edge guard with its own
            # principal's.
            key: _Key = (
                request.workspace.id,
                request.method,
                request.path,
                request.params,
                request.principal.enforce,
            )
            task = in_flight.get(key)
            if task is None:
                task = asyncio.ensure_future(fetch(request))
                in_flight[key] = task
                task.add_done_callback(lambda done: _finished(in_flight, key, done))
            else:
                on_shared()
            return await asyncio.shield(task)

        return handle

    return stage


def _finished(in_flight: dict[_Key, asyncio.Task[Answer]], key: _Key, task: asyncio.Task[Answer]) -> None:
    in_flight.pop(key, None)
    if not task.cancelled():
        task.exception()  # retrieved: every caller may have gone, the error was still seen


def _across_processes(
    next_handler: Handler, shared: SharedRedis, wait: float, on_shared: Callable[[], None]
) -> Handler:
    lease_ms = int(LEASE * 1000)
    scripts = {name: shared.client.register_script(text) for name, text in _SCRIPTS.items()}

    async def fetch(request: Request) -> Answer:
        keys = redis_keys(request, shared.namespace)
        token = os.urandom(8).hex()
        client = shared.client

        async def take() -> bool:  # redis-py answers None, not False, when NX did not set
            return bool(await client.set(keys.lock, token, nx=True, px=lease_ms))

        taken = await shared.call("coalesce", take)
        if taken is None:  # Redis is away (and may have taken the lock for us: let it go)
            _release_later(shared, scripts, keys, token)
            return await next_handler(request)
        if taken:
            renew = scripts["extend"]
            async with shared.renewing(
                "coalesce", lambda: renew(keys=[keys.lock, keys.waiters], args=[token, lease_ms])
            ):
                return await _lead(next_handler, request, shared, scripts, keys, token)
        join = scripts["join"]
        holder = await shared.call("coalesce", lambda: join(keys=[keys.lock, keys.waiters], args=[lease_ms]))
        if isinstance(holder, bytes):
            found = await _await_answer(shared, keys, holder.decode(), wait)
            if found is not None:
                on_shared()
                if isinstance(found, GatewayError):
                    raise found
                return found
        return await next_handler(request)

    return fetch


async def _lead(
    next_handler: Handler,
    request: Request,
    shared: SharedRedis,
    scripts: dict[str, AsyncScript],
    keys: RoundKeys,
    token: str,
) -> Answer:
    outcome: Answer | GatewayError
    try:
        outcome = await next_handler(request)
    except GatewayError as err:
        outcome = err
    except BaseException:
        # Anything else (a bug, a cancellation at shutdown): let go at once, without an answer,
        # so that the waiters fetch themselves now rather than when the lease ends.
        _release_later(shared, scripts, keys, token)
        raise
    await _let_go(shared, scripts, keys, token, outcome)
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome


async def _let_go(
    shared: SharedRedis,
    scripts: dict[str, AsyncScript],
    keys: RoundKeys,
    token: str,
    outcome: Answer | GatewayError,
) -> None:
    """The holder's last step. Most fetches have nobody waiting in another process: then the
    answer is not written at all (for a 104 KB answer, 587 instead of 1,112 µs of CPU per
    fetch: bench/bench_shared_state.py). An answer too large to share is not written either:
    the waiters fetch themselves."""
    pair = [keys.lock, keys.waiters]
    alone = scripts["alone"]
    if await shared.call("coalesce", lambda: alone(keys=pair, args=[token]), always=True) == 1:
        return  # nobody waits, and the lock is let go
    # Too large to share: not even encoded (a copy of the whole answer, on the event loop).
    small = not isinstance(outcome, Answer) or len(outcome.body) <= shared.max_entry_bytes
    blob = encode(outcome, token, keys.digest) if small else b""
    if small and len(blob) <= shared.max_entry_bytes:
        cache, where = shared.cache, keys.answer(token)
        sealed = cache.seal(where, blob)
        # The answer first, then the lock: a waiter that finds the lock gone finds the answer.
        await cache.call(
            "coalesce",
            lambda: cache.client.set(where, sealed, px=ANSWER_TTL_MS),
            timeout=2.0,
            skip_when_full=True,
        )
    release = scripts["release"]
    await shared.call("coalesce", lambda: release(keys=pair, args=[token]), always=True)


def _release_later(shared: SharedRedis, scripts: dict[str, AsyncScript], keys: RoundKeys, token: str) -> None:
    release = scripts["release"]
    shared.later("coalesce", lambda: release(keys=[keys.lock, keys.waiters], args=[token]))


async def _await_answer(
    shared: SharedRedis, keys: RoundKeys, holder: str, wait: float
) -> Answer | GatewayError | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    delay = _POLL_FIRST
    client, cache = shared.client, shared.cache
    # Only the answer of the round waited for: its key carries the holder's token.
    where = keys.answer(holder)
    counted = False
    while loop.time() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
        delay = min(delay * 2, _POLL_MAX)
        if cache is shared:
            values = await shared.call("coalesce", lambda: client.mget([where, keys.lock]))
            if values is None:
                return None
            blob, current = values
        else:
            # The lock first: once it is gone, the answer written before it let go is there.
            locks = await shared.call("coalesce", lambda: client.mget([keys.lock]))
            if locks is None:
                return None
            current = locks[0]
            blob = await cache.call("coalesce", lambda: cache.client.get(where))
        if isinstance(blob, bytes):
            opened = cache.unseal(where, blob)
            found = decode(bytes(opened), holder, keys.digest) if opened is not None else None
            if found is not None:
                return found
            if not counted:  # damaged, forged, or another round's: counted once per wait
                shared.metrics.cache_damaged_entries.labels("coalesced").inc()
                counted = True
        if current != holder.encode():  # the holder finished or gave up without an answer for us
            return None
    return None


class RoundKeys(NamedTuple):
    """A request's keys in Redis (one hash slot in a cluster), and its digest."""

    lock: str  # the holder's token, while it fetches
    waiters: str  # how many wait in other processes (the answer is written only for them)
    base: str
    digest: str

    def answer(self, token: str) -> str:
        """Where the holder with this token leaves its answer."""
        return f"{self.base}:answer:{token}"


def redis_keys(request: Request, namespace: str) -> RoundKeys:
    """The request's keys among the deployment's (`namespace`)."""
    key = (
        request.workspace.fingerprint,
        request.method,
        request.path,
        request.params,
        request.principal.enforce,
    )
    digest = hashlib.sha256(orjson.dumps(key)).hexdigest()[:40]
    base = f"amp-gateway:{namespace}:coalesce:{{{digest}}}"
    return RoundKeys(f"{base}:lock", f"{base}:waiters", base, digest)


def encode(outcome: Answer | GatewayError, token: str, digest: str) -> bytes:
    """An answer or an error as Redis holds it: a JSON header line, then the body bytes, with
    the holder's token, the request's digest and a checksum of it all."""
    if isinstance(outcome, Answer):
        header = {
            "answer": True,
            "gzipped": outcome.gzipped,
            "status": outcome.status,
            "headers": outcome.headers,
            "cache": outcome.cache,
        }
        body = outcome.body
    else:
        header = {
            "answer": False,
            "type": outcome.error_type,
            "message": outcome.message,
            "status": outcome.status,
            "headers": dict(outcome.headers),
            "retry": outcome.retry,
            "wait": outcome.wait,
            "stage": outcome.stage,
            "upstream": outcome.upstream_body is not None,
        }
        body = outcome.upstream_body or b""
    header["token"], header["key"] = token, digest
    payload = orjson.dumps(header) + b"\n" + body
    return xxhash.xxh3_64_digest(payload) + payload


def decode(blob: bytes, token: str, digest: str) -> Answer | GatewayError | None:
    """What `encode` wrote for this round (`token`) of this request (`digest`); None for
    anything else, damaged or not."""
    checksum, payload = blob[:8], blob[8:]
    if xxhash.xxh3_64_digest(payload) != checksum:
        return None
    line, _, body = payload.partition(b"\n")
    try:
        header = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if header.get("token") != token or header.get("key") != digest:
        return None
    if header["answer"]:
        return Answer(
            body,
            gzipped=header["gzipped"],
            status=header["status"],
            headers=tuple((name, value) for name, value in header["headers"]),
            cache=header["cache"],
        )
    error = GatewayError(
        header["type"],
        header["message"],
        header["status"],
        header["headers"],
        body if header["upstream"] else None,
        header["retry"],
        header["wait"],
    )
    error.stage = header["stage"]
    return error
