"""Settings shared by every test of this repository."""

import pytest


@pytest.fixture(autouse=True)
def no_progress_bars(monkeypatch: pytest.MonkeyPatch) -> None:
    """Jumpstarter draws a progress bar for every resource transfer unless TERM is "dumb": keep CLI output exact."""
    monkeypatch.setenv("TERM", "dumb")
