"""Run the tools a lab already has (uhubctl, a relay script, ipmitool...) from a driver, and never leave them behind.

Drivers that switch hardware by running commands share this runner (`run_command`), and drivers whose
device is reached through a tool's stdin and stdout (a console: `ipmitool sol activate`, `ssh`) attach
to one (`attach`). Each command runs in its own process group (session), so a shell script's children
belong to it too: when the command times out, when the client goes away mid-call (Ctrl-C on `j ...`:
gRPC cancels the call), or when the exporter shuts down, the whole group is ended with SIGTERM, then
SIGKILL after GRACE. Killing only the command would leave `sh -c 'relay on & wait'`'s child still
switching the relay, racing the next call.

The bounds, and what they cost:
- A command is done when it exits. Its group is ended then; what the group wrote is read, and nothing
  more is waited for: a daemon that left the group (fork + setsid, `nohup` into a session of its own)
  and kept the output open does not hold the call. Such a daemon is not the runner's: it outlives the
  call and the exporter, as it would outlive the shell you started it from.
- Output is kept as a tail: the last OUTPUT_TAIL bytes of stdout and of stderr, however much the
  command writes; the exporter's log gets that tail of a failure's stderr, the client STDERR_TAIL.
- On SIGTERM, `jmp run` (0.9) stops its gRPC server with a grace of 1 s for pending calls, cancels
  them, and exits soon after, without waiting for what the cancelled calls clean up. GRACE is shorter
  than the time left then, so the SIGTERM-then-SIGKILL sequence normally ends inside it; a group that
  is still alive when the interpreter exits gets SIGTERM, GRACE, then SIGKILL from an exit handler.
  Measured (tests/console_test.py, a command that ignores SIGTERM): see docs/console.md.
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

import anyio
from anyio.abc import ByteStream, Process, UNIXSocketStream
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
READ_MAX = 256 * 1024
"""Bytes read at once from a pipe or a stream: a chunk per gRPC message, big enough for the framework's speed."""

SOCKET_BUFFER = 1024 * 1024
"""Bytes a console tool may write ahead of the reader (the kernel caps it at net.core.wmem_max)."""

_groups: dict[int, int] = {}
"""Process groups this process started and has not ended yet: pgid -> the pid of the process that started it."""


async def run_command(key: str, command: list[str], timeout: float) -> str:
    """Run `command` (named `key` in errors), return its stdout; raise on failure, timeout or cancellation.

    A non-zero exit raises RuntimeError with the exit status and the tail of stderr; an overrun raises
    TimeoutError, which the client receives as DEADLINE_EXCEEDED. The result is the last OUTPUT_TAIL bytes.
    """
    # In a task of its own: gRPC's cancellation of a call would otherwise cut through the shields below.
    return await to_completion(_run, key, command, timeout)


async def _run(key: str, command: list[str], timeout: float) -> str:
    described = f"{key} {shlex.join(command)}"
    stdout, stderr = _Tail(), _Tail()
    # Pipes of our own, not anyio's: after the command exits, "read what is there now" must not wait for
    # the writer's end to close, and that takes a non-blocking read of the file descriptor.
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        # Shielded: a cancellation while the process is being set up would leave it running, unowned. Any
        # cancellation is taken at the next await, where the finally below ends the process group.
        # No stdin: in local mode the exporter's stdin is the user's terminal.
        with anyio.CancelScope(shield=True):
            process = await _start(described, command, stdin=subprocess.DEVNULL, stdout=out_write, stderr=err_write)
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
                group.start_soon(_drain, out_read, stdout)
                group.start_soon(_drain, err_read, stderr)
                await process.wait()
                await _end_group(process)
                group.cancel_scope.cancel()  # done: a daemon outside the group may hold the pipes for ever
        # The group is gone: what it wrote is in the pipes, and whatever comes later is not the command's.
        stdout.read_available(out_read)
        stderr.read_available(err_read)
    except TimeoutError:
        raise TimeoutError(f"{described} timed out after {timeout:g} s") from None
    finally:
        with anyio.CancelScope(shield=True):
            await _end_group(process)
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


