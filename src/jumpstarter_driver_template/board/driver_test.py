# mypy: allow-untyped-defs
"""ExampleBoard as the exporter builds it: a tree from YAML, served in-process, its children and its workflow."""

import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import pytest
from click.testing import CliRunner
from jumpstarter.client.core import DriverError, DriverMethodNotImplemented
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from jumpstarter_driver_power.client import PowerClient
from jumpstarter_driver_power.common import PowerReading
from pydantic import ValidationError

from ..device.client import ExampleDeviceClient
from ..device.driver import ExampleDevice
from ..device.model import ExampleDeviceModel
from ..device.simulator import IDN, running
from .client import ExampleBoardClient
from .driver import ExampleBoard

# The `export:` section of an exporter config (a bare `children:` block is a Composite), as the exporter reads it.
TREE = """
children:
  board:
    type: jumpstarter_driver_template.board.driver.ExampleBoard
    config:
      off_seconds: 0
      ready_timeout: 5
    children:
      device:
        {device}
{extra_children}
  psu:
    ref: board.device
"""
MODEL = "type: jumpstarter_driver_template.device.model.ExampleDeviceModel"
MOCK_POWER = "jumpstarter_driver_power.driver.MockPower"


def on_port(port: int, timeout: float = 0.5) -> str:
    """The board's `device:` entry: ExampleDevice on the simulator at `port`."""
    resource = f"'TCPIP::127.0.0.1::{port}::SOCKET'"
    return f"{{type: {ExampleDevice.__module__}.ExampleDevice, config: {{resource: {resource}, timeout: {timeout}}}}}"


def tree(device: str, extra_children: str = ""):
    """The driver tree of TREE, built as the exporter builds it."""
    text = TREE.format(device=device, extra_children=extra_children)
    return ExporterConfigV1Alpha1DriverInstance.from_str(text).instantiate()


@pytest.fixture
def simulator():
    """The bench's power supply, simulated."""
    with running() as simulator:
        yield simulator


@pytest.fixture
def root(simulator):
    """The driver tree (the exporter's root), not served yet."""
    return tree(on_port(simulator.port))


@pytest.fixture
def client(root):
    """The tree served over gRPC: `client.board`, `client.psu`."""
    with serve(root) as client:
        yield client


def test_tree_has_the_declared_and_the_built_children(client):
    """The board's children are the declared supply and the power switch the board built, each with its client."""
    assert isinstance(client.board, ExampleBoardClient)
    assert sorted(client.board.children) == ["device", "power"]
    assert isinstance(client.board.device, ExampleDeviceClient)
    assert isinstance(client.board.power, PowerClient)  # upstream's client, no code of ours


def test_power_switches_the_supply_output_over_its_one_connection(client, simulator):
    """`power` (upstream's PowerClient) switches the supply's output through the supply's own connection."""
    client.board.device.set_voltage(5)
    client.board.power.on()
    assert client.board.device.get_output() is True
    assert list(client.board.power.read()) == [PowerReading(voltage=5.0, current=0.5)]
    client.board.power.off()
    assert simulator.instrument.output is False
    assert simulator.connections == 1


def test_ref_is_the_same_driver_under_another_name(client, simulator):
    """`psu: {ref: board.device}` is a client of the same driver: same uuid, same instrument, same connection."""
    assert isinstance(client.psu, ExampleDeviceClient)
    assert client.psu.uuid == client.board.device.uuid
    client.psu.set_voltage(7)
    assert client.board.device.get_voltage() == 7.0
    assert simulator.connections == 1


def test_power_cycle_returns_the_identity(client, simulator):
    """power_cycle: off, on, then the device's answer to *IDN?; the output is on afterwards."""
    assert client.board.timing().model_dump() == {"off_seconds": 0.0, "ready_timeout": 5.0}
    assert client.board.power_cycle() == IDN
    assert simulator.instrument.output is True


def test_power_cycle_waits_for_the_device_to_answer(client, simulator):
    """A device that does not answer *IDN? at first (booting) is asked again until it does."""
    simulator.faults.drop, simulator.faults.only = 3, "*IDN?"
    assert client.board.power_cycle() == IDN
    assert simulator.faults.drop == 0


