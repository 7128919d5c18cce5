# mypy: allow-untyped-defs
"""The harness itself: overrides by a driver's path, a test's own config, expected failures, a shared exporter,
and nothing left running however a run ends."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    EXAMPLE_CONFIG,
    REMOVED,
    ROOT,
    Exporter,
    checked_script_output,
    drivers_only,
    example_config,
    failed,
    find_driver,
    local_shell,
    run,
    running,
    script_command,
    shared_exporter,
    wait_for,
    write_config,
)


def own_config() -> dict[str, Any]:
    """A config of the test's own: the example's first driver, as the child `inner` of a Composite `group`."""
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    first = next(entry for entry in example["export"].values() if "type" in entry)
    group = {"type": "jumpstarter_driver_composite.driver.Composite", "children": {"inner": copy.deepcopy(first)}}
    return {**{k: v for k, v in example.items() if k != "export"}, "export": {"group": group}}


def test_overrides_reach_a_child_by_its_path():
    """`{"group.inner": {...}}` merges into the child's `config:`; the rest of the tree is untouched."""
    config = own_config()
    merged = example_config({"group.inner": {"added_key": 3}}, config=config)
    inner = find_driver(merged, "group.inner")
    assert inner["config"] == (config["export"]["group"]["children"]["inner"].get("config") or {}) | {"added_key": 3}
    assert "config" not in merged["export"]["group"]
    assert config == own_config()  # the test's own config is not changed in place


def test_removed_takes_a_key_out_of_a_drivers_config():
    """`{"<driver>": {"key": REMOVED}}` leaves the key out, so the driver's default applies; a key not there fails."""
    config = own_config()
    config["export"]["group"]["children"]["inner"]["config"] = {"kept": 1, "dropped": 2}
    merged = example_config({"group.inner": {"dropped": REMOVED, "added": 3}}, config=config)
    assert find_driver(merged, "group.inner")["config"] == {"kept": 1, "added": 3}
    with pytest.raises(
        LookupError, match=r"no key 'nope' to remove from the config of 'group.inner': \['dropped', 'kept'\]$"
    ):
        example_config({"group.inner": {"nope": REMOVED}}, config=config)


def test_override_of_a_missing_driver_names_what_is_there():
    """An override path that names no driver fails at once, listing the names it could have been."""
    with pytest.raises(LookupError, match=r"no driver 'group.nope' to override: the children of group: \['inner'\]"):
        example_config({"group.nope": {"x": 1}}, config=own_config())


def test_drivers_only_keeps_the_named_drivers_and_those_they_ref():
    """`drivers_only` exports the named drivers, plus the driver a `ref:` among them points into, in config order."""
    config = own_config()
    config["export"] |= {"other": copy.deepcopy(config["export"]["group"]), "alias": {"ref": "group.inner"}}
    assert list(drivers_only("other", config=config)["export"]) == ["other"]
    kept = drivers_only("alias", config=config)
    assert kept["export"] == {"group": config["export"]["group"], "alias": {"ref": "group.inner"}}
    assert {k: v for k, v in kept.items() if k != "export"} == {k: v for k, v in config.items() if k != "export"}


def test_drivers_only_of_a_missing_driver_names_what_is_there():
    """A name the config does not export fails at once, listing the drivers it does export."""
    with pytest.raises(LookupError, match=r"no driver 'nope' to keep: the drivers the config exports: \['group'\]"):
        drivers_only("nope", config=own_config())


def test_own_config_runs_and_expected_failures_report_their_status(tmp_path: Path):
    """A test's own config runs in `jmp shell`; `fails` passes on a command that fails, with its status."""
    out = local_shell(
        write_config(tmp_path, config=own_config()),
        "j group --help\nfails j group no-such-command\nfails j group inner no-such-command",
    )
    assert "inner" in out
    assert failed(out, "j group no-such-command") == 1  # j in 0.9 exits 1 for every error, usage errors too
    assert failed(out, "j group inner no-such-command") == 1


@pytest.mark.parametrize(
    ("script", "problem"),
    [
        ("fails true", "SUCCEEDED, EXPECTED TO FAIL: true"),
        ("false\necho after", "a command of the script failed"),
    ],
)
def test_a_script_whose_commands_do_not_do_as_expected_fails_the_test(script: str, problem: str):
    """`fails` on a command that succeeds, or a command that fails outside `fails`, stops the script and the test.

    The script alone, in `sh`: what `jmp shell` adds to it is the test above's.
    """
    with pytest.raises(AssertionError, match=problem) as failure:
        checked_script_output(run(script_command(script)))
    assert "after" not in str(failure.value)


shared = shared_exporter(config=own_config())
SEEN: list[int] = []


@pytest.mark.parametrize("turn", [1, 2])
def test_a_shared_exporter_serves_every_test_of_the_module(shared: Exporter, turn: int):
    """Both tests get the same running exporter: one start for the module."""
    SEEN.append(shared.serving_pid)
    with shared.client() as client:
        assert set(client.children) == {"group"}
    assert len(set(SEEN)) == 1 and running(SEEN[0])


