"""Template: your driver, on the exporter side. Start typing here.

The exporter builds this class from its config (`examples/exporter.yaml`) and serves its `@export`
methods over gRPC; `TemplateClient` (client.py) calls them from tests and `j`. Replace the two
methods below with what your device does: a unary call returns one result, a streaming call
yields results as they come. A `reset()` or `close()` that must talk to the device (a safe state at
lease end) awaits through `run_async_bounded` (lifecycle.py).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Annotated

import anyio
from jumpstarter.driver import Driver, export
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from .validation import names_its_config_errors, validate

Name = Annotated[str, Field(min_length=1, max_length=100)]
Count = Annotated[int, Field(ge=0, le=1000)]
Interval = Annotated[float, Field(ge=0, le=60)]


# Exporter YAML `config:` keys become keyword arguments: `extra="forbid"` turns a typo into an error
# that names the key, and pydantic checks every value when the exporter starts.
@names_its_config_errors
@dataclass(kw_only=True, config=ConfigDict(extra="forbid"))
class Template(Driver):
    """Template driver: replace this docstring with what your device is."""

    greeting: str = Field(default="Hello", min_length=1, max_length=100)
    """How `hello` greets (config)."""

    @classmethod
    def client(cls) -> str:
        """Import path of the client class: the client side loads it by this name."""
        return "jumpstarter_driver_template.client.TemplateClient"

    # A unary call. `async def` runs on the exporter's event loop: await, never block. Arguments come
    # from any client: @validate checks them against the annotations (INVALID_ARGUMENT, naming the argument).
    @export
    @validate
    async def hello(self, name: Name) -> str:
        """Greet NAME."""
        self.logger.debug("hello %r", name)  # %r: a name from a client never reaches a terminal raw
        return f"{self.greeting}, {name}!"

    # A streaming call: each `yield` is one message to the client. It stops when the client leaves.
    @export
    @validate
    async def count(self, count: Count, interval: Interval) -> AsyncGenerator[int, None]:
        """Count from 0 to COUNT-1, one number every INTERVAL seconds."""
        for i in range(count):
            if i:
                await anyio.sleep(interval)
            yield i
