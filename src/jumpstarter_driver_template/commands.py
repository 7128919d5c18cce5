"""Run the tools a lab already has (uhubctl, a relay script, ipmitool...) from a driver, and never leave them behind.

Drivers that switch hardware by running commands share this runner (`run_command`); a driver that keeps a
tool running while a client uses it (a console tool, say) starts and ends it with the same primitives
(`start`, `end_group`, `drain`, `OutputTail`). Each command runs in its own process group (session), so a
shell script's children belong to it too: when the command times out, when the client goes away mid-call
(Ctrl-C on `j ...`: gRPC cancels the call), or when the exporter shuts down, the whole group is ended with
SIGTERM, then SIGKILL after GRACE. Killing only the command would leave `sh -c 'relay on & wait'`'s child
still switching the relay, racing the next call.

The bounds, and what they cost:
- A command is done when it exits. Its group is ended then; what the group wrote is read, and nothing
  more is waited for: a daemon that left the group (fork + setsid, `nohup` into a session of its own)
  and kept the output open does not hold the call. Such a daemon is not the runner's: it outlives the
  call and the exporter, as it would outlive the shell you started it from.
- Output is kept as a tail: the last OUTPUT_TAIL bytes of stdout and of stderr, however much the
  command writes; the exporter's log gets that tail of a failure's stderr, the client STDERR_TAIL.
- SIGTERM to `jmp run` (measured on 0.9.0, a tool that ignores SIGTERM): `jmp run` forwards it to its
  serving child, which gives running calls 1.0 s (gRPC's stop grace), cancels them, and leaves its event
  loop 0.1-0.15 s later, without waiting for what they clean up. The runner's SIGTERM goes out at the
  cancellation; the loop ends before GRACE is over, so an exit handler ends every group still registered:
  SIGTERM, up to GRACE, SIGKILL. The groups were gone 1.6-1.7 s after SIGTERM to `jmp run` (bound: 1.0 +
  0.15 + GRACE s, plus scheduling delays), before it exited (4-6.5 s). Only SIGKILL of the exporter skips it.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Annotated

import anyio
from anyio.abc import Process
from pydantic import Field

from .cancellation import to_completion

logger = logging.getLogger(__name__)

Command = Annotated[list[Annotated[str, Field(max_length=4096)]], Field(min_length=1, max_length=256)]
"""An argument list from exporter config, e.g. ["uhubctl", "-l", "1-1", "-p", "2", "-a", "on"] (no shell)."""

STDERR_TAIL = 2000
"""Characters of a failed command's stderr sent to the client. An error's message travels in gRPC metadata,
capped at 16 KiB: a longer one would replace the error with RESOURCE_EXHAUSTED."""
OUTPUT_TAIL = 16 * 1024
"""Bytes kept of a command's stdout and of its stderr (the last ones): what it returns and what the log gets."""
GRACE = 0.5
"""Seconds a command's process group has to exit after SIGTERM before it gets SIGKILL."""
READ_MAX = 64 * 1024
"""Bytes read at once from a command's pipe."""

_groups: dict[int, int] = {}
"""Process groups this process started and has not ended yet: pgid -> the pid of the process that started it."""
# Starts under way: a child may already run (and be seen by others) before its group is in _groups, which is
# written on the event loop once open_process returns. The exit handler waits for these, bounded.
_starting = 0
_starting_lock = threading.Lock()


async def run_command(key: str, command: list[str], timeout: float) -> str:
    """Run `command` (named `key` in errors), return its stdout; raise on failure, timeout or cancellation.

    A non-zero exit raises RuntimeError with the exit status and the tail of stderr; an overrun raises
    TimeoutError, which the client receives as DEADLINE_EXCEEDED. The result is the last OUTPUT_TAIL bytes.
    """
    # In a task of its own: gRPC's cancellation of a call would otherwise cut through the shields below.
    return await to_completion(_run, key, command, timeout)


async def _run(key: str, command: list[str], timeout: float) -> str:
    described = f"{key} {shlex.join(command)}"
    stdout, stderr = OutputTail(), OutputTail()
    # Pipes of our own, not anyio's: after the command exits, "read what is there now" must not wait for
    # the writer's end to close, and that takes a non-blocking read of the file descriptor.
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        # Shielded: a cancellation while the process is being set up would leave it running, unowned. Any
        # cancellation is taken at the next await, where the finally below ends the process group.
        # No stdin: in local mode the exporter's stdin is the user's terminal.
        with anyio.CancelScope(shield=True):
            process = await start(described, command, stdin=subprocess.DEVNULL, stdout=out_write, stderr=err_write)
    except BaseException:
        os.close(out_read)
        os.close(err_read)
        raise
    finally:
        os.close(out_write)
        os.close(err_write)
    try:
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as group:
                group.start_soon(drain, out_read, stdout)
                group.start_soon(drain, err_read, stderr)
                await process.wait()
                await end_group(process)
                group.cancel_scope.cancel()  # done: a daemon outside the group may hold the pipes for ever
        # The group is gone: what it wrote is in the pipes, and whatever comes later is not the command's.
        stdout.read_available(out_read)
        stderr.read_available(err_read)
    except TimeoutError:
        raise TimeoutError(f"{described} timed out after {timeout:g} s") from None
    finally:
        with anyio.CancelScope(shield=True):
            await end_group(process)
            await process.aclose()
        os.close(out_read)
        os.close(err_read)
    if process.returncode != 0:
        text = stderr.text() or "(no stderr)"
        logger.error("%s exited with status %d: %s", described, process.returncode, text)
        if len(text) > STDERR_TAIL:
            text = "..." + text[-STDERR_TAIL:]
        raise RuntimeError(f"{described} exited with status {process.returncode}: {text}")
    return stdout.text(strip=False)


