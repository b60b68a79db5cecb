"""Stage: retries, within the request's deadline.

Throttling (429), 502/503/504 and lost connections (`GatewayError.retry` says why) are retried with
exponential backoff and full jitter (or the upstream's Retry-After), bounded in count
(`upstream.retries`), in total waiting (`upstream.retry_budget`) and by the request's timeout,
which also bounds every attempt: past it the client gets Prometheus's timeout error.
"""

from __future__ import annotations

import asyncio
import random
import time

from gateway.config import UpstreamSettings
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.pipeline.model import Answer, Handler, Request, Stage, attempt_sent


def backoff(attempt: int, base: float, error: GatewayError) -> float:
    if error.wait.isdigit():  # the upstream's own Retry-After
        return float(error.wait)
    return random.uniform(0, base * (2**attempt))


def retrying(settings: UpstreamSettings, metrics: Metrics) -> Stage:
    def stage(next_handler: Handler) -> Handler:
        async def attempts(request: Request, deadline: float) -> Answer:
            waited = 0.0
            attempt = 0
            while True:
                try:
                    return await next_handler(request)
                except GatewayError as err:
                    if not err.retry:
                        raise
                    pause = backoff(attempt, settings.retry_base, err)
                    if (
                        attempt >= settings.retries
                        or waited + pause > settings.retry_budget
                        or time.monotonic() + pause >= deadline
                    ):
                        if err.retry == "connection":
                            raise GatewayError(
                                err.error_type,
                                f"{err.message} after {attempt + 1} attempt(s)",
                                err.status,
                                failure=err.failure,
                            ) from None
                        raise
                    metrics.upstream_retries.labels(request.workspace.id, err.retry).inc()
                await asyncio.sleep(pause)
                waited += pause
                attempt += 1

        async def handle(request: Request) -> Answer:
            attempt_sent.set(False)
            try:
                async with asyncio.timeout(request.timeout):
                    return await attempts(request, time.monotonic() + request.timeout)
            except TimeoutError:
                if not attempt_sent.get():  # its whole time in the queue for a workspace slot
                    raise GatewayError(
                        "timeout",
                        f"no upstream slot of {request.workspace.id} freed up within the request's "
                        f"{request.timeout:g}s; retry later",
                    ) from None
                raise GatewayError(
                    "timeout",
                    f"the upstream of {request.workspace.id} did not answer within "
                    f"{request.timeout:g}s; narrow the query or raise its timeout",
                    failure="timeout",
                ) from None

        return handle

    return stage
