"""Run the tools a lab already has (uhubctl, a relay script, usbsdmux...) from a driver, and never leave them behind.

Drivers that switch hardware by running commands share this runner. Each command runs in its own
process group (session), so a shell script's children belong to it too: when the command times
out, when the client goes away mid-call (Ctrl-C on `j ...`: gRPC cancels the call), or when the
exporter shuts down (its calls are cancelled), the whole group is ended with SIGTERM, then SIGKILL
after a short grace period. Killing only the command would leave `sh -c 'relay on & wait'`'s
child still switching the relay, racing the next call.
"""

from __future__ import annotations

import logging
import os
import shlex
import signal
import subprocess
from pathlib import Path
from typing import Annotated

import anyio
from anyio.abc import ByteReceiveStream, Process
from pydantic import Field

from .cancellation import to_completion

logger = logging.getLogger(__name__)

Command = Annotated[list[Annotated[str, Field(max_length=4096)]], Field(min_length=1, max_length=256)]
"""An argument list from exporter config, e.g. ["uhubctl", "-l", "1-1", "-p", "2", "-a", "on"] (no shell)."""

STDERR_TAIL = 2000
"""Characters of a failed command's stderr sent to the client (the exporter's log gets all of it). An error's
message travels in gRPC metadata, capped at 16 KiB: a longer one would replace the error with RESOURCE_EXHAUSTED."""
GRACE = 2.0
"""Seconds a command's process group has to exit after SIGTERM before it gets SIGKILL."""


async def run_command(key: str, command: list[str], timeout: float) -> str:
    """Run `command` (named `key` in errors), return its stdout; raise on failure, timeout or cancellation.

    A non-zero exit raises RuntimeError with the exit status and the tail of stderr; an overrun raises
    TimeoutError, which the client receives as DEADLINE_EXCEEDED.
    """
    # In a task of its own: gRPC's cancellation of a call would otherwise cut through the shields below.
    return await to_completion(_run, key, command, timeout)


async def _run(key: str, command: list[str], timeout: float) -> str:
    described = f"{key} {shlex.join(command)}"
    try:
        # Shielded: a cancellation while the process is being set up would leave it running, unowned. Any
        # cancellation is taken at the next await, where the finally below ends the process group.
        # No stdin: in local mode the exporter's stdin is the user's terminal.
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(command, stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        raise RuntimeError(f"{described} could not start: {e.strerror or e}") from None
    try:
        with anyio.fail_after(timeout):
            stdout, stderr = await _communicate(process)
    except TimeoutError:
        raise TimeoutError(f"{described} timed out after {timeout:g} s") from None
    finally:
        with anyio.CancelScope(shield=True):
            await _end_group(process)
            await process.aclose()
    if process.returncode != 0:
        text = stderr.decode(errors="replace").strip() or "(no stderr)"
        logger.error("%s exited with status %d: %s", described, process.returncode, text)  # all of it, in the log
        if len(text) > STDERR_TAIL:
            text = "..." + text[-STDERR_TAIL:]
        raise RuntimeError(f"{described} exited with status {process.returncode}: {text}")
    return stdout.decode(errors="replace")


async def _communicate(process: Process) -> tuple[bytes, bytes]:
    """Read stdout and stderr while the process runs (a full pipe would block it); once it exits, end its group.

    A background child the command left (`sh -c 'x &'`) holds the pipes open: ending the group closes them,
    so the reads end, and the child is not left behind.
    """
    output: dict[str, bytes] = {}

    async def drain(name: str, stream: ByteReceiveStream | None) -> None:
        chunks = []
        if stream is not None:
            async for chunk in stream:
                chunks.append(chunk)
        output[name] = b"".join(chunks)

    async with anyio.create_task_group() as group:
        group.start_soon(drain, "stdout", process.stdout)
        group.start_soon(drain, "stderr", process.stderr)
        await process.wait()
        await _end_group(process)
    return output["stdout"], output["stderr"]


async def _end_group(process: Process) -> None:
    """End the command's process group: SIGTERM, up to GRACE seconds for all of it to exit, then SIGKILL."""
    if _signal_group(process.pid, signal.SIGTERM):
        with anyio.move_on_after(GRACE):
            await process.wait()  # reap the command itself
            while _group_alive(process.pid):  # children it left behind may take a moment to exit
                await anyio.sleep(0.05)
        if _signal_group(process.pid, signal.SIGKILL):
            # SIGKILL is delivered when the process next runs: on a loaded machine, a moment after kill().
            with anyio.move_on_after(GRACE):
                while _group_alive(process.pid):
                    await anyio.sleep(0.01)
    await process.wait()


def _signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to a process group; False when no process of it is left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: orphans are reaped by init, or
    by nobody in a container whose PID 1 does not reap, and they hold nothing anymore."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: a zombie counts, at worst the wait lasts the grace period
        return _signal_group(pgid, 0)
    for stat in proc.glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may contain spaces and parentheses, so split after the last ")".
            state, _, pgrp = stat.read_text().rpartition(")")[2].split()[:3]
        except (OSError, ValueError):
            continue  # the process exited while we looked
        if int(pgrp) == pgid and state not in "ZX":
            return True
    return False
