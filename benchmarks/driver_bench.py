"""The skeleton unit's benchmark: its driver's `hello` and `count` against the baselines of their shapes.

Plugin interface: benchkit.py. Named after the unit's files (`driver.py`, `client.py`).
"""

from __future__ import annotations

from pathlib import Path

from benchkit import Entry, Round, Target

from jumpstarter_driver_template.client import TemplateClient


def drivers(workdir: Path) -> dict[str, Entry]:
    """The skeleton's driver, as examples/exporter.yaml configures it."""
    driver = "jumpstarter_driver_template.driver.Template"
    return {"driver": {"type": driver, "config": {"greeting": "Hello"}}}


def measure(run: Round) -> None:
    driver, base = run.client("driver", TemplateClient), run.baseline
    # An async unary call with one string argument and a string result, against the async echo of that shape:
    # the ratio is @validate, the logging call and the greeting.
    base.set_reply(driver.hello("bench"))
    run.compare("hello/echo", lambda: driver.hello("bench"), lambda: base.echo("bench"))
    items = run.sizes.items
    run.compare(
        "count/count",
        lambda: sum(1 for _ in driver.count(items, 0)),
        lambda: base.count(items),
        per="item",
        amount=items,
    )


TARGETS = [
    Target("hello/echo", "<=", 1.1, "the method costs more than 10% over the framework's own call of the same shape"),
    Target("count/count", "<=", 1.1, "each item costs more than 10% over the framework's streaming call"),
]
