"""Models and limits shared by the drivers (exporter side) and the client.

Results cross gRPC as protobuf `Value`s: a model arrives on the client as a dict and is
re-validated there with the same model. Keep this module light: the client imports it.
"""

from typing import Annotated

from pydantic import BaseModel, Field

VOLTS_MAX = 30.0
"""The instrument's output range is 0 to VOLTS_MAX volts."""
COMMAND_MAX = 200
"""Longest protocol line a client may send (the instrument reads lines of up to 256 bytes)."""
ANSWER_MAX = 4096
"""Longest answer line accepted from the instrument, by the driver and by the raw console."""

Volts = Annotated[float, Field(ge=0, le=VOLTS_MAX)]
Count = Annotated[int, Field(ge=1, le=10_000)]
Interval = Annotated[float, Field(ge=0, le=60)]
# One protocol line: printable ASCII only. A newline inside would make two commands, whose second
# reply would be read as the answer to the next call.
Command = Annotated[str, Field(min_length=1, max_length=COMMAND_MAX, pattern=r"^[\x20-\x7e]+$")]


class Measurement(BaseModel):
    """What the instrument measures at its output."""

    voltage: float = Field(ge=0, allow_inf_nan=False)
    current: float = Field(ge=0, allow_inf_nan=False)


class DeviceState(BaseModel):
    """What the driver is doing, for clients and tests."""

    address: str
    connected: bool
    streams: int = Field(ge=0)
    """Measurement streams running now."""
