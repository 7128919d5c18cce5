# mypy: allow-untyped-defs
"""Whatever examples/exporter.yaml exports, served by real exporters: local and direct mode, passphrase, hardware tests.

Local mode: `jmp shell --exporter-config FILE -- CMD` runs an exporter for one shell. Direct mode:
`jmp run --tls-grpc-listener` serves (the shared `exporter` fixture, on 127.0.0.1 with a random
passphrase) and `jmp shell --tls-grpc` connects from another process. Nothing here names a driver:
the tests read the config.
"""

import re
import sys
from pathlib import Path

import pytest
import yaml
from harness import (
    JMP,
    ROOT,
    Exporter,
    example_config,
    exported,
    exporter_process,
    local_shell,
    our_drivers,
    run,
    running,
    write_config,
)
from jumpstarter.client.core import DriverMethodNotImplemented

AUTH_FAILED = "Authentication failed: invalid or missing passphrase"


def commands_of(help_text: str) -> list[str]:
    """The command names `j --help` lists."""
    return re.findall(r"^  (\S+)", help_text.split("Commands:", 1)[-1], re.MULTILINE)


def test_local_shell_serves_every_driver(tmp_path: Path):
    """`jmp shell --exporter-config` gives `j` a command for every driver the config exports, with its own help."""
    config = write_config(tmp_path)
    script = "j --help\n" + "\n".join(f"j {name} --help >/dev/null" for name in our_drivers())
    out = local_shell(config, script)
    assert sorted(commands_of(out)) == sorted(exported()), out


@pytest.mark.parametrize("driver", our_drivers())
def test_unknown_config_key_stops_jmp_shell(tmp_path: Path, driver: str):
    """A misspelt key under a driver's `config:` stops the shell; the error's first line names the entry and the key."""
    config = write_config(tmp_path, {driver: {"no_such_key": 1}})
    result = run([JMP, "shell", "--exporter-config", str(config), "--", "echo", "SHELL STARTED"], cwd=tmp_path)
    driver_class = example_config()["export"][driver]["type"].rpartition(".")[2]
    assert result.returncode != 0
    first = f"validation error for {driver_class}, export entry {driver!r}: no_such_key: Unexpected keyword argument"
    assert first in " ".join(result.stdout.split()), result.stdout[-3000:]  # rich wraps the traceback's lines
    assert "SHELL STARTED" not in result.stdout


def test_exporter_serves_sessions_in_a_row(exporter: Exporter):
    """Consecutive `jmp shell --tls-grpc` sessions are each served, and each gets its command's exit status back."""
    for _ in range(3):
        result = exporter.shell("j", "--help")
        assert result.returncode == 0, result.stdout
        assert sorted(commands_of(result.stdout)) == sorted(exported()), result.stdout
    assert exporter.shell("sh", "-c", "exit 3").returncode == 3


@pytest.mark.parametrize("passphrase", ["not-the-passphrase", None], ids=["wrong", "missing"])
def test_wrong_or_missing_passphrase_is_refused(exporter: Exporter, passphrase: str | None):
    """A client without the exporter's passphrase is refused before its command runs; the exporter keeps serving."""
    result = exporter.shell("echo", "COMMAND RAN", passphrase=passphrase)
    assert result.returncode != 0
    assert AUTH_FAILED in result.stdout
    assert "COMMAND RAN" not in result.stdout
    assert exporter.shell("true").returncode == 0


def test_only_exported_methods_can_be_called(exporter: Exporter):
    """Lifecycle methods and helpers of every driver are out of a client's reach: only @export methods are calls."""
    with exporter.client() as root:
        for name in exported():
            for method in ("reset", "close", "client", "__init__", "_no_such_helper"):
                with pytest.raises(DriverMethodNotImplemented, match=f"method {method} (missing marker|not found)"):
                    root.children[name].call(method)
    assert exporter.process.poll() is None


def test_hardware_tests_pass_inside_jmp_shell(exporter: Exporter):
    """The JumpstarterTest examples (tests/hardware) pass when run inside `jmp shell`, as an author runs them."""
    # A test that hangs fails alone after 60 s, with pytest-timeout's dump of where every thread waits.
    args = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "hardware"), "-p", "no:cacheprovider", "-v"]
    args += ["--timeout", "60"]
    result = exporter.shell(*args, timeout=180)
    assert result.returncode == 0, result.stdout
    # pytest's summary, e.g. "4 passed in 2.31s": some tests ran (however many there are), none failed or skipped.
    summaries = re.findall(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s", result.stdout, re.MULTILINE)
    assert summaries, result.stdout
    assert re.search(r"\b[1-9]\d* passed\b", summaries[-1]), result.stdout
    assert not re.search(r"\b(failed|errors?|skipped)\b", summaries[-1]), result.stdout


def test_example_config_is_the_one_served(exporter: Exporter):
    """The exporter runs the example config as it is (the shared fixture has no overrides)."""
    assert yaml.safe_load(exporter.config.read_text()) == example_config()


def test_a_command_that_overruns_fails_with_its_output_and_context():
    """The harness kills an overrunning command's session and fails with its last output and the given context."""
    script = "import os, time; print('started', os.getpid(), flush=True); time.sleep(600)"
    with pytest.raises(AssertionError) as failure:
        run([sys.executable, "-c", script], timeout=1, context=lambda: "--- the exporter's log")
    message = str(failure.value)
    assert "did not finish within 1 s" in message
    assert message.endswith("--- the exporter's log")
    started = re.search(r"^started (\d+)$", message, re.MULTILINE)
    assert started, message
    assert not running(int(started[1]))


def test_an_exporter_that_exits_at_start_fails_at_once_with_its_log(tmp_path: Path):
    """A `jmp run` that rejects its config fails the wait for readiness at once, with its log, not at the timeout."""
    driver = our_drivers()[0]
    with pytest.raises(AssertionError) as failure, exporter_process(tmp_path, {driver: {"no_such_key": 1}}, 600):
        pass
    message = str(failure.value)
    assert "not reached: jmp run exited with status" in message
    assert "no_such_key" in message  # from the exporter's log
