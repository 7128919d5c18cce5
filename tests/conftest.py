"""The shared exporter of the end-to-end tests, and the figures they report (helpers are in harness.py)."""

from collections.abc import Iterator
from typing import Any

import pytest
from harness import REPORTED, Exporter, exporter_process


@pytest.fixture(scope="session")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """One `jmp run` exporter of examples/exporter.yaml, as it is, shared by the tests that need no overrides."""
    with exporter_process(tmp_path_factory.mktemp("exporter")) as running:
        yield running


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show the figures the end-to-end tests held, in every run."""
    if REPORTED:
        terminalreporter.section("end-to-end figures")
        for line in REPORTED:
            terminalreporter.write_line(line)
