"""The end-to-end harness: real `jmp` processes serving whatever `examples/exporter.yaml` exports.

Nothing here knows the drivers: an exporter runs a copy of the example config (or a test's own) in
a directory of its own (relative paths in the config, an upload directory say, land there), and it
is ready when it answers and lists every driver the config exports. Tests of one driver live in a
file named after it and give its config overrides by the driver's path in the tree
(`exporter_process(workdir, {"<driver>.<child>": {"<key>": value}})`); `shared_exporter` makes one
exporter that a module's tests share.

Every process is started in its own session, and stopped in `finally`/fixture teardown with bounded
waits, so a failing test leaves nothing running. A run that is ended leaves nothing either: SIGTERM
(a CI timeout, a cancelled job) makes pytest stop as on Ctrl-C, running every teardown
(`stop_on_sigterm`, from conftest.py), and a process the harness starts gets SIGTERM itself if
pytest dies without tearing down (SIGKILL). A wait that times out fails with the last error it saw
and the tail of the exporter's log.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from anyio.from_thread import start_blocking_portal
from jumpstarter.client import client_from_path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
JMP = str(BIN / "jmp")
J = str(BIN / "j")
EXAMPLE_CONFIG = ROOT / "examples" / "exporter.yaml"
PACKAGE = "jumpstarter_driver_template"
DONE = "ALL COMMANDS SUCCEEDED"
LOG_TAIL = 40

# Figures that tests report in pytest's summary (see pytest_terminal_summary in conftest.py).
REPORTED: list[str] = []

Overrides = dict[str, dict[str, Any]]
"""Config overrides by driver path: {"<driver>": {"<key>": value}} merges into that driver's `config:`, and
{"<driver>.<child>": {...}} into a child's (the child named <child> in the driver's `children:`).
A value of REMOVED takes the key out (for a default the driver applies when the key is absent)."""


class _Removed:
    """The type of REMOVED: one object, kept as itself through the overrides' deep copy."""

    def __repr__(self) -> str:
        return "REMOVED"

    def __deepcopy__(self, memo: dict[int, Any]) -> _Removed:
        return self


REMOVED = _Removed()

Config = dict[str, Any] | Path
"""An exporter config of a test's own: parsed (a dict), or a YAML file."""


def example_config(overrides: Overrides | None = None, config: Config | None = None) -> dict[str, Any]:
    """examples/exporter.yaml (or a test's own `config`), parsed, with `overrides` merged into drivers' `config:`."""
    if config is None:
        config = EXAMPLE_CONFIG
    tree = yaml.safe_load(config.read_text()) if isinstance(config, Path) else copy.deepcopy(config)
    for path, values in (overrides or {}).items():
        driver = find_driver(tree, path)
        current = driver.get("config") or {}
        absent = [key for key, value in values.items() if value is REMOVED and key not in current]
        if absent:
            raise LookupError(f"no key {absent[0]!r} to remove from the config of {path!r}: {sorted(current)}")
        merged = current | copy.deepcopy(values)
        driver["config"] = {key: value for key, value in merged.items() if value is not REMOVED}
    return tree


def find_driver(config: dict[str, Any], path: str) -> dict[str, Any]:
    """The entry of the driver at `path` (`board.device`: the child `device` of the export `board`) in a config."""
    entries = config.get("export") or {}
    entry: dict[str, Any] = {}
    walked = []
    for name in path.split("."):
        if name not in entries:
            where = f"the children of {'.'.join(walked)}" if walked else "the drivers the config exports"
            raise LookupError(f"no driver {path!r} to override: {where}: {sorted(entries)}, not {name!r}")
        entry = entries[name]
        if "ref" in entry:
            raise LookupError(f"{path!r} is a `ref:` to {entry['ref']!r}: override that driver instead")
        walked.append(name)
        entries = entry.get("children") or {}
    return entry