def test_power_cycle_gives_up_after_the_timeout_with_the_output_off(client, simulator):
    """A device that never answers: DEADLINE_EXCEEDED naming the wait and the last error, and its power is off."""
    simulator.faults.drop, simulator.faults.only = 10**6, "*IDN?"
    message = r"did not answer \*IDN\? within 0.5 s after power on; its power is off again; last error: TCPIP::"
    with pytest.raises(DriverError, match=message):
        client.board.power_cycle(timeout=0.5)
    assert simulator.instrument.output is False


def test_an_attempt_the_deadline_cuts_keeps_the_error_before_it(root, monkeypatch):
    """An *IDN? attempt still waiting when the time is up (a busy machine) does not hide what the one before said."""
    attempts: list[str] = []

    async def identify() -> str:
        attempts.append("*IDN?")
        if len(attempts) == 1:
            raise ConnectionRefusedError("TCPIP::192.0.2.1::5025::SOCKET refused the connection")
        await anyio.sleep_forever()  # cut by the deadline
        raise AssertionError("unreachable")

    monkeypatch.setattr(root.children["board"].children["device"], "identify", identify)
    message = r"within 0.5 s after power on; its power is off again; last error: TCPIP::192.0.2.1::5025::SOCKET refused"
    with serve(root) as client, pytest.raises(DriverError, match=message):
        client.board.power_cycle(timeout=0.5)
    assert len(attempts) == 2


@pytest.mark.parametrize(("fault", "ready_at", "timeout"), [("drop", 0.9, 1.0), ("slow", None, 0.7)])
def test_ready_timeout_is_one_deadline(simulator, fault, ready_at, timeout):
    """`ready_timeout` bounds the whole wait, each *IDN? attempt getting what is left: a device that hangs up until
    0.9 s of 1 s is found ready (not given up early); a silent one fails at 0.7 s, not after the supply's 2 s
    timeout for one attempt."""
    setattr(simulator.faults, fault, 10**6)
    simulator.faults.slow_seconds, simulator.faults.only = 30, "*IDN?"
    with serve(tree(on_port(simulator.port, timeout=2))) as client:
        start = time.monotonic()
        if ready_at is not None:
            with ThreadPoolExecutor(1) as pool:
                cycle = pool.submit(client.board.power_cycle, 0, timeout)
                time.sleep(ready_at)  # the device finishes booting
                setattr(simulator.faults, fault, 0)
                assert cycle.result(timeout=10) == IDN
        else:
            with pytest.raises(DriverError, match=r"within 0\.7 s after power on"):
                client.board.power_cycle(0, timeout)
        elapsed = time.monotonic() - start
    assert elapsed < timeout + 0.35, f"{elapsed:.2f} s for a {timeout} s deadline"


def test_concurrent_power_cycles_are_serialized(client, simulator):
    """Two clients power-cycling at once: one after the other, each off for its full off_seconds."""
    with ThreadPoolExecutor(2) as pool:
        cycles = [pool.submit(client.board.power_cycle, 0.3, 5) for _ in range(2)]
        assert [cycle.result(timeout=20) for cycle in cycles] == [IDN, IDN]
    switches = [line for line in simulator.received if line.startswith("OUTP O")]
    assert switches[-4:] == ["OUTP OFF", "OUTP ON", "OUTP OFF", "OUTP ON"]  # never OFF, OFF, ON, ON


def test_power_cycle_does_not_retry_what_cannot_change():
    """An error no boot time fixes (UNIMPLEMENTED, INVALID_ARGUMENT) fails at once, not at the timeout."""

    class Unidentifiable(ExampleDeviceModel):
        async def identify(self) -> str:
            raise NotImplementedError("identify is not implemented")

    with serve(ExampleBoard(children={"device": Unidentifiable()})) as client:
        start = time.monotonic()
        with pytest.raises(DriverMethodNotImplemented):
            client.power_cycle(0, 600)
        assert time.monotonic() - start < 5
        assert client.device.get_output() is False


def test_a_ref_does_not_reset_the_supply_twice(root, simulator):
    """`psu: {ref: board.device}` passes the lease's start to the supply a second time: it resets once."""
    with serve(root) as client:
        client.psu.identify()
    assert list(simulator.received).count("*RST;*CLS") == 1


