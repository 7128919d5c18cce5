# mypy: allow-untyped-defs
"""ExampleCustom end to end: `j custom` in local mode; a `jmp run` exporter under load, killed clients, bad input.

Clients here are real gRPC clients over TCP, in this process (`Exporter.client()`, built as
`jmp shell --tls-grpc` builds its own) or in child processes (`jmp shell ... -- j ...`) that the
tests kill. The module's exporter allows long tasks (max_seconds 600), so calls outlive a killed client.
"""

import hashlib
import os
import re
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import (
    REPORTED,
    Exporter,
    drivers_only,
    example_config,
    exporter_process,
    local_shell,
    start,
    stop_group,
    wait_for,
    write_config,
)
from jumpstarter.client.core import DriverInvalidArgument, DriverMethodNotImplemented
from jumpstarter.config.exporter import ExporterConfigV1Alpha1DriverInstance
from pydantic import ValidationError

from jumpstarter_driver_template.custom.common import Settings

# The exporters here serve this driver alone: each `j` loads one client.
CONFIG = drivers_only("custom")

UPLOAD_DIR = example_config()["export"]["custom"]["config"]["upload_dir"]
CLIENTS = 8
CALLS = 200


# Local mode: every `j custom` command through `jmp shell --exporter-config`


@dataclass
class Session:
    """What one local `jmp shell` session ran with, and what it printed."""

    config: Path
    upload_dir: Path
    image: Path
    saved: Path
    out: str


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> Session:
    """One local session running every `j` command (each `j` start costs seconds of imports)."""
    tmp = tmp_path_factory.mktemp("local")
    config = write_config(tmp, config=CONFIG)
    upload_dir = tmp / UPLOAD_DIR  # the config's relative upload_dir, from the exporter's directory
    upload_dir.mkdir()
    (upload_dir / ".upload-leftbyacrash.partial").write_bytes(b"half")
    image, saved = tmp / "image.bin", tmp / "random.bin"
    image.write_bytes(os.urandom(300_000))
    out = local_shell(
        config,
        f"""
        j custom configure soak 3
        j custom state
        j custom slow-task 0.1
        j custom slow-generator -n 3 -i 0
        j custom random 16
        j custom random 1000000 -o {saved}
        j custom upload {image} --name firmware.bin
        j custom slow-task 11 || echo "slow-task FAILED with $?"
        j custom upload {image} --name .hidden || echo "upload FAILED with $?"
        j custom combined-action final 9
        """,
    )
    return Session(config, upload_dir, image, saved, out)


def test_custom_commands_work_in_local_mode(session: Session):
    """Each `j custom` command works through a local exporter and prints its result."""
    out = session.out
    assert "label=soak level=3\n" in out
    assert "device_id=bench-01 label=soak level=3 active_tasks=0 open_streams=0" in out
    assert "bench-01: done after 0.1 s" in out
    assert "\n0\n1\n2\n" in out
    assert re.search(r"^[0-9a-f]{32}$", out, re.MULTILINE)
    assert f"wrote 1000000 bytes to {session.saved}" in out
    assert session.saved.stat().st_size == 1_000_000
    assert "device_id=bench-01 label=final level=9 active_tasks=0 open_streams=0" in out


def test_upload_command_stores_the_file(session: Session):
    """`j custom upload` stores the file under the configured upload_dir and prints its size and hash."""
    digest = hashlib.sha256(session.image.read_bytes()).hexdigest()
    assert f"uploaded firmware.bin: 300000 bytes, sha256 {digest}" in session.out
    assert (session.upload_dir / "firmware.bin").read_bytes() == session.image.read_bytes()


def test_bad_input_is_one_error_line(session: Session):
    """A value the driver refuses, and a name the client refuses, each print one `Error:` line and fail.

    (Through CliRunner a refused value exits 2; `j` itself exits 1 for every click error.)
    """
    errors = [line for line in session.out.splitlines() if line.startswith("Error:")]
    assert len(errors) == 2, session.out
    assert "seconds: Input should be less than or equal to 10, this driver's max_seconds (got 11)" in errors[0]
    assert "upload name must not contain path separators or start with '.', got '.hidden'" in errors[1]
    assert "slow-task FAILED with 1" in session.out
    assert "upload FAILED with 1" in session.out
    assert "Traceback" not in session.out


