# mypy: allow-untyped-defs
"""Driver behaviour, tested through a real gRPC session: `serve()` runs the driver in-process."""

import hashlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from jumpstarter.client.core import DriverError, DriverInvalidArgument, DriverMethodNotImplemented
from jumpstarter.common.utils import serve
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from pydantic import ValidationError

from .common import STREAM_CHUNK, Settings
from .driver import ExampleCustom


@pytest.fixture
def upload_dir(tmp_path: Path) -> Path:
    """Where the custom driver stores uploads (created by the driver)."""
    return tmp_path / "uploads"


@pytest.fixture
def driver(upload_dir: Path) -> ExampleCustom:
    """The custom driver with a short task limit and an upload directory."""
    return ExampleCustom(device_id="bench-01", max_seconds=2, upload_dir=str(upload_dir))


@pytest.fixture
def custom(driver: ExampleCustom):
    """The custom driver's client, over a real gRPC session."""
    with serve(driver) as client:
        yield client


def raw_upload(client, path: Path, name: str, size: int):
    """Upload `path` as `name` while declaring `size`, to exercise the driver's own checks."""
    return client.portal.call(client._upload_async, path, name, size)


# ExampleCustom: configure and state


def test_configure_returns_and_stores_settings(custom):
    """configure stores the settings and returns them as a typed model."""
    assert custom.configure("soak", 7) == Settings(label="soak", level=7)
    assert custom.state().settings == Settings(label="soak", level=7)


def test_model_argument_crosses_as_a_dict(custom):
    """A Settings argument is sent as a dict and returned as one; letters of every script are fine in a label."""
    assert custom.call("configure", {"label": "Grüße-固件-€", "level": 3.0}) == {"label": "Grüße-固件-€", "level": 3.0}
    assert custom.state().settings == Settings(label="Grüße-固件-€", level=3)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"label": "soak", "level": 11}, r"settings\.level: Input should be less than or equal to 10 \(got 11\.0\)"),
        ({"label": "soak", "level": -1}, r"settings\.level: Input should be greater than or equal to 0"),
        (
            {"label": "soak", "level": 2.5},
            r"settings\.level: Input should be a valid integer, got a number with a frac",
        ),
        ({"label": "soak", "level": "three"}, r"settings\.level: Input should be a valid integer"),
        ({"label": "soak", "level": float("inf")}, r"settings\.level: .* \(got None\)"),  # inf and nan cross as null
        ({"label": "", "level": 3}, r"settings\.label: String should have at least 1 character"),
        ({"label": "x" * 101, "level": 3}, r"settings\.label: String should have at most 100 characters"),
        ({"label": "a\x1b[2Jb", "level": 3}, r"settings\.label: .*must not contain a control character U\+001B"),
        ({"label": 42, "level": 3}, r"settings\.label: Input should be a valid string \(got 42\.0\)"),
        ({"level": 3}, r"settings\.label: Field required"),
        ("soak", r"settings: Input should be a valid dictionary or instance of Settings \(got 'soak'\)"),
    ],
)
def test_configure_rejects_bad_settings(custom, settings, message):
    """Bad settings are INVALID_ARGUMENT naming the field and the value; the stored settings are unchanged."""
    with pytest.raises(DriverInvalidArgument, match=message):
        custom.call("configure", settings)
    assert custom.state().settings == Settings(label="default", level=0)


def test_client_method_reports_the_drivers_refusal(custom):
    """The typed client method gets the same INVALID_ARGUMENT (a ValueError) for a level out of range."""
    with pytest.raises(DriverInvalidArgument, match=r"settings\.level: Input should be less than or equal to 10"):
        custom.configure("soak", 11)


def test_megabyte_label_is_refused_and_state_keeps_answering(custom):
    """A 3.9 MB label (which every later state() answer would carry, near the 4 MiB cap) is refused at once."""
    with pytest.raises(DriverInvalidArgument, match="at most 100 characters") as error:
        custom.configure("x" * 3_900_000, 1)
    assert len(str(error.value)) < 300  # the value is shortened in the message
    assert custom.state().settings == Settings(label="default", level=0)


