"""`BaseClient`: the client base class of this package's drivers. Derive your clients from it.

In Jumpstarter 0.9, a client leaving a call early does not end it on the exporter:

- a byte stream (`stream()` / `stream_async()`) is only half-closed when the client's `with`
  block ends, so the driver's end (a serial port, a socket, a file) stays open until the client
  disconnects: 20 `with client.stream(...)` blocks leave 20 streams open on the driver;
- a streaming call (`streamingcall()`) that the caller stops reading (`break`, `next()` once)
  keeps running, and the driver's generator with it, until the client disconnects.

`BaseClient` cancels the gRPC call in both cases as soon as the caller is done, so the exporter
releases what the driver held at once. Everything else is upstream's `DriverClient`.

`driver_group` builds a client's `j` commands like upstream's `driver_click_group` (help text from
the docstrings, or from the exporter config's `description` / `methods_description`), and turns a
refused value or any error a driver call can end in (every gRPC status) into one `Error: ...` line
with the driver's message once, instead of a traceback.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import click
from grpc.aio import AioRpcError
from jumpstarter.client import DriverClient
from jumpstarter.client.core import DriverError
from jumpstarter.client.decorators import driver_click_group
from jumpstarter.common.exceptions import JumpstarterException


class BaseClient(DriverClient):
    """A DriverClient whose byte streams and streaming calls end on the exporter when the caller is done."""

    @asynccontextmanager
    async def stream_async(self, method: str = "connect") -> AsyncIterator[Any]:
        """Open the driver's byte stream `method`; leaving the block releases the driver's end."""
        async with super().stream_async(method) as stream:
            try:
                yield stream
            finally:
                # 0.9's stream_async yields a MetadataStream over a RouterStream whose `context` is the
                # gRPC call: cancelling it ends the exporter's side now, instead of a half-close.
                call = getattr(getattr(stream, "stream", None), "context", None)
                if call is not None:
                    call.cancel()

    def streamingcall(self, method: str, *args: Any) -> Generator[Any, None, None]:
        """Yield the items of the streaming call `method`; stopping early cancels it on the exporter."""
        items = self.portal.call(self.streamingcall_async, method, *args)
        finished = False
        try:
            while True:
                try:
                    item = self.portal.call(items.__anext__)
                except StopAsyncIteration:
                    finished = True
                    return
                yield item
        finally:
            if not finished:  # the caller stopped reading, or an error ended the loop: end the call too
                self.portal.call(_cancel_streaming_call, items)


async def _cancel_streaming_call(items: AsyncGenerator[Any, None]) -> None:
    """Cancel the gRPC call behind a `streamingcall_async` generator that the caller stopped reading."""
    with anyio.CancelScope() as scope:
        scope.cancel()
        # The read is cancelled where it waits for the next message, and grpc.aio cancels the call
        # whose read was cancelled: the exporter sees the client leave and stops the generator.
        async for _ in items:
            pass


def driver_group(client: DriverClient) -> Callable[[Callable[..., Any]], click.Group]:
    """Decorator that makes the `j` command group of `client`: upstream's `driver_click_group`, with error reporting."""

    def decorator(function: Callable[..., Any]) -> click.Group:
        group: click.Group = driver_click_group(client)(function)
        group.command_class = _Command  # what `@group.command()` builds
        return group

    return decorator


class _Command(click.Command):
    """A `j` command that reports refused values and failed driver calls as one `Error:` line, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except ValueError as e:  # refused here, or by the driver (INVALID_ARGUMENT arrives as a ValueError)
            raise click.UsageError(_one_line(e), ctx) from None
        except (DriverError, AioRpcError) as e:  # any other status a call can end in
            raise click.ClickException(_one_line(e)) from None


def _one_line(error: Exception) -> str:
    """An error's message on one line (pydantic's span several), without what the framework appends to it.

    In 0.9 a call that ends in a status other than UNKNOWN, INVALID_ARGUMENT or UNIMPLEMENTED (DEADLINE_EXCEEDED,
    UNAVAILABLE, RESOURCE_EXHAUSTED...) raises a DriverError chained to the AioRpcError, and its str() appends
    `(Caused by: <AioRpcError ... debug_error_string ...>)`: the driver's message again, twice. Its `message`
    already says the method, the status and the driver's message.
    """
    if isinstance(error, AioRpcError):  # raised as is by a byte stream or a resource transfer
        text = f"gRPC {error.code().name}: {error.details() or '<no details>'}"
    elif isinstance(error, JumpstarterException):
        text = error.message
    else:
        text = str(error)
    return " ".join(text.split())
