# mypy: allow-untyped-defs
"""The command runner ends a command's whole process group, however the command ends."""

import os
import time
from pathlib import Path

import anyio
import pytest

from .commands import GRACE, STDERR_TAIL, run_command


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it holds nothing and waits to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except FileNotFoundError:
        return False


def spawner(pid_file: Path, *, ignore_term: bool = False, wait: bool = True) -> list[str]:
    """A shell command that starts `sleep 300` in the background, writes its pid, and waits for it (or exits)."""
    trap = "trap '' TERM; " if ignore_term else ""
    return ["sh", "-c", f"{trap}sleep 300 >/dev/null 2>&1 & echo $! > {pid_file}; {'wait' if wait else 'true'}"]


def test_success_returns_stdout():
    """A command that succeeds returns what it printed."""
    assert anyio.run(run_command, "probe", ["echo", "ready"], 10) == "ready\n"


def test_failure_names_the_command_its_status_and_stderr():
    """A non-zero exit is a RuntimeError with the command, its exit status and its stderr."""
    with pytest.raises(RuntimeError, match=r"^probe sh -c 'echo stuck >&2; exit 4' exited with status 4: stuck$"):
        anyio.run(run_command, "probe", ["sh", "-c", "echo stuck >&2; exit 4"], 10)


def test_timeout_ends_the_commands_children(tmp_path: Path):
    """On timeout the shell *and* the child it started are ended, not only the shell."""
    pid_file = tmp_path / "pid"
    with pytest.raises(TimeoutError, match=r"timed out after 0\.5 s"):
        anyio.run(run_command, "switch_command", spawner(pid_file), 0.5)
    assert not running(int(pid_file.read_text()))


def test_cancellation_ends_the_commands_children(tmp_path: Path):
    """A call cancelled mid-command (the client went away, the exporter stops) ends the command's group."""
    pid_file = tmp_path / "pid"

    async def cancel_once_started() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(run_command, "switch_command", spawner(pid_file), 60)
            while not pid_file.exists() or not pid_file.read_text():
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()

    anyio.run(cancel_once_started)
    assert not running(int(pid_file.read_text()))


def test_background_child_of_a_finished_command_is_ended(tmp_path: Path):
    """A command that exits 0 but leaves a child running in the background does not leave it behind."""
    pid_file = tmp_path / "pid"
    anyio.run(run_command, "switch_command", spawner(pid_file, wait=False), 10)
    assert not running(int(pid_file.read_text()))


def test_background_child_holding_the_output_does_not_hold_the_command(tmp_path: Path):
    """A finished command's background child that keeps stdout open (a helper daemon) does not stall the call."""
    pid_file = tmp_path / "pid"
    script = ["sh", "-c", f"sleep 300 & echo $! > {pid_file}; echo on"]  # the child inherits stdout and stderr
    assert anyio.run(run_command, "switch_command", script, 30) == "on\n"  # not a TimeoutError after 30 s
    assert not running(int(pid_file.read_text()))


def test_failure_logs_all_of_stderr_and_sends_its_tail(caplog: pytest.LogCaptureFixture):
    """The client gets the last STDERR_TAIL characters of stderr; the exporter's log keeps all of it."""
    script = ["sh", "-c", f"printf 'first line\\n%0{STDERR_TAIL}d\\n' 0 >&2; exit 3"]
    with pytest.raises(RuntimeError) as error:
        anyio.run(run_command, "probe", script, 10)
    assert str(error.value).partition("exited with status 3: ")[2] == "..." + "0" * STDERR_TAIL
    assert "first line\n" + "0" * STDERR_TAIL in caplog.text


def test_child_ignoring_sigterm_gets_sigkill_after_the_grace_period(tmp_path: Path):
    """A group member that ignores SIGTERM is killed once the grace period is over."""
    pid_file = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        anyio.run(run_command, "switch_command", spawner(pid_file, ignore_term=True), 0.2)
    assert not running(int(pid_file.read_text()))
    assert time.monotonic() - started < 0.2 + GRACE + 5  # bounded: the runner never waits forever


def test_missing_program_is_a_clear_error():
    """A program that does not exist names the command in the error."""
    with pytest.raises(RuntimeError, match="relay /nonexistent/relay-tool could not start: No such file or directory"):
        anyio.run(run_command, "relay", ["/nonexistent/relay-tool"], 10)


def test_no_stdin_from_the_exporter():
    """Commands get no stdin: in local mode the exporter's stdin is the user's terminal."""
    assert anyio.run(run_command, "probe", ["sh", "-c", "cat; echo done"], 10) == "done\n"


@pytest.fixture(autouse=True)
def _no_stray_processes():
    """Every test leaves no child process of this interpreter running (other than those it found)."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    before = set(children.read_text().split()) if children.exists() else set()
    yield
    if children.exists():
        assert [pid for pid in set(children.read_text().split()) - before if running(int(pid))] == []