def test_huge_bad_argument_is_still_invalid_argument(custom):
    """A refused argument of 100 kB comes back as INVALID_ARGUMENT with a shortened value, not a transport error."""
    with pytest.raises(DriverInvalidArgument, match=r"settings\.level: .*\(got '7777.*'\)") as error:
        custom.call("configure", {"label": "soak", "level": "7" * 100_000})
    assert len(str(error.value)) < 300


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("configure", (), "settings: Missing required argument"),
        ("configure", ("soak", 3), "argument 2: Unexpected positional argument"),  # the signature before Settings
        ("state", ("extra",), "argument 1: Unexpected positional argument"),
        ("slow_task", (), "seconds: Missing required argument"),
        ("slow_task", (1, 2), "argument 2: Unexpected positional argument"),
        ("slow_generator", (1,), "interval: Missing required argument"),
        ("slow_generator", (1, 0, 0), "argument 3: Unexpected positional argument"),
        ("upload", (), "source: Missing required argument; name: Missing required argument; size: Missing"),
    ],
)
def test_wrong_number_of_arguments_is_invalid_argument(custom, method, args, message):
    """Too few or too many arguments are INVALID_ARGUMENT naming them (without @validate: UNKNOWN, a TypeError)."""
    with pytest.raises(DriverInvalidArgument, match=message):
        if method == "slow_generator":
            list(custom.streamingcall(method, *args))
        else:
            custom.call(method, *args)


def test_state_reports_device_and_idle_driver(custom):
    """state names the device and shows no activity when idle."""
    state = custom.state()
    assert (state.device_id, state.active_tasks, state.open_streams) == ("bench-01", 0, 0)


def test_reset_restores_default_settings(upload_dir):
    """reset(), called when a lease starts, forgets the previous lease's settings."""
    driver = ExampleCustom(device_id="bench-01", upload_dir=str(upload_dir))
    with serve(driver) as custom:
        custom.configure("previous-lease", 9)
        driver.reset()
        assert custom.state().settings == Settings(label="default", level=0)


def test_unexported_methods_cannot_be_called(custom):
    """Only @export methods are reachable: reset and private helpers are not."""
    for method in ("reset", "close", "_upload_path"):
        with pytest.raises(DriverMethodNotImplemented, match=f"method {method} missing marker"):
            custom.call(method)


# ExampleCustom: async calls and generators


def test_slow_task_reports_completion(custom):
    """slow_task waits, then reports which device finished."""
    assert custom.slow_task(0.05) == "bench-01: done after 0.05 s"


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (3, r"seconds: Input should be less than or equal to 2, this driver's max_seconds \(got 3\)"),
        (-1, r"seconds: Input should be greater than or equal to 0 \(got -1\.0\)"),
        ("soon", r"seconds: Input should be a valid number"),
        (float("nan"), r"seconds: Input should be a valid number \(got None\)"),  # NaN crosses gRPC as null
    ],
)
def test_slow_task_rejects_bad_durations(custom, seconds, message):
    """Durations outside 0..max_seconds, or not numbers, are INVALID_ARGUMENT."""
    with pytest.raises(DriverInvalidArgument, match=message):
        custom.slow_task(seconds)
    assert custom.slow_task(0) == "bench-01: done after 0 s"  # still serving


def test_slow_generator_yields_in_order(custom):
    """slow_generator yields 0..count-1 as ints, then ends."""
    assert list(custom.slow_generator(4, 0.01)) == [0, 1, 2, 3]
    assert list(custom.slow_generator(0, 0.01)) == []


def test_slow_generator_items_arrive_before_it_ends(custom):
    """Items stream: the first arrives while the generator still has long waits ahead."""
    items = custom.slow_generator(3, 1.5)
    assert next(items) == 0
    assert custom.state().active_tasks == 1  # the generator is still running: 0 was sent before it ended
    items.close()  # abandoning the stream cancels the generator on the exporter
    _wait_for(lambda: custom.state().active_tasks == 0)


@pytest.mark.parametrize(
    ("count", "interval", "message"),
    [
        (-1, 0, r"count: Input should be greater than or equal to 0"),
        (10_001, 0, r"count: Input should be less than or equal to 10000"),
        (1.5, 0, r"count: Input should be a valid integer, got a number with a fractional part \(got 1\.5\)"),
        (2, 5, r"interval: Input should be less than or equal to 2, this driver's max_seconds \(got 5\)"),
    ],
)
def test_slow_generator_rejects_bad_arguments(custom, count, interval, message):
    """Bad count or interval is INVALID_ARGUMENT."""
    with pytest.raises(DriverInvalidArgument, match=message):
        list(custom.slow_generator(count, interval))


def test_slow_task_does_not_block_the_exporter(custom):
    """While slow_task waits, other calls are answered: async methods never block the event loop."""
    waiting = custom.portal.start_task_soon(custom.call_async, "slow_task", 2)
    _wait_for(lambda: custom.state().active_tasks == 1)
    assert custom.configure("during", 1).label == "during"  # answered while the task waits
    assert custom.state().active_tasks == 1
    waiting.cancel()  # the client gives up: the exporter stops the task
    _wait_for(lambda: custom.state().active_tasks == 0)


