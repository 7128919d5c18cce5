# mypy: allow-untyped-defs
"""ExampleDevice against the simulator through a real gRPC session (`serve()`): normal use, faults, lifecycle."""

import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from pydantic import ValidationError

from .common import DeviceState, Measurement
from .driver import ExampleDevice
from .scpi import DeviceError
from .simulator import IDN, PROTECTION_MAX, running


def wait_for(condition, what: str, seconds: float = 10.0):
    """Poll `condition` until it is true; fail naming `what` after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} not reached within {seconds} s"
        time.sleep(0.01)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def simulator():
    """A simulated power supply on a free port."""
    with running() as simulator:
        yield simulator


@pytest.fixture
def driver(simulator):
    """ExampleDevice configured for the simulator, with a short answer timeout and a 24 V bench limit."""
    return ExampleDevice(resource=simulator.resource, timeout=0.5, max_voltage=24)


@pytest.fixture
def device(driver):
    """The driver served over gRPC, as a client sees it."""
    with serve(driver) as client:
        yield client


def test_normal_use(device, simulator):
    """Identify, set the voltage, switch the output on, measure: every call answers from the instrument."""
    assert device.identify() == IDN
    device.set_voltage(12)
    device.set_output(True)
    assert device.get_voltage() == 12.0
    assert device.get_output() is True
    assert device.measure() == Measurement(voltage=12.0, current=1.2)
    assert (simulator.instrument.voltage, simulator.instrument.output) == (12.0, True)
    assert list(simulator.received)[-2:] == ["MEAS:VOLT?", "MEAS:CURR?"]


def test_settings_are_checked_through_the_error_queue(device, simulator):
    """A setting gets no answer: the driver reads SYST:ERR? after it, and leaves the queue empty."""
    device.set_voltage(5)
    assert list(simulator.received)[-2:] == ["VOLT 5.000", "SYST:ERR?"]
    assert not simulator.instrument.errors


def test_calls_share_one_session(device, simulator):
    """Many calls, one session (one connection) to the instrument."""
    for _ in range(5):
        device.measure()
    assert device.state() == DeviceState(address=simulator.resource, connected=True, streams=0)
    assert simulator.connections == 1


def test_device_not_listening_names_the_resource():
    """No instrument at the address: a device error naming it (the exporter still starts: reset() only logs)."""
    resource = f"TCPIP::127.0.0.1::{free_port()}::SOCKET"
    with serve(ExampleDevice(resource=resource)) as device, pytest.raises(DriverError) as error:
        device.identify()
    assert str(error.value).endswith(f"cannot connect to {resource}: Connection refused")


def test_slow_answer_is_deadline_exceeded_and_the_next_call_gets_its_own_answer(device, simulator):
    """A late answer fails the call with DEADLINE_EXCEEDED; it is never taken for the next call's answer."""
    device.set_voltage(7)
    simulator.faults.slow, simulator.faults.slow_seconds = 1, 1.0
    message = r"DEADLINE_EXCEEDED: TCPIP::127\.0\.0\.1::\d+::SOCKET did not answer 'VOLT\?'"
    with pytest.raises(DriverError, match=message):
        device.get_voltage()
    assert device.identify() == IDN  # not "7.000", the late answer to VOLT?


def test_other_calls_are_served_while_the_device_is_slow(device, simulator):
    """A slow device holds its own calls, not the exporter: a call that needs no exchange answers meanwhile."""
    simulator.faults.slow = 1
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(device.get_voltage)
        wait_for(lambda: "VOLT?" in simulator.received, "the slow command reached the device")
        assert device.state().streams == 0
        with pytest.raises(DriverError, match="DEADLINE_EXCEEDED"):
            slow.result(timeout=10)


def test_garbage_answer_is_a_device_error_not_invalid_argument(device, simulator):
    """An answer that does not parse is the device's fault: UNKNOWN, never INVALID_ARGUMENT."""
    for call in (device.get_voltage, device.measure, device.identify, device.get_output):
        simulator.faults.garbage = 1
        with pytest.raises(DriverError, match=r"TCPIP::127\.0\.0\.1::\d+::SOCKET answered .* with .*garbled"):
            try:
                call()
            except DriverInvalidArgument:
                pytest.fail(f"{call.__name__}: garbage from the device reached the client as INVALID_ARGUMENT")
    assert device.identify() == IDN


