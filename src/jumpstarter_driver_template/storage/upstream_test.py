# mypy: allow-untyped-defs
"""Upstream's own tests of its storage clients, run against ExampleStorageMux with only the mock swapped.

jumpstarter-driver-opendal ships its tests (`jumpstarter_driver_opendal/driver_test.py`, Apache-2.0, as this
package): the tests of `StorageMuxClient`, `StorageMuxFlasherClient` and `FlasherClient.flash` run here as
they are, their mock drivers (`MockStorageMux`, `MockStorageMuxFlasher`, `MockFlasher`) replaced by the example
on a simulated card. Four cannot apply to a storage mux as they are (run unchanged, they fail as said here):

- `test_driver_mock_storage_mux_flasher` expects the calls host, write, dut: the example's `write` switches
  to the host itself, after checking the source, and takes the image's length. Adapted below.
- `test_drivers_mock_storage_mux_fs` compares a read-back with the file written: a card reads back whole
  (the image, then what the card held). Adapted below.
- `test_driver_flasher[None]` and `[uboot]` test `FlasherInterface` with named targets (a flasher of several
  partitions); a storage mux has one card (upstream's StorageMuxFlasherClient refuses a target too), and its
  dump is the whole card. The adapted mux-flasher test covers flash and dump.
"""

from unittest import mock

import pytest

from .common import StorageState
from .driver import ExampleStorageMux

upstream = pytest.importorskip("jumpstarter_driver_opendal.driver_test", reason="upstream's wheel ships its tests")

MiB = 1024 * 1024
CARD = 16 * MiB


@pytest.fixture(autouse=True)
def example_for_upstreams_mocks(monkeypatch, tmp_path):
    """Upstream's mocks, in its test module, become the example on a simulated card."""
    card = tmp_path / "example-card.img"
    for mock_name in ("MockStorageMux", "MockStorageMuxFlasher", "MockFlasher"):
        monkeypatch.setattr(upstream, mock_name, lambda: ExampleStorageMux(card=str(card), size=CARD))


@pytest.mark.parametrize(
    "name",
    [
        "test_drivers_mock_storage_mux_http",  # write_file from an opendal http operator
        "test_flash_http_with_explicit_operator",
        "test_flash_http_url_preserves_percent_encoding",
        "test_flash_http_redirect_preserves_percent_encoding",
        "test_flash_http_chained_redirects_preserve_percent_encoding",
        "test_flash_http_redirect_loop_raises",
        "test_flash_http_redirect_missing_location_raises",
    ],
)
def test_upstream(name):
    """Upstream's test `name` passes against the example as it is."""
    getattr(upstream, name)()


@pytest.mark.parametrize("status_code", [301, 302, 303, 307, 308])
def test_upstream_redirect_status_codes(status_code):
    """Upstream's test_flash_http_redirect_all_status_codes passes against the example as it is."""
    upstream.test_flash_http_redirect_all_status_codes(status_code)


# Adapted from upstream's test_driver_mock_storage_mux_flasher (jumpstarter-driver-opendal 0.9.0, Apache-2.0).
# Upstream's `flash` calls host, write, dut; the example's `write` switches the card itself, after the source
# was checked (a missing file or a URL's 404 then leaves the card where it was), and tells the driver the
# image's length; `dump` asks for the state, since a half-written card must stay on the host. A card's dump is
# the whole card, where upstream's mock returns the file it was given: the dump's first bytes are compared.
def test_upstream_storage_mux_flasher_adapted(tmp_path):
    """flash is write then dut, dump is read then dut; the dump starts with the image."""
    with upstream.serve(upstream.MockStorageMuxFlasher()) as flasher:
        (tmp_path / "disk.img").write_bytes(b"hello")
        with mock.patch.object(flasher, "call", side_effect=flasher.call) as calls:
            flasher.flash(tmp_path / "disk.img")
            assert calls.call_args_list == [mock.call("write", mock.ANY, 5, None, False), mock.call("dut")]
            calls.reset_mock()
            flasher.dump(tmp_path / "dump.img")
            assert calls.call_args_list == [mock.call("read", mock.ANY), mock.call("state"), mock.call("dut")]
        assert (tmp_path / "dump.img").read_bytes()[:5] == b"hello"
        assert flasher.state() == StorageState(side="dut", image="complete", card_size=CARD, written=5)


# Adapted from upstream's test_drivers_mock_storage_mux_fs (jumpstarter-driver-opendal 0.9.0, Apache-2.0):
# the same absolute and relative paths, but a card reads back whole, so the read-back is compared up to the
# image's length (upstream's mock stores the file as it came).
def test_upstream_storage_mux_fs_adapted(monkeypatch, tmp_path):
    """write_local_file and read_local_file with absolute and relative paths; the card holds each image."""
    with upstream.serve(upstream.MockStorageMux()) as client:
        original, readback = tmp_path / "original", tmp_path / "readback"
        for size, write_as, read_as in (
            (10 * MiB, str(original), str(readback)),
            (MiB, "original", "readback"),
            (MiB, "./original", "./readback"),
        ):
            monkeypatch.chdir(tmp_path)
            data = upstream.randbytes(size)
            original.write_bytes(data)
            client.write_local_file(write_as)
            client.read_local_file(read_as)
            assert readback.read_bytes()[:size] == data
            assert readback.stat().st_size == CARD