def drivers_only(*names: str, config: Config | None = None) -> dict[str, Any]:
    """The example config (or `config`), exporting only the drivers `names` and the drivers they `ref:`.

    A test of one driver serves it alone: the exporter then builds only it, and each `j` loads only its
    client (a `j` of one driver costs about a third less than one of the example's eight, docs/testing.md).
    """
    tree = example_config(config=config)
    entries = tree.get("export") or {}
    kept: list[str] = []
    for name in names:
        if name not in entries:
            raise LookupError(f"no driver {name!r} to keep: the drivers the config exports: {sorted(entries)}")
        target = entries[name].get("ref")
        kept += [name] if target is None else [target.split(".")[0], name]
    tree["export"] = {name: entry for name, entry in entries.items() if name in kept}
    return tree


def exported(config: dict[str, Any] | None = None) -> list[str]:
    """The names of the drivers a config exports (default: the example's)."""
    return list((config or example_config())["export"])


def our_drivers(config: dict[str, Any] | None = None) -> list[str]:
    """The exported drivers whose class is this package's (not an upstream driver reused as is)."""
    drivers = (config or example_config())["export"]
    return [name for name, entry in drivers.items() if str(entry.get("type", "")).startswith(f"{PACKAGE}.")]


def write_config(workdir: Path, overrides: Overrides | None = None, config: Config | None = None) -> Path:
    """Write the example config (or `config`), with overrides, to `workdir`, where the exporter will run."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "exporter.yaml"
    path.write_text(yaml.safe_dump(example_config(overrides, config), sort_keys=False))
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this one, without a surrounding jmp shell, and no progress bars."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUMPSTARTER_", "JMP_"))}
    env["TERM"] = "dumb"  # Jumpstarter draws a progress bar per transfer unless TERM is dumb
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # `j` inside jmp shell is this project's
    return env | extra


class Abort(Exception):
    """Raised by a `wait_for` condition when waiting longer cannot help (the process it waits for exited)."""


def wait_for(
    condition: Callable[[], Any], timeout: float = 30.0, what: str = "condition", context: Callable[[], str] = str
) -> Any:
    """Poll `condition` every 50 ms until it returns something true, and return that.

    An exception from `condition` counts as "not yet"; after `timeout` s the failure names the last one,
    followed by `context()` (the tail of a log, say). `Abort` from `condition` fails at once.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            if result := condition():
                return result
        except Abort as e:
            raise AssertionError(f"{what} not reached: {e}\n{context()}".rstrip()) from None
        except Exception as e:
            last_error = e
        if time.monotonic() >= deadline:
            message = f"{what} not reached within {timeout} s"
            if last_error is not None:
                message += f"; last error: {type(last_error).__name__}: {last_error}"
            raise AssertionError(f"{message}\n{context()}".rstrip())
        time.sleep(0.05)


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


# The last resort for a pytest that dies without tearing down (SIGKILL, a crash), and for what a test
# started and forgot: one small process per run holds a pipe from pytest and, when the pipe closes
# (pytest ended, however), ends whatever is left in every session the harness started: SIGTERM, then
# SIGKILL after 20 s. Sessions, not processes: a `jmp shell` killed alone would leave its command running.
WATCHDOG = """
import os, signal, sys, time
sessions = {int(line) for line in sys.stdin}  # until pytest's end of the pipe closes
for sig, grace in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 0.0)):
    deadline = time.monotonic() + grace
    while sessions:
        for sid in list(sessions):
            try:
                os.killpg(sid, sig if sig else 0)
            except ProcessLookupError:
                sessions.discard(sid)
        sig = 0  # signalled once; then only check which sessions are left
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
"""
_watchdog: subprocess.Popen | None = None
_watchdog_lock = threading.Lock()


def watch(session: int) -> None:
    """Have the watchdog end the session led by `session` when pytest ends, if anything is left in it then."""
    global _watchdog
    with _watchdog_lock:
        if _watchdog is None or _watchdog.poll() is not None:
            _watchdog = subprocess.Popen(
                [sys.executable, "-c", WATCHDOG], stdin=subprocess.PIPE, text=True, start_new_session=True
            )
        assert _watchdog.stdin is not None
        with suppress(BrokenPipeError):
            _watchdog.stdin.write(f"{session}\n")
            _watchdog.stdin.flush()


