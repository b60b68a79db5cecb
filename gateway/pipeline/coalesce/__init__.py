"""Stage: identical upstream requests in flight at the same time share one round trip, in this
process and across processes: through Redis across workers and replicas when it is configured
(`on_redis.py`), else, and while Redis is away, through the host's store across the workers of
this host (`on_host.py`).

In a process, the fetch runs in its own task, so a client that goes away does not cancel it for
the others. Answers and errors are immutable: every caller gets the same one.

Across processes, the first to take the request's lock fetches; the others wait for the answer
it leaves, for at most `wait` seconds, then fetch themselves. They also fetch themselves when
the lock's holder is gone without leaving an answer (a holder renews its lock while it fetches:
a dead one's ends within `shared.LEASE`; on the host, a holder whose process is gone is gone at
once), when the answer they read is damaged, and while neither store answers. An answer is only
taken from the round the waiter saw: each holder's answer carries the holder's token. A holder
writes its answer only when someone waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.errors import GatewayError
from gateway.pipeline.coalesce.on_host import HostRounds
from gateway.pipeline.coalesce.on_redis import _SCRIPTS, RedisRounds, RoundKeys, redis_keys
from gateway.pipeline.coalesce.wire import ANSWER_TTL_MS, decode, encode, request_digest
from gateway.pipeline.host import HostStore
from gateway.pipeline.model import Answer, Handler, Request, Stage
from gateway.pipeline.shared import SharedRedis

__all__ = [
    "ANSWER_TTL_MS",
    "_SCRIPTS",
    "HostRounds",
    "RedisRounds",
    "RoundKeys",
    "Rounds",
    "coalescing",
    "decode",
    "encode",
    "redis_keys",
]

_Key = tuple[str, str, str, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]


class Rounds(Protocol):
    """The rounds of identical requests in one shared place (RedisRounds, HostRounds), by the
    request's digest. A holder's token names its round."""

    async def take(self, digest: str, token: str) -> bool | None:
        """True: this holder has the lock and fetches; False: another has it; None: the store
        failed (the lock may have been taken all the same: `let_go_later`)."""
        ...

    def renewing(self, digest: str, token: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Keeps the holder's lock while the body runs."""
        ...

    async def join(self, digest: str) -> str | None:
        """The holder's token, counting one more waiter; None when nobody holds the lock or the
        store failed."""
        ...

    async def await_answer(self, digest: str, holder: str, wait: float) -> Answer | GatewayError | None:
        """The answer of `holder`'s round, within `wait` seconds; None when there will be none
        for this waiter (the holder gone, the answer too large or damaged, the store failed)."""
        ...

    async def alone(self, digest: str, token: str) -> bool:
        """True when nobody waits for this holder: it has let go of the lock."""
        ...

    async def hand_over(self, digest: str, token: str, outcome: Answer | GatewayError) -> None:
        """The holder's answer for those who wait (when it is small enough), then the lock."""
        ...

    def let_go_later(self, digest: str, token: str) -> None:
        """Lets go of the lock without an answer, even when the caller cannot wait."""
        ...


def coalescing(
    on_shared: Callable[[], None],
    shared: SharedRedis | None = None,
    wait: float = 30.0,
    on_shared_remotely: Callable[[], None] = lambda: None,
    host: HostStore | None = None,
    host_max_answer_bytes: int = 16 << 20,
    on_saved: Callable[[Request, int], Awaitable[None]] | None = None,
) -> Stage:
    """`on_shared`: counts a request that joined one in flight in this process;
    `on_shared_remotely`, one that took another process's answer. `host_max_answer_bytes`: the
    largest answer shared through the host's store. `on_saved`: told the query samples AMP
    processed for the answer a request joined (what it saved: AMP was asked once)."""

    def stage(next_handler: Handler) -> Handler:
        in_flight: dict[_Key, asyncio.Task[Answer]] = {}
        rounds: list[Rounds] = []
        if shared is not None:
            rounds.append(RedisRounds(shared))
        if host is not None:
            rounds.append(HostRounds(host, host_max_answer_bytes))
        fetch = next_handler
        if rounds:
            fetch = _across_processes(next_handler, rounds, wait, on_shared_remotely)

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
                return await asyncio.shield(task)
            on_shared()
            answer = await asyncio.shield(task)
            if on_saved is not None and answer.samples_processed > 0:
                await on_saved(request, answer.samples_processed)
            return answer

        return handle

    return stage


def _finished(in_flight: dict[_Key, asyncio.Task[Answer]], key: _Key, task: asyncio.Task[Answer]) -> None:
    in_flight.pop(key, None)
    if not task.cancelled():
        task.exception()  # retrieved: every caller may have gone, the error was still seen


def _across_processes(
    next_handler: Handler, tiers: list[Rounds], wait: float, on_shared: Callable[[], None]
) -> Handler:
    async def fetch(request: Request) -> Answer:
        digest = request_digest(request)
        for rounds in tiers:
            token = os.urandom(8).hex()
            taken = await rounds.take(digest, token)
            if taken is None:  # that store failed (and may have taken the lock for us: let it go)
                rounds.let_go_later(digest, token)
                continue
            if taken:
                async with rounds.renewing(digest, token):
                    return await _lead(next_handler, request, rounds, digest, token)
            holder = await rounds.join(digest)
            if holder is not None:
                found = await rounds.await_answer(digest, holder, wait)
                if found is not None:
                    on_shared()
                    if isinstance(found, GatewayError):
                        raise found
                    return found
            return await next_handler(request)
        return await next_handler(request)  # neither store answered: this process alone

    return fetch


async def _lead(next_handler: Handler, request: Request, rounds: Rounds, digest: str, token: str) -> Answer:
    outcome: Answer | GatewayError
    try:
        outcome = await next_handler(request)
    except GatewayError as err:
        outcome = err
    except BaseException:
        # Anything else (a bug, a cancellation at shutdown): let go at once, without an answer,
        # so that the waiters fetch themselves now rather than when the lease ends.
        rounds.let_go_later(digest, token)
        raise
    # Most fetches have nobody waiting in another process: then the answer is not written at
    # all (for a 104 KB answer on Redis, 587 instead of 1,112 µs of CPU per fetch:
    # bench/bench_shared_state.py).
    if not await rounds.alone(digest, token):
        await rounds.hand_over(digest, token, outcome)
    if isinstance(outcome, GatewayError):
        raise outcome
    return outcome
