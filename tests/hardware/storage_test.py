# mypy: allow-untyped-defs
"""The storage mux on its bench, through whatever exporter serves it (see conftest.py for how to run these)."""

import os
from pathlib import Path

import pytest
from jumpstarter.client.core import DriverError
from jumpstarter_testing.pytest import JumpstarterTest

MiB = 1024 * 1024


class TestStorage(JumpstarterTest):
    """The exporter's `storage` driver, as `client.storage` (upstream's StorageMuxFlasherClient, plus `state`)."""

    selector = "board=my-bench"  # the exporter labels to lease when run through a controller

    def test_flash_hands_a_complete_card_to_the_device(self, client, tmp_path: Path):
        """flash writes the image on the host side, then switches the card to the device."""
        image = tmp_path / "image.img"
        data = os.urandom(MiB)
        image.write_bytes(data)
        client.storage.flash(str(image))
        state = client.storage.state()
        assert (state.side, state.image, state.written) == ("dut", "complete", MiB)
        # dump reads the whole card: seconds for the example's 64 MiB, minutes for a real 32 GB card.
        dump = tmp_path / "dump.img"
        client.storage.dump(str(dump))
        with dump.open("rb") as file:
            assert file.read(MiB) == data

    def test_card_on_the_device_is_not_written(self, client, tmp_path: Path):
        """While the device has the card, a write is refused and names the call that fixes it."""
        image = tmp_path / "image.img"
        image.write_bytes(os.urandom(MiB))
        client.storage.dut()
        with pytest.raises(ExceptionGroup) as error:
            client.storage.write_local_file(str(image))
        assert error.group_contains(DriverError, match=r"it is connected to the device \(dut\); call host\(\) first")
        assert client.storage.state().side == "dut"
