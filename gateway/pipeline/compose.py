"""How stages are put together and instrumented, the same way for every one of them.

A stage wraps the next handler (`Stage = Callable[[Handler], Handler]`); `compose` chains them
in the order given and wraps each in `instrumented`, which names the stage that raised an error
(`GatewayError.stage`). The API edge counts the errors it answers by that name
(gateway_stage_errors_total{stage, type}): an attempt that a retry recovered is not counted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from gateway.errors import GatewayError
from gateway.pipeline.model import Handler, Stage

P = ParamSpec("P")
T = TypeVar("T")


def instrumented(name: str, call: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    async def run(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await call(*args, **kwargs)
        except GatewayError as err:
            if err.stage is None:
                err.stage = name
            raise

    return run


def compose(stages: list[tuple[str, Stage]], last: tuple[str, Handler]) -> Handler:
    """stages[0] runs first; `last` is the handler at the end of the chain."""
    handler = instrumented(last[0], last[1])
    for name, stage in reversed(stages):
        handler = instrumented(name, stage(handler))
    return handler
