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
from click.testing import CliRunner
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
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from pydantic import ValidationError

AUTH_FAILED = "Authentication failed: invalid or missing passphrase"


def commands_of(help_text: str) -> list[str]:
    """The command names `j --help` lists."""
    return re.findall(r"^  (\S+)", help_text.split("Commands:", 1)[-1], re.MULTILINE)


def test_local_shell_serves_every_driver(tmp_path: Path):
    """`jmp shell --exporter-config` gives `j` a command for every driver the config exports.

    `j --help` builds every driver's command group (the root's cli() nests each child's), so one `j` proves
    them all; each group's own help is read in-process below, which costs milliseconds instead of a `j` each.
    """
    out = local_shell(write_config(tmp_path), "j --help")
    assert sorted(commands_of(out)) == sorted(exported()), out


@pytest.mark.parametrize("driver", our_drivers())
def test_every_driver_has_its_own_help(exporter: Exporter, driver: str):
    """`j <driver> --help` works for every driver of the package, through a client of the running exporter."""
    with exporter.client() as client:
        result = CliRunner().invoke(client.cli(), [driver, "--help"])
    assert result.exit_code == 0, result.output
    assert f" {driver} [OPTIONS]" in result.output.splitlines()[0], result.output


def test_unknown_config_key_stops_jmp_shell(tmp_path: Path):
    """A misspelt key under a driver's `config:` stops the shell; the error's first line names the entry and the key.

    One driver through `jmp shell` (one with children if there is one); every other driver's error is checked
    in-process below, as the exporter builds it.
    """
    drivers = our_drivers()
    driver = next((name for name in drivers if example_config()["export"][name].get("children")), drivers[0])
    config = write_config(tmp_path, {driver: {"no_such_key": 1}})
    result = run([JMP, "shell", "--exporter-config", str(config), "--", "echo", "SHELL STARTED"], cwd=tmp_path)
    driver_class = example_config()["export"][driver]["type"].rpartition(".")[2]
    assert result.returncode != 0
    first = f"validation error for {driver_class}, export entry {driver!r}: no_such_key: Unexpected keyword argument"
    assert first in " ".join(result.stdout.split()), result.stdout[-3000:]  # rich wraps the traceback's lines
    assert "SHELL STARTED" not in result.stdout


@pytest.mark.parametrize("driver", our_drivers())
def test_unknown_config_key_names_the_entry_and_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, driver: str):
    """Every driver of the package, built from the config as the exporter builds it, names its entry and the key.

    A driver entry with children is checked through `jmp shell` instead: its children are built (a simulator
    started, say) before it fails, and only a process of its own releases them.
    """
    entry = example_config({driver: {"no_such_key": 1}})["export"][driver]
    if entry.get("children"):
        pytest.skip("built with its children: checked in a jmp shell")
    monkeypatch.chdir(tmp_path)  # relative paths of the config land here, as in the exporter's directory
    tree = ExporterConfigV1Alpha1DriverInstance.from_str(yaml.safe_dump({"children": {driver: entry}}))
    with pytest.raises(ValidationError) as error:
        tree.instantiate()
    driver_class = entry["type"].rpartition(".")[2]
    first = f"1 validation error for {driver_class}, export entry {driver!r}: no_such_key: Unexpected keyword argument"
    assert str(error.value).splitlines()[0] == first


def test_exporter_serves_sessions_in_a_row(exporter: Exporter):
    """Consecutive `jmp shell --tls-grpc` sessions are each served, and each gets its command's exit status back."""
    result = exporter.shell("j", "--help")
    assert result.returncode == 0, result.stdout
    assert sorted(commands_of(result.stdout)) == sorted(exported()), result.stdout
    assert exporter.shell("sh", "-c", "exit 3").returncode == 3  # the next session, on the same exporter


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
    # They share one device: run one at a time whatever -n the project's options give (tests/conftest.py).
    assert "workers" not in result.stdout and "[gw0]" not in result.stdout, result.stdout


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
    assert "not reached: jmp run's exporter exited at start" in message
    assert "no_such_key" in message  # from the exporter's log
