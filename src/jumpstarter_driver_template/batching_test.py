# mypy: allow-untyped-defs
"""batches: a stream's chunks grouped into ~1 MiB batches, in order, empty frames skipped."""

from collections.abc import AsyncIterator

import anyio

from .batching import batches


async def chunks(*sizes: int) -> AsyncIterator[bytes]:
    for i, size in enumerate(sizes):
        yield bytes([i % 256]) * size


def collect(*sizes: int, size: int) -> list[list[int]]:
    async def run() -> list[list[int]]:
        return [[len(chunk) for chunk in batch] async for batch in batches(chunks(*sizes), size)]

    return anyio.run(run)


def test_groups_chunks_until_the_batch_size_is_reached():
    """Chunks are grouped until a batch holds at least `size` bytes; the rest ends the last batch."""
    assert collect(3, 3, 3, 3, 1, size=6) == [[3, 3], [3, 3], [1]]


def test_a_chunk_larger_than_the_batch_is_a_batch_of_its_own():
    """A chunk at or over the batch size is passed on at once, whole."""
    assert collect(10, 2, size=4) == [[10], [2]]


def test_empty_chunks_are_skipped():
    """Empty frames (keep-alives) add nothing, and an empty stream gives no batch at all."""
    assert collect(0, 2, 0, 2, 0, size=4) == [[2, 2]]
    assert collect(0, 0, size=4) == []


def test_bytes_and_order_are_kept():
    """Concatenating the batches gives back the stream, in order."""

    async def run() -> bytes:
        return b"".join([b"".join(batch) async for batch in batches(chunks(5, 1, 7, 2), 4)])

    assert anyio.run(run) == b"\x00" * 5 + b"\x01" + b"\x02" * 7 + b"\x03" * 2
