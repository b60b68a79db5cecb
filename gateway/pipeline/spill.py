"""Answers too large for a worker's heap, kept in unlinked temporary files and served from
read-only maps of them (issue 16): by `send` as an answer arrives, by the cost meter as it takes
the stats out of one. The worker's heap holds at most SPILL_BYTES of any answer."""

from __future__ import annotations

import logging
import mmap
import tempfile
import zlib
from typing import IO, Any

from gateway.config import Workspace
from gateway.errors import GatewayError

log = logging.getLogger("gateway.upstream")

# An answer's bytes beyond this are written to a temporary file.
SPILL_BYTES = 16 << 20
# Decompressed in steps of at most this many bytes: a gzip bomb never expands past it at once.
INFLATE_STEP = 1 << 20


class AnswerNoRoom(Exception):
    """The temporary file of a large answer could not be written (the disk is full)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(reason)
        self.where = where


def gunzip() -> Any:
    """A decompressor of one gzip member (`gzip.decompress` reads every member: see `send`)."""
    return zlib.decompressobj(16 + zlib.MAX_WBITS)


def no_room(err: OSError) -> AnswerNoRoom:
    return AnswerNoRoom(tempfile.gettempdir(), err.strerror or str(err))


def temporary() -> IO[bytes]:
    """An unlinked temporary file (gone when closed and no longer mapped)."""
    try:
        return tempfile.TemporaryFile(prefix="amp-gateway-answer-")
    except OSError as err:
        raise no_room(err) from None


def write(file: IO[bytes], data: bytes | bytearray | memoryview) -> None:
    try:
        file.write(data)
    except OSError as err:
        raise no_room(err) from None


def mapped(file: IO[bytes]) -> memoryview:
    """A read-only map of everything written to `file` (which may be closed after)."""
    try:
        file.flush()
        return memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
    except OSError as err:
        raise no_room(err) from None


def refusal(workspace: Workspace, err: AnswerNoRoom) -> GatewayError:
    """What the client is told (the directory and the reason go to the log only)."""
    log.error("upstream %s: no room for a large answer in %s: %s", workspace.host, err.where, err)
    return GatewayError(
        "unavailable",
        f"the gateway has no room for this answer of {workspace.id} in its temporary "
        "directory; try again, or ask for less",
        503,
    )
