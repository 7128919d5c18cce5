"""Fixtures and reporting for the end-to-end tests (helpers are in processes.py)."""

from collections.abc import Iterator
from typing import Any

import pytest
from processes import REPORTED, Exporter, exporter_process, write_config


@pytest.fixture(scope="session")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """One `jmp run` exporter shared by the end-to-end tests, with its own upload directory."""
    tmp = tmp_path_factory.mktemp("exporter")
    config = write_config(tmp / "exporter.yaml", tmp / "uploads", max_seconds=600)
    with exporter_process(config, tmp / "uploads") as running:
        yield running


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show the figures the reliability tests held, in every run."""
    if REPORTED:
        terminalreporter.section("reliability figures")
        for line in REPORTED:
            terminalreporter.write_line(line)
