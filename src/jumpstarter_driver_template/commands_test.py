# mypy: allow-untyped-defs
"""The command runner ends a command's whole process group, however the command ends."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from .commands import GRACE, OUTPUT_TAIL, STDERR_TAIL, run_command


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it holds nothing and waits to be reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
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


def test_daemon_outside_the_group_does_not_hold_a_finished_command(tmp_path: Path):
    """A command that exited 0 is done, even when a daemon it started in a session of its own keeps stdout open.

    The daemon is not in the group the runner owns: it is left running, as it would be by a shell.
    """
    pid_file = tmp_path / "pid"
    # The daemon writes its pid once it is in its session; the command exits once the pid is there.
    daemon = f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 300' &"
    script = ["sh", "-c", f"{daemon} while [ ! -s {pid_file} ]; do sleep 0.01; done; echo on"]
    try:
        assert anyio.run(run_command, "switch_command", script, 10) == "on\n"  # not a TimeoutError after 10 s
        assert running(int(pid_file.read_text()))
    finally:
        os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_output_is_kept_and_logged_as_a_bounded_tail(caplog: pytest.LogCaptureFixture):
    """4 MiB of stdout and of stderr: the result, the log line and the error hold their tails only."""
    script = [
        "sh",
        "-c",
        "head -c 4194304 /dev/zero | tr '\\0' o; head -c 4194304 /dev/zero | tr '\\0' e >&2; echo end >&2",
    ]
    stdout = anyio.run(run_command, "probe", [*script[:2], script[2] + "; exit 0"], 30)
    assert len(stdout) <= OUTPUT_TAIL + 64 and stdout.endswith("o" * 100)
    with pytest.raises(RuntimeError) as error:
        anyio.run(run_command, "probe", [*script[:2], script[2] + "; exit 3"], 30)
    sent = str(error.value).partition("exited with status 3: ")[2]
    assert len(sent) == STDERR_TAIL + 3 and sent.endswith("eeeend")
    [record] = [r for r in caplog.records if "exited with status 3" in r.getMessage()]
    assert OUTPUT_TAIL < len(record.getMessage()) <= OUTPUT_TAIL + 200
    assert "bytes before]" in record.getMessage()


def test_failure_logs_the_whole_short_stderr(caplog: pytest.LogCaptureFixture):
    """A short stderr is logged whole; the client gets its last STDERR_TAIL characters."""
    script = ["sh", "-c", f"printf 'first line\\n%0{STDERR_TAIL}d\\n' 0 >&2; exit 3"]
    with pytest.raises(RuntimeError) as error:
        anyio.run(run_command, "probe", script, 10)
    assert str(error.value).partition("exited with status 3: ")[2] == "..." + "0" * STDERR_TAIL
    assert "first line\n" + "0" * STDERR_TAIL in caplog.text


EXITS_MID_COMMAND = """
import pathlib, sys, threading, time
import anyio
from jumpstarter_driver_template.commands import run_command

threading.Thread(target=anyio.run, args=(run_command, "switch_command", sys.argv[2:], 60), daemon=True).start()
pid = pathlib.Path(sys.argv[1])
while not (pid.exists() and pid.read_text().strip()):
    time.sleep(0.01)
"""  # then the interpreter exits while the command runs, its event loop never resumed


def test_a_process_that_exits_mid_command_ends_its_group(tmp_path: Path):
    """An exporter that exits while a command runs (jmp run leaves its loop 0.1 s after cancelling calls) ends it."""
    pid_file = tmp_path / "pid"
    command = [sys.executable, "-c", EXITS_MID_COMMAND, str(pid_file), *spawner(pid_file, ignore_term=True)]
    subprocess.run(command, timeout=60, check=True)
    assert not running(int(pid_file.read_text()))


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


def test_a_process_reaped_while_its_stat_is_read_is_not_running(monkeypatch: pytest.MonkeyPatch):
    """A process reaped between the open and the read of its /proc stat is not running (the read fails ESRCH)."""
    process = subprocess.Popen(["true"])

    def read_after_reaping(path: Path, *args: object, **kwargs: object) -> str:
        with path.open() as f:
            process.wait()
            return f.read()

    monkeypatch.setattr(Path, "read_text", read_after_reaping)
    assert not running(process.pid)
