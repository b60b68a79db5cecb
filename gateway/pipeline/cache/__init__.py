"""Results cache: delta extents for range queries, TTL entries for the rest; the host's store + Redis."""

from __future__ import annotations

from gateway.pipeline.cache.stage import PLAIN_SHARE, ResultsCache

__all__ = ["PLAIN_SHARE", "ResultsCache"]
