# mypy: allow-untyped-defs
"""BaseClient releases the exporter's side of byte streams and streaming calls as soon as the caller is done."""

import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import anyio
import pytest
from anyio.abc import ByteStream
from click.testing import CliRunner
from grpc import StatusCode
from grpc.aio import AioRpcError, Metadata
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export, exportstream
from pydantic.dataclasses import dataclass

from jumpstarter_driver_template.base_client import driver_group


class Echo(ByteStream):
    """A byte stream that sends back what it receives."""

    def __init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[bytes](16)

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._receive.receive()

    async def send(self, item: bytes) -> None:
        await self._send.send(item)

    async def send_eof(self) -> None:
        await self._send.aclose()

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


@dataclass(kw_only=True)
class Counting(Driver):
    """A driver that counts the byte streams and generators it has open."""

    open_streams: int = 0
    running: int = 0

    @classmethod
    def client(cls) -> str:
        return "jumpstarter_driver_template.base_client.BaseClient"

    @export
    def counts(self) -> list[int]:
        return [self.open_streams, self.running]

    @exportstream
    @asynccontextmanager
    async def echo(self) -> AsyncIterator[ByteStream]:
        self.open_streams += 1
        try:
            async with Echo() as stream:
                yield stream
        finally:
            self.open_streams -= 1

    @export
    async def fail(self, kind: str) -> str:
        if kind == "timeout":
            raise TimeoutError("the device did not answer within 2 s")
        if kind == "unsupported":
            raise NotImplementedError("this device has no such switch")
        if kind == "large":
            return "x" * (5 * 1024 * 1024)  # past gRPC's 4 MiB message cap: RESOURCE_EXHAUSTED
        if kind == "invalid":
            raise ValueError("kind must be one of timeout, unsupported, large")
        raise RuntimeError("the relay is stuck")

    @export
    async def numbers(self, count: int) -> AsyncGenerator[int, None]:
        self.running += 1
        try:
            for i in range(int(count)):
                await anyio.sleep(0.01)
                yield i
        finally:
            self.running -= 1


@pytest.fixture
def client():
    """The counting driver, served through a real gRPC session."""
    with serve(Counting()) as client:
        yield client


def counts_become(client, expected: list[int], seconds: float = 1.0) -> bool:
    """Whether the driver's counts reach `expected` within `seconds` (the exporter acts after the client returns)."""
    deadline = time.monotonic() + seconds
    while client.call("counts") != expected:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_streams_closed_through_stream_are_released(client):
    """20 `with client.stream(...)` blocks leave no stream open on the driver within a second."""
    for i in range(20):
        with client.stream("echo") as stream:
            stream.send(b"ping %d" % i)
            assert stream.receive() == b"ping %d" % i
    assert counts_become(client, [0, 0]), client.call("counts")


def test_streams_closed_through_stream_async_are_released(client):
    """The async form releases the driver's end as well."""

    async def use_streams() -> None:
        for _ in range(5):
            async with client.stream_async("echo") as stream:
                await stream.send(b"x")
                assert await stream.receive() == b"x"

    client.portal.call(use_streams)
    assert counts_become(client, [0, 0]), client.call("counts")


def test_streaming_call_stopped_early_is_cancelled(client):
    """A caller that stops reading a streaming call ends the driver's generator."""
    numbers = client.streamingcall("numbers", 1000)
    assert next(numbers) == 0
    assert client.call("counts") == [0, 1]
    numbers.close()
    assert counts_become(client, [0, 0]), client.call("counts")


def test_streaming_call_read_to_the_end_returns_every_item(client):
    """Reading a streaming call to its end is unchanged."""
    assert list(client.streamingcall("numbers", 5)) == [0, 1, 2, 3, 4]
    assert client.call("counts") == [0, 0]


def invoke_fail(client, kind: str):
    """`fail KIND` through a `driver_group` command, as `j` runs it."""

    @driver_group(client)
    def group() -> None:
        """Commands of a failing driver."""

    @group.command()
    def fail() -> None:
        """Call the driver's `fail`."""
        client.call("fail", kind)

    return CliRunner().invoke(group, ["fail"])


@pytest.mark.parametrize(
    ("kind", "output", "status"),
    [
        ("timeout", "DriverCall 'fail' failed with gRPC DEADLINE_EXCEEDED: the device did not answer within 2 s", 1),
        ("unsupported", "DriverCall 'fail' failed with gRPC UNIMPLEMENTED: this device has no such switch", 1),
        ("stuck", "DriverCall 'fail' failed with gRPC UNKNOWN: the relay is stuck", 1),
        ("invalid", "DriverCall 'fail' failed with gRPC INVALID_ARGUMENT: kind must be one of timeout, unsupported, "
         "large", 2),
    ],
)  # fmt: skip
def test_driver_errors_are_one_line_with_the_message_once(client, kind: str, output: str, status: int):
    """Each error a driver raises reaches `j` as one `Error:` line with the driver's message once, no traceback."""
    result = invoke_fail(client, kind)
    lines = result.output.splitlines()
    assert (lines[-1], result.exit_code) == (f"Error: {output}", status), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


def test_oversized_result_is_one_line(client):
    """A result past gRPC's 4 MiB cap (RESOURCE_EXHAUSTED) is one `Error:` line, without the gRPC debug string."""
    result = invoke_fail(client, "large")
    assert result.exit_code == 1, result.output
    assert result.output.startswith("Error: DriverCall 'fail' failed with gRPC RESOURCE_EXHAUSTED: "), result.output
    assert len(result.output.splitlines()) == 1 and "Caused by" not in result.output, result.output


@pytest.mark.parametrize(
    "code", [StatusCode.UNAVAILABLE, StatusCode.DEADLINE_EXCEEDED, StatusCode.RESOURCE_EXHAUSTED, StatusCode.CANCELLED,
             StatusCode.INTERNAL, StatusCode.UNKNOWN, StatusCode.UNIMPLEMENTED, StatusCode.FAILED_PRECONDITION],
)  # fmt: skip
def test_every_status_of_a_call_is_one_line(client, monkeypatch, code: StatusCode):
    """Whatever status the gRPC call ends in (an exporter gone, a network cut), `j` prints one line, message once."""
    error = AioRpcError(code, Metadata(), Metadata(), details="the exporter went away", debug_error_string="DEBUG")

    class FailingStub:
        """The session's stub, whose DriverCall ends in `code`."""

        async def DriverCall(self, request):
            raise error

    monkeypatch.setattr(client, "stub", FailingStub())
    result = invoke_fail(client, "timeout")
    expected = (
        "Error: the exporter went away"  # upstream raises ExporterNotReady with the details alone
        if code == StatusCode.FAILED_PRECONDITION
        else f"Error: DriverCall 'fail' failed with gRPC {code.name}: the exporter went away"
    )
    assert (result.output, result.exit_code) == (f"{expected}\n", 1)
