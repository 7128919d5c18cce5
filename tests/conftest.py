"""The shared exporter of the end-to-end tests, and the figures they report (helpers are in harness.py)."""

import os
from collections.abc import Iterator
from typing import Any

import pytest
from harness import REPORTED, Exporter, exporter_process, stop_on_sigterm

FIGURES: list[str] = []
"""What the tests reported (REPORTED), gathered from their reports: under xdist they run in workers."""


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Inside a jmp shell (JUMPSTARTER_HOST set) the tests share its one device: they run one at a time."""
    if "JUMPSTARTER_HOST" in os.environ and hasattr(config.option, "numprocesses"):
        config.option.numprocesses = 0


def pytest_configure(config: pytest.Config) -> None:
    """SIGTERM (a CI timeout, a cancelled job) stops the run as Ctrl-C does: every teardown runs."""
    stop_on_sigterm()


@pytest.fixture(scope="session")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """One `jmp run` exporter of examples/exporter.yaml, as it is, shared by the tests that need no overrides."""
    with exporter_process(tmp_path_factory.mktemp("exporter")) as running:
        yield running


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Carry what a test (or a fixture's teardown) reported on its report, which xdist sends to the controller."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    report.user_properties += [("figure", line) for line in REPORTED]
    REPORTED.clear()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the figures where the summary is written (the controller, under xdist)."""
    FIGURES.extend(str(value) for name, value in report.user_properties if name == "figure")


# template-only:start
def pytest_collection_finish(session: pytest.Session) -> None:
    """Start tests/template_test.py's renamed copies at once, so that they run alongside the rest of the suite."""
    import sys  # here, not at the top: the rename removes these hooks

    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller makes the copies (below)
    if any(item.path.name == "template_test.py" and "copies" in item.fixturenames for item in session.items):
        sys.modules["template_test"].start_copies()


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """Under xdist: tell each worker where the controller writes the copies' results."""
    import template_test

    node.workerinput["template_copies"] = str(template_test.copies_dir())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    """Under xdist: start the copies in the controller as soon as a worker has collected tests that use them."""
    import template_test

    template_test.start_copies_for(ids)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """End whatever the renamed copies still run, and remove them."""
    import sys

    if "template_test" in sys.modules:
        sys.modules["template_test"].stop_copies()


# template-only:end
def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Show the figures the end-to-end tests held, in every run."""
    if FIGURES:
        terminalreporter.section("end-to-end figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
