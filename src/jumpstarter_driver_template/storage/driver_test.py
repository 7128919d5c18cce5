# mypy: allow-untyped-defs
"""ExampleStorageMux through `serve()` and its client (upstream's StorageMuxFlasherClient, plus `state`): states,
errors, sources, CLI."""

import gzip
import hashlib
import http.server
import logging
import lzma
import os
import re
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest
from anyio.streams.stapled import StapledObjectStream
from click.testing import CliRunner
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from jumpstarter.streams.encoding import Compression
from pydantic import ValidationError

from .common import StorageState
from .driver import ExampleStorageMux

MiB = 1024 * 1024
CARD = 4 * MiB


def sha256(data: bytes) -> str:
    """The hex digest of `data`."""
    return hashlib.sha256(data).hexdigest()


def wait_until(condition, seconds: float = 10, what: str = "condition"):
    """Poll `condition` until it returns something true, and return that."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        assert time.monotonic() < deadline, f"{what} not reached within {seconds} s"
        time.sleep(0.01)
    return result


def image(path: Path, size: int) -> bytes:
    """Write `size` random bytes to `path` and return them."""
    data = os.urandom(size)
    path.write_bytes(data)
    return data


@pytest.fixture
def card(tmp_path) -> Path:
    """Where the simulated card lives."""
    return tmp_path / "card.img"


@pytest.fixture
def storage(card):
    """A storage mux with a simulated 4 MiB card."""
    with serve(ExampleStorageMux(card=str(card), size=CARD)) as client:
        yield client


def test_new_card_is_off_and_sparse(storage, card):
    """A new simulated card is created at its size, takes no disk space, starts switched off, its image unknown."""
    assert storage.state() == StorageState(side="off", image="unknown", card_size=CARD)
    assert card.stat().st_size == CARD
    assert card.stat().st_blocks == 0


def test_switching_records_the_side(storage):
    """host, dut and off move the card, and state() says where it is."""
    for side in ("host", "dut", "off"):
        getattr(storage, side)()
        assert storage.state().side == side


@pytest.mark.parametrize("method", ["host", "dut", "off", "state"])
def test_calls_refuse_extra_arguments(storage, method):
    """A call with arguments is INVALID_ARGUMENT naming the extra one, and changes nothing."""
    with pytest.raises(DriverInvalidArgument, match=r"argument 1: Unexpected positional argument \(got 'now'\)"):
        storage.call(method, "now")
    assert storage.state() == StorageState(side="off", image="unknown", card_size=CARD)


@pytest.mark.parametrize(("side", "where"), [("off", "switched off"), ("dut", r"connected to the device \(dut\)")])
def test_transfers_are_refused_unless_the_card_is_on_the_host(storage, card, tmp_path, side, where):
    """Writing or reading a card that is off or on the device fails, naming its state and the call that fixes it."""
    getattr(storage, side)()
    source = tmp_path / "image.img"
    image(source, MiB)
    for action, call in (("write", storage.write_local_file), ("read", storage.read_local_file)):
        with pytest.raises(ExceptionGroup) as error:  # upstream's client raises from inside its transfer's task group
            call(str(source))
        fix = r"call host\(\) first \(`j storage host`\)"
        assert error.group_contains(DriverError, match=f"cannot {action} the card: it is {where}; {fix}")
    assert storage.state() == StorageState(side=side, image="unknown", card_size=CARD)
    assert card.stat().st_blocks == 0  # not a byte written


def test_flash_and_dump_64_mib_match_both_ways(tmp_path):
    """flash writes a 64 MiB image that the card holds byte for byte; dump reads the same bytes back."""
    card, source, dump = tmp_path / "card.img", tmp_path / "image.img", tmp_path / "dump.img"
    data = image(source, 64 * MiB)
    with serve(ExampleStorageMux(card=str(card), size=64 * MiB)) as storage:
        storage.flash(str(source))
        assert storage.state() == StorageState(side="dut", image="complete", card_size=64 * MiB, written=64 * MiB)
        assert sha256(card.read_bytes()) == sha256(data)
        storage.dump(str(dump))
        assert sha256(dump.read_bytes()) == sha256(data)
        assert storage.state().side == "dut"  # dump, like flash, hands the card back to the device


def test_write_and_read_local_file_leave_the_card_on_the_host(storage, card, tmp_path):
    """The client API's write_local_file / read_local_file transfer without switching the card."""
    source, copy = tmp_path / "image.img", tmp_path / "copy.img"
    data = image(source, CARD)
    storage.host()
    storage.write_local_file(str(source))
    assert storage.state() == StorageState(side="host", image="complete", card_size=CARD, written=CARD)
    storage.read_local_file(str(copy))
    assert sha256(copy.read_bytes()) == sha256(data) == sha256(card.read_bytes())


