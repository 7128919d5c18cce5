# mypy: allow-untyped-defs
"""ExampleConsole through a real gRPC session (`serve()`), driven by upstream's console client."""

import asyncio
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import pexpect  # type: ignore[import-untyped]
import pytest
from anyio.from_thread import start_blocking_portal
from jumpstarter.common.utils import serve
from jumpstarter_driver_pyserial.client import PySerialClient
from pydantic import ValidationError

from ..commands_test import running
from .driver import ExampleConsole
from .simulator import PASSWORD, PROMPT, UNAME, USER, session
from .tool import attach

WAIT = 30  # seconds any single wait may take on a loaded machine before the test fails


def login(console) -> None:
    """Log in to the simulated console through a pexpect session, as a test of a real board would."""
    console.expect("login: ")
    console.sendline(USER)
    console.expect("Password: ")
    console.sendline(PASSWORD)
    console.expect_exact(PROMPT.decode())


@pytest.fixture
def console() -> Iterator[PySerialClient]:
    """The simulated device console, run as the console's tool."""
    with serve(ExampleConsole(simulator=True)) as client:
        assert isinstance(client, PySerialClient)  # upstream's console client, no code of ours
        yield client


def test_pexpect_logs_in_and_runs_a_command(console):
    """Upstream's `pexpect()` logs in to the simulated console and runs a command."""
    with console.pexpect() as session_:
        session_.timeout = WAIT
        login(session_)
        session_.sendline("uname -a")
        session_.expect_exact(UNAME)
        session_.expect_exact(PROMPT.decode())


def test_bytes_pass_as_they_are():
    """Every byte value reaches the tool and comes back unchanged: no encoding, no line ending rewritten."""
    data = bytes(range(256)) * 4
    with serve(ExampleConsole(command=["cat"])) as client, client.stream("connect") as stream:
        stream.send(data)
        received = b""
        while len(received) < len(data):
            received += stream.receive()
    assert received == data


def test_leaving_ends_the_tools_process_group(tmp_path: Path):
    """A client that leaves ends the tool and every process it started."""
    pid = tmp_path / "pid"
    tool = ["sh", "-c", f"sleep 300 & echo $$ $! > {pid}; exec cat"]
    with serve(ExampleConsole(command=tool)) as client:
        with client.stream("connect") as stream:
            stream.send(b"ping")
            assert stream.receive() == b"ping"
        pids = [int(p) for p in pid.read_text().split()]
        with anyio.from_thread.start_blocking_portal() as portal:
            portal.call(_wait_gone, pids)


async def _wait_gone(pids: list[int]) -> None:
    with anyio.fail_after(WAIT):
        while any(running(p) for p in pids):
            await anyio.sleep(0.02)


def test_pexpect_leaving_ends_a_tool_that_ignores_eof(tmp_path: Path):
    """Leaving a pexpect session ends the tool's group even when the tool ignores EOF on stdin."""
    pid = tmp_path / "pid"
    tool = ["sh", "-c", f"echo $$ > {pid}; echo ready; exec sleep 300"]
    with serve(ExampleConsole(command=tool)) as client:
        with client.pexpect() as console:
            # Leave once the stream is open on the client's side too. Upstream's stream_async (0.9) leaks the
            # gRPC call if it is cancelled while it awaits the call's initial metadata: the driver has started
            # the tool, but nothing cancels the call, so the tool stays until the lease ends (close()).
            console.expect("ready", timeout=WAIT)
        with start_blocking_portal() as portal:
            portal.call(_wait_gone, [int(pid.read_text())])


def test_session_end_ends_a_half_closed_stream(tmp_path: Path):
    """0.9's `client.stream()` only half-closes: the tool stays until the session ends, then close() ends it."""
    pid = tmp_path / "pid"
    tool = ["sh", "-c", f"trap '' TERM; echo $$ > {pid}; exec sleep 300"]  # ignores EOF and SIGTERM
    with serve(ExampleConsole(command=tool)) as client, client.stream("connect"), start_blocking_portal() as portal:
        portal.call(_wait_for, lambda: pid.exists() and pid.read_text().strip())
    assert not running(int(pid.read_text()))


def test_event_loop_shutdown_while_the_tool_ends_still_ends_it(tmp_path: Path):
    """The exporter's loop shutting down while a tool is being ended (a native cancel cuts a shield) still ends it."""
    pid, termed = tmp_path / "pid", tmp_path / "termed"
    tool = ["sh", "-c", f"trap 'echo > {termed}' TERM; echo $$ > {pid}; while :; do sleep 0.1; done"]

    async def attached() -> None:
        async with attach("console", tool):
            await anyio.sleep_forever()

    async def main() -> None:
        task = asyncio.get_running_loop().create_task(attached())
        await _wait_for(lambda: pid.exists() and pid.read_text().strip())
        task.cancel()  # the client left: the tool is sent SIGTERM and given its grace period...
        await _wait_for(termed.exists)
        # ...during which main returns, and asyncio.run cancels every task left, as the loop's shutdown does

    asyncio.run(main())
    assert not running(int(pid.read_text()))


def test_second_client_gets_a_connection_of_its_own(tmp_path: Path):
    """Two clients at once each get their own run of the tool, as upstream's PySerial opens the port again."""
    tool = ["sh", "-c", "echo $$; exec cat"]
    with (
        serve(ExampleConsole(command=tool)) as client,
        client.stream("connect") as first,
        client.stream("connect") as second,
    ):
        first.send(b"one\n")
        second.send(b"two\n")
        a, b = _read_lines(first, 2), _read_lines(second, 2)
    assert a[0] != b[0]  # two processes
    assert (a[1], b[1]) == (b"one", b"two")