# ExampleCustom: byte stream


def test_random_stream_delivers_random_bytes(custom):
    """The byte stream delivers as many bytes as asked, and they differ between reads."""
    first, second = custom.read_random(3 * STREAM_CHUNK + 7), custom.read_random(3 * STREAM_CHUNK + 7)
    assert len(first) == len(second) == 3 * STREAM_CHUNK + 7
    assert first != second


def test_random_stream_blocking_interface(custom):
    """The plain blocking stream works too: chunks are STREAM_CHUNK bytes, writes are discarded."""
    with custom.stream("random_stream") as stream:
        stream.send(b"ignored")
        assert len(stream.receive()) == STREAM_CHUNK
        assert custom.state().open_streams == 1


def test_random_stream_is_closed_after_use(custom):
    """Once the client helper is done, the driver's end of the stream is closed."""
    for _ in range(3):
        custom.read_random(10)
    _wait_for(lambda: custom.state().open_streams == 0)


def test_streams_closed_through_the_public_api_are_released(custom):
    """20 streams opened and closed with `client.stream()` leave no stream open on the driver within a second."""
    for _ in range(20):
        with custom.stream("random_stream") as stream:
            assert len(stream.receive()) == STREAM_CHUNK
    _wait_for(lambda: custom.state().open_streams == 0, seconds=1)