def test_next_local_session_starts_from_defaults(session: Session):
    """Every `jmp shell --exporter-config` is a new lease: reset() forgets settings, partial uploads are gone."""
    out = local_shell(session.config, "j custom state")
    assert "label=default level=0" in out
    assert sorted(p.name for p in session.upload_dir.iterdir()) == ["firmware.bin"]


@pytest.mark.parametrize(
    ("override", "field", "problem"),
    [
        ({"max_secnds": 5}, "max_secnds", "Unexpected keyword argument"),
        ({"max_seconds": "soon"}, "max_seconds", "Input should be a valid number"),
        ({"upload_dir": "/proc/no-such-dir/uploads"}, "upload_dir", "cannot create '/proc/no-such-dir/uploads'"),
    ],
)
def test_bad_exporter_config_is_an_error_naming_entry_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: dict, field: str, problem: str
):
    """An unknown key, a wrong type or an upload_dir that cannot be made: the first line names entry and key.

    Built as the exporter builds it, in-process: that such an error stops `jmp shell` is tests/exporter_test.py's.
    """
    entry = example_config({"custom": override})["export"]["custom"]
    monkeypatch.chdir(tmp_path)
    tree = ExporterConfigV1Alpha1DriverInstance.from_str(yaml.safe_dump({"children": {"custom": entry}}))
    with pytest.raises(ValidationError) as error:
        tree.instantiate()
    first = f"1 validation error for ExampleCustom, export entry 'custom': {field}: {problem}"
    assert str(error.value).splitlines()[0].startswith(first), str(error.value)


# A `jmp run` exporter: load, faults, cancellation, bad input, lifecycle


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """This module's `jmp run` exporter: the example's custom driver, with tasks of up to 600 s."""
    with exporter_process(
        tmp_path_factory.mktemp("custom"), {"custom": {"max_seconds": 600}}, config=CONFIG
    ) as running:
        yield running


@pytest.fixture(scope="module")
def remote(exporter: Exporter) -> Iterator[Any]:
    """A client in this process, connected to the module's exporter for the whole module."""
    with exporter.client() as client:
        yield client


def upload_dir(exporter: Exporter) -> Path:
    """Where the exporter stores uploads."""
    return exporter.path(UPLOAD_DIR)


def partial_uploads(exporter: Exporter) -> list[str]:
    """Names of the uploads in progress (or left behind) in the exporter's upload directory."""
    return [p.name for p in upload_dir(exporter).glob(".upload-*.partial")]


def idle(exporter: Exporter, custom: Any) -> bool:
    """No task running, no byte stream open and no upload in progress on the exporter."""
    state = custom.state()
    return state.active_tasks == 0 and state.open_streams == 0 and not partial_uploads(exporter)


# Load


def run_client(exporter: Exporter, index: int, source: Path, start_together: threading.Barrier) -> list[str]:
    """One client doing CALLS mixed calls, checking every result; returns the problems it saw."""
    problems: list[str] = []
    source_sha = hashlib.sha256(source.read_bytes()).hexdigest()
    with exporter.client() as root:
        custom = root.custom
        start_together.wait(timeout=60)
        for i in range(CALLS):
            try:
                match i % 5:
                    case 0:  # sync unary call
                        expected = Settings(label=f"client-{index}-{i}", level=i % 11)
                        ok = custom.configure(expected.label, expected.level) == expected
                    case 1:  # async unary call
                        ok = custom.slow_task(0) == "bench-01: done after 0 s"
                    case 2:  # streaming call
                        ok = list(custom.slow_generator(5, 0)) == [0, 1, 2, 3, 4]
                    case 3:  # byte stream
                        size = 1000 + 97 * i
                        ok = len(custom.read_random(size)) == size
                    case _ if i % 30 == 4:  # upload, every 30th call: each one is fsync-ed
                        result = custom.upload(source, f"load-{index}.bin")
                        ok = (result.size, result.sha256) == (source.stat().st_size, source_sha)
                    case _:
                        ok = custom.state().device_id == "bench-01"
                if not ok:
                    problems.append(f"client {index} call {i} ({i % 5}): wrong result")
            except Exception as e:
                problems.append(f"client {index} call {i}: {type(e).__name__}: {e}")
    return problems


