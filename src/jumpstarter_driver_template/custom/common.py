"""Models and limits shared by the driver (exporter side) and the client.

Results cross gRPC as protobuf `Value`s: a pydantic model arrives on the client as a plain
dict, and every number as a float. The client re-validates the dict with the same model,
which turns it back into typed fields (`3.0` becomes the int `3`).

Keep this module light: the client imports it, and clients are installed on machines that
have none of the exporter's dependencies.
"""

import reprlib
import unicodedata
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field

LEVEL_MIN = 0
LEVEL_MAX = 10
LABEL_MAX = 100
"""Characters in a label. Every string a driver accepts needs a bound: `state()` returns the label to
every client, and a result over gRPC's 4 MiB message cap would fail every `state()` call."""
NAME_MAX = 255
"""Bytes (UTF-8) in an upload name: the longest file name Linux file systems store."""
STREAM_CHUNK = 256 * 1024
"""Bytes per message on byte streams and uploads: large enough to amortize the per-message
cost, far below gRPC's 4 MiB message cap. Measured (benchmarks/): 64 KiB messages reach half
the throughput, 2 MiB messages a third; 512 KiB uploads are no faster and buffer twice the memory."""


# Characters that can rewrite what a terminal shows or split a log line: controls (newline, escape
# sequences), format characters (U+202E turns "txt.exe" into "exe.txt" on screen), surrogates (not
# text: a file name in a foreign encoding) and the Unicode line and paragraph separators.
UNPRINTABLE = {"Cc": "control", "Cf": "format", "Cs": "surrogate", "Zl": "line separator", "Zp": "paragraph separator"}


def unprintable(text: str) -> str | None:
    """Describe the first character of `text` that could rewrite a terminal or a log line, or return None."""
    for char in text:
        kind = UNPRINTABLE.get(unicodedata.category(char))
        if kind is not None:
            return f"{kind} character U+{ord(char):04X}"
    return None


def _printable(label: str) -> str:
    if problem := unprintable(label):
        raise ValueError(f"must not contain a {problem}")
    return label


Label = Annotated[str, Field(min_length=1, max_length=LABEL_MAX), AfterValidator(_printable)]
Level = Annotated[int, Field(ge=LEVEL_MIN, le=LEVEL_MAX)]


class Settings(BaseModel):
    """What `configure` stores on the driver: it crosses gRPC as a dict, both ways."""

    label: Label
    level: Level


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
    """Return `name` if it is a printable file name that stays inside the upload directory, else raise ValueError."""
    if not isinstance(name, str) or not name or name in (".", ".."):
        raise ValueError(f"upload name must be a plain file name, got {reprlib.repr(name)}")
    # reprlib: an error message travels in gRPC metadata (capped at 16 KiB), and repr() escapes what a
    # terminal would interpret: the message is safe to print.
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"upload name must not contain path separators or start with '.', got {reprlib.repr(name)}")
    if problem := unprintable(name):
        raise ValueError(f"upload name must not contain a {problem}, got {reprlib.repr(name)}")
    for char in (name[0], name[-1]):
        if char.isspace():  # invisible in a listing, and lost by shell scripts that do not quote
            raise ValueError(
                f"upload name must not start or end with whitespace (U+{ord(char):04X}), got {reprlib.repr(name)}"
            )
    if name.startswith("-"):  # `rm *` in the upload directory would read `-rf` as options
        raise ValueError(f"upload name must not start with '-' (U+002D), got {reprlib.repr(name)}")
    if len(name.encode()) > NAME_MAX:
        raise ValueError(f"upload name must be at most {NAME_MAX} bytes in UTF-8, got {len(name.encode())}")
    return name
