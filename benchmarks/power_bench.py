"""The power unit's benchmark: ExamplePower's `on`, `off` and `read` (simulated) against the baselines of their shapes.

Plugin interface: harness.py. Upstream's PowerClient is the client: what it does (re-validating each
reading) counts as part of the example, as it does for every user of `j power`.
"""

from __future__ import annotations

from pathlib import Path

from harness import Entry, Round, Target
from jumpstarter_driver_power.client import PowerClient


def drivers(workdir: Path) -> dict[str, Entry]:
    """A simulated switch: no commands, so the figures are the driver's and the framework's own."""
    config = {"voltage": 12.0, "current": 0.5}
    return {"power": {"type": "jumpstarter_driver_template.power.driver.ExamplePower", "config": config}}


def measure(run: Round) -> None:
    power, base = run.client("power", PowerClient), run.baseline
    # on/off: async, no arguments, no result: the async echo returning None. The ratio is the lock and the log.
    base.set_reply(None)
    run.compare("on/echo", power.on, base.echo)
    run.compare("off/echo", power.off, base.echo)
    # read: a streaming call of one PowerReading, against a streaming call of one dict of its shape.
    power.on()
    base.set_reply(next(power.read()).model_dump())
    run.compare("read/echo_stream", lambda: list(power.read()), lambda: base.echo_stream(1))


WHY = "the method costs more than 10% over the framework's own call of the same shape"
TARGETS = [
    Target("on/echo", "<=", 1.1, WHY),
    Target("off/echo", "<=", 1.1, WHY),
    Target("read/echo_stream", "<=", 1.1, WHY),
]
