# mypy: allow-untyped-defs
"""Upstream's PySerial tests (jumpstarter-driver-pyserial 0.9) that apply to any console, with only the driver swapped.

They serve `PySerial(url="loop://")`, a port that echoes what it is sent; here that is ExampleConsole with `cat`
as its tool. Not imported, because they test PySerial's internals rather than its contract with the client:
`cps` throttling (`ThrottledStream`; its receive-per-character tests need a port that hands bytes out one by one),
HUPCL (termios of a serial port), and close() of the asyncio serial transport (`_transport`), which PySerial
exports and ExampleConsole does not (no client method calls it; the session calls it when a lease ends).
"""

import pytest
from jumpstarter.common.utils import serve
from jumpstarter_driver_pyserial import driver_test as upstream

# Collected here: pytest runs them in this module, with this module's fixtures.
from jumpstarter_driver_pyserial.cli_test import (  # noqa: F401
    test_cli_base_command,
    test_pipe_command_append_requires_output,
    test_pipe_command_input_and_no_input_conflict,
    test_pipe_command_keyboard_interrupt_handling,
    test_pipe_command_mode_descriptions,
    test_pipe_command_no_auto_detection_with_no_input_flag,
    test_pipe_command_no_output_conflict_with_append,
    test_pipe_command_no_output_conflict_with_output,
    test_pipe_command_no_output_requires_input,
    test_pipe_command_status_messages,
    test_pipe_command_stdin_auto_detection,
    test_pipe_command_with_append,
    test_pipe_command_with_file_and_input,
    test_pipe_command_with_input_flag,
    test_pipe_command_with_no_input_flag,
    test_pipe_command_with_no_output_flag,
    test_pipe_command_with_output_file,
    test_serial_to_output_broken_resource_with_file,
    test_serial_to_output_end_of_stream_with_file,
    test_serial_to_output_handles_broken_resource,
    test_serial_to_output_handles_end_of_stream,
    test_serial_to_output_receives_data_then_end_of_stream,
    test_start_console_command_structure,
)
from jumpstarter_driver_pyserial.driver_test import (  # noqa: F401
    test_bare_open_pyserial,
    test_bare_pyserial,
    test_can_open_not_present,
    test_no_cps_throttling,
    test_pexpect_context_pyserial,
    test_pexpect_open_pyserial,
    test_pexpect_open_pyserial_forget_close,
)

from .driver import ExampleConsole

# Upstream's CLI tests use click's isolated_filesystem(), which click 8.2 deprecates.
pytestmark = pytest.mark.filterwarnings("ignore:'isolated_filesystem' is deprecated:DeprecationWarning")


def console_for(url: str, **_serial_options: object) -> ExampleConsole:
    """What upstream's tests build as `PySerial(url=...)`: loop:// is a console that echoes; a path, a missing tool."""
    return ExampleConsole(command=["cat"] if url == "loop://" else [url])


@pytest.fixture(autouse=True)
def _swap_the_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one change to upstream's driver tests: the driver they serve."""
    monkeypatch.setattr(upstream, "PySerial", console_for)


@pytest.fixture
def pyserial_client():
    """Upstream's CLI tests' fixture, serving ExampleConsole instead of PySerial(url="loop://")."""
    with serve(console_for("loop://")) as client:
        yield client


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