def _wait_for(condition, seconds: float = 10) -> None:
    """Poll, for a bounded time, a condition the exporter makes true after the client call returns."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not true after {seconds} s")
        time.sleep(0.01)


# ExampleCustom: uploads


def test_upload_stores_file_atomically(custom, upload_dir, tmp_path):
    """An upload lands under upload_dir with the right size and hash, and no temporary file."""
    data = os.urandom(2 * STREAM_CHUNK + 123)
    source = tmp_path / "image.bin"
    source.write_bytes(data)
    result = custom.upload(source, "firmware.bin")
    assert (result.name, result.size, result.sha256) == ("firmware.bin", len(data), hashlib.sha256(data).hexdigest())
    assert sorted(p.name for p in upload_dir.iterdir()) == ["firmware.bin"]
    assert (upload_dir / "firmware.bin").read_bytes() == data


def test_upload_replaces_earlier_file_and_accepts_empty(custom, upload_dir, tmp_path):
    """A new upload replaces the old file of the same name; empty files are fine."""
    source = tmp_path / "empty"
    source.write_bytes(b"")
    (upload_dir / "empty").write_bytes(b"old")
    assert custom.upload(source).size == 0
    assert (upload_dir / "empty").read_bytes() == b""


@pytest.mark.parametrize(
    "name",
    ["b" * 255, "é" * 127, "€" * 85, "固" * 85, "Grüße 固件 €.bin", "a b", "a-", "a.", "a...b"],
)
def test_upload_stores_every_name_the_check_accepts(custom, upload_dir, tmp_path, name):
    """Names of up to 255 bytes (1-, 2- and 3-byte UTF-8) and of every script are stored and read back."""
    data = os.urandom(1000)
    source = tmp_path / "payload"
    source.write_bytes(data)
    assert custom.upload(source, name).name == name
    assert (upload_dir / name).read_bytes() == data
    assert [p.name for p in upload_dir.iterdir()] == [name]  # no temporary file left


UNSAFE_NAMES = ["../escape", "/etc/passwd", "a/b", "..", ".", ".hidden", "a\\b", "", "x" * 256, "é" * 128]
UNPRINTABLE_NAMES = [
    ("line\nbreak", "control character U+000A"),
    ("esc\x1b[2Jclear", "control character U+001B"),
    ("tab\there", "control character U+0009"),
    ("del\x7f", "control character U+007F"),
    ("nul\0", "control character U+0000"),
    ("bidi\u202etxt.exe", "format character U+202E"),
    ("zero\u200bwidth", "format character U+200B"),
    ("line\u2028separator", "line separator character U+2028"),
    (" lead-space", "whitespace (U+0020)"),
    ("trail-space ", "whitespace (U+0020)"),
    ("trail-nbsp\xa0", "whitespace (U+00A0)"),
    ("-rf", "start with '-' (U+002D)"),
]


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_upload_rejects_unsafe_names(driver, custom, upload_dir, tmp_path, name):
    """Names that could escape upload_dir are INVALID_ARGUMENT, and nothing is written anywhere."""
    source = tmp_path / "payload"
    source.write_bytes(b"payload")
    with pytest.raises(DriverInvalidArgument, match="upload name must"):
        raw_upload(custom, source, name, len(b"payload"))  # the client would turn "" into the file's name
    assert list(upload_dir.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["payload", "uploads"]
    assert driver.resources == {}  # the refused upload's stream is released on the exporter


@pytest.mark.parametrize(("name", "problem"), UNPRINTABLE_NAMES)
def test_upload_rejects_names_that_fool_terminals(driver, custom, upload_dir, tmp_path, name, problem):
    """Control and format characters, edge whitespace and a leading '-': INVALID_ARGUMENT naming the code point."""
    source = tmp_path / "payload"
    source.write_bytes(b"payload")
    with pytest.raises(DriverInvalidArgument, match=f"upload name must not .*{re.escape(problem)}, got '") as error:
        raw_upload(custom, source, name, len(b"payload"))
    assert str(error.value).isprintable()  # the name is shown escaped: safe to print or log
    assert list(upload_dir.iterdir()) == []
    assert driver.resources == {}


@pytest.mark.parametrize(("name", "problem"), [*UNPRINTABLE_NAMES, ("\udce9t\udce9.bin", "surrogate character U+DCE9")])
def test_client_refuses_names_that_fool_terminals(custom, upload_dir, tmp_path, name, problem):
    """The client refuses the same names before sending (a non-UTF-8 file name decodes to surrogates)."""
    source = tmp_path / "payload"
    source.write_bytes(b"payload")
    with pytest.raises(ValueError, match=re.escape(problem)) as error:
        custom.upload(source, name)
    assert not isinstance(error.value, DriverInvalidArgument)  # raised locally, not by the driver
    assert list(upload_dir.iterdir()) == []


def test_truncated_upload_keeps_earlier_file(custom, upload_dir, tmp_path):
    """An upload that ends early fails, keeps the earlier file intact and leaves no partial file."""
    (upload_dir / "disk.img").write_bytes(b"known good")
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(STREAM_CHUNK + 5))
    with pytest.raises(DriverInvalidArgument, match=f"incomplete: received {STREAM_CHUNK + 5} of"):
        raw_upload(custom, source, "disk.img", STREAM_CHUNK + 6)
    assert (upload_dir / "disk.img").read_bytes() == b"known good"
    assert sorted(p.name for p in upload_dir.iterdir()) == ["disk.img"]


def test_oversized_upload_is_refused_and_keeps_earlier_file(custom, upload_dir, tmp_path):
    """An upload sending more than it announced is refused without storing anything."""
    (upload_dir / "disk.img").write_bytes(b"known good")
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(3 * STREAM_CHUNK))
    with pytest.raises(DriverInvalidArgument, match="larger than the 10 bytes announced"):
        raw_upload(custom, source, "disk.img", 10)
    assert (upload_dir / "disk.img").read_bytes() == b"known good"
    assert sorted(p.name for p in upload_dir.iterdir()) == ["disk.img"]


@pytest.mark.parametrize(
    ("size", "message"), [(-1, r"size: Input should be greater than or equal to 0 \(got -1\)"), (2.5, "size: ")]
)
def test_upload_rejects_bad_sizes(driver, custom, upload_dir, tmp_path, size, message):
    """A negative or fractional size is INVALID_ARGUMENT; nothing is stored."""
    source = tmp_path / "payload"
    source.write_bytes(b"payload")
    with pytest.raises(DriverInvalidArgument, match=message):
        raw_upload(custom, source, "payload", size)
    assert list(upload_dir.iterdir()) == []


def test_upload_larger_than_the_free_space_is_refused_before_any_byte(
    driver, custom, upload_dir, tmp_path, monkeypatch
):
    """An announced size over upload_dir's free space fails at once, naming the directory, size and free space."""
    (upload_dir / "disk.img").write_bytes(b"known good")
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(2000))
    disk_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: disk_usage(path)._replace(free=1999))
    message = f"not enough space in {upload_dir} for 'disk.img': 2000 bytes announced, 1999 free"
    with pytest.raises(DriverError, match=re.escape(message)):
        custom.upload(source)
    assert (upload_dir / "disk.img").read_bytes() == b"known good"
    assert [p.name for p in upload_dir.iterdir()] == ["disk.img"]  # no temporary file was even created
    assert driver.resources == {}


