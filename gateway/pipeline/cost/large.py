"""The cost meter's work on a large answer, in temporary files rather than the worker's heap
(`gateway.pipeline.spill`): an answer over SPILL_BYTES comes from `send` as a read-only map of a
file (its pages the kernel's), and a copy of it in memory (or two, to remove the stats) would
undo that (issue 16's bound: tests/serving/test_large_answers.py). The stats are the last member
of `data`: they are looked for in the answer's last TAIL bytes, and removed by rewriting that
tail in place. AnswerNoRoom when the disk is full."""

from __future__ import annotations

import zlib
from typing import IO

from gateway.pipeline.cost.stats import Stats, take_stats
from gateway.pipeline.model import Answer, Body
from gateway.pipeline.spill import INFLATE_STEP, gunzip, mapped, no_room, temporary

# The stats of Prometheus's 11,000 steps at most take about 200 KB; the tail read is ample.
TAIL = 4 << 20


def metered_large(answer: Answer, remove: bool) -> Answer:
    """`_metered` for an answer too large for the heap: the same result, its body a map."""
    try:
        with temporary() as plain:
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
            if answer.gzipped:
                with temporary() as packed:
                    _deflate(plain, packed)
                    body = mapped(packed)
            else:
                body = mapped(plain)
    except OSError as err:
        raise no_room(err) from None
    return answer.replace(
        body=body, size=size, samples_processed=stats.samples, samples_per_step=stats.per_step
    )


def _inflate(body: Body, out: IO[bytes]) -> None:
    """gzip `body` (every member, as gzip.decompress reads it) into `out`, a step at a time."""
    view = memoryview(body)
    inflate = gunzip()
    for start in range(0, len(view), INFLATE_STEP):
        data: bytes | memoryview = view[start : start + INFLATE_STEP]
        while data:
            out.write(inflate.decompress(data, INFLATE_STEP))
            if inflate.eof:
                data = inflate.unused_data
                inflate = gunzip()
            else:
                data = inflate.unconsumed_tail
    while not inflate.eof and (rest := inflate.decompress(b"", INFLATE_STEP)):
        out.write(rest)


def _deflate(plain: IO[bytes], out: IO[bytes]) -> None:
    """`plain` gzip-compressed at level 1 (as the cache keeps answers) into `out`."""
    plain.seek(0)
    deflate = zlib.compressobj(1, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    while chunk := plain.read(INFLATE_STEP):
        out.write(deflate.compress(chunk))
    out.write(deflate.flush())
