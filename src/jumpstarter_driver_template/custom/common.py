"""Models and limits shared by the driver (exporter side) and the client.

Results cross gRPC as protobuf `Value`s: a pydantic model arrives on the client as a plain
dict, and every number as a float. The client re-validates the dict with the same model,
which turns it back into typed fields (`3.0` becomes the int `3`).

Keep this module light: the client imports it, and clients are installed on machines that
have none of the exporter's dependencies.
"""

import reprlib
from collections.abc import AsyncIterable, AsyncIterator

from pydantic import BaseModel, Field

LEVEL_MIN = 0
LEVEL_MAX = 10
STREAM_CHUNK = 256 * 1024
"""Bytes per message on byte streams and uploads: large enough to amortize the per-message
cost, far below gRPC's 4 MiB message cap. Measured (benchmarks/): 64 KiB messages reach half
the throughput, 2 MiB messages a third; 512 KiB uploads are no faster and buffer twice the memory."""
IO_BATCH = 1024 * 1024
"""Bytes of file I/O (and hashing) done per worker-thread hop next to a stream: a hop costs about
as much as moving one STREAM_CHUNK message, so one hop per message would halve the throughput."""


class Settings(BaseModel):
    """What `configure` stored on the driver."""

    label: str
    level: int = Field(ge=LEVEL_MIN, le=LEVEL_MAX)


class State(BaseModel):
    """A snapshot of the driver's state, for clients and tests."""

    device_id: str
    settings: Settings
    active_tasks: int = Field(ge=0)
    open_streams: int = Field(ge=0)


class UploadResult(BaseModel):
    """Where an upload was stored, and what the driver received."""

    name: str
    size: int = Field(ge=0)
    sha256: str


# The client checks a name before sending anything; the driver checks again, since any client can call it.
def check_upload_name(name: object) -> str:
    """Return `name` if it is a plain file name that stays inside the upload directory, else raise ValueError."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"upload name must be a plain file name, got {reprlib.repr(name)}")
    if "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise ValueError(f"upload name must not contain path separators or start with '.', got {reprlib.repr(name)}")
    if len(name.encode()) > 255:
        raise ValueError("upload name must be at most 255 bytes long")
    return name


async def batches(chunks: AsyncIterable[bytes], size: int = IO_BATCH) -> AsyncIterator[list[bytes]]:
    """Group a stream's chunks into lists of about `size` bytes: one worker-thread hop each."""
    batch: list[bytes] = []
    batched = 0
    async for chunk in chunks:
        batch.append(chunk)
        batched += len(chunk)
        if batched >= size:
            yield batch
            batch, batched = [], 0
    if batch:
        yield batch
