"""Models and limits shared by the drivers (exporter side) and the client.

Results cross gRPC as protobuf `Value`s: a model arrives on the client as a dict and is
re-validated there with the same model. Keep this module light: the client imports it.
"""

import re
from typing import Annotated

from pydantic import BaseModel, Field

VOLTS_MAX = 30.0
"""The instrument's output range is 0 to VOLTS_MAX volts."""
COMMAND_MAX = 200
"""Longest SCPI line a client may send (the instrument reads lines of up to 256 bytes)."""
ANSWER_MAX = 4096
"""Longest answer line accepted from the instrument, by the driver and by the raw console."""

Volts = Annotated[float, Field(ge=0, le=VOLTS_MAX)]
Count = Annotated[int, Field(ge=1, le=10_000)]
Interval = Annotated[float, Field(ge=0, le=60)]
# One SCPI line: printable ASCII only. A newline inside would make two commands, whose second
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


# Commands that would lift the bench's over-voltage protection, which the driver programs from `max_voltage`
# at every session's start: a change of the protection level itself, and what resets or recalls it (*RST sets
# it to the maximum). `query` and the console refuse them. Add your instrument's own (Rigol: OUTP:OVP:VAL...).
PROTECTION_COMMANDS = re.compile(r"^:?(\*RST|\*RCL|SYST(EM)?:PRES(ET)?\b|([A-Z]+:)*PROT(ECTION)?(:[A-Z]+)*)$", re.I)


def protection_change(line: str) -> str | None:
    """The first command of an SCPI line that would change the protection (a query of it is fine), or None."""
    for unit in line.split(";"):
        header = unit.strip().split(" ", 1)[0]
        if header and not header.endswith("?") and PROTECTION_COMMANDS.match(header):
            return header
    return None


def printable(answer: str) -> str:
    """An instrument's answer for a terminal: control characters escaped (\\x1b...), so none reaches it raw."""
    return CONTROL.sub(lambda c: f"\\x{ord(c.group()):02x}", answer)


CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
