# mypy: allow-untyped-defs
"""PowerSupplyInterface conformance: the same client-level tests against every implementation.

Add an implementation to `IMPLEMENTATIONS` and it must pass them all: that is what lets one client,
one board and one set of hardware tests work with any of them.
"""

import math
from contextlib import contextmanager

import pytest
from jumpstarter.client.core import DriverInvalidArgument, DriverMethodNotImplemented
from jumpstarter.common.utils import serve

from .client import ExampleDeviceClient
from .common import Measurement
from .driver import ExampleDevice
from .interface import PowerSupplyInterface
from .model import ExampleDeviceModel
from .simulator import running


@contextmanager
def scpi_device():
    """ExampleDevice driving a simulator through pyvisa."""
    with running() as simulator, serve(ExampleDevice(resource=simulator.resource)) as client:
        yield client


@contextmanager
def in_memory_model():
    """ExampleDeviceModel: no wire at all."""
    with serve(ExampleDeviceModel()) as client:
        yield client


IMPLEMENTATIONS = {"scpi": scpi_device, "model": in_memory_model}
SUPPORTS_QUERY = {"scpi": True, "model": False}


@pytest.fixture(params=IMPLEMENTATIONS)
def supply(request):
    """A client of each implementation in turn."""
    with IMPLEMENTATIONS[request.param]() as client:
        client.implementation = request.param
        yield client


def test_every_implementation_shares_the_client():
    """Each implementation names the interface's client, and is an instance of the interface."""
    for driver in (ExampleDevice, ExampleDeviceModel):
        assert issubclass(driver, PowerSupplyInterface)
        assert driver.client() == "jumpstarter_driver_template.device.client.ExampleDeviceClient"


def test_client_class(supply):
    """The client built for every implementation is ExampleDeviceClient."""
    assert isinstance(supply, ExampleDeviceClient)


def test_identify(supply):
    """The identity has four comma-separated fields: maker, model, serial, firmware."""
    maker, model, _, _ = supply.identify().split(",")
    assert (maker, model) == ("Jumpstarter", "ExampleSupply")


def test_starts_safe(supply):
    """A new lease starts with the output off, measuring nothing."""
    assert supply.get_output() is False
    assert supply.measure() == Measurement(voltage=0.0, current=0.0)


def test_setpoint_and_output(supply):
    """The setpoint reads back, and reaches the output only while it is on (a 10 ohm load)."""
    supply.set_voltage(5)
    assert supply.get_voltage() == 5.0
    assert supply.measure() == Measurement(voltage=0.0, current=0.0)
    supply.set_output(True)
    assert supply.get_output() is True
    assert supply.measure() == Measurement(voltage=5.0, current=0.5)
    supply.set_output(False)
    assert supply.measure().voltage == 0.0


def test_measure_stream(supply):
    """The stream yields `count` measurements, and ends."""
    supply.set_voltage(2)
    supply.set_output(True)
    assert list(supply.measure_stream(3, 0)) == [Measurement(voltage=2.0, current=0.2)] * 3
    assert supply.state().streams == 0


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("set_voltage", [31], "volts: Input should be less than or equal to 30"),
        ("set_voltage", [-1], "volts: Input should be greater than or equal to 0"),
        ("set_voltage", ["high"], "volts: Input should be a valid number"),
        ("measure_stream", [0, 0], "count: Input should be greater than or equal to 1"),
        ("measure_stream", [1, 61], "interval: Input should be less than or equal to 60"),
        ("query", ["VOLT?\nVOLT 30"], "command: String should match pattern"),
        ("query", ["x" * 201], "command: String should have at most 200 characters"),
    ],
)
def test_bad_arguments_are_invalid_argument(supply, method, args, message):
    """Every implementation refuses the same bad arguments, naming them, before anything else happens."""
    with pytest.raises(DriverInvalidArgument, match=message):
        if method == "measure_stream":
            list(supply.streamingcall(method, *args))
        else:
            supply.call(method, *args)


def test_nan_is_refused_by_the_client(supply):
    """NaN would reach the driver as None: the client refuses it first, saying what is wrong."""
    with pytest.raises(ValueError, match="volts must be a finite number, got nan"):
        supply.set_voltage(math.nan)


def test_query_is_supported_or_unimplemented(supply):
    """`query` needs a line protocol: the SCPI instrument answers, the model says UNIMPLEMENTED."""
    if SUPPORTS_QUERY[supply.implementation]:
        assert supply.query("*OPC?") == "1"
    else:
        with pytest.raises(DriverMethodNotImplemented, match="has no line protocol"):
            supply.query("*OPC?")
