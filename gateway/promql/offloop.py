"""PromQL work on long texts runs in a small pool of worker threads, off the event loop, shared
fairly between principals.

Parsing, checking and printing a query costs about a millisecond per 300 characters here, tens
of milliseconds for a maximal one, and compiling a heavy regex up to about 100 ms (RE2 holds the
interpreter lock while it compiles: promql/regex.py bounds that). With one thread for everyone,
one principal's queue of fresh heavy regexes delayed every other principal's long query behind
all of it (a cached query went from 10 ms to 1.7 s). Now:

- `THREADS` threads (2; more would only compete with the event loop for the interpreter);
- a principal runs at most `PER_PRINCIPAL` jobs at a time (one): its further jobs wait in its
  own queue, so it can never hold every thread;
- a free thread takes the next job from the principal that has waited longest (round robin over
  principals with work), so another principal's job waits for at most one job per other busy
  principal, never for a whole queue.

Queues exist only while a principal has work: nothing accumulates per principal.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Any, TypeVar

OFF_LOOP_CHARS = 2048  # a 2 KB query parses in about 1 ms here
THREADS = 2
PER_PRINCIPAL = 1
ANONYMOUS = "anonymous"

# Who is asking, for the calls that do not say: the validate stage sets it for the rest of the
# request (gateway/pipeline/validate), the panels before they parse.
asking: ContextVar[str] = ContextVar("asking", default=ANONYMOUS)

T = TypeVar("T")


class _Job:
    __slots__ = ("args", "fn", "future", "who")

    def __init__(self, who: str, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.who = who
        self.fn = fn
        self.args = args
        self.future: Future[Any] = Future()


class FairPool:
    """Threads that take jobs round robin from per-principal queues, at most `per_principal`
    running jobs per principal. Threads start on first use (and again in a forked child)."""

    def __init__(
        self, threads: int = THREADS, per_principal: int = PER_PRINCIPAL, name: str = "promql"
    ) -> None:
        if threads < 1 or per_principal < 1:
            raise ValueError("a pool needs a thread and a principal at least one job")
        self.threads = threads
        self.per_principal = per_principal
        self.name = name
        self._cond = threading.Condition()
        self._queues: dict[str, deque[_Job]] = {}  # principals with jobs waiting
        self._running: dict[str, int] = {}  # principals with jobs running
        self._turns: deque[str] = deque()  # principals that may start a job now, in order
        self._started = False
        self._closed = False
        os.register_at_fork(after_in_child=self._forget)

    def submit(self, who: str, fn: Callable[..., T], *args: Any) -> Future[T]:
        job = _Job(who, fn, args)
        with self._cond:
            if self._closed:
                raise RuntimeError(f"the {self.name} pool is closed")
            if not self._started:
                self._start()
            queue = self._queues.get(who)
            if queue is None:
                queue = self._queues[who] = deque()
                if self._running.get(who, 0) < self.per_principal:
                    self._turns.append(who)
            queue.append(job)
            self._cond.notify()
        return job.future

    def waiting(self) -> dict[str, int]:
        """Jobs waiting, by principal (for tests and benchmarks)."""
        with self._cond:
            return {who: len(queue) for who, queue in self._queues.items()}

    def running(self) -> dict[str, int]:
        with self._cond:
            return dict(self._running)

    def _forget(self) -> None:
        """In a forked child: none of the parent's threads, jobs or lock state."""
        self._cond = threading.Condition()
        self._queues.clear()
        self._running.clear()
        self._turns.clear()
        self._started = False

    def _start(self) -> None:
        self._started = True
        for i in range(self.threads):
            threading.Thread(target=self._work, name=f"{self.name}-{i}", daemon=True).start()

    def close(self) -> None:
        """The threads end once the jobs already submitted are done (tests and benchmarks)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _next(self) -> _Job | None:
        with self._cond:
            while not self._turns:
                if self._closed:
                    return None
                self._cond.wait()
            who = self._turns.popleft()
            queue = self._queues[who]
            job = queue.popleft()
            if not queue:
                del self._queues[who]
            running = self._running[who] = self._running.get(who, 0) + 1
            if who in self._queues and running < self.per_principal:
                self._turns.append(who)
            return job

    def _done(self, who: str) -> None:
        with self._cond:
            running = self._running[who] - 1
            if running:
                self._running[who] = running
            else:
                del self._running[who]
            if who in self._queues and who not in self._turns:
                self._turns.append(who)
                self._cond.notify()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            try:
                if job.future.set_running_or_notify_cancel():
                    try:
                        result = job.fn(*job.args)
                    except BaseException as err:
                        job.future.set_exception(err)
                    else:
                        job.future.set_result(result)
                        # Not kept until this thread's next job: a large answer (or the map of
                        # its temporary file) would stay with it.
                        del result
            finally:
                self._done(job.who)
            del job


POOL = FairPool()


async def run(size: int, fn: Callable[..., T], *args: Any, who: str | None = None) -> T:
    """`fn(*args)`: here when `size` (the characters it reads) is small, else in the pool, in
    the queue of principal `who` (by default the one `asking` names)."""
    if size <= OFF_LOOP_CHARS:
        return fn(*args)
    future = POOL.submit(asking.get() if who is None else who, fn, *args)
    return await asyncio.wrap_future(future)