def test_image_larger_than_the_card_stops_at_its_size_and_stays_on_the_host(storage, card, tmp_path):
    """An image that does not fit stops at the card's size; the card, marked incomplete, stays on the host."""
    source = tmp_path / "large.img"
    data = image(source, CARD + MiB // 2)
    with pytest.raises(ExceptionGroup) as error:
        storage.flash(str(source))
    # Upstream's flash switches to the device in a `finally`: that switch is what fails, carrying the write's error.
    too_large = f"the image does not fit on the card: {card} holds {CARD} bytes, "
    too_large += f"the image has at least {CARD + MiB // 2}"
    assert error.group_contains(DriverError, match="refusing to switch the card to the device: it holds an incomplete")
    assert error.group_contains(DriverError, match=re.escape(too_large))
    assert card.stat().st_size == CARD  # the image file did not grow
    assert card.read_bytes() == data[:CARD]
    stopped = f"write stopped after {CARD} bytes: {too_large}"
    assert storage.state() == StorageState(side="host", image="incomplete", card_size=CARD, written=CARD, error=stopped)
    with pytest.raises(DriverError, match="it stays on the host until a write completes"):
        storage.dut()


def test_a_complete_write_clears_the_incomplete_mark(storage, tmp_path):
    """After a failed write, a whole image makes the card bootable again."""
    large, small = tmp_path / "large.img", tmp_path / "small.img"
    image(large, CARD + 1)
    image(small, MiB)
    with pytest.raises(ExceptionGroup):
        storage.flash(str(large))
    assert storage.state().image == "incomplete"
    storage.flash(str(small))
    assert storage.state() == StorageState(side="dut", image="complete", card_size=CARD, written=MiB)


def test_source_failing_before_the_first_byte_leaves_the_card_as_it_was(storage, card, tmp_path):
    """A source failing before any byte lands (not xz data) leaves the old image whole: flash ends on the device."""
    good, bad = tmp_path / "good.img", tmp_path / "bad.img"
    data = image(good, MiB)
    storage.flash(str(good))
    bad.write_bytes(b"this is not xz data" * 100)
    with pytest.raises(ExceptionGroup) as error:
        storage.flash(str(bad), compression=Compression.XZ)
    assert error.group_contains(DriverError, match="Input format not supported by decoder")
    assert storage.state() == StorageState(side="dut", image="complete", card_size=CARD, written=0)
    assert card.read_bytes()[:MiB] == data


def test_empty_image_is_refused(storage, tmp_path):
    """An empty source is an error, not a successful write of nothing."""
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    storage.host()
    with pytest.raises(ExceptionGroup) as error:
        storage.write_local_file(str(empty))
    assert error.group_contains(DriverError, match="the image is empty: nothing to write")
    assert storage.state().image == "unknown"


def test_write_is_synced_before_it_returns(storage, card, tmp_path, monkeypatch):
    """write() returns only after the card's data went through fsync."""
    synced = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        real_fsync(fd)
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))

    monkeypatch.setattr(os, "fsync", fsync)
    source = tmp_path / "image.img"
    image(source, MiB)
    storage.host()
    storage.write_local_file(str(source))
    assert synced == [str(card)]


@contextmanager
def write_in_progress(client):
    """A write whose client sends chunks when the test says: yields (send, call); leaving the block ends the stream."""
    send, receive = anyio.create_memory_object_stream[bytes](1)
    unused, unread = anyio.create_memory_object_stream[bytes](1)  # the exporter sends nothing back on a write
    source = StapledObjectStream(unused, receive)

    async def write() -> None:
        async with client.resource_async(source) as handle:
            await client.call_async("write", handle)

    call = client.portal.start_task_soon(write)
    try:
        yield partial(client.portal.call, send.send), call
    finally:
        client.portal.call(send.aclose)  # EOF, as a finished client sends
        unread.close()


