# mypy: allow-untyped-defs
"""Jumpstarter 0.9 behaviours the device driver is built around (docs/device.md), each pinned by a test.

If one of these fails after a Jumpstarter upgrade, the behaviour changed: revisit the driver code and
the docs that rely on it.
"""

import math
import threading
from collections.abc import AsyncGenerator

import anyio
import pytest
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from pydantic import BaseModel

from .driver import ExampleDevice
from .simulator import running


class Reading(BaseModel):
    """A device answer, parsed."""

    volts: float


class Probe(Driver):
    """A bare driver that shows what Jumpstarter itself does."""

    seen: list = []  # noqa: RUF012

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    @export
    async def echo(self, value: object) -> str:
        return repr(value)

    @export
    async def parse_without_converting(self, answer: str) -> float:
        return Reading.model_validate({"volts": answer}).volts

    @export
    async def silent_timeout(self) -> None:
        raise TimeoutError()

    @export
    async def failing_stream(self) -> AsyncGenerator[int, None]:
        yield 1
        raise RuntimeError("the device said no")

    def reset(self) -> None:
        self.seen.append((threading.current_thread().name, _refuses(anyio.from_thread.run), _refuses(anyio.run)))


def _refuses(run) -> bool:
    """Whether `run(coroutine function)` raises RuntimeError here."""
    try:
        run(anyio.sleep, 0)
    except RuntimeError:
        return True
    return False


@pytest.fixture
def probe():
    """The bare driver, served."""
    with serve(Probe()) as client:
        yield client


@pytest.fixture
def slow_device():
    """ExampleDevice on a simulator whose next answer is late (timeout 0.3 s)."""
    with running() as simulator, serve(ExampleDevice(resource=simulator.resource, timeout=0.3)) as device:
        simulator.faults.slow = 1
        yield device


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_arrive_as_none(probe, value):
    """Arguments cross as JSON: NaN and infinity become null, so the driver sees None."""
    assert probe.call("echo", value) == "None"


def test_nan_reaches_a_validated_driver_as_none():
    """Hence our driver's message for a NaN says None; the client checks first (ExampleDeviceClient.set_voltage)."""
    message = r"volts: Input should be a valid number \(got None\)"
    with (
        running() as simulator,
        serve(ExampleDevice(resource=simulator.resource)) as device,
        pytest.raises(DriverInvalidArgument, match=message),
    ):
        device.call("set_voltage", math.nan)


def test_errors_of_a_streaming_call_arrive_as_bare_details(probe):
    """A unary call's error text says which call and which status; a streaming call's is the driver's message only."""
    with pytest.raises(DriverError) as error:
        list(probe.streamingcall("failing_stream"))
    assert str(error.value) == "the device said no"


def test_timeout_of_a_streaming_call_carries_the_raw_grpc_error(slow_device):
    """DEADLINE_EXCEEDED in a stream: the message, then "(Caused by: <AioRpcError ...>)" over several lines."""
    with pytest.raises(DriverError) as error:
        list(slow_device.measure_stream(2, 0))
    text = str(error.value)
    assert text.startswith("TCPIP::") and " did not answer 'MEAS:VOLT?' within 0.3 s (Caused by: <AioRpcError" in text
    assert "status = StatusCode.DEADLINE_EXCEEDED" in text


def test_timeout_of_a_unary_call_names_the_call_and_status(slow_device):
    """DEADLINE_EXCEEDED in a unary call: "DriverCall 'x' failed with gRPC DEADLINE_EXCEEDED: ... (Caused by: ...)"."""
    with pytest.raises(DriverError) as error:
        slow_device.get_voltage()
    assert str(error.value).startswith("DriverCall 'get_voltage' failed with gRPC DEADLINE_EXCEEDED: TCPIP::")
    assert "(Caused by: <AioRpcError" in str(error.value)


def test_timeout_without_a_message_shows_no_details(probe):
    """A TimeoutError raised without a message reaches the client as "<no details>": always give one."""
    with pytest.raises(DriverError, match="DEADLINE_EXCEEDED: <no details>"):
        probe.call("silent_timeout")


def test_validation_error_is_a_value_error_hence_invalid_argument(probe):
    """A pydantic ValidationError raised while parsing a device's answer is a ValueError: INVALID_ARGUMENT.

    The client would be told its arguments were wrong; ExampleDevice converts such errors (`_number`, and
    `ScpiSession` a UnicodeDecodeError, which is one too).
    """
    with pytest.raises(DriverInvalidArgument, match="Input should be a valid number"):
        probe.call("parse_without_converting", "#?garbled")


def test_reset_runs_synchronously_on_the_event_loop_thread():
    """reset() (like close()) runs on the exporter's event loop thread: anyio.from_thread.run and anyio.run refuse."""
    Probe.seen.clear()
    with serve(Probe()):
        pass
    ((thread, from_thread_refuses, run_refuses),) = Probe.seen
    assert thread != threading.main_thread().name  # serve()'s event loop runs in a thread of its own
    assert from_thread_refuses and run_refuses  # not a worker thread; a loop already runs in this thread
