"""Local mode end to end: `jmp shell --exporter-config FILE -- CMD` serves the drivers to `j` in a child process.

In Jumpstarter 0.9, local mode exits 0 even when CMD fails, so these tests read the output: each
script runs with `set -e` and prints a marker last, which only appears if every command succeeded.
"""

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from processes import JMP, run, write_config

DONE = "ALL COMMANDS SUCCEEDED"


def local_shell(config: Path, script: str) -> str:
    """Run a shell script inside `jmp shell --exporter-config`; return its output."""
    result = run([JMP, "shell", "--exporter-config", str(config), "--", "sh", "-c", f"set -e\n{script}\necho {DONE}"])
    assert result.returncode == 0, result.stdout
    return result.stdout


@dataclass
class Session:
    """What one local `jmp shell` session ran with, and what it printed."""

    config: Path
    upload_dir: Path
    image: Path
    saved: Path
    out: str


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One local session running every `j` command (each `j` start costs seconds of imports)."""
    tmp = tmp_path_factory.mktemp("local")
    upload_dir = tmp / "uploads"
    config = write_config(tmp / "exporter.yaml", upload_dir)
    upload_dir.mkdir()
    (upload_dir / ".disk.img.left-by-a-crash.partial").write_bytes(b"half")
    image, saved = tmp / "image.bin", tmp / "random.bin"
    image.write_bytes(os.urandom(300_000))
    out = local_shell(
        config,
        f"""
        j power on
        j power read
        j power off
        echo "after off:"
        j power read
        j custom configure soak 3
        j custom state
        j custom slow-task 0.1
        j custom slow-generator -n 3 -i 0
        j custom random 16
        j custom random 1000000 -o {saved}
        j custom upload {image} --name firmware.bin
        j custom slow-task 11 || echo "slow-task FAILED"
        j custom combined-action final 9
        """,
    )
    return Session(config, upload_dir, image, saved, out)


def test_power_commands_work_in_local_mode(session: Session):
    """`j power on/read/off` drive ExamplePower with the load from the exporter config."""
    assert DONE in session.out, session.out
    on, off = session.out.split("after off:")
    assert "voltage=12.0 V  current=0.5 A  apparent_power=6.0 VA" in on
    assert "voltage=0.0 V  current=0.0 A  apparent_power=0.0 VA" in off


def test_custom_commands_work_in_local_mode(session: Session):
    """Each `j custom` command works through a local exporter and prints its result."""
    out = session.out
    assert DONE in out, out
    assert "label=soak level=3\n" in out
    assert "device_id=bench-01 label=soak level=3 active_tasks=0 open_streams=0" in out
    assert "bench-01: done after 0.1 s" in out
    assert "\n0\n1\n2\n" in out
    assert re.search(r"^[0-9a-f]{32}$", out, re.MULTILINE)
    assert f"wrote 1000000 bytes to {session.saved}" in out
    assert session.saved.stat().st_size == 1_000_000
    assert "device_id=bench-01 label=final level=9 active_tasks=0 open_streams=0" in out


def test_upload_command_stores_the_file(session: Session):
    """`j custom upload` stores the file under the configured upload_dir and prints its size and hash."""
    digest = hashlib.sha256(session.image.read_bytes()).hexdigest()
    assert f"uploaded firmware.bin: 300000 bytes, sha256 {digest}" in session.out
    assert (session.upload_dir / "firmware.bin").read_bytes() == session.image.read_bytes()


def test_driver_error_reaches_the_terminal(session: Session):
    """A driver error is printed with its message (local mode's exit status is always 0)."""
    assert "seconds must be between 0 and 10.0, got 11" in session.out
    assert "slow-task FAILED" in session.out


def test_next_local_session_starts_from_defaults(session: Session):
    """Every `jmp shell --exporter-config` is a new lease: reset() forgets settings, partial uploads are gone."""
    out = local_shell(session.config, "j custom state")
    assert "label=default level=0" in out
    assert sorted(p.name for p in session.upload_dir.iterdir()) == ["firmware.bin"]


@pytest.mark.parametrize(
    ("override", "field", "problem"),
    [
        ({"max_secnds": 5}, "max_secnds", "Unexpected keyword argument"),
        ({"max_seconds": "soon"}, "max_seconds", "Input should be a valid number"),
    ],
)
def test_bad_exporter_config_stops_jmp_shell(tmp_path: Path, override: dict, field: str, problem: str):
    """An unknown key or a wrong type under `config:` fails before the shell starts, naming the field."""
    config = write_config(tmp_path / "exporter.yaml", tmp_path / "uploads", **override)
    result = run([JMP, "shell", "--exporter-config", str(config), "--", "echo", "SHELL STARTED"])
    assert result.returncode != 0
    assert f"ValidationError: 1 validation error for ExampleCustom\n{field}\n  {problem}" in result.stdout
    assert "SHELL STARTED" not in result.stdout
