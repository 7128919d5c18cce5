# mypy: allow-untyped-defs
"""Client behaviour and the exact output of every `j power` / `j custom` command."""

import hashlib
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from jumpstarter.client.core import DriverError, DriverInvalidArgument
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


def test_cli_driver_errors_reach_the_user(custom):
    """A value the driver refuses (over max_seconds) surfaces as INVALID_ARGUMENT with the driver's message."""
    result = CliRunner().invoke(custom.cli(), ["slow-task", "5"])
    assert isinstance(result.exception, DriverInvalidArgument)
    assert "seconds must be between 0 and 2.0, got 5.0" in str(result.exception)


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