@pytest.mark.parametrize("size", [100, 3 * STREAM_CHUNK])  # fails in flush(), or in the first write
def test_disk_filling_up_during_an_upload_is_reported(custom, upload_dir, tmp_path, monkeypatch, size):
    """A disk that fills mid-transfer (ENOSPC) fails with a message saying so; the old file stays, no partial file."""
    (upload_dir / "disk.img").write_bytes(b"known good")
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(size))
    mkstemp = tempfile.mkstemp

    def mkstemp_on_a_full_disk(**kwargs):
        fd, path = mkstemp(**kwargs)
        full = os.open("/dev/full", os.O_WRONLY)  # every write to /dev/full fails with ENOSPC
        os.dup2(full, fd)
        os.close(full)
        return fd, path

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_on_a_full_disk)
    message = f"no space left in {upload_dir} after {size} of {size} bytes"
    with pytest.raises(DriverError, match=re.escape(message)) as error:
        custom.upload(source)
    assert not isinstance(error.value, DriverInvalidArgument)
    assert (upload_dir / "disk.img").read_bytes() == b"known good"
    assert [p.name for p in upload_dir.iterdir()] == ["disk.img"]


def test_client_refuses_bad_upload_name_before_sending(custom, upload_dir, tmp_path):
    """The client checks the name itself: a ValueError before any byte is sent."""
    source = tmp_path / "payload"
    source.write_bytes(b"payload")
    with pytest.raises(ValueError, match="must not contain path separators") as error:
        custom.upload(source, "../escape")
    assert not isinstance(error.value, DriverInvalidArgument)  # raised locally, not by the driver
    assert list(upload_dir.iterdir()) == []


def test_client_refuses_to_upload_a_pipe(custom, upload_dir, tmp_path):
    """A FIFO has no size to announce: the client refuses it with a clear error, and sends nothing."""
    fifo = tmp_path / "image.fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file: an upload needs to know its size"):
        custom.upload(fifo)
    assert list(upload_dir.iterdir()) == []


def test_reset_removes_partial_uploads(upload_dir):
    """reset() removes partial files an exporter crash left behind, and only those."""
    driver = ExampleCustom(device_id="bench-01", upload_dir=str(upload_dir))
    (upload_dir / ".upload-k2j3x9ab.partial").write_bytes(b"half")
    (upload_dir / "disk.img").write_bytes(b"whole")
    driver.reset()
    assert sorted(p.name for p in upload_dir.iterdir()) == ["disk.img"]


def test_upload_disabled_without_upload_dir(tmp_path):
    """Without upload_dir, upload is UNIMPLEMENTED with a message saying how to enable it."""
    source = tmp_path / "payload"
    source.write_bytes(b"x")
    with (
        serve(ExampleCustom(device_id="bench-01")) as custom,
        pytest.raises(DriverMethodNotImplemented, match="set upload_dir"),
    ):
        custom.upload(source)


# Config validation: exporter YAML `config:` goes through the same path as here.


def from_exporter_config(driver: str, config: dict):
    """Instantiate a driver the way the exporter does from its YAML."""
    instance = {"type": f"jumpstarter_driver_template.custom.driver.{driver}", "config": config}
    return ExporterConfigV1Alpha1DriverInstance.model_validate(instance).instantiate()


def test_config_builds_driver(tmp_path):
    """A valid config builds the driver, with defaults for optional fields."""
    driver = from_exporter_config("ExampleCustom", {"device_id": "bench-01"})
    assert (driver.device_id, driver.max_seconds, driver.upload_dir) == ("bench-01", 10.0, None)


@pytest.mark.parametrize(
    ("driver", "config", "field", "problem"),
    [
        ("ExampleCustom", {"device_id": "x", "max_secnds": 5}, "max_secnds", "Unexpected keyword argument"),
        ("ExampleCustom", {"device_id": "x", "max_seconds": "soon"}, "max_seconds", "valid number"),
        ("ExampleCustom", {"device_id": "x", "max_seconds": 0}, "max_seconds", "greater than 0"),
        ("ExampleCustom", {"max_seconds": 5}, "device_id", "Field required"),
        ("ExampleCustom", {"device_id": ""}, "device_id", "at least 1 character"),
        ("ExampleCustom", {"device_id": "x" * 256}, "device_id", "at most 255 characters"),
        ("ExampleCustom", {"device_id": "x", "max_seconds": 86_401}, "max_seconds", "less than or equal to 86400"),
    ],
)
def test_config_errors_name_the_field(driver, config, field, problem):
    """Unknown keys, wrong types and missing required fields fail with the field's name."""
    with pytest.raises(ValidationError) as error:
        from_exporter_config(driver, config)
    assert field in str(error.value)
    assert problem in str(error.value)