def test_load_many_clients_mixed_calls(exporter: Exporter, remote: Any, tmp_path: Path):
    """8 clients x 200 mixed calls (unary, streaming, byte streams, uploads) at once: no errors, every result right."""
    wait_for(lambda: idle(exporter, remote.custom), what="an idle exporter")
    fds_before = exporter.open_fds()
    source = tmp_path / "image.bin"
    source.write_bytes(os.urandom(200_000))
    start_together = threading.Barrier(CLIENTS)
    with ThreadPoolExecutor(CLIENTS) as pool:
        runs = [pool.submit(run_client, exporter, i, source, start_together) for i in range(CLIENTS)]
        problems = [problem for run in runs for problem in run.result(timeout=300)]
    REPORTED.append(
        f"custom load: {CLIENTS} clients x {CALLS} calls (unary, streaming, byte streams, uploads) against one jmp run "
        f"exporter, {len(problems)} errors, {CLIENTS * CALLS} results checked"
    )
    assert problems == []
    for i in range(CLIENTS):
        assert (upload_dir(exporter) / f"load-{i}.bin").read_bytes() == source.read_bytes()
    # Every client's connection and stream is released once they are gone.
    wait_for(lambda: idle(exporter, remote.custom), what="an idle exporter")
    wait_for(lambda: exporter.open_fds() <= fds_before, what=f"exporter fds back to {fds_before}")


# Faults: clients killed with SIGKILL, which close nothing themselves


class FifoWriter:
    """Feeds random data into a FIFO until stopped, never blocking: stands in for a slow image source."""

    def __init__(self, path: Path) -> None:
        """Create the FIFO at `path` and start feeding it."""
        os.mkfifo(path)
        self._fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)  # O_RDWR: opening does not wait for a reader
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed)
        self._thread.start()

    def _feed(self) -> None:
        """Write until stopped; when the FIFO is full, pause briefly (waking at once on close) and retry."""
        data = os.urandom(64 * 1024)
        while not self._stop.is_set():
            try:
                os.write(self._fd, data)
            except BlockingIOError:
                self._stop.wait(0.01)

    def close(self) -> None:
        """Stop feeding and close the FIFO."""
        self._stop.set()
        self._thread.join(timeout=10)
        os.close(self._fd)


def test_client_killed_mid_stream_and_mid_upload(exporter: Exporter, remote: Any, tmp_path: Path):
    """A client killed during a byte stream and an upload: streams close, no fd leaks, the old file is intact."""
    custom = remote.custom
    target = upload_dir(exporter) / "disk.img"
    target.write_bytes(b"known good image")
    wait_for(lambda: idle(exporter, custom), what="an idle exporter")
    fds_before = exporter.open_fds()
    fifo = FifoWriter(tmp_path / "image.fifo")
    # An upload that never ends on its own: a FIFO fed forever, announced as half the free space (more is
    # refused at once; `j custom upload` refuses a FIFO, whose size is unknown, so this client calls the
    # client's upload coroutine itself).
    uploader = tmp_path / "upload_forever.py"
    uploader.write_text(
        "from pathlib import Path\n"
        "from jumpstarter.utils.env import env\n"
        "with env() as client:\n"
        f"    client.custom.portal.call(client.custom._upload_async, Path({str(tmp_path / 'image.fifo')!r}), "
        f"'disk.img', {shutil.disk_usage(target.parent).free // 2})\n"
    )
    script = f"j custom random 1000000000000 -o /dev/null & {sys.executable} {uploader} & wait"
    client = start(exporter.shell_args("sh", "-c", script))
    try:
        # Both transfers are under way: the stream is open and the partial upload has data in it.
        wait_for(
            lambda: (
                custom.state().open_streams == 1
                and any(p.stat().st_size > 0 for p in upload_dir(exporter).glob(".upload-*.partial"))
            ),
            timeout=60,
            what="a byte stream and an upload in progress",
        )
    finally:
        stop_group(client, signal.SIGKILL)
        fifo.close()
    wait_for(lambda: idle(exporter, custom), what="stream closed and partial upload removed")
    wait_for(lambda: exporter.open_fds() <= fds_before, what=f"exporter fds back to {fds_before}")
    assert target.read_bytes() == b"known good image"
    # The next client is served normally.
    assert len(custom.read_random(300_000)) == 300_000
    image = tmp_path / "next.img"
    image.write_bytes(os.urandom(100_000))
    assert custom.upload(image, "disk.img").size == 100_000
    assert target.read_bytes() == image.read_bytes()


