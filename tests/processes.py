"""Helpers for the end-to-end tests: real `jmp` processes, started from this project's environment.

Every process is started in its own session, and stopped in `finally`/fixture teardown with
bounded waits, so an interrupted or failing test leaves nothing running.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from anyio.from_thread import start_blocking_portal
from jumpstarter.client import client_from_path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JMP = str(BIN / "jmp")
J = str(BIN / "j")
EXAMPLE_CONFIG = ROOT / "examples" / "exporter.yaml"

# Figures that tests report in pytest's summary (see pytest_terminal_summary below).
REPORTED: list[str] = []


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one, without a surrounding jmp shell, and no progress bars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUMPSTARTER_", "JMP_"))}
    env["TERM"] = "dumb"  # Jumpstarter draws a progress bar per transfer unless TERM is dumb
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `j` inside jmp shell is this project's
    return env | extra


def wait_for(condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    """Poll `condition` every 50 ms until it returns something true, and return that; fail after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)
    return result


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Signal a process's whole session (started with start_new_session), then make sure it is gone."""
    for s in (sig, signal.SIGKILL):
        with suppress(ProcessLookupError):
            os.killpg(process.pid, s)
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait(timeout=timeout)


def start(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """Start a process in a new session, output captured as text."""
    kwargs.setdefault("env", child_env())
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.STDOUT)
    return subprocess.Popen(args, start_new_session=True, text=True, cwd=kwargs.pop("cwd", ROOT), **kwargs)


def run(args: list[str], timeout: float = 90.0, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a process to completion (output merged into stdout); kill its session if it overruns."""
    process = start(args, **kwargs)
    try:
        out, _ = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            stop_group(process, signal.SIGKILL)
    return subprocess.CompletedProcess(args, process.returncode, out, None)


def write_config(path: Path, upload_dir: Path, **custom: Any) -> Path:
    """A copy of examples/exporter.yaml whose uploads go to `upload_dir`, with `custom` config overrides."""
    config = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    config["export"]["custom"]["config"] |= {"upload_dir": str(upload_dir), **custom}
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def connect(address: str, passphrase: str | None) -> Iterator[Any]:
    """A client in this process for an exporter on TCP, built the way `jmp shell --tls-grpc` builds it."""
    with start_blocking_portal() as portal, ExitStack() as stack:
        # Direct mode trusts the exporter's drivers (allow=[], unsafe=True), as `jmp shell --tls-grpc` does.
        session = client_from_path(address, portal, stack, allow=[], unsafe=True, insecure=True, passphrase=passphrase)
        with portal.wrap_async_context_manager(session) as client:
            yield client


@dataclass
class Exporter:
    """A `jmp run` exporter serving on 127.0.0.1 without TLS, guarded by a passphrase."""

    process: subprocess.Popen
    address: str
    passphrase: str
    upload_dir: Path
    config: Path

    @property
    def serving_pid(self) -> int:
        """`jmp run` forks: the child (its own session) serves, the parent restarts it and forwards signals."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = wait_for(lambda: children.read_text().split(), what="jmp run's serving child")
        return int(pids[0])

    def open_fds(self) -> int:
        """How many file descriptors the serving process has open (a leak shows as growth)."""
        return len(os.listdir(f"/proc/{self.serving_pid}/fd"))

    def shell(
        self, *command: str, passphrase: str | None = "", timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `jmp shell --tls-grpc ... -- command` against this exporter (passphrase None: send none)."""
        passphrase = self.passphrase if passphrase == "" else passphrase
        args = [JMP, "shell", "--tls-grpc", self.address, "--tls-grpc-insecure"]
        args += [] if passphrase is None else ["--passphrase", passphrase]
        return run([*args, "--", *command], timeout=timeout)

    def shell_args(self, *command: str) -> list[str]:
        """The arguments of `jmp shell --tls-grpc ... -- command`, for a process a test starts and stops itself."""
        return [JMP, "shell", "--tls-grpc", self.address, "--tls-grpc-insecure", "--passphrase", self.passphrase,
                "--", *command]  # fmt: skip

    def client(self) -> AbstractContextManager[Any]:
        """A client in this process connected to this exporter, as a context manager."""
        return connect(self.address, self.passphrase)


@contextmanager
def exporter_process(config: Path, upload_dir: Path) -> Iterator[Exporter]:
    """Start `jmp run` on a free loopback port; stop it (and its serving child) however the test ends."""
    port, passphrase = free_port(), secrets.token_urlsafe(16)
    args = [JMP, "run", "--exporter-config", str(config), "--tls-grpc-listener", f"127.0.0.1:{port}"]
    process = start([*args, "--tls-grpc-insecure", "--passphrase", passphrase], stdout=subprocess.DEVNULL)
    exporter = Exporter(process, f"127.0.0.1:{port}", passphrase, upload_dir, config)
    child: int | None = None
    try:
        child = exporter.serving_pid

        def ready() -> bool:
            """The exporter answers a call; an exporter that exited fails at once instead of timing out."""
            if process.poll() is not None:
                raise AssertionError(f"jmp run exited with status {process.returncode}")
            try:
                with exporter.client() as client:
                    return client.custom.state().device_id == "bench-01"
            except Exception:
                return False

        wait_for(ready, timeout=60, what="jmp run ready")
        yield exporter
    finally:
        # The parent forwards SIGTERM to the child's process group; the child closes its drivers.
        stop_group(process, signal.SIGTERM)
        if child is not None:
            with suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)  # only if it outlived its parent
