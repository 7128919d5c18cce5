"""`to_completion`: run work that must not be cut short when a client goes away, as a driver needs it.

gRPC cancels the call of a client that went away (or of an exporter that stops) with asyncio's own
`Task.cancel()`, which anyio's rules do not hold back: an await inside `CancelScope(shield=True)` is
interrupted all the same, and `anyio.to_thread.run_sync` returns at once while its worker thread goes
on writing to a file the driver then closes (measured on Jumpstarter 0.9). In a task of its own,
started by a task group, the work gets anyio's cancellation instead: shields hold, and a thread hop
ends before the cancellation is delivered at the next await.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

Result = TypeVar("Result")


async def to_completion(function: Callable[..., Awaitable[Result]], *args: Any) -> Result:
    """Await `function(*args)` in a task of its own; return its result or raise its exception as it is."""
    outcome: list[Any] = []

    async def run() -> None:
        try:
            outcome.append((True, await function(*args)))
        except Exception as e:  # raised below as it is, not wrapped in the task group's ExceptionGroup
            outcome.append((False, e))

    async with anyio.create_task_group() as group:
        group.start_soon(run)
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value
