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


def test_a_timeout_of_its_own_bound_says_so():
    """fail_after's TimeoutError has no message: what close() logs would end in nothing."""

    async def bounded() -> None:
        with anyio.fail_after(0.05):
            await anyio.sleep(5)

    error = run_async_bounded(bounded, 0.05)
    assert isinstance(error, TimeoutError)
    assert str(error) == "not done within its 0.05 s bound"


def test_one_failed_task_of_a_task_group_comes_back_as_itself():
    """A task group wraps one task's error in an ExceptionGroup that says only "1 sub-exception"."""

    async def outlets() -> None:
        async def switch(outlet: int) -> None:
            if outlet == 3:
                raise ConnectionResetError(f"outlet {outlet}: connection reset")

        async with anyio.create_task_group() as tg:
            for outlet in range(1, 5):
                tg.start_soon(switch, outlet)

    error = run_async_bounded(outlets, 5)
    assert isinstance(error, ConnectionResetError)
    assert str(error) == "outlet 3: connection reset"
