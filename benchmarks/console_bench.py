"""The console unit's benchmark: ExampleConsole's `connect`, read through upstream's PySerialClient.

Plugin interface: benchkit.py.

- Throughput: 16 MiB of a tool's output (`cat /dev/zero`: the console's transport at full speed) read
  through `connect` inside the event loop, against as much of the framework's constant byte stream read
  the same way: the ceiling of that path. Both streams stay open for the round, so a sample is the
  transfer (a tool starts once per client, not per byte).
- Round trip: one line sent and its echo read back (`cat` as the tool), against the same line through a
  raw pipe to `cat` in this process plus the framework's `ping`: what the console adds is the driver's
  forwarding, which should cost no more than a call.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from benchkit import Entry, MiB, Round, Target
from jumpstarter_driver_pyserial.client import PySerialClient

SIZE = 16 * MiB
LINE = b"x" * 63 + b"\n"


def drivers(workdir: Path) -> dict[str, Entry]:
    """Two consoles: one whose tool floods it, one whose tool echoes."""
    # One name per line: the rename makes it longer.
    driver = "jumpstarter_driver_template.console.driver.ExampleConsole"
    return {
        "console_flood": {"type": driver, "config": {"command": ["cat", "/dev/zero"]}},
        "console_echo": {"type": driver, "config": {"command": ["cat"]}},
    }


@asynccontextmanager
async def connect(client: PySerialClient) -> AsyncIterator[Any]:
    """Open `connect`; leaving ends the driver's end of it (0.9's stream_async only half-closes), as
    baseline.constant() does for the ceiling's stream."""
    async with client.stream_async("connect") as stream:
        try:
            yield stream
        finally:
            call = getattr(getattr(stream, "stream", None), "context", None)
            if call is not None:
                call.cancel()


async def _read(stream: Any, size: int) -> int:
    received = 0
    while received < size:
        received += len(await stream.receive())
    return received


async def _round_trip(stream: Any) -> None:
    await stream.send(LINE)
    received = b""
    while len(received) < len(LINE):
        received += await stream.receive()


def measure(run: Round) -> None:
    flood, echo = run.client("console_flood", PySerialClient), run.client("console_echo", PySerialClient)
    base, size = run.baseline, min(SIZE, run.sizes.bytes)
    with ExitStack() as stack:
        tool = stack.enter_context(flood.portal.wrap_async_context_manager(connect(flood)))
        ceiling = stack.enter_context(base.portal.wrap_async_context_manager(base.constant()))
        run.compare(
            "connect/ceiling",
            lambda: flood.portal.call(_read, tool, size),
            lambda: base.portal.call(_read, ceiling, size),
            per="byte",
            amount=size,
        )

        console = stack.enter_context(echo.portal.wrap_async_context_manager(connect(echo)))
        raw = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        stack.callback(raw.wait, 10)
        stack.callback(raw.stdin.close)  # type: ignore[union-attr]
        assert raw.stdin is not None and raw.stdout is not None
        write, read = raw.stdin.fileno(), raw.stdout.fileno()

        def raw_round_trip() -> None:
            os.write(write, LINE)
            received = b""
            while len(received) < len(LINE):
                received += os.read(read, 65536)

        def raw_plus_ping() -> None:
            raw_round_trip()
            base.ping()

        run.compare("line/raw pipe+ping", lambda: echo.portal.call(_round_trip, console), raw_plus_ping)


TARGETS = [
    Target(
        "connect/ceiling",
        ">=",
        0.7,
        "the console's output reaches the client at less than 70% of the framework's byte-stream ceiling",
    ),
    Target(
        "line/raw pipe+ping",
        "<=",
        1.2,
        "a line's round trip through the console costs more than 20% over a raw pipe's plus one framework call",
    ),
]
