"""The cost meter's work on a large answer, in temporary files rather than the worker's heap: an
answer over SPILL_BYTES comes from `send` as a read-only map of a file (its pages the kernel's),
and a copy of it in memory (or two, to remove the stats) would undo that (issue 16's bound:
tests/serving/test_large_answers.py). The stats are the last member of `data`: they are looked
for in the answer's last TAIL bytes, and removed by rewriting that tail in place."""

from __future__ import annotations

import mmap
import tempfile
import zlib
from typing import IO

from gateway.errors import GatewayError
from gateway.pipeline.cost.stats import Stats, take_stats
from gateway.pipeline.model import Answer, Body

# The stats of Prometheus's 11,000 steps at most take about 200 KB; the tail read is ample.
TAIL = 4 << 20
STEP = 1 << 20


def metered_large(answer: Answer, remove: bool) -> Answer:
    """`_metered` for an answer too large for the heap: the same result, its body a map."""
    try:
        with tempfile.TemporaryFile(prefix="amp-gateway-metered-") as plain:
            if answer.gzipped:
                _inflate(answer.body, plain)
            else:
                plain.write(answer.body)
            size = plain.tell()
            at = max(0, size - TAIL)
            plain.seek(at)
            stats: Stats = take_stats(plain.read(), remove)
            if stats.samples < 0:
                return answer
            if not remove:
                return answer.replace(samples_processed=stats.samples, samples_per_step=stats.per_step)
            plain.seek(at)
            plain.write(stats.body)
            plain.truncate()
            size = plain.tell()
            plain.flush()
            if answer.gzipped:
                with tempfile.TemporaryFile(prefix="amp-gateway-metered-") as packed:
                    _deflate(plain, packed)
                    body = _mapped(packed)
            else:
                body = _mapped(plain)
    except OSError as err:
        raise GatewayError(
            "unavailable",
            f"no room in {tempfile.gettempdir()} for an answer of {answer.json_size()} bytes: "
            f"{err.strerror or err}",
            503,
        ) from None
    return answer.replace(
        body=body, size=size, samples_processed=stats.samples, samples_per_step=stats.per_step
    )


def _inflate(body: Body, out: IO[bytes]) -> None:
    """gzip `body` (every member, as gzip.decompress reads it) into `out`, a step at a time."""
    view = memoryview(body)
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for start in range(0, len(view), STEP):
        data: bytes | memoryview = view[start : start + STEP]
        while data:
            out.write(inflate.decompress(data, STEP))
            if inflate.eof:
                data = inflate.unused_data
                inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            else:
                data = inflate.unconsumed_tail
    while not inflate.eof and (rest := inflate.decompress(b"", STEP)):
        out.write(rest)


def _deflate(plain: IO[bytes], out: IO[bytes]) -> None:
    """`plain` gzip-compressed at level 1 (as the cache keeps answers) into `out`."""
    plain.seek(0)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    while chunk := plain.read(STEP):
        out.write(deflate.compress(chunk))
    out.write(deflate.flush())
    out.flush()


def _mapped(file: IO[bytes]) -> memoryview:
    return memoryview(mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ))
