"""The power unit's benchmark: ExamplePower's `on`, `off` and `read` (simulated) against the baselines of their shapes.

Plugin interface: benchkit.py. Upstream's PowerClient is the client: what it does (re-validating each
reading) counts as part of the example, as it does for every user of `j power`.
"""

from __future__ import annotations

from pathlib import Path

from benchkit import Entry, Round, Target
from jumpstarter_driver_power.client import PowerClient


def drivers(workdir: Path) -> dict[str, Entry]:
    """A simulated switch: no commands, so the figures are the driver's and the framework's own."""
    config = {"voltage": 12.0, "current": 0.5}
    # One name per line: the rename makes it longer.
    driver = "jumpstarter_driver_template.power.driver.ExamplePower"
    return {"power": {"type": driver, "config": config}}


def measure(run: Round) -> None:
    power, base = run.client("power", PowerClient), run.baseline
    # on/off: async, no arguments, no result, and one INFO line per switch (the quick start shows it in the
    # shell): the async echo that logs one line, returning None. The ratio is the lock and the state; what the
    # line itself costs is the framework's "echo_log/echo" figure (5-10% of a call).
    base.set_reply(None)
    run.compare("on/echo_log", power.on, base.echo_log)
    run.compare("off/echo_log", power.off, base.echo_log)
    # read: a streaming call of one PowerReading, against a streaming call of one dict of its shape.
    power.on()
    base.set_reply(next(power.read()).model_dump())
    run.compare("read/echo_stream", lambda: list(power.read()), lambda: base.echo_stream(1))


WHY = "the method costs more than 10% over the framework's own call of the same shape"
TARGETS = [
    Target("on/echo_log", "<=", 1.1, WHY),
    Target("off/echo_log", "<=", 1.1, WHY),
    Target("read/echo_stream", "<=", 1.1, WHY),
]
