# mypy: allow-untyped-defs
"""Client behaviour and the exact output of every `j custom` command."""

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from jumpstarter.client.core import DriverError
from jumpstarter.common.utils import serve
from pydantic.dataclasses import dataclass

from .client import READ_LIMIT
from .common import State, UploadResult
from .driver import CONFIG, ExampleCustom


@pytest.fixture
def custom(tmp_path: Path):
    """ExampleCustom served over gRPC, as `j custom` sees it."""
    with serve(ExampleCustom(device_id="bench-01", max_seconds=2, upload_dir=str(tmp_path / "uploads"))) as client:
        yield client


def run(client, *args: str) -> str:
    """Run a CLI command like `j <name> ARGS...` and return its output; it must succeed."""
    result = CliRunner().invoke(client.cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# j custom


def test_help_lists_every_command(custom):
    """`j custom --help` lists each command with its one-line docstring."""
    output = run(custom, "--help")
    for line in [
        "Example custom driver",
        "configure        Store a label and a level (0-10) on the device.",
        "state            Show the device's settings and activity.",
        "slow-task        Run a task that takes SECONDS on the exporter.",
        "slow-generator   Print numbers as the device produces them.",
        "random           Read SIZE random bytes: printed as hex, or written to...",
        "upload           Send the file at PATH to the exporter's upload directory.",
        "combined-action  Configure, run a task, and show the resulting state.",
    ]:
        assert line in output


def test_cli_configure_and_status(custom):
    """`configure LABEL LEVEL` prints what was stored; `state` shows it."""
    assert run(custom, "configure", "soak", "3") == "label=soak level=3\n"
    assert run(custom, "state") == "device_id=bench-01 label=soak level=3 active_tasks=0 open_streams=0\n"


def test_cli_configure_rejects_out_of_range_level(custom):
    """The CLI checks the level before calling the driver, with click's usual message."""
    result = CliRunner().invoke(custom.cli(), ["configure", "soak", "11"])
    assert result.exit_code == 2
    assert "Invalid value for 'LEVEL': 11 is not in the range 0<=x<=10." in result.output


def test_cli_slow_task(custom):
    """`slow-task SECONDS` prints the driver's report."""
    assert run(custom, "slow-task", "0.01") == "bench-01: done after 0.01 s\n"


def test_cli_slow_generator(custom):
    """`slow-generator -n 3 -i 0` prints one number per line."""
    assert run(custom, "slow-generator", "-n", "3", "-i", "0") == "0\n1\n2\n"


def test_cli_random_hex_and_file(custom, tmp_path):
    """`random SIZE` prints SIZE bytes as hex; with -o it writes them to a file."""
    assert re.fullmatch(r"[0-9a-f]{32}\n", run(custom, "random", "16"))
    target = tmp_path / "random.bin"
    assert run(custom, "random", "300000", "-o", str(target)) == f"wrote 300000 bytes to {target}\n"
    assert target.stat().st_size == 300000


def test_cli_random_over_limit_needs_output(custom):
    """Printing more than READ_LIMIT bytes as hex is refused with a hint to use --output."""
    result = CliRunner().invoke(custom.cli(), ["random", str(READ_LIMIT + 1)])
    assert result.exit_code == 2
    assert f"SIZE over {READ_LIMIT} bytes needs --output FILE" in result.output


def test_cli_upload(custom, tmp_path):
    """`upload PATH --name NAME` prints the stored name, size and sha256."""
    source = tmp_path / "boot.img"
    source.write_bytes(b"kernel")
    sha256 = hashlib.sha256(b"kernel").hexdigest()
    assert (
        run(custom, "upload", str(source), "--name", "kernel.img") == f"uploaded kernel.img: 6 bytes, sha256 {sha256}\n"
    )
    assert (tmp_path / "uploads" / "kernel.img").read_bytes() == b"kernel"


def test_cli_combined_action(custom):
    """`combined-action LABEL LEVEL` configures, runs a task and prints the state."""
    expected = "device_id=bench-01 label=burn-in level=4 active_tasks=0 open_streams=0\n"
    assert run(custom, "combined-action", "burn-in", "4", "-s", "0.01") == expected


# j custom: bad input


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    """A small local file to upload."""
    path = tmp_path / "payload.bin"
    path.write_bytes(b"payload")
    return path


def bad_input(client, args: list[str], status: int, message: str) -> None:
    """The command fails with `status`, printing exactly one `Error:` line that contains `message`, no traceback."""
    result = CliRunner().invoke(client.cli(), args)
    assert result.exit_code == status, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and message in errors[0], result.output
    assert "Traceback" not in result.output


# Exit status 2: the input is refused (by click, by the client, or by the driver as INVALID_ARGUMENT).
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["configure", "soak"], "Missing argument 'LEVEL'."),
        (["configure", "soak", "11"], "Invalid value for 'LEVEL': 11 is not in the range 0<=x<=10."),
        (["configure", "x" * 101, "1"], "settings.label: String should have at most 100 characters"),
        (["configure", "a\nb", "1"], "settings.label: Value error, must not contain a control character U+000A"),
        (["state", "extra"], "Got unexpected extra argument (extra)"),
        (["slow-task", "soon"], "Invalid value for 'SECONDS': 'soon' is not a valid float range."),
        (["slow-task", "5"], "seconds: Input should be less than or equal to 2, this driver's max_seconds (got 5)"),
        (["slow-generator", "-n", "-1"], "Invalid value for '--count' / '-n': -1 is not in the range x>=0."),
        (["slow-generator", "-n", "1", "-i", "5"], "interval: Input should be less than or equal to 2"),
        (["random", "soon"], "Invalid value for 'SIZE': 'soon' is not a valid integer range."),
        (["random", str(READ_LIMIT + 1)], f"SIZE over {READ_LIMIT} bytes needs --output FILE"),
        (
            ["upload", "/nonexistent/image.bin"],
            "Invalid value for 'PATH': File '/nonexistent/image.bin' does not exist.",
        ),
        (["upload", "PAYLOAD", "--name", ".hidden"], "upload name must not contain path separators or start with '.'"),
        (["upload", "PAYLOAD", "--name", "../x"], "upload name must not contain path separators or start with '.'"),
        (["upload", "PAYLOAD", "--name", "bidi\u202etxt.exe"], "must not contain a format character U+202E"),
        (["upload", "PAYLOAD", "--name", "trail "], "must not start or end with whitespace (U+0020)"),
        (["upload", "PAYLOAD", "--name=-rf"], "upload name must not start with '-' (U+002D)"),
        (["upload", "PAYLOAD", "--name", "x" * 256], "upload name must be at most 255 bytes in UTF-8, got 256"),
        (["combined-action", "soak", "11"], "Invalid value for 'LEVEL': 11 is not in the range 0<=x<=10."),
        (["combined-action", "soak", "1", "-s", "5"], "seconds: Input should be less than or equal to 2"),
        (["no-such-command"], "No such command 'no-such-command'."),
    ],
)
def test_bad_input_is_one_error_line(custom, payload, args, message):
    """Bad input to each `j custom` command exits 2 with one `Error:` line that says why, never a traceback."""
    bad_input(custom, [str(payload) if arg == "PAYLOAD" else arg for arg in args], 2, message)


