# mypy: allow-untyped-defs
"""ExampleDevice against the simulator through a real gRPC session (`serve()`): normal use, faults, lifecycle."""

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress

import pytest
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from pydantic import ValidationError

from .common import ANSWER_MAX, DeviceState, Measurement
from .driver import ExampleDevice
from .simulator import IDN, running


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
    """ExampleDevice configured for the simulator, with a short answer timeout."""
    return ExampleDevice(host=simulator.host, port=simulator.port, timeout=0.5)


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


def test_calls_share_one_connection(device, simulator):
    """Many calls, one connection to the device, opened on first use."""
    for _ in range(5):
        device.measure()
    assert device.state() == DeviceState(address=simulator.address, connected=True, streams=0)
    assert simulator.connections == 1


def test_device_not_listening_names_the_address():
    """No device at the address: a device error naming it (the exporter still starts: reset() only logs)."""
    port = free_port()
    with serve(ExampleDevice(host="127.0.0.1", port=port)) as device, pytest.raises(DriverError) as error:
        device.identify()
    assert str(error.value).endswith(f"cannot connect to 127.0.0.1:{port}: Connection refused")


def test_slow_answer_is_deadline_exceeded_and_the_next_call_gets_its_own_answer(device, simulator):
    """A late answer fails the call with DEADLINE_EXCEEDED; it is never taken for the next call's answer."""
    device.set_voltage(7)
    simulator.faults.slow = 1
    with pytest.raises(DriverError, match=r"DEADLINE_EXCEEDED: 127\.0\.0\.1:\d+ did not answer 'VOLT\?' within 0.5 s"):
        device.get_voltage()
    assert device.identify() == IDN  # not "7.000", the late answer to VOLT?


def test_other_calls_are_served_while_the_device_is_slow(device, simulator):
    """A slow device holds its own calls, not the exporter: a call that needs no exchange answers meanwhile."""
    simulator.faults.slow = 1
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(device.get_voltage)
        wait_for(lambda: simulator.commands == 2, "the slow command reached the device")  # 1: reset()'s OUTP OFF
        assert device.state().streams == 0
        with pytest.raises(DriverError, match="DEADLINE_EXCEEDED"):
            slow.result(timeout=10)


def test_garbage_answer_is_a_device_error_not_invalid_argument(device, simulator):
    """An answer that does not parse is the device's fault: UNKNOWN, never INVALID_ARGUMENT."""
    for call in (device.get_voltage, device.measure, device.identify, device.get_output):
        simulator.faults.garbage = 1
        with pytest.raises(DriverError, match=r"127\.0\.0\.1:\d+ answered .* with '.*garbled', expected"):
            try:
                call()
            except DriverInvalidArgument:
                pytest.fail(f"{call.__name__}: garbage from the device reached the client as INVALID_ARGUMENT")
    assert device.identify() == IDN


def test_connection_dropped_mid_call_then_the_next_call_reconnects(device, simulator):
    """The device hangs up on a command: that call fails, the next one connects again and works."""
    device.identify()
    simulator.faults.drop = 1
    with pytest.raises(DriverError, match=r"127\.0\.0\.1:\d+ closed the connection"):
        device.measure()
    assert device.identify() == IDN


def test_device_restarted_between_calls_is_reconnected_transparently(simulator):
    """The device closed the idle connection (it restarted): the next call notices before sending and reconnects."""
    port = simulator.port
    simulator.stop()
    with running(port=port) as first, serve(ExampleDevice(host="127.0.0.1", port=port)) as device:
        device.set_voltage(3)
        first.stop()
        wait_for(lambda: not device.state().connected, "the driver seeing the connection closed")
        with running(port=port) as second:
            assert device.get_voltage() == 0.0  # a new instrument answers
            assert second.connections == 1


def test_concurrent_clients_never_read_each_others_answers(device, simulator):
    """Many threads at once, each checking that every answer is its own: the lock keeps exchanges whole."""
    simulator.faults.latency = 0.001  # answers take time, so exchanges would overlap without the lock

    def client(name: int) -> list[str]:
        wrong = []
        for i in range(25):
            token = f"client-{name}-{i}"
            if (answer := device.query(f"ECHO {token}")) != token:
                wrong.append(f"{token} got {answer}")
        return wrong

    with ThreadPoolExecutor(8) as pool:
        assert [problem for problems in pool.map(client, range(8)) for problem in problems] == []
    assert simulator.connections == 1


def test_client_leaving_mid_call_drops_the_connection(device, simulator):
    """A client that leaves while the device is answering (Ctrl-C): the late answer is not read by the next call."""
    device.set_voltage(9)
    simulator.faults.slow, simulator.faults.slow_seconds = 1, 0.5
    call = device.portal.start_task_soon(device.call_async, "get_voltage")
    wait_for(lambda: simulator.commands == 3, "the slow command reached the device")
    call.cancel()
    assert device.identify() == IDN  # not "9.000", which the device sends 0.5 s after VOLT?