def test_client_leaving_mid_write_marks_the_card_incomplete(storage, card, caplog):
    """A client that goes away mid-write (Ctrl-C, a crash) leaves an error in the log and an incomplete card."""
    storage.host()
    with write_in_progress(storage) as (send, call):
        send(b"\1" * MiB)
        wait_until(lambda: storage.state().written == MiB, what="the first MiB on the card")
        call.cancel()  # the client goes away: gRPC cancels its call on the exporter
        final = wait_until(lambda: (s := storage.state()).operation is None and s, what="the write to end")
    went_away = f"write stopped after {MiB} bytes: call cancelled (the client went away, or the exporter is stopping)"
    assert final == StorageState(side="host", image="incomplete", card_size=CARD, written=MiB, error=went_away)
    errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
    assert errors == [f"{went_away}: {card} holds an incomplete image"]


def test_other_calls_are_refused_while_a_write_runs(storage, tmp_path):
    """While a write runs, switching or another transfer fails at once, naming the busy card; the write completes."""
    storage.host()
    other = tmp_path / "other.img"
    image(other, MiB)
    with write_in_progress(storage) as (send, call):
        send(b"\1" * MiB)
        wait_until(lambda: storage.state().written == MiB, what="the first MiB on the card")
        with pytest.raises(DriverError, match="cannot switch the card to dut: the card is busy writing for another"):
            storage.dut()
        with pytest.raises(ExceptionGroup) as error:
            storage.write_local_file(str(other))
        assert error.group_contains(DriverError, match="cannot write: the card is busy writing")
    call.result(timeout=10)
    assert storage.state() == StorageState(side="host", image="complete", card_size=CARD, written=MiB)


def run(client, *args: str) -> str:
    """Run a CLI command like `j storage ARGS...` and return its output; it must succeed."""
    result = CliRunner().invoke(client.cli(), list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("compression", "compress"), [("xz", lzma.compress), ("gzip", gzip.compress)])
def test_flash_compressed_image_from_the_cli(storage, card, tmp_path, compression, compress):
    """`j storage flash --compression xz|gzip FILE` writes the decompressed image."""
    source = tmp_path / f"image.img.{compression}"
    data = image(tmp_path / "image.img", 2 * MiB)
    source.write_bytes(compress(data))
    assert run(storage, "flash", "--compression", compression, str(source)) == ""
    assert storage.state() == StorageState(side="dut", image="complete", card_size=CARD, written=2 * MiB)
    assert card.read_bytes()[: 2 * MiB] == data


def test_dump_compressed(storage, card, tmp_path):
    """`j storage dump --compression xz FILE` writes the whole card, compressed, to the client's file."""
    dump = tmp_path / "dump.img.xz"
    image(tmp_path / "image.img", MiB)
    storage.flash(str(tmp_path / "image.img"))
    assert run(storage, "dump", "--compression", "xz", str(dump)) == ""
    assert sha256(lzma.decompress(dump.read_bytes())) == sha256(card.read_bytes())


@contextmanager
def http_server(directory: Path):
    """Serve `directory` on 127.0.0.1; yields (base URL, the User-Agent of each request)."""
    agents: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(directory), **kwargs)

        def do_GET(self):
            agents.append(self.headers.get("User-Agent", ""))
            super().do_GET()

        def log_message(self, format, *args):
            pass  # keep pytest's output clean

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}", agents
        finally:
            server.shutdown()
            thread.join()


def test_flash_from_an_http_url_is_downloaded_by_the_exporter(storage, card, tmp_path):
    """flash of an http:// URL makes the exporter download the image (aiohttp's User-Agent), not the client."""
    served = tmp_path / "served"
    served.mkdir()
    data = image(served / "image.img", 3 * MiB)
    with http_server(served) as (url, agents):
        storage.flash(f"{url}/image.img")
    assert [agent.split()[-1].split("/")[0] for agent in agents] == ["aiohttp"]
    assert storage.state() == StorageState(side="dut", image="complete", card_size=CARD, written=3 * MiB)
    assert card.read_bytes()[: 3 * MiB] == data


def test_flash_from_a_missing_url_leaves_the_card_as_it_was(storage, tmp_path):
    """A URL that answers 404 fails the flash before the card is touched."""
    with http_server(tmp_path) as (url, _), pytest.raises(DriverError, match="HTTP GET request failed: status=404"):
        storage.flash(f"{url}/missing.img")
    assert storage.state() == StorageState(side="dut", image="unknown", card_size=CARD)