def test_connection_dropped_mid_call_then_the_next_call_reconnects(device, simulator):
    """The device hangs up on a command: that call fails saying so, the next one opens a new session and works."""
    device.identify()
    simulator.faults.drop = 1
    with pytest.raises(DriverError, match=r"closed the connection instead of answering 'MEAS:VOLT\?'"):
        device.measure()
    assert device.identify() == IDN


def test_device_restarted_between_calls_is_reconnected_transparently(simulator):
    """The device closed the idle session (it restarted): the next call notices before sending, reconnects, and
    programs the protection again (a restarted instrument forgot it)."""
    port = simulator.port
    simulator.stop()
    with running(port=port) as first, serve(ExampleDevice(resource=first.resource, max_voltage=12)) as device:
        device.set_voltage(3)
        first.stop()
        wait_for(lambda: not device.state().connected, "the driver seeing the connection closed")
        with running(port=port) as second:
            assert device.get_voltage() == 0.0  # a new instrument answers
            assert second.connections == 1
            assert second.instrument.protection == 12.0


def test_unasked_line_never_becomes_an_answer(device, simulator):
    """The instrument sends a line nobody asked for with an answer: that call fails, and no later caller ever gets
    the answer of an earlier one (without the check, each query would get the previous query's answer for good)."""
    device.set_voltage(5)
    simulator.faults.unasked = 1
    with pytest.raises(DriverError, match=r"sent more than one line in answer to 'VOLT\?'"):
        device.query("VOLT?")
    device.set_voltage(6)
    assert [device.query("VOLT?"), device.query("*IDN?"), device.query("OUTP?")] == ["6.000", IDN, "0"]


def test_unasked_lines_while_50_clients_call_at_once(device, simulator):
    """50 threads, each setting and reading back its own value in one line: every answer is the caller's own,
    while the instrument slips unasked lines in (those calls fail; none returns another caller's answer)."""
    simulator.faults.latency = 0.001  # answers take time, so exchanges would overlap without the lock

    def client(name: int) -> tuple[list[str], int]:
        wrong, failed = [], 0
        for i in range(6):
            volts = f"{(name * 6 + i) / 100:.3f}"
            if name == 0 and i == 2:
                simulator.faults.unasked = 5
            try:
                answer = device.query(f"VOLT {volts};VOLT?")
            except DriverError as e:
                assert "sent more than one line" in str(e)
                failed += 1
                continue
            if answer != volts:
                wrong.append(f"{volts} got {answer}")
        return wrong, failed

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(client, range(50)))
    assert [problem for wrong, _ in results for problem in wrong] == []
    assert sum(failed for _, failed in results) == 5
    assert simulator.faults.unasked == 0


def test_client_leaving_mid_call_does_not_shift_the_answers(device, simulator):
    """A client that leaves while the device is answering (Ctrl-C): the late answer is not read by the next call."""
    device.set_voltage(9)
    simulator.faults.slow, simulator.faults.slow_seconds = 1, 0.3
    call = device.portal.start_task_soon(device.call_async, "get_voltage")
    wait_for(lambda: "VOLT?" in simulator.received, "the slow command reached the device")
    call.cancel()
    assert device.identify() == IDN  # not "9.000", which the device sends 0.3 s after VOLT?


def test_measure_stream(device):
    """The streaming call yields one measurement per reading."""
    device.set_voltage(5)
    device.set_output(True)
    assert list(device.measure_stream(3, 0)) == [Measurement(voltage=5.0, current=0.5)] * 3


def test_measure_stream_stops_when_the_client_leaves(device):
    """A client that stops reading ends the driver's stream (no more exchanges with the device)."""
    for _ in device.measure_stream(10_000, 0.05):
        assert device.state().streams == 1
        break
    wait_for(lambda: device.state().streams == 0, "the stream ended on the driver")


