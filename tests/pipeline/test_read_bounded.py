"""`send.read_bounded`: the upstream's body read chunk by chunk, its decompressed size counted as
`gzip.decompress` would read it, refused past the limit or when it is not the gzip it says."""

from __future__ import annotations

import gzip
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.send import AnswerTooLarge, AnswerUnreadable, read_bounded


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


@settings(max_examples=60, deadline=None)
@given(
    members=st.lists(st.binary(max_size=3000), min_size=1, max_size=3),
    chunk=st.integers(min_value=1, max_value=4096),
)
async def test_every_gzip_member_is_counted_as_gzip_decompress_reads_them(
    members: list[bytes], chunk: int
) -> None:
    body = b"".join(gzip.compress(m) for m in members)
    raw, size = await read_bounded(_chunks(body, chunk), 1 << 20, gzipped=True)
    assert raw == body and size == len(gzip.decompress(body))


async def test_a_bomb_in_a_second_member_is_refused_at_the_limit() -> None:
    body = gzip.compress(b'{"status":"success"}') + gzip.compress(b" " * (50 << 20))
    with pytest.raises(AnswerTooLarge):
        await read_bounded(_chunks(body, 65536), 1 << 20, gzipped=True)


async def test_a_plain_answer_is_counted_and_refused_past_the_limit() -> None:
    assert (await read_bounded(_chunks(b"x" * 1000, 7), 1000, gzipped=False)) == (b"x" * 1000, 1000)
    with pytest.raises(AnswerTooLarge):
        await read_bounded(_chunks(b"x" * 1001, 7), 1000, gzipped=False)


@pytest.mark.parametrize(
    "body",
    [b"not gzip at all", gzip.compress(b"x" * 5000)[:-12], gzip.compress(b"{}") + b"trailing garbage"],
)
async def test_a_body_that_is_not_the_gzip_it_says_is_unreadable(body: bytes) -> None:
    with pytest.raises(AnswerUnreadable):
        await read_bounded(_chunks(body, 5), 1 << 20, gzipped=True)
