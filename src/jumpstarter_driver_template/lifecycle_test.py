# mypy: allow-untyped-defs
"""run_async_bounded: sync code on a running event loop awaits, and gets the error back, bounded."""

import threading

import anyio

from .lifecycle import run_async_bounded


def test_awaits_from_inside_a_running_event_loop():
    """Called where the exporter calls reset(): on a thread whose event loop is running."""
    done: list[str] = []

    async def work() -> None:
        await anyio.sleep(0.01)
        done.append(threading.current_thread().name)

    async def exporter_loop() -> BaseException | None:
        return run_async_bounded(work, 5)

    assert anyio.run(exporter_loop) is None
    assert done == ["driver lifecycle"]


def test_returns_the_error_instead_of_raising():
    """close() logs what failed and goes on: the error comes back as a value."""

    async def fails() -> None:
        raise ConnectionRefusedError("no instrument")

    error = run_async_bounded(fails, 5)
    assert isinstance(error, ConnectionRefusedError)
    assert str(error) == "no instrument"


def test_stops_waiting_one_second_after_the_bound():
    """Work that ignores its bound costs the caller at most `seconds + 1`, then a TimeoutError."""
    release = threading.Event()

    async def hangs() -> None:
        await anyio.to_thread.run_sync(release.wait)

    try:
        error = run_async_bounded(hangs, 0.1)
    finally:
        release.set()
    assert isinstance(error, TimeoutError)
    assert str(error) == "still running after 1.1 s"