def test_reset_resets_the_instrument_and_programs_its_protection(driver, simulator):
    """reset() (a new lease): *RST (output off, 0 V), *CLS (no old errors), protection at max_voltage."""
    with serve(driver) as device:
        device.set_voltage(12)
        device.set_output(True)
        simulator.instrument.error(-113, "Undefined header")  # left by someone else
        simulator.instrument.protection = PROTECTION_MAX
        device.portal.call(driver.reset)  # on the exporter's event loop thread, as the exporter calls it
        instrument = simulator.instrument
        assert (instrument.output, instrument.voltage, instrument.protection) == (False, 0.0, 24.0)
        assert not instrument.errors
        assert device.get_voltage() == 0.0


def test_a_second_reset_without_calls_between_does_nothing(driver, simulator):
    """A `ref:` passes the lease's start on twice: the instrument is reset once (a silent one costs timeouts)."""
    with serve(driver) as device:
        device.portal.call(driver.reset)  # serve() reset it already: nothing happened since
        assert list(simulator.received).count("*RST;*CLS") == 1
        device.identify()
        device.portal.call(driver.reset)  # after a call, a reset is a reset again
        assert list(simulator.received).count("*RST;*CLS") == 2


def test_close_switches_the_output_off_and_releases_the_connection(driver, simulator):
    """close() (the lease ends) leaves the output off and no connection open."""
    with serve(driver) as device:
        device.set_output(True)
        device.console().__enter__()  # a console left open: the lease's end closes it too
    assert simulator.instrument.output is False
    simulator.wait_connections(0)


def test_closing_one_driver_leaves_another_instruments_session_alone(simulator):
    """Two instruments in one exporter (the example config has two supplies): pyvisa shares one resource manager
    per process, so a driver's close() closes its own session only, never the manager under the other's."""
    with running() as other, serve(ExampleDevice(resource=other.resource)) as second:
        with serve(ExampleDevice(resource=simulator.resource)) as first:
            assert first.identify() == IDN
        assert second.identify() == IDN
        assert other.connections == 1  # the same session as before


def test_close_never_raises_when_the_device_is_gone(driver, simulator, caplog):
    """An unreachable device at the lease's end is logged, not raised: the exporter goes on closing other drivers."""
    with serve(driver) as device:
        device.identify()
        simulator.stop()
    driver.close()  # a second close (a `ref:` entry does that) is harmless too
    assert "lease end: could not make TCPIP::127.0.0.1::" in caplog.text


def test_close_is_bounded_when_the_device_hangs(driver, simulator, caplog):
    """A device that never gets past OUTP OFF holds close() for `timeout` only, and the reason is logged."""
    with serve(driver) as device:
        device.identify()
        simulator.faults.slow, simulator.faults.slow_seconds, simulator.faults.only = 1, 3600, "OUTP OFF"
    assert "lease end: could not make" in caplog.text
    assert "did not answer 'SYST:ERR?' within 0.5 s" in caplog.text


def test_max_voltage_holds_through_query(device, simulator):
    """`query` cannot set more than max_voltage: the instrument refuses (its protection), and the driver refuses
    what would lift the protection itself."""
    assert simulator.instrument.protection == 24.0
    with pytest.raises(DriverError, match=r"refused 'VOLT 30': -222,'Data out of range;above the over-voltage"):
        device.query("VOLT 30")
    for command in ("VOLT:PROT 30", "*RST", "VOLT 1;:SOUR:VOLT:PROT:LEV MAX"):
        with pytest.raises(DriverInvalidArgument, match="would change the over-voltage protection"):
            device.query(command)
    assert (simulator.instrument.voltage, simulator.instrument.protection) == (0.0, 24.0)
    assert device.query("VOLT:PROT?") == "24.000"


def test_max_voltage_holds_through_the_console(device, simulator, caplog):
    """The raw console reaches the same protection; a line that would lift it closes the console unsent."""
    with device.console() as console:
        assert console.exchange("VOLT 30") is None
        assert console.exchange("SYST:ERR?").startswith('-222,"Data out of range;above the over-voltage')
        assert console.exchange("VOLT?") == "0.000"
        with pytest.raises(ValueError, match="VOLT:PROT would change the over-voltage protection"):
            console.exchange("VOLT:PROT 30")  # refused by the client already
    # A client that sends it anyway (no LineConsole): the driver does not pass it on, and closes the console.
    with device.portal.wrap_async_context_manager(device.stream_async("console")) as stream:
        device.portal.call(stream.send, b"VOLT:PROT 30\nVOLT 30\n")
        wait_for(lambda: "console: refused VOLT:PROT" in caplog.text, "the driver refusing the line")
    assert (simulator.instrument.voltage, simulator.instrument.protection) == (0.0, 24.0)