def test_upload_of_a_pipe_is_one_error_line(custom, tmp_path):
    """`upload` of a FIFO (no size to announce) exits 2 with one `Error:` line."""
    os.mkfifo(tmp_path / "image.fifo")
    bad_input(
        custom, ["upload", str(tmp_path / "image.fifo")], 2, "is not a regular file: an upload needs to know its size"
    )


def test_random_to_a_missing_directory_is_one_error_line(custom, tmp_path):
    """`random -o` into a directory that does not exist exits 1 with one `Error:` line naming the file."""
    target = tmp_path / "missing" / "random.bin"
    bad_input(
        custom, ["random", "10", "-o", str(target)], 1, f"Could not open file '{target}': No such file or directory"
    )


def test_upload_over_the_free_space_is_one_error_line(custom, payload, tmp_path, monkeypatch):
    """An upload the exporter's disk cannot hold exits 1 (the exporter's state, not bad input), one `Error:` line."""
    disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=3))
    message = f"not enough space in {tmp_path / 'uploads'} for 'payload.bin': 7 bytes announced, 3 free"
    bad_input(custom, ["upload", str(payload)], 1, message)


def test_upload_disabled_is_one_error_line(payload):
    """`upload` to a driver without upload_dir exits 1 with one `Error:` line saying how to enable it."""
    with serve(ExampleCustom(device_id="bench-01")) as custom:
        bad_input(custom, ["upload", str(payload)], 1, "uploads are disabled: set upload_dir")


# Client methods


def test_combined_action_returns_status(custom):
    """combined_action returns a typed State."""
    assert custom.combined_action("x", 2) == State.model_validate(
        {"device_id": "bench-01", "settings": {"label": "x", "level": 2}, "active_tasks": 0, "open_streams": 0}
    )


def test_read_random_limits(custom, tmp_path):
    """read_random refuses sizes it would have to hold in memory or that are not integers; 0 bytes is empty."""
    assert custom.read_random(0) == b""
    for size in (1 << 30, -1, 2.5, True):
        with pytest.raises(ValueError, match="size must be an integer from 0 to"):
            custom.read_random(size)
    with pytest.raises(ValueError, match="size must not be negative, got -1"):
        custom.save_random(tmp_path / "out", -1)
    assert not (tmp_path / "out").exists()


@dataclass(kw_only=True, config=CONFIG)
class CorruptingCustom(ExampleCustom):
    """A driver that reports a different hash than it received."""

    async def _store(self, stream, target, size) -> UploadResult:
        result = await super()._store(stream, target, size)
        return result.model_copy(update={"sha256": "0" * 64})


def test_upload_detects_mismatch(tmp_path):
    """The client compares size and sha256 with the local file and fails loudly on a mismatch."""
    source = tmp_path / "image"
    source.write_bytes(b"data")
    driver = CorruptingCustom(device_id="x", upload_dir=str(tmp_path / "up"))
    with serve(driver) as client, pytest.raises(DriverError, match="does not match: sent 4 bytes"):
        client.upload(source)
