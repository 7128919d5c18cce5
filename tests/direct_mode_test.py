"""Direct mode end to end: `jmp run --tls-grpc-listener` serves, `jmp shell --tls-grpc` connects from another process.

The exporter (the `exporter` fixture in conftest.py) listens on 127.0.0.1 only, requires a random
passphrase, and is shared by the tests of a run. Direct mode passes the command's exit status on.
"""

import re
import sys

import pytest
from processes import ROOT, Exporter

AUTH_FAILED = "Authentication failed: invalid or missing passphrase"


def test_exporter_serves_sessions_in_a_row(exporter: Exporter):
    """Consecutive client sessions are each served, and each gets its command's exit status back."""
    first = exporter.shell("j", "custom", "configure", "first", "1")
    assert first.returncode == 0, first.stdout
    assert "label=first level=1" in first.stdout

    # `jmp run` in direct mode holds one lease from start to stop: reset() ran once, when it started,
    # so a session sees what the previous one left. Through a controller, each lease starts afresh.
    second = exporter.shell("j", "custom", "state")
    assert second.returncode == 0, second.stdout
    assert "device_id=bench-01 label=first level=1 active_tasks=0 open_streams=0" in second.stdout

    third = exporter.shell("j", "custom", "slow-task", "601")
    assert third.returncode != 0
    assert "seconds must be between 0 and 600.0, got 601" in third.stdout


@pytest.mark.parametrize("passphrase", ["not-the-passphrase", None], ids=["wrong", "missing"])
def test_wrong_or_missing_passphrase_is_refused(exporter: Exporter, passphrase: str | None):
    """A client without the exporter's passphrase is refused before its command runs."""
    result = exporter.shell("echo", "COMMAND RAN", passphrase=passphrase)
    assert result.returncode != 0
    assert AUTH_FAILED in result.stdout
    assert "COMMAND RAN" not in result.stdout
    with exporter.client() as client:  # the exporter is still serving
        assert client.custom.state().device_id == "bench-01"


def test_hardware_tests_pass_inside_jmp_shell(exporter: Exporter):
    """The JumpstarterTest example (tests/hardware) passes when run inside `jmp shell`, as an author would run it."""
    args = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "hardware"), "-p", "no:cacheprovider", "-q"]
    result = exporter.shell(*args, timeout=120)
    assert result.returncode == 0, result.stdout
    # pytest's summary, e.g. "4 passed in 2.31s": some tests ran (however many there are), none failed.
    summaries = re.findall(r"^=*\s*(\d+ \w+(?:, \d+ \w+)*) in [\d.]+s", result.stdout, re.MULTILINE)
    assert summaries, result.stdout
    summary = summaries[-1]
    assert re.search(r"\b[1-9]\d* passed\b", summary), result.stdout
    assert not re.search(r"\b(failed|errors?)\b", summary), result.stdout
    assert (exporter.upload_dir / "hardware-test.bin").stat().st_size == 64 * 1024
