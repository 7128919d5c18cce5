"""A simulated device console: a boot log, a login prompt, a shell prompt, and a few commands.

The quick start's exporter runs it as ExampleConsole's tool (`simulator: true`), tests drive it
through upstream's pexpect client, and you can run it by hand:

    uv run python -m jumpstarter_driver_template.console.simulator               # on stdin/stdout
    uv run python -m jumpstarter_driver_template.console.simulator --port 2000   # ser2net style, TCP

It behaves like a board's serial console behind a terminal line discipline: it echoes what it is
sent (not the password), ends lines with "\\r\\n", takes "\\r" or "\\n" as Enter, and works on bytes
(a byte that is not UTF-8 is echoed as it is). Log in as `root`, password `jumpstarter`:

    uname -a        Linux simdevice 6.1.0-sim #1 SMP PREEMPT aarch64 GNU/Linux
    echo WORDS      WORDS
    exit            back to the login prompt
    poweroff        the console ends (EOF), as a device powering off ends its session

On stdin/stdout it ends at EOF (the tool's input closed). This module is exporter-side only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import suppress

import anyio
from anyio.abc import ByteStream, SocketStream

HOSTNAME = "simdevice"
USER = "root"
PASSWORD = "jumpstarter"
UNAME = f"Linux {HOSTNAME} 6.1.0-sim #1 SMP PREEMPT aarch64 GNU/Linux"
BOOT_LOG = (
    "U-Boot 2024.01-sim (Jan 01 2024 - 00:00:00 +0000)",
    "Hit any key to stop autoboot:  0",
    "Starting kernel ...",
    "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x410fd083]",
    "[    0.000000] Linux version 6.1.0-sim (builder@jumpstarter) #1 SMP PREEMPT",
    "[    1.234567] Run /sbin/init as init process",
    "Welcome to Simulated Linux!",
)
LOGIN = f"{HOSTNAME} login: ".encode()
PROMPT = f"{USER}@{HOSTNAME}:~# ".encode()
LINE_MAX = 4096
"""Bytes kept of one input line (a terminal's line buffer is bounded too); the rest is dropped."""


class Console:
    """The device's side of the console, as a state machine: bytes in, bytes out (no I/O of its own)."""

    def __init__(self) -> None:
        self._state = "login"
        self._user = b""
        self._line = bytearray()
        self._after_cr = False
        self.powered_off = False

    def boot(self) -> bytes:
        """What the device prints when it starts: its boot log, then the login prompt."""
        return "".join(f"{line}\r\n" for line in BOOT_LOG).encode() + b"\r\n" + LOGIN

    def respond(self, data: bytes) -> Iterator[bytes]:
        """Take bytes typed on the console; yield what the device prints in answer (echo included)."""
        echo = bytearray()
        for byte in data:
            if self.powered_off:
                return
            if byte == 0x0A and self._after_cr:  # "\r\n" is one Enter
                self._after_cr = False
                continue
            self._after_cr = byte == 0x0D
            if byte in (0x0D, 0x0A):
                echo += b"\r\n"
                yield bytes(echo)
                echo.clear()
                line, self._line = bytes(self._line), bytearray()
                yield from self._enter(line)
            elif byte in (0x08, 0x7F):  # backspace
                if self._line:
                    self._line.pop()
                    echo += b"\b \b" if self._state != "password" else b""
            elif len(self._line) < LINE_MAX:
                self._line.append(byte)
                if self._state != "password":  # a password is not echoed
                    echo.append(byte)
        if echo:
            yield bytes(echo)

    def _enter(self, line: bytes) -> Iterator[bytes]:
        if self._state == "login":
            if line:
                self._user, self._state = line, "password"
                yield b"Password: "
            else:
                yield LOGIN
        elif self._state == "password":
            if self._user == USER.encode() and line == PASSWORD.encode():
                self._state = "shell"
                yield b"Last login: on ttyS0\r\n" + PROMPT
            else:
                self._state = "login"
                yield b"\r\nLogin incorrect\r\n" + LOGIN
        else:
            yield from self._command(line.strip())
            if self._state == "shell":
                yield PROMPT

    def _command(self, line: bytes) -> Iterator[bytes]:
        name, _, rest = line.partition(b" ")
        if not name:
            return
        if line == b"uname -a":
            yield UNAME.encode() + b"\r\n"
        elif name == b"echo":
            yield rest + b"\r\n"
        elif name in (b"exit", b"logout"):
            self._state = "login"
            yield b"logout\r\n\r\n" + LOGIN
        elif name == b"poweroff":
            self._state, self.powered_off = "off", True
            yield b"reboot: Power down\r\n"
        else:
            yield b"-sh: " + name + b": not found\r\n"


def run_stdio() -> None:
    """Be the console on stdin/stdout, as a tool like `ipmitool sol activate` is; end at EOF or power-off."""
    console = Console()
    _write_all(1, console.boot())
    while not console.powered_off:
        data = os.read(0, 65536)
        if not data:
            return
        for out in console.respond(data):
            _write_all(1, out)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def session(stream: ByteStream) -> None:
    """One console session on a byte stream (a TCP connection): boot log, login, shell, until EOF or power-off."""
    console = Console()
    async with stream:
        try:
            await stream.send(console.boot())
            while not console.powered_off:
                data = await stream.receive()
                for out in console.respond(data):
                    await stream.send(out)
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


async def serve_tcp(port: int, host: str = "127.0.0.1") -> None:
    """Serve a console session to each TCP connection, ser2net style, until cancelled."""
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)

    async def handle(stream: SocketStream) -> None:
        await session(stream)

    await listener.serve(handle)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A simulated device console (login: root / jumpstarter).")
    parser.add_argument("--port", type=int, help="serve on this TCP port of 127.0.0.1 instead of stdin/stdout")
    args = parser.parse_args(argv)
    if args.port is None:
        with suppress(BrokenPipeError, KeyboardInterrupt):
            run_stdio()
    else:
        try:
            anyio.run(serve_tcp, args.port)
        except KeyboardInterrupt:
            sys.exit(130)


if __name__ == "__main__":
    main()
