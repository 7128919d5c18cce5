# mypy: allow-untyped-defs
"""to_completion: work that a client leaving mid-call (gRPC's asyncio cancellation) must not cut short."""

import time

import anyio
import pytest
from anyio import to_thread
from jumpstarter.common.utils import serve
from jumpstarter.driver import Driver, export
from pydantic.dataclasses import dataclass

from .cancellation import to_completion


@dataclass(kw_only=True)
class Worker(Driver):
    """A driver whose calls hand a second of work to a thread, directly or through to_completion."""

    started: list[str]
    finished: list[str]

    @classmethod
    def client(cls) -> str:
        return "jumpstarter.client.DriverClient"

    async def _work(self, name: str) -> str:
        self.started.append(name)
        await to_thread.run_sync(time.sleep, 0.5)
        self.finished.append(name)  # reached only if the await waited for the thread
        return name

    @export
    async def direct(self) -> str:
        return await self._work("direct")

    @export
    async def completed(self) -> str:
        return await to_completion(self._work, "completed")


def test_thread_work_outlives_a_client_that_left():
    """A call cancelled by the client's departure still waits for its thread when run through to_completion."""
    driver = Worker(started=[], finished=[])
    with serve(driver) as client:
        for method in ("direct", "completed"):
            call = client.portal.start_task_soon(client.call_async, method)
            wait_until(lambda method=method: method in driver.started)  # its thread is working
            call.cancel()
        wait_until(lambda: "completed" in driver.finished)
    # Without it, gRPC's cancellation returns from the thread hop at once: the work after it never runs.
    assert driver.finished == ["completed"]


def test_result_and_exception_pass_through():
    """to_completion returns the function's result and raises its exception unwrapped."""

    async def fail() -> None:
        raise ValueError("refused")

    async def twice(x: int) -> int:
        return 2 * x

    assert anyio.run(to_completion, twice, 21) == 42
    with pytest.raises(ValueError, match="refused"):
        anyio.run(to_completion, fail)


def wait_until(condition, seconds: float = 5) -> None:
    """Poll a condition the exporter makes true after the client call returned, for a bounded time."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not true in time"
        time.sleep(0.01)
