"""Results cache: delta extents for range queries, TTL entries for the rest, memory + Redis."""

from __future__ import annotations

from gateway.pipeline.cache.stage import ResultsCache

__all__ = ["ResultsCache"]
