"""What a client can read about the card: `state()`'s result, shared by the driver and whoever reads it.

Upstream's `StorageMuxFlasherClient` has no method for it: `ExampleStorageMuxClient.state()` (client.py)
reads it; the result crosses gRPC as a plain dict and is validated back into this model.

Keep this module light: it is imported where only a client is installed.
"""

from typing import Literal

from pydantic import BaseModel, Field

Side = Literal["off", "host", "dut"]
"""Where the mux connects the card: to nothing, to the test host (writable), or to the device (bootable)."""
Image = Literal["unknown", "complete", "unverified", "incomplete"]
"""What the card holds: whatever it held before the exporter started, a whole image (its end checked: a
length, a compression end marker), all a source sent that had no way to check its end, or part of an image."""
Operation = Literal["switching", "writing", "reading"]


class StorageState(BaseModel):
    """The card's side, what it holds, and what the driver is doing with it."""

    side: Side
    image: Image
    operation: Operation | None = None
    """The call in progress; any other call that needs the card is refused meanwhile."""
    card_size: int | None = Field(default=None, ge=0)
    """Bytes the card holds; None until the card has been seen (a real card reader appears on the host side only)."""
    written: int = Field(default=0, ge=0)
    """Bytes the last write wrote (so far, while it runs)."""
    error: str | None = None
    """Why the image is not complete: the last write's error, "write in progress", or why it is unverified."""