async def start(described: str, command: list[str], **files: object) -> Process:
    """Start `command` in a session of its own and register its group; a program that cannot start is RuntimeError."""
    global _starting
    with _starting_lock:
        _starting += 1
    try:
        process = await anyio.open_process(command, start_new_session=True, **files)  # type: ignore[arg-type]
        _groups[process.pid] = os.getpid()
    except OSError as e:
        raise RuntimeError(f"{described} could not start: {e.strerror or e}") from None
    finally:
        with _starting_lock:
            _starting -= 1
    return process


class OutputTail:
    """The last OUTPUT_TAIL bytes of an output, however long it runs."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        """Append output, dropping what falls out of the tail."""
        self._data += chunk
        if len(self._data) > 2 * OUTPUT_TAIL:  # trim in batches: amortized, not on every chunk
            cut = len(self._data) - OUTPUT_TAIL
            del self._data[:cut]
            self.dropped += cut

    def read_available(self, fd: int) -> None:
        """Add what the pipe holds now, without waiting for more (the file descriptor is non-blocking)."""
        while True:
            try:
                chunk = os.read(fd, READ_MAX)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                return
            if not chunk:
                return
            self.add(chunk)

    def text(self, strip: bool = True) -> str:
        """The tail as text (undecodable bytes replaced), preceded by the count of bytes dropped before it."""
        data = bytes(self._data[-OUTPUT_TAIL:])
        dropped = self.dropped + len(self._data) - len(data)
        text = data.decode(errors="replace")
        text = text.strip() if strip else text
        return f"[{dropped} bytes before] {text}" if dropped else text


async def drain(fd: int, tail: OutputTail) -> None:
    """Read a pipe into `tail` until its end (or until cancelled: the caller reads the rest)."""
    os.set_blocking(fd, False)
    while True:
        await anyio.wait_readable(fd)
        try:
            chunk = os.read(fd, READ_MAX)
        except BlockingIOError:
            continue
        if not chunk:
            return
        tail.add(chunk)


async def end_group(process: Process) -> None:
    """End the command's process group: SIGTERM, up to GRACE seconds for all of it to exit, then SIGKILL."""
    try:
        if _signal_group(process.pid, signal.SIGTERM):
            with anyio.move_on_after(GRACE):
                await process.wait()  # reap the command itself
                while _group_alive(process.pid):  # children it left behind may take a moment to exit
                    await anyio.sleep(0.01)
            if _signal_group(process.pid, signal.SIGKILL):
                # SIGKILL is delivered when the process next runs: on a loaded machine, a moment after kill().
                with anyio.move_on_after(GRACE):
                    while _group_alive(process.pid):
                        await anyio.sleep(0.01)
        await process.wait()
    except BaseException:
        # Callers shield this, but when the exporter stops, the event loop's shutdown cancels every task the
        # asyncio way, which cuts through a shield: finish the job synchronously, bounded the same way.
        end_groups([process.pid])
        raise
    _groups.pop(process.pid, None)


def end_groups(pgids: list[int]) -> None:
    """End process groups from sync code (a driver's close(), interpreter exit): SIGTERM, up to GRACE, SIGKILL.

    It blocks for up to GRACE (more only on a loaded machine) when a group ignores SIGTERM.
    """
    for pgid in pgids:
        _groups.pop(pgid, None)
    pgids = [pgid for pgid in pgids if _signal_group(pgid, signal.SIGTERM)]
    deadline = time.monotonic() + GRACE
    while any(_group_alive(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.01)
    pgids = [pgid for pgid in pgids if _signal_group(pgid, signal.SIGKILL)]
    # SIGKILL is delivered when the process next runs: wait for it (bounded), as end_group does, so that
    # nothing of the group still runs when the caller goes on.
    deadline = time.monotonic() + GRACE
    while any(_group_alive(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.01)


def _end_leftovers() -> None:
    """At interpreter exit: end the groups no call got to end (the exporter exited while they were ending)."""
    deadline = time.monotonic() + GRACE
    while _starting and time.monotonic() < deadline:  # a group started, not registered yet
        time.sleep(0.01)
    end_groups([pgid for pgid, starter in _groups.items() if starter == os.getpid()])  # not a fork's parent's
    _groups.clear()


atexit.register(_end_leftovers)


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
