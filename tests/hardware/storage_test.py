# mypy: allow-untyped-defs
"""The storage mux on its bench, through whatever exporter serves it (see conftest.py for how to run these)."""

import os
from pathlib import Path

import pytest
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

    def test_write_local_file_then_dut(self, client, tmp_path: Path):
        """Upstream's documented pattern: `write_local_file(image)` switches the card to the host, then `dut()`."""
        image = tmp_path / "image.img"
        image.write_bytes(os.urandom(MiB))
        client.storage.off()
        written = client.storage.write_local_file(image)
        assert (written.side, written.image, written.written) == ("host", "complete", MiB)
        client.storage.dut()
        assert client.storage.state().side == "dut"

    def test_missing_image_leaves_the_card_on_the_device(self, client, tmp_path: Path):
        """A typo in the image's path fails before anything moves the card."""
        client.storage.dut()
        with pytest.raises(FileNotFoundError, match=r"no image at .*: the card was not touched"):
            client.storage.flash(tmp_path / "missing.img")
        assert client.storage.state().side == "dut"