def test_device_error_carries_the_instruments_code_and_text(driver, simulator):
    """A refused setting raises DeviceError with the instrument's own error code and text, for code that calls the
    driver in-process (a parent driver, a test); clients get its message."""

    async def refused() -> None:
        await driver.query("VOLT 31")

    with pytest.raises(DeviceError) as error:
        anyio.run(refused)
    assert (error.value.code, error.value.text) == (-222, "Data out of range;31 V is outside 0 to 30 V")
    driver.close()


def test_query_without_an_answer_reports_the_instruments_error(device):
    """A query the instrument refuses sends no answer: after the timeout, the error queue says why."""
    with pytest.raises(DriverError, match=r"refused 'FLY\?': -113,'Undefined header'"):
        device.query("FLY?")
    assert device.query("SYST:ERR?") == '0,"No error"'


def test_console_exchanges_raw_lines(device, simulator):
    """The raw console is a byte stream on a connection of its own; leaving it closes that connection."""
    device.identify()
    simulator.wait_connections(1)
    with device.console() as console:
        assert console.exchange("*IDN?") == IDN
        assert console.exchange("VOLT 2") is None  # a setting: no answer
        assert console.exchange("NOPE") is None
        assert console.exchange("SYST:ERR?") == '-113,"Undefined header"'
        assert simulator.connections == 2
    assert device.get_voltage() == 2.0
    simulator.wait_connections(1)


def test_console_to_an_unreachable_device_names_the_resource():
    """Opening the console fails on the client with the driver's reason."""
    port = free_port()
    resource = f"TCPIP::127.0.0.1::{port}::SOCKET"
    with serve(ExampleDevice(resource=resource)) as device, pytest.raises(ConnectionError) as error:
        device.console().__enter__()
    assert str(error.value).startswith("the console did not open: ")
    assert f"cannot connect to {resource}" in str(error.value)


def test_simulator_option_runs_a_simulator_for_the_driver_lifetime():
    """`simulator: true` starts a simulator on a free port; close() stops it."""
    driver = ExampleDevice(simulator=True)
    with serve(driver) as device:
        assert device.identify() == IDN
        resource = device.state().address
    port = int(resource.split("::")[2])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("simulator")]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"timeout": 1}, "resource: required (the instrument's VISA resource string)"),
        ({"simulator": True, "resource": "TCPIP::h::5025::SOCKET"}, "simulator: true starts its own instrument"),
        ({"resource": "TCPIP::h::SOCKET"}, "Could not parse 'TCPIP::h::SOCKET'"),
        ({"resource": "TCPIP::h::5025::SOCKET", "timeout": 0}, "timeout\n  Input should be greater than 0"),
        ({"resource": "TCPIP::h::5025::SOCKET", "max_voltage": 31}, "max_voltage\n  Input should be less than"),
        ({"simulator": True, "timeuot": 1}, "timeuot\n  Unexpected keyword argument"),
    ],
)
def test_config_errors_name_the_problem(config, problem):
    """Exporter config errors fail when the exporter builds the driver, naming the key."""
    instance = {"type": "jumpstarter_driver_template.device.driver.ExampleDevice", "config": config}
    with pytest.raises(ValidationError, match="ExampleDevice") as error:
        ExporterConfigV1Alpha1DriverInstance.model_validate(instance).instantiate()
    assert problem in str(error.value)
    assert not [t for t in threading.enumerate() if t.name.startswith("simulator")]  # none started


def test_bench_limit_is_invalid_argument(simulator):
    """max_voltage (config) bounds set_voltage: above it is the caller's mistake, INVALID_ARGUMENT, and not sent."""
    limited = ExampleDevice(resource=simulator.resource, max_voltage=5)
    message = "volts: 6 V is above this bench's max_voltage of 5 V"
    with serve(limited) as device, pytest.raises(DriverInvalidArgument, match=message):
        device.set_voltage(6)
    assert simulator.instrument.voltage == 0.0
