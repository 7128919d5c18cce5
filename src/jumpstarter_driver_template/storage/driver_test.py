# mypy: allow-untyped-defs
"""ExampleStorageMux through `serve()` and its client (upstream's StorageMuxFlasherClient, plus `state`): states,
errors, sources, CLI."""

import bz2
import gzip
import hashlib
import http.server
import logging
import lzma
import os
import re
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import anyio
import pytest
from anyio.streams.stapled import StapledObjectStream
from backports import zstd
from click.testing import CliRunner
from jumpstarter.client.core import DriverError, DriverInvalidArgument
from jumpstarter.common.exceptions import FileNotFoundError
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from jumpstarter.streams.encoding import Compression
from pydantic import ValidationError

from . import driver
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


@pytest.mark.parametrize("side", ["off", "dut"])
def test_transfers_switch_the_card_to_the_host_themselves(storage, card, tmp_path, side):
    """write and read switch the card to the host, as upstream's real muxes do; `dut()` then hands it over."""
    getattr(storage, side)()
    source, copy = tmp_path / "image.img", tmp_path / "copy.img"
    data = image(source, MiB)
    assert storage.write_local_file(source) == StorageState(side="host", image="complete", card_size=CARD, written=MiB)
    storage.dut()  # upstream's JumpstarterTest pattern: write_local_file(image), then dut()
    assert storage.state().side == "dut"
    storage.read_local_file(copy)
    assert storage.state().side == "host"
    assert copy.read_bytes()[:MiB] == data == card.read_bytes()[:MiB]


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
    too_large = f"the image does not fit on the card: {card} holds {CARD} bytes, "
    too_large += f"the image has at least {CARD + MiB // 2}"
    with pytest.raises(DriverInvalidArgument, match=re.escape(too_large)):
        storage.flash(str(source))
    assert card.stat().st_size == CARD  # the image file did not grow
    assert sha256(card.read_bytes()) == sha256(data[:CARD])  # (a diff of 4 MiB would take pytest hours)
    stopped = f"write stopped after {CARD} bytes: {too_large}"
    assert storage.state() == StorageState(side="host", image="incomplete", card_size=CARD, written=CARD, error=stopped)
    with pytest.raises(DriverError, match="it stays on the host until a write completes"):
        storage.dut()


