"""`batches`: file I/O next to a byte stream in about 1 MiB steps, one worker-thread hop each.

A driver must not block the exporter's event loop, so it writes (or hashes) what a stream delivers in a
worker thread; a hop to that thread costs about as much as receiving one 256 KiB message, so one hop per
message would halve the throughput (measured in benchmarks/). Grouping messages into ~1 MiB batches keeps
the hops off the critical path. The client imports this module too: it needs nothing but the stdlib.
"""

from collections.abc import AsyncIterable, AsyncIterator

IO_BATCH = 1024 * 1024
"""Bytes of file I/O (and hashing) done per worker-thread hop next to a stream."""


async def batches(chunks: AsyncIterable[bytes], size: int = IO_BATCH) -> AsyncIterator[list[bytes]]:
    """Group a stream's chunks into lists of about `size` bytes: one worker-thread hop each."""
    batch: list[bytes] = []
    batched = 0
    async for chunk in chunks:
        if not chunk:
            continue  # a stream may deliver empty frames (keep-alives): nothing to write
        batch.append(chunk)
        batched += len(chunk)
        if batched >= size:
            yield batch
            batch, batched = [], 0
    if batch:
        yield batch