def start(args: list[str], cwd: Path = ROOT, **kwargs: Any) -> subprocess.Popen:
    """Start a process in a new session, output captured as text; the watchdog ends the session if pytest dies."""
    kwargs.setdefault("env", child_env())
    kwargs.setdefault("stdout", subprocess.PIPE)
    kwargs.setdefault("stderr", subprocess.STDOUT)
    process = subprocess.Popen(args, start_new_session=True, text=True, cwd=cwd, **kwargs)
    watch(process.pid)
    return process


def stop_on_sigterm() -> None:
    """Make SIGTERM stop pytest as Ctrl-C does, so every teardown runs (call it from pytest_configure).

    A CI timeout or a cancelled job sends SIGTERM, whose default ends pytest at once, leaving every process
    the tests started running in its own session. A second SIGTERM during the teardown is ignored: the
    teardown's waits are bounded, and SIGKILL is what ends a stuck one (then the watchdog ends the rest).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None):
        return  # someone else handles it already

    def interrupt(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, interrupt)


def run(
    args: list[str],
    timeout: float = 90.0,
    context: Callable[[], str] | None = None,
    stop: int = signal.SIGKILL,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run a process to completion (output merged into stdout); end its session with `stop` if it overruns.

    An overrun fails with the tail of the process's output, followed by `context()` (an exporter's log, say).
    `stop=signal.SIGTERM` lets a process that started an exporter (in a session of its own) stop it first.
    """
    process = start(args, **kwargs)
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process, stop)
        try:
            out, _ = process.communicate(timeout=10)  # what it wrote before it was stopped
        except subprocess.TimeoutExpired:
            out = "(no output: a process in a session of its own still holds it open)"
        tail = "\n".join(out.splitlines()[-LOG_TAIL:])
        extra = f"\n{context()}" if context else ""
        raise AssertionError(
            f"{' '.join(args)}\ndid not finish within {timeout:g} s; its last {LOG_TAIL} lines:\n{tail}{extra}"
        ) from None
    finally:
        if process.poll() is None:
            stop_group(process, signal.SIGKILL)
    return subprocess.CompletedProcess(args, process.returncode, out, None)


# Defined in every local_shell script: `fails CMD...` runs CMD, which must fail, and prints its status.
FAILS = """fails() {
  status=0
  "$@" || status=$?
  if [ "$status" -eq 0 ]; then echo "SUCCEEDED, EXPECTED TO FAIL: $*"; exit 1; fi
  echo "FAILED $status: $*"
}"""


def local_shell(config: Path, script: str, timeout: float = 120.0) -> str:
    """Run a shell script inside `jmp shell --exporter-config` (in the config's directory); return its output.

    In Jumpstarter 0.9 local mode exits 0 even when the command fails, so the script runs with `set -e`
    and prints DONE last: its absence in the output means a command failed. A command expected to fail
    runs as `fails j ...`: it prints `FAILED <status>: j ...` (see `failed`), and stops the script if it
    succeeds. Each call is a `jmp shell` of its own (seconds: see docs/testing.md), so give it every
    command a test needs at once.
    """
    command = [JMP, "shell", "--exporter-config", str(config), "--", *script_command(script)]
    return checked_script_output(run(command, timeout=timeout, cwd=config.parent))


def script_command(script: str) -> list[str]:
    """The `sh -c` command that local_shell runs: `fails` defined, `set -e`, DONE printed at the end."""
    return ["sh", "-c", f"{FAILS}\nset -e\n{script}\necho {DONE}"]


def checked_script_output(result: subprocess.CompletedProcess[str]) -> str:
    """The output of a script_command, failing the test if a command failed or one that should fail did not."""
    lines = result.stdout.splitlines()
    unexpected = [line for line in lines if line.startswith("SUCCEEDED, EXPECTED TO FAIL: ")]
    assert not unexpected, f"{unexpected[0]}\n{result.stdout}"
    assert DONE in lines, f"a command of the script failed:\n{result.stdout}"
    assert result.returncode == 0, f"exit status {result.returncode}:\n{result.stdout}"
    return result.stdout