def test_client_leaving_mid_connect_leaves_no_socket_behind(driver, simulator, monkeypatch):
    """A call cancelled the way gRPC cancels it (asyncio's own cancel) while connecting keeps the new connection."""
    connecting, release = threading.Event(), threading.Event()
    connect = socket.create_connection

    def slow_connect(*args, **kwargs):
        connecting.set()
        release.wait(10)
        return connect(*args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", slow_connect)

    async def leave_mid_connect() -> DeviceState:
        call = asyncio.ensure_future(driver.identify())
        await asyncio.to_thread(connecting.wait, 10)
        call.cancel()  # delivered while the worker thread is still connecting
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await call
        return await driver.state()

    assert asyncio.run(leave_mid_connect()).connected  # the socket was kept, not orphaned
    simulator.wait_connections(1)
    driver.close()


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


def test_reset_switches_the_output_off_and_releases_the_connection(driver, simulator):
    """reset() (a new lease) leaves the output off and the connection closed; the next call opens a new one."""
    with serve(driver) as device:
        device.set_voltage(12)
        device.set_output(True)
        device.portal.call(driver.reset)  # on the exporter's event loop thread, as the exporter calls it
        assert simulator.instrument.output is False
        assert device.state().connected is False
        simulator.wait_connections(0)
        assert device.get_voltage() == 12.0


def test_close_switches_the_output_off_and_releases_the_connection(driver, simulator):
    """close() (the lease ends) leaves the output off and no connection open."""
    with serve(driver) as device:
        device.set_output(True)
        device.console().__enter__()  # a console left open: the lease's end closes it too
    assert simulator.instrument.output is False
    simulator.wait_connections(0)


def test_close_never_raises_when_the_device_is_gone(driver, simulator, caplog):
    """An unreachable device at the lease's end is logged, not raised: the exporter goes on closing other drivers."""
    with serve(driver) as device:
        device.identify()
        simulator.stop()
    driver.close()  # a second close (a `ref:` entry does that) is harmless too
    assert "lease end: could not switch the output of" in caplog.text


def test_close_is_bounded_when_the_device_hangs(driver, simulator, caplog):
    """A device that never answers OUTP OFF holds close() for `timeout` only, and the reason is logged."""
    with serve(driver) as device:
        device.identify()
        simulator.faults.slow, simulator.faults.slow_seconds, simulator.faults.only = 1, 3600, "OUTP OFF"
    assert "lease end: could not switch the output of" in caplog.text
    assert "no answer to 'OUTP OFF' within 0.5 s" in caplog.text


def test_console_exchanges_raw_lines(device, simulator):
    """The raw console is a byte stream on a connection of its own; leaving it closes that connection."""
    device.identify()
    simulator.wait_connections(1)
    with device.console() as console:
        assert console.exchange("*IDN?") == IDN
        assert console.exchange("VOLT 2") == "OK"
        assert console.exchange("NOPE") == "ERR unknown command: NOPE"
        assert simulator.connections == 2
    assert device.get_voltage() == 2.0
    simulator.wait_connections(1)


def test_console_refuses_an_answer_longer_than_answer_max():
    """An answer line longer than ANSWER_MAX is a device error, for the driver and the console alike."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        connections: list[socket.socket] = []

        def answer_too_long() -> None:  # the first line of every connection (the driver's own, the console's)
            with suppress(OSError):
                while True:
                    connections.append(server.accept()[0])
                    connections[-1].makefile("rb").readline()
                    connections[-1].sendall(b"x" * (ANSWER_MAX + 1) + b"\n")

        threading.Thread(target=answer_too_long, daemon=True).start()
        device = ExampleDevice(host="127.0.0.1", port=server.getsockname()[1], timeout=0.5)
        too_long = pytest.raises(ConnectionError, match=f"is longer than {ANSWER_MAX} bytes")
        with serve(device) as client:
            with pytest.raises(DriverError, match=f"sent a line longer than {ANSWER_MAX} bytes"):
                client.identify()
            with client.console() as console, too_long:
                console.exchange("*IDN?")
        for connection in connections:
            connection.close()


def test_console_to_an_unreachable_device_names_the_address():
    """Opening the console fails on the client with the driver's reason."""
    port = free_port()
    with serve(ExampleDevice(host="127.0.0.1", port=port)) as device, pytest.raises(ConnectionError) as error:
        device.console().__enter__()
    assert str(error.value).startswith("the console did not open: ")
    assert f"cannot connect to 127.0.0.1:{port}" in str(error.value)


def test_simulator_option_runs_a_simulator_for_the_driver_lifetime():
    """`simulator: true` starts a simulator on a free port; close() stops it."""
    driver = ExampleDevice(simulator=True)
    with serve(driver) as device:
        assert device.identify() == IDN
        address = device.state().address
    host, _, port = address.rpartition(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)
    assert not [t for t in threading.enumerate() if t.name.startswith("simulator")]


@pytest.mark.parametrize(
    ("config", "problem"),
    [
        ({"host": "127.0.0.1"}, "host and port: both required"),
        ({"simulator": True, "port": 5025}, "simulator: true starts its own instrument"),
        ({"host": "127.0.0.1", "port": 0}, "port\n  Input should be greater than or equal to 1"),
        ({"host": "127.0.0.1", "port": 5025, "timeout": 0}, "timeout\n  Input should be greater than 0"),
        ({"host": "127.0.0.1", "port": 5025, "max_voltage": 31}, "max_voltage\n  Input should be less than or equal"),
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
    limited = ExampleDevice(host=simulator.host, port=simulator.port, max_voltage=5)
    message = "volts: 6 V is above this bench's max_voltage of 5 V"
    with serve(limited) as device, pytest.raises(DriverInvalidArgument, match=message):
        device.set_voltage(6)
    assert simulator.instrument.voltage == 0.0