# Cancellation


def test_abandoned_calls_stop_on_the_exporter(remote: Any, exporter: Exporter):
    """A client that stops reading slow_generator, or cancels slow_task, leaves no task running."""
    custom = remote.custom
    wait_for(lambda: idle(exporter, custom), what="an idle exporter")
    numbers = custom.slow_generator(1000, 60)  # would run for 16 hours
    assert next(numbers) == 0
    task = custom.portal.start_task_soon(custom.call_async, "slow_task", 600)
    wait_for(lambda: custom.state().active_tasks == 2, what="both calls running")
    numbers.close()
    task.cancel()
    wait_for(lambda: custom.state().active_tasks == 0, what="no task left running")


def test_killed_client_leaves_no_task_running(remote: Any, exporter: Exporter):
    """A client process killed during slow_task and slow_generator leaves no task running."""
    custom = remote.custom
    wait_for(lambda: idle(exporter, custom), what="an idle exporter")
    script = "j custom slow-task 600 & j custom slow-generator -n 1000 -i 60 & wait"
    client = start(exporter.shell_args("sh", "-c", script))
    try:
        wait_for(lambda: custom.state().active_tasks == 2, timeout=60, what="both calls running")
    finally:
        stop_group(client, signal.SIGKILL)
    # Both calls would run for minutes more: reaching zero means the exporter cancelled them.
    wait_for(lambda: custom.state().active_tasks == 0, what="no task left running")


# Bad input: every exported method, over the network


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("configure", ({"label": "soak", "level": 11},), r"settings\.level: Input should be less than or equal to 10"),
        ("configure", ({"label": "soak", "level": "three"},), r"settings\.level: Input should be a valid integer"),
        ("configure", ({"label": "soak", "level": 2.5},), r"settings\.level: .*fractional part \(got 2\.5\)"),
        ("configure", ({"label": None, "level": 3},), r"settings\.label: Input should be a valid string \(got None\)"),
        ("configure", ({"label": "", "level": 3},), r"settings\.label: String should have at least 1 character"),
        ("configure", ({"label": "x" * 101, "level": 3},), r"settings\.label: String should have at most 100 char"),
        ("configure", ({"label": "a\nb", "level": 3},), r"settings\.label: .*control character U\+000A"),
        ("configure", ("soak", 3), r"settings: Input should be a valid dictionary"),  # the old two-argument form
        ("slow_task", (601,), r"seconds: Input should be less than or equal to 600, this driver's max_seconds"),
        ("slow_task", (-1,), r"seconds: Input should be greater than or equal to 0 \(got -1\.0\)"),
        ("slow_task", ("soon",), r"seconds: Input should be a valid number.* \(got 'soon'\)"),
        ("slow_task", ([1],), r"seconds: Input should be a valid number \(got \[1\.0\]\)"),
        ("slow_generator", (-1, 0), r"count: Input should be greater than or equal to 0 \(got -1\.0\)"),
        ("slow_generator", (10_001, 0), r"count: Input should be less than or equal to 10000"),
        ("slow_generator", (1.5, 0), r"count: Input should be a valid integer, got a number with a fractional part"),
        ("slow_generator", (2, "fast"), r"interval: Input should be a valid number"),
        ("slow_generator", (2, 601), r"interval: Input should be less than or equal to 600"),
        ("upload", ("not-a-handle", "x.bin", 1), r"source: Input should be a valid dictionary or object"),
        ("upload", ({"uuid": 5}, "x.bin", 1), r"source: Unable to extract tag using discriminator 'kind'"),
    ],
)
def test_bad_arguments_are_invalid_argument(remote: Any, exporter: Exporter, method: str, args: tuple, message: str):
    """Wrong types and out-of-range values are INVALID_ARGUMENT naming the problem; the exporter keeps serving."""
    with pytest.raises(DriverInvalidArgument, match=message):
        if method == "slow_generator":
            list(remote.custom.streamingcall(method, *args))
        else:
            remote.custom.call(method, *args)
    assert remote.custom.state().device_id == "bench-01"
    assert exporter.process.poll() is None