def test_an_image_too_large_still_writes_all_that_fits_when_the_card_is_slow(storage, card, tmp_path, monkeypatch):
    """The card holds the image's first bytes even when its writes lag behind the source (a busy machine)."""
    real = driver.to_thread.run_sync

    async def lagging(function, *args):
        await anyio.sleep(0.1)  # every write waits: the source is read ahead, up to and past the card's end
        return await real(function, *args)

    monkeypatch.setattr(driver.to_thread, "run_sync", lagging)
    source = tmp_path / "large.img"
    data = image(source, CARD + MiB // 2)
    with pytest.raises(DriverInvalidArgument, match="the image does not fit on the card"):
        storage.flash(str(source))
    assert sha256(card.read_bytes()) == sha256(data[:CARD])
    assert storage.state().written == CARD


def test_a_complete_write_clears_the_incomplete_mark(storage, tmp_path):
    """After a failed write, a whole image makes the card bootable again."""
    large, small = tmp_path / "large.img", tmp_path / "small.img"
    image(large, CARD + 1)
    image(small, MiB)
    with pytest.raises(DriverError):
        storage.flash(str(large))
    assert storage.state().image == "incomplete"
    storage.flash(str(small))
    assert storage.state() == StorageState(side="dut", image="complete", card_size=CARD, written=MiB)


def test_source_failing_before_the_first_byte_leaves_the_card_as_it_was(storage, card, tmp_path):
    """A source failing before any byte lands (not xz data) leaves the old image whole, the card on the device."""
    good, bad = tmp_path / "good.img", tmp_path / "bad.img"
    data = image(good, MiB)
    storage.flash(str(good))
    bad.write_bytes(b"this is not xz data" * 100)
    with pytest.raises(DriverInvalidArgument, match=r"the xz data is not valid after 1900 compressed bytes .*format"):
        storage.flash(str(bad), compression=Compression.XZ)
    assert storage.state() == StorageState(side="dut", image="complete", card_size=CARD, written=0)
    assert card.read_bytes()[:MiB] == data


def test_empty_image_is_refused(storage, tmp_path):
    """An empty source is an error, not a successful write of nothing."""
    empty = tmp_path / "empty.img"
    empty.write_bytes(b"")
    with pytest.raises(DriverInvalidArgument, match="the image is empty: nothing to write"):
        storage.write_local_file(str(empty))
    assert storage.state() == StorageState(side="off", image="unknown", card_size=CARD)  # switched back


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
        with pytest.raises(DriverError, match="cannot write: the card is busy writing"):
            storage.write_local_file(str(other))
    call.result(timeout=10)
    state = storage.state()  # the test's write sent no length, as upstream's bare client does
    assert (state.side, state.image, state.written) == ("host", "unverified", MiB)


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


@pytest.mark.parametrize("side", ["off", "dut"])
def test_flash_from_a_missing_url_leaves_the_card_where_it_was(storage, tmp_path, side):
    """A URL that answers 404 fails the flash, naming the status, before the card is switched or touched."""
    getattr(storage, side)()
    with http_server(tmp_path) as (url, _), pytest.raises(DriverError, match=r"/missing.img answered HTTP 404 File"):
        storage.flash(f"{url}/missing.img")
    assert storage.state() == StorageState(side=side, image="unknown", card_size=CARD)


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
        with pytest.raises(DriverError, match=r"dut_command sh -c .* exited with status 2: mux unplugged"):
            storage.flash(str(source))
        assert storage.state() == StorageState(side="host", image="complete", card_size=CARD, written=MiB)


def test_failed_switch_to_the_host_leaves_the_card_where_it_was(card, tmp_path):
    """A host_command that fails: the write's error names it; the card stays on the device, its image untouched."""
    source = tmp_path / "image.img"
    image(source, MiB)
    fail = ["sh", "-c", "echo no mux >&2; exit 3"]
    with serve(ExampleStorageMux(card=str(card), size=CARD, host_command=fail)) as storage:
        storage.dut()
        with pytest.raises(DriverError, match=r"host_command sh -c .* exited with status 3: no mux"):
            storage.flash(source)
        assert storage.state() == StorageState(side="dut", image="unknown", card_size=CARD)


def test_missing_real_card_is_a_timeout_naming_it(tmp_path):
    """A card device that never appears on the host fails the write after ready_timeout, naming the path."""
    absent = tmp_path / "sdz"
    with serve(ExampleStorageMux(card=str(absent), ready_timeout=1)) as storage:
        storage.host()
        assert storage.state().card_size is None
        with pytest.raises(DriverError, match=f"DEADLINE_EXCEEDED: card {absent} not ready within 1 s"):
            storage.write_local_file(__file__)


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


COMPRESS: dict[Compression, Callable[[bytes], bytes]] = {
    Compression.GZIP: gzip.compress,
    Compression.XZ: partial(lzma.compress, preset=0),
    Compression.BZ2: partial(bz2.compress, compresslevel=1),
    Compression.ZSTD: zstd.compress,
}
"""Every compression upstream's client offers (jumpstarter.streams.encoding.Compression)."""


def test_every_compression_upstream_offers_is_covered():
    """The tests below cover each of upstream's Compression values: a new one in upstream fails here first."""
    assert set(COMPRESS) == set(Compression)


@pytest.mark.parametrize("compression", list(Compression))
def test_whole_compressed_images_are_complete_even_in_several_members(storage, card, tmp_path, compression):
    """A compressed image (two concatenated members, as `cat a.gz b.gz` or pbzip2 make) is written whole, complete."""
    first, second = os.urandom(MiB), os.urandom(MiB // 2)
    source = tmp_path / f"image.{compression}"
    source.write_bytes(COMPRESS[compression](first) + COMPRESS[compression](second))
    written = storage.flash(source, compression=compression)
    assert written == StorageState(side="dut", image="complete", card_size=CARD, written=MiB + MiB // 2)
    assert card.read_bytes()[: len(first + second)] == first + second


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, -1], ids=["25%", "50%", "90%", "all-but-1-byte"])
@pytest.mark.parametrize("compression", list(Compression))
def test_truncated_compressed_image_stays_on_the_host_marked_incomplete(storage, card, tmp_path, compression, cut):
    """A compressed image cut short (of its end marker) fails the flash: the card stays on the host, incomplete."""
    whole = COMPRESS[compression](os.urandom(MiB))
    source = tmp_path / f"image.{compression}"
    source.write_bytes(whole[: int(len(whole) * cut)] if cut > 0 else whole[:cut])
    truncated = f"the {compression} data ends after {source.stat().st_size} compressed bytes, before its end marker"
    with pytest.raises(DriverInvalidArgument, match=truncated):
        storage.flash(source, compression=compression)
    state = storage.state()
    assert (state.side, state.image) == ("host", "incomplete")
    assert 0 < state.written <= MiB  # all-but-1-byte: every image byte, but not the end marker
    assert truncated in (state.error or "")
    with pytest.raises(DriverError, match="it stays on the host until a write completes"):
        storage.dut()


def test_data_after_a_compressed_image_is_an_error(storage, tmp_path):
    """Bytes after the last member that are not another member fail the write, in the decompressor's words."""
    source = tmp_path / "image.gz"
    source.write_bytes(gzip.compress(os.urandom(MiB)) + b"trailing garbage")
    with pytest.raises(DriverInvalidArgument, match=r"the gzip data is not valid after .*incorrect header check"):
        storage.flash(source, compression=Compression.GZIP)
    assert (storage.state().side, storage.state().image) == ("host", "incomplete")


def test_missing_local_file_fails_before_the_card_moves(storage, tmp_path):
    """flash or write_local_file of a file that does not exist fails in one line; the card stays where it was."""
    storage.dut()
    missing = tmp_path / "missing.img"
    for call in (storage.flash, storage.write_local_file):
        with pytest.raises(FileNotFoundError, match=f"^no image at {missing}: the card was not touched$"):
            call(missing)
    assert storage.state() == StorageState(side="dut", image="unknown", card_size=CARD)


@contextmanager
def http_source(respond):
    """An HTTP server on 127.0.0.1 whose GET handler is `respond(handler)`; yields (URL, the release event).

    A handler that stalls waits on the event, which the block's end sets: no thread outlives the test.
    """
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes, unless a length says otherwise

        def do_GET(self):
            respond(self, release)

        def log_message(self, format, *args):
            pass

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) as server:
        thread = threading.Thread(target=server.serve_forever)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/image.img", release
        finally:
            release.set()
            server.shutdown()
            thread.join()


