"""`send.read_bounded`: the upstream's body read chunk by chunk, its decompressed size counted as
`gzip.decompress` would read it, refused past the limit or when it is not the gzip it says."""

from __future__ import annotations

import gzip
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pipeline.send import AnswerNoRoom, AnswerTooLarge, AnswerUnreadable, read_bounded


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


@pytest.mark.parametrize("gzipped", [False, True])
async def test_a_body_over_the_spill_size_is_a_map_of_a_file_that_is_gone(
    gzipped: bool, tmp_path: Path
) -> None:
    data = b'{"status":"success","data":' + b"[1]," * 200_000 + b"[1]}"
    body = gzip.compress(data) if gzipped else data
    tempfile.tempdir = str(tmp_path)
    try:
        raw, size = await read_bounded(_chunks(body, 4096), 1 << 30, gzipped=gzipped, spill=len(body) // 3)
    finally:
        tempfile.tempdir = None
    assert isinstance(raw, memoryview) and raw == body and size == len(data)
    assert os.listdir(tmp_path) == []  # unlinked: nothing left on disk once the map is dropped


async def test_a_body_refused_while_spilling_leaves_nothing_behind(tmp_path: Path) -> None:
    tempfile.tempdir = str(tmp_path)
    try:
        with pytest.raises(AnswerTooLarge):
            await read_bounded(_chunks(b"x" * 100_000, 1000), 50_000, gzipped=False, spill=10_000)
    finally:
        tempfile.tempdir = None
    assert os.listdir(tmp_path) == []


async def test_no_room_for_a_large_answer_is_its_own_error(tmp_path: Path) -> None:
    tempfile.tempdir = str(tmp_path / "gone")  # no such directory: as a full disk, no file
    try:
        with pytest.raises(AnswerNoRoom):
            await read_bounded(_chunks(b"x" * 100_000, 1000), 1 << 20, gzipped=False, spill=10_000)
    finally:
        tempfile.tempdir = None