def _read_lines(stream, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\n") < count:
        data += stream.receive()
    return data.split(b"\n")[:count]


def test_console_that_powers_off_gives_eof(console):
    """A console that ends (the device powered off, the tool exited) is EOF for pexpect, not a hang."""
    with console.pexpect() as session_:
        session_.timeout = WAIT
        login(session_)
        session_.sendline("poweroff")
        session_.expect_exact("reboot: Power down")
        session_.expect(pexpect.EOF)


def test_eof_even_when_a_daemon_keeps_the_console_open(tmp_path: Path):
    """A tool that exits while a daemon of another session still holds its stdout still ends the stream."""
    pid = tmp_path / "daemon"
    daemon = f"setsid sh -c 'echo $$ > {pid}; exec sleep 300' &"
    tool = ["sh", "-c", f"{daemon} while [ ! -s {pid} ]; do sleep 0.01; done; echo bye"]
    try:
        with serve(ExampleConsole(command=tool)) as client:

            async def read_to_eof() -> bytes:
                seen = b""
                with anyio.fail_after(WAIT):
                    async with client.stream_async("connect") as stream:
                        try:
                            while True:
                                seen += await stream.receive()
                        except anyio.EndOfStream:
                            return seen

            assert client.portal.call(read_to_eof) == b"bye\n"
    finally:
        if pid.exists():  # the daemon is outside the group the runner owns: the test ends it
            os.kill(int(pid.read_text()), signal.SIGKILL)


def test_a_client_that_stops_reading_stops_the_tool(tmp_path: Path):
    """Back-pressure: a tool that writes for ever while the client reads nothing is held, nothing piles up."""
    pid = tmp_path / "pid"
    tool = ["sh", "-c", f"echo $$ > {pid}; exec yes"]
    with serve(ExampleConsole(command=tool)) as client, client.stream("connect") as stream:
        stream.receive()
        io = Path(f"/proc/{pid.read_text().strip()}/io")

        async def written_when_held() -> int:
            """What the tool wrote once it stopped writing (it blocks on a full socket)."""
            last = -1
            with anyio.fail_after(WAIT):
                while True:
                    now = int(io.read_text().split("wchar:")[1].split()[0])
                    if now == last:
                        return now
                    last = now
                    await anyio.sleep(0.5)

        written = client.portal.call(written_when_held)
    assert written < 64 * 1024 * 1024  # socket and gRPC flow-control windows, not the tool's output


def test_close_ends_every_attached_client():
    """close(), which the session calls when a lease ends, gives every attached client EOF."""
    driver = ExampleConsole(simulator=True)
    with serve(driver) as client, client.pexpect() as first, client.pexpect() as second:
        for session_ in (first, second):
            session_.timeout = WAIT
            session_.expect("login: ")
        driver.close()
        first.expect(pexpect.EOF)
        second.expect(pexpect.EOF)


@contextmanager
def tcp_console() -> Iterator[tuple[int, list[str]]]:
    """A ser2net-style console server on 127.0.0.1: the simulator on each connection; yields its port and a log."""
    events: list[str] = []

    async def handle(stream) -> None:
        events.append("connected")
        await session(stream)
        events.append("disconnected")

    async def listen(task_status=anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
        await listener.serve(handle)

    with start_blocking_portal() as portal:
        future, port = portal.start_task(listen)
        try:
            yield port, events
        finally:
            future.cancel()


def test_tcp_console_server():
    """Over a console server's TCP port: pexpect logs in; leaving closes the TCP connection."""
    with tcp_console() as (port, events), serve(ExampleConsole(host="127.0.0.1", port=port)) as client:
        with client.pexpect() as session_:
            session_.timeout = WAIT
            login(session_)
            session_.sendline("echo hello")
            session_.expect_exact("hello\r\n")
        with start_blocking_portal() as portal:
            portal.call(_wait_for, lambda: events == ["connected", "disconnected"])


async def _wait_for(condition) -> None:
    with anyio.fail_after(WAIT):
        while not condition():
            await anyio.sleep(0.02)


def test_unreachable_console_server_is_logged_by_address(caplog):
    """A console server that refuses the connection fails the stream; the driver's log names its address.

    Jumpstarter 0.9 gives the client a bare BrokenResourceError when a stream fails to open (upstream's
    PySerial too): the driver's log line, which `j` prints and the exporter's log keeps, says why.
    """
    with tcp_console() as (port, _):
        pass  # closed again: nothing listens on that port now
    with serve(ExampleConsole(host="127.0.0.1", port=port)) as client:  # noqa: SIM117 (raises: inside serve)
        with pytest.raises(anyio.BrokenResourceError), client.stream("connect") as stream:
            stream.receive()
    assert f"console 127.0.0.1:{port}: " in caplog.text


def test_missing_tool_is_logged_by_name(caplog):
    """A tool that does not exist fails the stream; the driver's log names the command."""
    with serve(ExampleConsole(command=["/nonexistent/ipmitool", "sol", "activate"])) as client:  # noqa: SIM117
        with pytest.raises(anyio.BrokenResourceError), client.stream("connect") as stream:
            stream.receive()
    assert "command /nonexistent/ipmitool sol activate could not start: No such file or directory" in caplog.text


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "give exactly one of command, host and port, simulator: true"),
        ({"command": ["cat"], "simulator": True}, r"given: \['command', 'simulator'\]"),
        ({"host": "console-server"}, "host and port go together"),
        ({"port": 0, "host": "x"}, "port"),
        ({"command": []}, "command"),
        ({"simulator": True, "baudrate": 115200}, "baudrate"),
    ],
)
def test_config_errors_name_the_problem(config, message):
    """A config without exactly one transport, or with a wrong or unknown key, fails naming it."""
    with pytest.raises(ValidationError, match=message):
        ExampleConsole(**config)