def cut_body(data: bytes, length: int | None):
    """A response that sends half of `data` and closes, declaring `length` (None: no Content-Length)."""

    def respond(handler, release):
        handler.send_response(200)
        if length is not None:
            handler.send_header("Content-Length", str(length))
        handler.end_headers()
        handler.wfile.write(data[: len(data) // 2])

    return respond


def test_url_without_a_length_is_refused_unless_unverified_is_accepted(storage, card, tmp_path):
    """An HTTP/1.0 body with no length, cut mid-way: refused, card untouched; with unverified_ok, marked unverified."""
    good = tmp_path / "good.img"
    data = image(good, MiB)
    storage.flash(good)
    with http_source(cut_body(os.urandom(2 * MiB), None)) as (url, _):
        with pytest.raises(DriverInvalidArgument, match=f"{url} sends no length and is not compressed: a transfer cut"):
            storage.flash(url)
        assert storage.state() == StorageState(side="dut", image="complete", card_size=CARD, written=MiB)
        assert card.read_bytes()[:MiB] == data
        written = storage.flash(url, unverified_ok=True)
    assert (written.side, written.image, written.written) == ("dut", "unverified", MiB)
    assert storage.state().side == "dut"
    assert written.error is not None and f"nothing checked that {url} sent the whole image" in written.error


def test_cli_flash_warns_of_an_unverified_image(storage, tmp_path):
    """`j storage flash --unverified-ok URL` writes it, and says on stderr that nothing checked its end."""
    with http_source(cut_body(os.urandom(MiB), None)) as (url, _):
        result = CliRunner().invoke(storage.cli(), ["flash", "--unverified-ok", url], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"Warning: the image is unverified: nothing checked that {url} sent the whole")


def test_url_cut_short_of_its_content_length_stays_on_the_host(storage, tmp_path):
    """A body cut short of its Content-Length fails, in the HTTP client's words; card on the host, incomplete."""
    with http_source(cut_body(os.urandom(2 * MiB), 2 * MiB)) as (url, _):
        broke_off = f"the download of {url} broke off: Response payload is not completed"
        with pytest.raises(DriverError, match=broke_off):
            storage.flash(url)
    state = storage.state()
    assert (state.side, state.image) == ("host", "incomplete")
    assert state.error is not None and state.error.startswith(f"write stopped after {state.written} bytes: the down")


def test_compressed_url_without_a_length_is_checked_by_its_end_marker(storage, tmp_path):
    """A compressed image from an HTTP/1.0 server without a length is checked by its end marker (cut: incomplete)."""
    whole = lzma.compress(os.urandom(2 * MiB), preset=0)
    truncated = f"the xz data ends after {len(whole) // 2} compressed bytes, before its end marker"
    with http_source(cut_body(whole, None)) as (url, _), pytest.raises(DriverInvalidArgument, match=truncated):
        storage.flash(url, compression=Compression.XZ)
    assert (storage.state().side, storage.state().image) == ("host", "incomplete")


@pytest.fixture
def impatient(card):
    """A storage mux whose writes wait at most 1 s for a source's next byte."""
    with serve(ExampleStorageMux(card=str(card), size=CARD, stall_timeout=1)) as client:
        yield client


def test_url_stalling_before_its_headers_fails_and_leaves_the_card_where_it_was(impatient):
    """A server that never answers: DEADLINE_EXCEEDED after stall_timeout; nothing switched, other calls served."""
    impatient.dut()
    with http_source(lambda handler, release: release.wait(30)) as (url, _):
        with pytest.raises(DriverError, match="DEADLINE_EXCEEDED: no answer from the source for 1 s"):
            impatient.flash(url)
        assert impatient.state() == StorageState(side="dut", image="unknown", card_size=CARD)


def test_url_stalling_mid_body_fails_with_the_card_on_the_host(impatient):
    """A body that stops mid-way: DEADLINE_EXCEEDED, card on the host, incomplete; other calls served at once."""

    def stall(handler, release):
        handler.send_response(200)
        handler.send_header("Content-Length", str(2 * MiB))
        handler.end_headers()
        handler.wfile.write(b"\1" * MiB)
        handler.wfile.flush()
        release.wait(30)

    with http_source(stall) as (url, _):
        with pytest.raises(DriverError, match=f"DEADLINE_EXCEEDED: no byte from {url} for 1 s .*the source stalled"):
            impatient.flash(url)
        state = impatient.state()  # while the server still holds the connection
        assert (state.side, state.image, state.operation, state.written) == ("host", "incomplete", None, MiB)
        impatient.off()  # the card is free again
    assert impatient.state().side == "off"