def failed(output: str, command: str) -> int:
    """The exit status of `fails COMMAND` in a local_shell's output (`j` of Jumpstarter 0.9 exits 1 for any error)."""
    prefix = f": {command}"
    statuses = [
        line.split()[1].rstrip(":")
        for line in output.splitlines()
        if line.startswith("FAILED ") and line.endswith(prefix)
    ]
    assert statuses, f"no `fails {command}` in the output:\n{output}"
    return int(statuses[-1])


def running(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie is not: it holds nothing, and waits to be reaped)."""
    # Not the command runner tests' helper of the same name: that module goes with the units that run commands.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between the open and the read
        return False


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
    """A `jmp run` exporter serving on 127.0.0.1 without TLS, guarded by a passphrase, in its own directory."""

    process: subprocess.Popen
    address: str
    passphrase: str
    workdir: Path
    config: Path
    log: Path

    def log_tail(self, lines: int = LOG_TAIL) -> str:
        """The last lines the exporter wrote, for failure messages."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- last {lines} lines of {self.log}:\n" + "\n".join(text.splitlines()[-lines:])

    def path(self, relative: str) -> Path:
        """A path of the config (an upload directory, say), as the exporter resolves it: from its directory."""
        return self.workdir / relative

    @property
    def serving_pid(self) -> int:
        """`jmp run` forks: the child (its own session) serves, the parent restarts it and forwards signals."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")

        def child() -> list[str]:
            if self.process.poll() is not None:
                raise Abort(f"jmp run exited with status {self.process.returncode}")
            return children.read_text().split()

        return int(wait_for(child, what="jmp run's serving child", context=self.log_tail)[0])

    def open_fds(self) -> int:
        """How many file descriptors the serving process has open (a leak shows as growth)."""
        return len(os.listdir(f"/proc/{self.serving_pid}/fd"))

    def shell_args(self, *command: str, passphrase: str | None = "") -> list[str]:
        """The arguments of `jmp shell --tls-grpc ... -- command` (passphrase None: send none)."""
        passphrase = self.passphrase if passphrase == "" else passphrase
        args = [JMP, "shell", "--tls-grpc", self.address, "--tls-grpc-insecure"]
        args += [] if passphrase is None else ["--passphrase", passphrase]
        return [*args, "--", *command]

    def shell(
        self, *command: str, passphrase: str | None = "", timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `jmp shell --tls-grpc ... -- command` against this exporter; direct mode returns its exit status."""
        args = self.shell_args(*command, passphrase=passphrase)
        return run(args, timeout=timeout, context=self.log_tail, cwd=self.workdir)

    def client(self) -> AbstractContextManager[Any]:
        """A client in this process connected to this exporter, as a context manager."""
        return connect(self.address, self.passphrase)


@contextmanager
def jmp_run(
    workdir: Path,
    config: Path,
    passphrase: str | None,
    address: str | None = None,
    stop_timeout: float = 20.0,
    **env: str,
) -> Iterator[Exporter]:
    """Start `jmp run` of `config` in `workdir` (log: exporter.log), on `address` or a free loopback port.

    Stopped, with the exporter it forks, however the test ends. Not waited for: `exporter_process` waits
    until it lists its drivers, `hooked_exporter` until it serves. `env` is added to its environment.
    """
    address = address or f"127.0.0.1:{free_port()}"
    args = [JMP, "run", "--exporter-config", str(config), "--tls-grpc-listener", address, "--tls-grpc-insecure"]
    args += ["--passphrase", passphrase] if passphrase else []
    log = workdir / "exporter.log"
    with log.open("w") as output:
        process = start(args, cwd=workdir, stdout=output, env=child_env(**env))
    exporter = Exporter(process, address, passphrase or "", workdir, config, log)
    child: int | None = None
    try:
        child = exporter.serving_pid
        watch(child)  # jmp run's serving child leads a session of its own
        yield exporter
    finally:
        # The parent forwards SIGTERM to the child's process group; the child closes its drivers (and runs
        # afterLease, which may take its whole timeout).
        stop_group(process, signal.SIGTERM, timeout=stop_timeout)
        if child is not None:
            with suppress(ProcessLookupError):
                os.killpg(child, signal.SIGKILL)  # only if it outlived its parent


