"""Hardware tests: the layer an author copies to test a real device through whatever exporter serves it.

They use `jumpstarter-testing`'s `JumpstarterTest`, whose `client` fixture connects to the exporter
of the surrounding `jmp shell` (the JUMPSTARTER_HOST environment variable). Run them inside one:

    uv run jmp shell --exporter-config examples/exporter.yaml -- pytest tests/hardware
    uv run jmp shell --tls-grpc 127.0.0.1:PORT --tls-grpc-insecure --passphrase SECRET -- pytest tests/hardware
    uv run jmp shell --client default --selector board=my-bench -- pytest tests/hardware

Only direct mode (`--tls-grpc`) and leases pass pytest's exit status on; local mode always exits 0.
Outside a shell they are skipped: `uv run pytest` runs them through tests/exporter_test.py.
"""

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent

SHELL_HINT = "hardware tests run inside a jmp shell: uv run jmp shell --exporter-config examples/exporter.yaml -- "
SHELL_HINT += "pytest tests/hardware"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip every hardware test outside a jmp shell.

    JumpstarterTest would otherwise try to lease an exporter through the default client config; in 0.9 it
    only falls back to that on RuntimeError, and a missing JUMPSTARTER_HOST raises something else.
    """
    if "JUMPSTARTER_HOST" not in os.environ:
        for item in items:
            if item.path.is_relative_to(HERE):
                item.add_marker(pytest.mark.skip(reason=SHELL_HINT))