def test_reset_and_close_reach_the_children(root, simulator):
    """The board keeps super() in reset()/close(): a new lease and the lease's end switch the supply's output off."""
    with serve(root) as client:
        client.board.power.on()
        client.portal.call(root.reset)  # as the exporter does at a lease's start, on its event loop thread
        assert simulator.instrument.output is False
        client.board.power.on()
    assert simulator.instrument.output is False
    simulator.wait_connections(0)


def test_a_parent_that_forgets_super_leaves_its_children_alone(simulator):
    """Jumpstarter 0.9: a parent's reset() reaches its children only through super()."""

    class ForgetfulBoard(ExampleBoard):
        def reset(self) -> None:
            self.logger.info("reset, without super()")

    board = ForgetfulBoard(children={"device": ExampleDevice(resource=simulator.resource)})
    with serve(board) as client:
        client.power.on()
        client.portal.call(board.reset)
        assert simulator.instrument.output is True  # the supply was not reset


@pytest.mark.parametrize(
    ("extra_children", "problem"),
    [
        (f"      powr: {{type: {MOCK_POWER}}}", "unknown child 'powr': an ExampleBoard has device and power"),
        (f"      power: {{{MODEL}}}", "`power` must be a PowerInterface driver, got ExampleDeviceModel"),
    ],
)
def test_wrong_children_are_config_errors_naming_them(simulator, extra_children, problem):
    """A misspelt or wrong-typed child fails when the exporter builds the tree, naming the child."""
    with pytest.raises(ValidationError, match="ExampleBoard") as error:
        tree(on_port(simulator.port), extra_children=extra_children)
    assert problem in str(error.value)


def test_missing_or_wrong_device_is_a_config_error():
    """The supply is required, and must implement PowerSupplyInterface."""
    with pytest.raises(ValidationError, match="`device` is missing"):
        ExampleBoard()
    with pytest.raises(ValidationError, match="`device` must be a PowerSupplyInterface driver, got MockPower"):
        tree(f"{{type: {MOCK_POWER}}}")


def test_upstream_power_driver_as_the_power_child(simulator):
    """Any PowerInterface driver can be the board's power switch: upstream's MockPower, with no code of ours."""
    with serve(tree(on_port(simulator.port), extra_children=f"      power: {{type: {MOCK_POWER}}}")) as client:
        assert client.board.power_cycle() == IDN
        assert [reading.voltage for reading in client.board.power.read()] == [0.0, 5.0]  # MockPower's readings
        assert simulator.instrument.output is False  # the supply's output was not touched


def test_in_memory_model_as_the_device():
    """The board asks for the interface, so the in-memory model fits as its supply."""
    with serve(tree(f"{{{MODEL}}}")) as client:
        client.board.power.on()
        assert client.board.device.get_output() is True
        assert client.board.power_cycle().startswith("Jumpstarter,ExampleSupply,MODEL-0001")


def run(client, *args: str) -> str:
    """Run `j board ARGS...` and return its output; it must succeed."""
    result = CliRunner().invoke(client.cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_nests_the_children_and_adds_the_workflow(client):
    """`j board` has each child's commands under its name, and `power-cycle`."""
    help_text = run(client.board, "--help")
    for line in ("device       Bench power supply", "power        Generic power", "power-cycle  Power off and on"):
        assert line in help_text
    assert run(client.board, "power", "on") == ""
    assert run(client.board, "device", "output") == "on\n"
    assert run(client.board, "power-cycle", "--off-seconds", "0") == f"{IDN}\n"


def test_cli_timeout_is_one_error_line(client, simulator):
    """A device that never comes back: one `Error:` line, exit status 1."""
    simulator.faults.drop, simulator.faults.only = 10**6, "*IDN?"
    result = CliRunner().invoke(client.board.cli(), ["power-cycle", "--timeout", "0.5"])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(
        "Error: DriverCall 'power_cycle' failed with gRPC DEADLINE_EXCEEDED: the device did not answer *IDN? within"
    )
    assert len(result.output.splitlines()) == 1