@contextmanager
def exporter_process(
    workdir: Path, overrides: Overrides | None = None, timeout: float = 60.0, config: Config | None = None
) -> Iterator[Exporter]:
    """`jmp run` of the example config (or `config`), with `overrides`, guarded by a passphrase.

    Ready once it lists its drivers. Starting one costs seconds (docs/testing.md): tests that need the
    same config share one (`shared_exporter`).
    """
    path = write_config(workdir, overrides, config)
    with _serving(workdir, path, timeout) as exporter:
        yield exporter


def shared_exporter(overrides: Overrides | None = None, config: Config | None = None, scope: str = "module") -> Any:
    """A pytest fixture: one exporter of `config` (default: the example's) with `overrides`, for a module's tests.

    In a test module, `exporter = shared_exporter({"<driver>": {"<key>": value}})` gives every test that
    takes `exporter` the same running exporter, started at the first and stopped after the last. Tests
    that share one see what the previous one left (one lease for the exporter's whole life): reset what
    a test changes, or give it an exporter of its own.
    """

    @pytest.fixture(scope=scope)  # type: ignore[call-overload]
    def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
        with exporter_process(tmp_path_factory.mktemp("exporter"), overrides, config=config) as running:
            yield running

    return exporter


@contextmanager
def _serving(workdir: Path, config: Path, timeout: float) -> Iterator[Exporter]:
    """`jmp run` of a written config, ready once it lists every driver of the config."""
    expected = set(exported(yaml.safe_load(config.read_text())))
    with jmp_run(workdir, config, secrets.token_urlsafe(16)) as exporter:

        def ready() -> bool:
            """The exporter answers and lists every driver of its config; one that exited fails at once."""
            if exporter.process.poll() is not None:
                raise Abort(f"jmp run exited with status {exporter.process.returncode}")
            if RAPID_FAILURE in exporter.log.read_text(errors="replace"):
                raise Abort("jmp run's exporter exited at start (jmp run retries it 5 times, then exits 0)")
            with exporter.client() as client:
                listed = set(client.children)
                if listed != expected:
                    raise AssertionError(f"the exporter lists {sorted(listed)}, the config exports {sorted(expected)}")
                return True

        wait_for(ready, timeout=timeout, what="jmp run ready", context=exporter.log_tail)
        yield exporter


RAPID_FAILURE = "rapid failure 1/"
"""jmp run's log line when the exporter it forked exited right after it started (Jumpstarter 0.9)."""
HOOKS_CONFIG = EXAMPLE_CONFIG.parent / "exporter-hooks.yaml"
SERVING = "Session server started"
"""jmp run's log line once it serves (Jumpstarter 0.9)."""


def hooks_config(**hooks: dict[str, Any]) -> dict[str, Any]:
    """examples/exporter-hooks.yaml, parsed, with hooks replaced (beforeLease={...}) where given."""
    config = yaml.safe_load(HOOKS_CONFIG.read_text())
    config["hooks"] = copy.deepcopy(config["hooks"]) | hooks
    return config


@contextmanager
def hooked_exporter(workdir: Path, config: dict[str, Any], passphrase: str | None = None) -> Iterator[Exporter]:
    """`jmp run` of `config` (with hooks), no passphrase unless given; stopped with SIGTERM, so afterLease runs.

    Ready once it serves, not once a client lists its drivers: a client would wait for beforeLease, which
    may be failing on purpose; a `jmp shell` waits for it itself. The hooks' environment has HOOK_ADDRESS
    and HOOK_PASSPHRASE, for a hook's `j` over TCP.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "exporter.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    address = f"127.0.0.1:{free_port()}"
    hook_env = {"HOOK_ADDRESS": address, "HOOK_PASSPHRASE": passphrase or ""}
    with jmp_run(workdir, path, passphrase, address, stop_timeout=90, **hook_env) as exporter:
        wait_for(lambda: SERVING in exporter.log.read_text(), 60, "jmp run serving", context=exporter.log_tail)
        yield exporter
