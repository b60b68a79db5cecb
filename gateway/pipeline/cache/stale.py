"""Stale-if-error: answers the cache makes from what it holds when the upstream fails.

Only for the upstream's own failures (`GatewayError.failure`: throttled past the retries, a 5xx,
no answer in time, no connection), never for a 4xx or the gateway's own refusals. The answer is
what the cache held, byte for byte, with one more entry first in the envelope's `warnings`
saying how old it is and why it is served.
"""

from __future__ import annotations

from gateway.envelope import with_warning
from gateway.errors import GatewayError
from gateway.pipeline.cache import codec
from gateway.pipeline.cache.matrix import Matrix, assemble, render
from gateway.pipeline.cache.plan import Grid

_CAUSES = {
    "throttled": "the upstream throttled the query past the gateway's retries",
    "server-error": "the upstream failed",
    "timeout": "the upstream did not answer in time",
    "unreachable": "the upstream could not be reached",
}


def rescues(error: GatewayError) -> bool:
    """Whether the cache may answer for this error from an expired entry."""
    return error.failure in _CAUSES


def whole_warning(error: GatewayError, age: float) -> str:
    return f"served from the gateway's cache, {age:.0f}s old: {_CAUSES[error.failure]} ({error.message})"


def prefix_warning(error: GatewayError, age: float, missing: int) -> str:
    return (
        f"served from the gateway's cache, its newest point {age:.0f}s old; the {missing} points "
        f"after it are missing: {_CAUSES[error.failure]} ({error.message})"
    )


def whole(entry: codec.Entry, warning: str, to_gzip: bool) -> tuple[bytes, bool] | None:
    """A stored whole response with `warning`: (body, gzipped); None when it is not a success
    envelope."""
    try:
        body = with_warning(entry.data(), warning)
    except (ValueError, OSError, EOFError):
        return None
    return (codec.gzip_bytes(body), True) if to_gzip else (body, False)


def held_prefix(
    grid: Grid, extents: list[Matrix], until: int, warning: str, to_gzip: bool
) -> tuple[bytes, bool, int]:
    """The answer for the request's points up to `until` from its buckets' extents (which hold
    all of them), with `warning`: (body, gzipped, samples)."""
    parts = [
        (stored, run[0], min(run[1], until))
        for (_, run), stored in zip(grid.buckets, extents, strict=True)
        if run[0] <= until
    ]
    merged = assemble(parts)
    merged.warnings.insert(0, warning)
    body = render(merged)
    samples = merged.samples()
    return (codec.gzip_bytes(body), True, samples) if to_gzip else (body, False, samples)
