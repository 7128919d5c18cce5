# mypy: allow-untyped-defs
"""ExampleConsole end to end: upstream's console client (`pexpect()`, `j console ...`) through real exporters."""

import os
import signal
import time
from pathlib import Path

import pexpect  # type: ignore[import-untyped]
from harness import REPORTED, child_env, drivers_only, exporter_process, running, start, stop_group, wait_for

from jumpstarter_driver_template.console.simulator import PASSWORD, PROMPT, UNAME, USER

# The exporters here serve this driver alone: each `j` loads one client.
CONFIG = drivers_only("console")

WAIT = 60


def test_pexpect_logs_in_through_a_jmp_exporter(exporter):
    """`client.console.pexpect()` logs in to the simulated console through `jmp run` and runs a command."""
    with exporter.client() as client, client.console.pexpect() as console:
        console.timeout = WAIT
        console.expect("login: ")
        console.sendline(USER)
        console.expect("Password: ")
        console.sendline(PASSWORD)
        console.expect_exact(PROMPT.decode())
        console.sendline("uname -a")
        console.expect_exact(UNAME)


def test_j_console_pipe_sends_stdin_and_prints_the_console(exporter):
    """`j console pipe` with piped stdin: the lines reach the console, its output reaches stdout, EOF ends it."""
    script = f"printf '{USER}\\n{PASSWORD}\\nuname -a\\npoweroff\\n' | j console pipe"
    result = exporter.shell("sh", "-c", script)
    assert result.returncode == 0, result.stdout
    assert UNAME in result.stdout, result.stdout
    assert "reboot: Power down" in result.stdout, result.stdout
    assert "Serial connection closed normally (end of stream)." in result.stdout, result.stdout


def test_j_console_start_console_in_a_terminal(exporter):
    """`j console start-console` needs a terminal: in a pseudo-terminal it logs in, and Ctrl-B x3 ends it."""
    program, *args = exporter.shell_args("j", "console", "start-console")
    shell = pexpect.spawn(program, args, env=child_env(), cwd=str(exporter.workdir), timeout=WAIT)
    try:
        shell.expect("exit with CTRL\\+B x 3 times")
        shell.expect("login: ")
        shell.send(f"{USER}\r")
        shell.expect("Password: ")
        shell.send(f"{PASSWORD}\r")
        shell.expect_exact(PROMPT.decode())
        shell.send("uname -a\r")
        shell.expect_exact(UNAME)
        shell.send("\x02\x02\x02")
        shell.expect(pexpect.EOF)
    except pexpect.ExceptionPexpect as e:
        raise AssertionError(f"{e}\n{exporter.log_tail()}") from None
    finally:
        shell.close(force=True)
    assert shell.exitstatus == 0, shell.before


def test_sigterm_to_jmp_run_ends_an_attached_tool_that_ignores_sigterm(tmp_path: Path):
    """SIGTERM to `jmp run` while a client is attached to a tool that ignores SIGTERM: the tool's group is
    gone by the time `jmp run` has exited (the runner's SIGKILL comes within upstream's shutdown)."""
    pid = tmp_path / "tool.pid"
    tool = ["sh", "-c", f"trap '' TERM; sleep 600 & echo $$ $! > {pid}; exec cat"]
    with exporter_process(
        tmp_path / "exporter", {"console": {"simulator": False, "command": tool}}, config=CONFIG
    ) as exporter:
        client = start(exporter.shell_args("sh", "-c", "sleep 600 | j console pipe"), cwd=exporter.workdir)
        try:
            pids = [int(p) for p in wait_for(lambda: pid.read_text().split(), WAIT, "the tool", exporter.log_tail)]
            started = time.monotonic()
            os.kill(exporter.process.pid, signal.SIGTERM)  # to jmp run, which forwards it to its serving child
            ended = None  # when the tool's group was gone, measured while jmp run shuts down
            while exporter.process.poll() is None and time.monotonic() - started < WAIT:
                if ended is None and not any(running(p) for p in pids):
                    ended = time.monotonic() - started
                time.sleep(0.01)
            exporter.process.wait(timeout=WAIT)
            exited = time.monotonic() - started
            left = [p for p in pids if running(p)]
        finally:
            stop_group(client, signal.SIGKILL)
            for p in pids if pid.exists() else []:
                if running(p):
                    os.kill(p, signal.SIGKILL)
    gone = "before jmp run exited" if ended is None else f"{ended:.2f} s"
    REPORTED.append(f"console: SIGTERM to jmp run: the tool's group gone at {gone}, jmp run exited at {exited:.2f} s")
    assert left == [], f"{left} outlived jmp run ({exited:.2f} s after SIGTERM)\n{exporter.log_tail()}"