def test_switching_runs_the_configured_commands_in_order(card, tmp_path):
    """flash runs host_command, writes, then runs dut_command; off runs off_command."""
    log = tmp_path / "mux.log"
    host, dut, off = (["sh", "-c", f"echo {side} >> {log}"] for side in ("host", "dut", "off"))
    source = tmp_path / "image.img"
    image(source, MiB)
    mux = ExampleStorageMux(card=str(card), size=CARD, host_command=host, dut_command=dut, off_command=off)
    with serve(mux) as storage:
        storage.flash(str(source))
        storage.off()
    assert log.read_text().split() == ["host", "dut", "off"]


def test_failed_switch_to_the_device_leaves_the_written_card_on_the_host(card, tmp_path):
    """A dut_command that fails after a complete write: the error names it, the card stays on the host, complete."""
    source = tmp_path / "image.img"
    image(source, MiB)
    mux = ExampleStorageMux(card=str(card), size=CARD, dut_command=["sh", "-c", "echo mux unplugged >&2; exit 2"])
    with serve(mux) as storage:
        with pytest.raises(ExceptionGroup) as error:
            storage.flash(str(source))
        assert error.group_contains(DriverError, match="dut_command sh -c .* exited with status 2: mux unplugged")
        assert storage.state() == StorageState(side="host", image="complete", card_size=CARD, written=MiB)


def test_missing_real_card_is_a_timeout_naming_it(tmp_path):
    """A card device that never appears on the host fails the write after ready_timeout, naming the path."""
    absent = tmp_path / "sdz"
    with serve(ExampleStorageMux(card=str(absent), ready_timeout=1)) as storage:
        storage.host()
        assert storage.state().card_size is None
        with pytest.raises(ExceptionGroup) as error:
            storage.write_local_file(__file__)
    assert error.group_contains(DriverError, match=f"DEADLINE_EXCEEDED: card {absent} not ready within 1 s")


def test_existing_card_of_another_size_is_refused(card):
    """An image file whose size differs from `size` stops the driver at start, naming both sizes."""
    card.write_bytes(b"\0" * 1000)
    with pytest.raises(ValueError, match=f"{card} has 1000 bytes, size says {CARD}"):
        ExampleStorageMux(card=str(card), size=CARD)


def test_cli_offers_upstreams_commands_state_and_write_local_file(card, tmp_path):
    """`j storage` has upstream's commands, plus `state` and `write-local-file` (upstream 0.9 registers it wrongly)."""
    image = tmp_path / "image.img"
    image.write_bytes(b"kernel" * 1000)
    with serve(ExampleStorageMux(card=str(card), size=CARD)) as storage:
        assert sorted(storage.cli().commands) == ["dump", "dut", "flash", "host", "off", "state", "write-local-file"]
        assert run(storage, "state") == "side=off image=unknown written=0\n"
        assert run(storage, "host") == ""
        assert run(storage, "write-local-file", str(image)) == ""
        assert run(storage, "state") == f"side=host image=complete written={6000}\n"
        assert card.read_bytes()[:6000] == image.read_bytes()
        assert run(storage, "off") == ""


@pytest.mark.parametrize(
    ("config", "field", "problem"),
    [
        ({}, "card", "Field required"),
        ({"card": ""}, "card", "at least 1 character"),
        ({"card": "c.img", "size": 0}, "size", "greater than 0"),
        ({"card": "c.img", "host_command": "usbsdmux /dev/sg0 host"}, "host_command", "valid list"),
        ({"card": "c.img", "ready_timeout": 0}, "ready_timeout", "greater than or equal to 1"),
        ({"card": "c.img", "sise": 1}, "sise", "Unexpected keyword argument"),
    ],
)
def test_config_errors_name_the_field(config, field, problem):
    """Exporter config with a wrong type or an unknown key fails with the field's name, as the exporter builds it."""
    instance = {"type": "jumpstarter_driver_template.storage.driver.ExampleStorageMux", "config": config}
    with pytest.raises(ValidationError) as error:
        ExporterConfigV1Alpha1DriverInstance.model_validate(instance).instantiate()
    assert field in str(error.value)
    assert problem in str(error.value)