@asynccontextmanager
async def attach(key: str, command: list[str], log: logging.Logger = logger) -> AsyncIterator[ChunkedStream]:
    """Run `command` with its stdin and stdout as the yielded byte stream; end its group when the block ends.

    For tools whose stdin and stdout are the device (`ipmitool sol activate`, `ssh console-server`). The
    bytes pass as they are, and the stream applies back-pressure: a reader that stops reading stops the
    tool at the socket's buffer, nothing piles up here. When the tool exits, its group is ended and the
    stream ends (EOF), even if a daemon it left holds the socket. Its stderr is logged (the last
    OUTPUT_TAIL bytes) with its exit status. A program that cannot start raises RuntimeError.
    """
    described = f"{key} {shlex.join(command)}"
    # A socket pair rather than two pipes: one stream both ways, a half-close (send_eof) the tool sees as
    # EOF on stdin, and one shutdown() that ends the reading side whoever else still holds the other end.
    ours, theirs = socket.socketpair()
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
    err_read, err_write = os.pipe()
    try:
        with anyio.CancelScope(shield=True):
            process = await _start(described, command, stdin=theirs, stdout=theirs, stderr=err_write)
    except BaseException as e:
        if isinstance(e, RuntimeError):  # a stream's error reaches a 0.9 client without its message: log it
            log.error("%s", e)
        ours.close()
        os.close(err_read)
        raise
    finally:
        theirs.close()
        os.close(err_write)
    stderr = _Tail()
    try:
        stream = await UNIXSocketStream.from_socket(ours)
    except BaseException:
        ours.close()
        raise

    async def watch() -> None:
        """Collect stderr until the tool exits or the block ends; then end its group, and the stream (EOF)."""
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_drain, err_read, stderr)
                await process.wait()
                group.cancel_scope.cancel()
        finally:
            # Here, in a task started before the block: the block ends when gRPC cancels the stream's call
            # (the client left, the exporter stops), with asyncio's own cancellation, which cuts through a
            # shield in the block's task and kills a task started then before it runs. This task gets anyio's.
            with anyio.CancelScope(shield=True):
                await _end_group(process)
                with suppress(OSError):
                    ours.shutdown(socket.SHUT_RD)  # EOF, even if a daemon outside the group holds the other end
                await process.aclose()

    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:
                yield ChunkedStream(stream, process.pid)
            finally:
                group.cancel_scope.cancel()
    finally:
        ours.close()  # anyio's stream reads the socket itself: closing it is all its aclose() would do
        stderr.read_available(err_read)
        os.close(err_read)
        text = stderr.text()
        log.info("%s exited with status %s%s", described, process.returncode, f": {text}" if text else "")


class ChunkedStream(ByteStream):
    """A byte stream read in chunks of up to READ_MAX: Jumpstarter forwards a stream with `receive()`'s
    default size, which is 64 KiB for anyio's sockets; at 256 KiB a message the framework goes 2-3x faster."""

    def __init__(self, stream: ByteStream, group: int | None = None) -> None:
        self._stream = stream
        self.group = group
        """The process group of the tool behind the stream, if there is one."""

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return self._stream.extra_attributes

    async def receive(self, max_bytes: int = READ_MAX) -> bytes:
        return await self._stream.receive(max_bytes)

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


async def _start(described: str, command: list[str], **files: object) -> Process:
    """Start `command` in a session of its own and register its group; a program that cannot start is RuntimeError."""
    try:
        process = await anyio.open_process(command, start_new_session=True, **files)  # type: ignore[arg-type]
    except OSError as e:
        raise RuntimeError(f"{described} could not start: {e.strerror or e}") from None
    _groups[process.pid] = os.getpid()
    return process


class _Tail:
    """The last OUTPUT_TAIL bytes of an output, however long it runs."""

    def __init__(self) -> None:
        self._data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
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
        data = bytes(self._data[-OUTPUT_TAIL:])
        dropped = self.dropped + len(self._data) - len(data)
        text = data.decode(errors="replace")
        text = text.strip() if strip else text
        return f"[{dropped} bytes before] {text}" if dropped else text


async def _drain(fd: int, tail: _Tail) -> None:
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


async def _end_group(process: Process) -> None:
    """End the command's process group: SIGTERM, up to GRACE seconds for all of it to exit, then SIGKILL."""
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
    _groups.pop(process.pid, None)


def end_groups(pgids: list[int]) -> None:
    """End process groups from sync code (a driver's close(), interpreter exit): SIGTERM, up to GRACE, SIGKILL.

    It blocks for up to GRACE (more only on a loaded machine) when a group ignores SIGTERM.
    """
    pgids = [pgid for pgid in pgids if _signal_group(pgid, signal.SIGTERM)]
    deadline = time.monotonic() + GRACE
    while any(_group_alive(pgid) for pgid in pgids) and time.monotonic() < deadline:
        time.sleep(0.01)
    for pgid in pgids:
        _signal_group(pgid, signal.SIGKILL)


def _end_leftovers() -> None:
    """At interpreter exit: end the groups no call got to end (the exporter exited while they were ending)."""
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
