# mypy: allow-untyped-defs
"""The custom driver on its device, through whatever exporter serves it (see conftest.py for how to run these)."""

import hashlib
import os
from pathlib import Path

import pytest
from jumpstarter.client.core import DriverInvalidArgument
from jumpstarter_testing.pytest import JumpstarterTest


class TestCustom(JumpstarterTest):
    """The exporter's `custom` driver, as `client.custom`."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_configure_round_trip(self, client):
        """Settings written to the device read back unchanged."""
        client.custom.configure("hardware-test", 4)
        state = client.custom.state()
        assert (state.settings.label, state.settings.level) == ("hardware-test", 4)

    def test_refused_settings_change_nothing(self, client):
        """A level out of range is INVALID_ARGUMENT naming the field, and the device keeps its settings."""
        client.custom.configure("hardware-test", 4)
        with pytest.raises(DriverInvalidArgument, match=r"settings\.level"):
            client.custom.configure("hardware-test", 11)
        assert client.custom.state().settings.level == 4

    def test_device_streams_data(self, client):
        """The device's byte stream delivers what was asked."""
        assert len(client.custom.read_random(100_000)) == 100_000

    def test_upload_reaches_the_device(self, client, tmp_path: Path):
        """A file uploaded to the device is stored with the same size and hash."""
        image = tmp_path / "image.bin"
        image.write_bytes(os.urandom(64 * 1024))
        result = client.custom.upload(image, "hardware-test.bin")
        assert (result.size, result.sha256) == (64 * 1024, hashlib.sha256(image.read_bytes()).hexdigest())
