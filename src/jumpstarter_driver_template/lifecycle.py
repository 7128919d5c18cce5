"""`run_async_bounded`: let a driver's sync `reset()` and `close()` await, bounded.

Jumpstarter 0.9 calls `reset()` at lease start and `close()` at lease end synchronously, on the
exporter's event loop thread, yet putting a device in a safe state usually means async I/O: a
command, its answer, a timeout. This bridge runs a coroutine function to completion on an event
loop of its own in a helper thread and returns its error instead of raising, so `close()` can log
it and go on (an exception there stops the exporter closing the drivers after this one).
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

import anyio


def run_async_bounded(function: Callable[[], Awaitable[None]], seconds: float) -> BaseException | None:
    """Run `function` to completion on an event loop of its own in a helper thread; return its error, if any.

    reset() and close() are sync and, in Jumpstarter 0.9, run on the exporter's event loop thread: they cannot
    `await`, `anyio.from_thread.run` refuses (not a worker thread) and `anyio.run` refuses (a loop already runs in
    this thread). A thread with a loop of its own can await. The exporter's loop waits for it meanwhile, so the
    wait is bounded: `function` must bound itself (fail_after) to `seconds`; past one more second we stop waiting.
    """
    errors: list[BaseException] = []

    def run() -> None:
        try:
            anyio.run(function)
        except BaseException as e:
            errors.append(e)

    helper = threading.Thread(target=run, name="driver lifecycle", daemon=True)
    helper.start()
    helper.join(seconds + 1)
    if helper.is_alive():
        return TimeoutError(f"still running after {seconds + 1:g} s")
    return _telling(errors[0], seconds) if errors else None


def _telling(error: BaseException, seconds: float) -> BaseException:
    """The error as a log line can show it: what callers log is `str(error)`.

    anyio's fail_after raises a TimeoutError without a message, and a task group wraps what one task raised
    in an ExceptionGroup that says only how many; give the first a message and unwrap the second.
    """
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    if isinstance(error, TimeoutError) and not str(error):
        return TimeoutError(f"not done within its {seconds:g} s bound")
    return error
