"""The shared exporter of the end-to-end tests, and the figures they report (helpers are in harness.py)."""

from collections.abc import Iterator
from typing import Any

import pytest
from harness import REPORTED, Exporter, exporter_process, stop_on_sigterm


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, a cancelled job) stops the run as Ctrl-C does: every teardown runs."""
    stop_on_sigterm()


@pytest.fixture(scope="session")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """One `jmp run` exporter of examples/exporter.yaml, as it is, shared by the tests that need no overrides."""
    with exporter_process(tmp_path_factory.mktemp("exporter")) as running:
        yield running


# template-only:start
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start tests/template_test.py's renamed copies at once, so that they run alongside the rest of the suite."""
    import sys  # here, not at the top: the rename removes these hooks

    if any(item.path.name == "template_test.py" and "copies" in item.fixturenames for item in session.items):
        sys.modules["template_test"].start_copies()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """End whatever the renamed copies still run, and remove them."""
    import sys

    if "template_test" in sys.modules:
        sys.modules["template_test"].stop_copies()


# template-only:end
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show the figures the end-to-end tests held, in every run."""
    if REPORTED:
        terminalreporter.section("end-to-end figures")
        for line in REPORTED:
            terminalreporter.write_line(line)