@pytest.mark.parametrize(
    ("name", "size", "message"),
    [
        ("../escape.bin", None, "upload name must not contain path separators"),
        ("/etc/passwd", None, "upload name must not contain path separators"),
        ("..", None, "upload name must be a plain file name"),
        ("log\nforged", None, r"upload name must not contain a control character U\+000A, got 'log\\nforged'"),
        ("bidi\u202etxt.exe", None, r"upload name must not contain a format character U\+202E"),
        ("-rf", None, r"upload name must not start with '-' \(U\+002D\)"),
        ("ok.bin", -1, r"size: Input should be greater than or equal to 0 \(got -1\)"),
        ("ok.bin", 2.5, r"size: Input should be a valid integer, got a number with a fractional part"),
        ("ok.bin", "big", r"size: Input should be a valid integer"),
    ],
)
def test_bad_upload_arguments_write_nothing(remote: Any, exporter: Exporter, tmp_path: Path, name, size, message):
    """An unsafe name or a bad size is INVALID_ARGUMENT, and nothing is written to the upload directory."""
    source = tmp_path / "payload"
    source.write_bytes(b"payload")
    before = sorted(p.name for p in upload_dir(exporter).iterdir())
    custom = remote.custom
    with pytest.raises(DriverInvalidArgument, match=message):
        # _upload_async lets a test declare a size; the public upload() always sends the file's own.
        custom.portal.call(custom._upload_async, source, name, size)
    assert sorted(p.name for p in upload_dir(exporter).iterdir()) == before
    assert not (upload_dir(exporter).parent / "escape.bin").exists()


@pytest.mark.parametrize("name", ["b" * 255, "é" * 127, "€" * 85])
def test_longest_names_are_stored(remote: Any, exporter: Exporter, tmp_path: Path, name: str):
    """Names of 255 bytes (1-, 2- and 3-byte UTF-8 characters) are stored and read back, with no partial file left."""
    source = tmp_path / "payload"
    source.write_bytes(os.urandom(10_000))
    assert remote.custom.upload(source, name).name == name
    assert (upload_dir(exporter) / name).read_bytes() == source.read_bytes()
    assert partial_uploads(exporter) == []


@pytest.mark.parametrize(("method", "args"), [("state", ("extra",)), ("slow_task", ()), ("configure", ({}, {}))])
def test_wrong_number_of_arguments_is_invalid_argument(remote: Any, method: str, args: tuple):
    """Too many or too few arguments are INVALID_ARGUMENT naming them, not UNKNOWN; the exporter keeps serving."""
    with pytest.raises(DriverInvalidArgument, match=r"(Unexpected positional|Missing required) argument"):
        remote.custom.call(method, *args)
    assert remote.custom.state().device_id == "bench-01"


@pytest.mark.parametrize("method", ["_upload_path", "_remove_partial_uploads", "random_stream", "no_such_method"])
def test_only_exported_methods_can_be_called(remote: Any, method: str):
    """Helpers, a byte stream (not a call) and unknown names cannot be called remotely; the exporter keeps serving."""
    with pytest.raises(DriverMethodNotImplemented, match=f"method {method} (missing marker|not found)"):
        remote.custom.call(method)
    assert remote.custom.state().device_id == "bench-01"


# Lifecycle, end to end


def test_stopping_the_exporter_closes_its_drivers(tmp_path: Path):
    """Stopping `jmp run` ends its lease: close() runs and removes a half-written upload."""
    with exporter_process(tmp_path, config=CONFIG) as exporter:
        with exporter.client() as client:
            client.custom.configure("before-stop", 2)
        uploads = upload_dir(exporter)
        (uploads / ".upload-crashed1.partial").write_bytes(b"half")  # as a crash mid-upload leaves it
    assert exporter.process.returncode is not None
    assert list(uploads.iterdir()) == []