# Nothing outlives the run


INTERRUPTED_RUN = """
import os, time
from pathlib import Path
from harness import JMP, exporter_process, start, write_config


def test_runs_until_it_is_ended(tmp_path):
    # A jmp shell (local mode) left to the harness's last resort, and a jmp run in a fixture-like `with`.
    config = write_config(tmp_path / "local")
    start([JMP, "shell", "--exporter-config", str(config), "--", "sleep", "300"], cwd=config.parent)
    with exporter_process(tmp_path / "direct"):
        Path(os.environ["READY_FILE"]).write_text("ready")
        time.sleep(300)
"""


def inner_run(tmp_path: Path, **env: str) -> tuple[list[str], dict[str, str]]:
    """A pytest of the files in tmp_path (no project options) with this suite's conftest, and its environment.

    `-p conftest` loads tests/conftest.py: its SIGTERM wiring and its figures, as every run of the suite has them.
    """
    inherited = {k: v for k, v in os.environ.items() if k not in ("PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    args = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-p",
        "conftest",
        "--rootdir",
        str(tmp_path),
    ]
    return args, inherited | {"PYTHONPATH": str(ROOT / "tests"), **env}


def test_figures_reach_the_summary_from_xdist_workers(tmp_path: Path):
    """What tests in two xdist workers REPORTED is in the "end-to-end figures", from a test or a fixture teardown."""
    (tmp_path / "figures_test.py").write_text(
        textwrap.dedent("""
        import pytest
        from harness import REPORTED

        @pytest.fixture(scope="module")
        def held():
            yield
            REPORTED.append(f"at teardown of {__name__}")

        def test_reports(held):
            REPORTED.append("from a test")
        """)
    )
    (tmp_path / "other_test.py").write_text(
        "from harness import REPORTED\n\ndef test_x():\n    REPORTED.append('other')\n"
    )
    args, env = inner_run(tmp_path)
    args += ["-n", "2", "--dist", "loadfile", str(tmp_path)]
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    figures = result.stdout.partition("end-to-end figures")[2].splitlines()[1:4]
    assert sorted(figures) == ["at teardown of figures_test", "from a test", "other"], result.stdout


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` (children of each of its threads, recursively)."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except (FileNotFoundError, ProcessLookupError):
                continue
            pending += list(children - found)
            found |= children
    return found


def test_a_process_reaped_while_its_stat_is_read_is_not_running(monkeypatch: pytest.MonkeyPatch):
    """A process reaped between the open and the read of its /proc stat is not running (the read fails ESRCH)."""
    process = subprocess.Popen(["true"])

    def read_after_reaping(path: Path, *args: object, **kwargs: object) -> str:
        with path.open() as f:
            process.wait()
            return f.read()

    monkeypatch.setattr(Path, "read_text", read_after_reaping)
    assert not running(process.pid)


def command_line(pid: int) -> str:
    """A process's command line, for failure messages."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    except (FileNotFoundError, ProcessLookupError):
        return "(gone)"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_an_ended_run_leaves_nothing_running(tmp_path: Path):
    """A pytest run ended by SIGTERM (a CI timeout, a cancelled job) leaves none of the processes its harness started.

    SIGTERM tears down as Ctrl-C does (the `jmp run`); the `jmp shell` that the run started and never stops is
    left to the watchdog, which ends it once pytest is gone: what it also does after a SIGKILL, which nothing can
    catch (one run proves both, at the cost of one).
    """
    sig = signal.SIGTERM
    (tmp_path / "interrupted_test.py").write_text(textwrap.dedent(INTERRUPTED_RUN))
    ready = tmp_path / "ready"
    args, env = inner_run(tmp_path, READY_FILE=str(ready), TERM="dumb")
    pytest_run = subprocess.Popen(
        [*args, str(tmp_path / "interrupted_test.py")], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:

        def started() -> set[int]:
            if pytest_run.poll() is not None:
                raise AssertionError(f"the run ended by itself:\n{pytest_run.communicate()[0]}")
            found = descendants(pytest_run.pid)
            return found if ready.exists() and any(command_line(p).startswith("sleep 300") for p in found) else set()

        started_pids = wait_for(started, timeout=120, what="the interrupted run's exporters")
        os.kill(pytest_run.pid, sig)
        output, _ = pytest_run.communicate(timeout=120)

        def nothing_left() -> bool:
            left = {pid: command_line(pid) for pid in started_pids if running(pid)}
            if left:
                raise AssertionError(f"still running: {left}")
            return True

        wait_for(nothing_left, timeout=60, what=f"every process of the run ended by {sig.name}", context=lambda: output)
        if sig == signal.SIGTERM:
            assert "KeyboardInterrupt" in output, output  # stopped as Ctrl-C stops it: teardowns ran
    finally:
        if pytest_run.poll() is None:
            os.killpg(pytest_run.pid, signal.SIGKILL)
            pytest_run.wait(30)
        for pid in descendants(pytest_run.pid) if pytest_run.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
