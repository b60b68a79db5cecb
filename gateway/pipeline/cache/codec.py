"""Cache entries on the wire and in memory: a small versioned header, then a gzip payload.

gzip (level 1) rather than zlib so that a whole-response entry can be served as-is to clients
that accept gzip. The header carries the schema version (a changed layout never reads an old
entry), the absolute expiry (so entries promoted from Redis keep their deadline, and expiry
follows the cache's clock) and the number of samples the entry holds (for the metrics).
"""

from __future__ import annotations

import gzip
import struct
import zlib
from dataclasses import dataclass

SCHEMA_VERSION = 1
_MAGIC = b"GWC"
_HEADER = struct.Struct("!3sBBdI")  # magic, version, kind, expires_at (unix s), samples
KIND_RESPONSE = 1  # a whole response body, gzip, servable as-is
KIND_EXTENT = 2  # one split bucket of a range query (coverage and series)


@dataclass(frozen=True)
class Entry:
    kind: int
    expires_at: float
    samples: int
    payload: bytes  # gzip-compressed

    def data(self) -> bytes:
        return gzip.decompress(self.payload)


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def encode(kind: int, expires_at: float, samples: int, payload: bytes, compressed: bool = False) -> bytes:
    body = payload if compressed else gzip_bytes(payload)
    return _HEADER.pack(_MAGIC, SCHEMA_VERSION, kind, expires_at, min(samples, 2**32 - 1)) + body


def decode(blob: bytes | None, now: float) -> Entry | None:
    """The entry, or None when absent, expired, of another schema version or damaged."""
    if not blob or len(blob) < _HEADER.size:
        return None
    magic, version, kind, expires_at, samples = _HEADER.unpack_from(blob)
    if magic != _MAGIC or version != SCHEMA_VERSION or expires_at <= now:
        return None
    return Entry(kind, expires_at, samples, blob[_HEADER.size :])


def expires_at(blob: bytes) -> float:
    return _HEADER.unpack_from(blob)[3]


def valid_gzip(data: bytes) -> bool:
    try:
        gzip.decompress(data)
    except (OSError, EOFError, zlib.error):
        return False
    return True
