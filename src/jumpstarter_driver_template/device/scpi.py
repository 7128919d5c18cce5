"""ScpiSession: one pyvisa session to an SCPI instrument, for the driver's worker threads.

pyvisa (with the pure-Python pyvisa-py backend) does the transport: TCP sockets, VXI-11, USBTMC,
serial, one resource string each. What is ours is what a driver that many clients share needs on
top of it: one exchange at a time (a thread lock: a worker thread the event loop gave up on still
finishes its exchange before the next one starts), settings checked through the error queue, a
timeout per exchange bounded by the caller's deadline, and a new session after any exchange that
did not end cleanly, so that a late or unasked answer is never read as the next command's.
"""

from __future__ import annotations

import logging
import os
import reprlib
import select
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pyvisa
from pyvisa.errors import VisaIOError

from .common import ANSWER_MAX

T = TypeVar("T")

ERRORS_MAX = 20
"""At most this many `SYST:ERR?` reads to empty the queue (instruments keep 10 to 30 entries)."""


class DeviceError(RuntimeError):
    """The instrument failed or refused: unreachable, connection lost, an error in its queue, an answer that makes
    no sense. `code` and `text` are the instrument's own error (`-222`, `"Data out of range"`), when it gave one.

    A RuntimeError reaches the client as UNKNOWN (a `DriverError`). Not a ValueError: the client would get
    INVALID_ARGUMENT, blaming its arguments for the instrument's fault.
    """

    def __init__(self, message: str, code: int | None = None, text: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.text = text


class ScpiSession:
    """An instrument behind a VISA resource string; every method runs blocking I/O (call it from a worker thread)."""

    def __init__(
        self,
        resource: str,
        timeout: float,
        open_timeout: float,
        on_open: Callable[[ScpiSession], None],
        logger: logging.Logger,
    ) -> None:
        self.resource = resource
        self.timeout = timeout
        self.open_timeout = open_timeout
        self._on_open = on_open
        self._logger = logger
        self._lock = threading.Lock()
        self._manager: pyvisa.ResourceManager | None = None
        self._visa: Any = None  # a pyvisa MessageBasedResource, once open
        self._deadline = float("inf")
        self._prepared = False
        self._milliseconds = 0

    @property
    def connected(self) -> bool:
        """Whether a session is open and the instrument has neither closed it nor sent anything unasked."""
        visa = self._visa  # read once: a worker thread may close the session meanwhile
        return visa is not None and self._unread(visa) is None

    def run(self, steps: Callable[[ScpiSession], T], seconds: float = float("inf")) -> T:
        """Run `steps(self)` (its `query`/`write`/`check` calls) as one exchange, within `seconds` overall."""
        self._deadline = time.monotonic() + seconds
        if not self._lock.acquire(timeout=min(seconds, self.open_timeout + 4 * self.timeout)):
            raise TimeoutError(f"{self.resource} is busy: an earlier exchange has not ended")
        try:
            if self._visa is not None and (unread := self._unread()) is not None:
                self._logger.warning("%s %s since the last answer: new session", self.resource, unread)
                self._drop()
            if self._visa is None:
                self._open()
            if not self._prepared:  # e.g. the protection: before any other command of a new session
                self._on_open(self)
                self._prepared = True
            return steps(self)
        except BaseException:
            self._drop()  # whatever was left half-done, its answer must not be read as the next command's
            raise
        finally:
            self._deadline = float("inf")
            self._lock.release()

    def query(self, command: str) -> str:
        """Send a query and return its answer line."""
        self._io(command, self._visa.write, command)
        self._wait_for_answer(command)
        answer: str = self._io(command, self._visa.read)
        if len(answer) > ANSWER_MAX:
            raise DeviceError(f"{self.resource} answered {command!r} with a line longer than {ANSWER_MAX} bytes")
        if self._unread() == "sent more":
            # The instrument sent more than one line, e.g. a message nobody asked for: which one answers `command`
            # cannot be told. Start over rather than hand anyone an answer to another question.
            raise DeviceError(f"{self.resource} sent more than one line in answer to {command!r}: new session")
        return answer

    def write(self, command: str) -> None:
        """Send a setting (SCPI settings send no answer: follow it with `check`)."""
        self._io(command, self._visa.write, command)

    def check(self, command: str) -> None:
        """Read the error queue until it is empty; raise DeviceError with the first error after `command`."""
        errors = []
        for _ in range(ERRORS_MAX):
            answer = self.query("SYST:ERR?")
            code, _, text = answer.partition(",")
            try:
                number = int(code)
            except ValueError:
                raise DeviceError(f"{self.resource} answered 'SYST:ERR?' with {reprlib.repr(answer)}") from None
            if number == 0:
                break
            errors.append((number, text.strip().strip('"')))
        if errors:
            (number, text), more = errors[0], len(errors) - 1
            also = f" (and {more} more in its queue)" if more else ""
            raise DeviceError(f"{self.resource} refused {command!r}: {number},{text!r}{also}", number, text)

    def reopen(self) -> None:
        """Within `run`'s steps: close the session and open a new one, on which `on_open` has not run yet."""
        self._drop()
        self._open()

    def close(self) -> None:
        """Close the session (any thread; waits for an exchange in progress)."""
        # Not the resource manager: pyvisa hands every ResourceManager("@py") of a process the same one, so closing
        # it would close the sessions of every other instrument driver of the exporter.
        with self._lock:
            self._drop()

    def drop(self) -> None:
        """Close the session (a new one opens at the next exchange)."""
        with self._lock:
            self._drop()

    def _seconds(self, command: str) -> float:
        """The time this read or write may take: the instrument's timeout, within the caller's deadline."""
        seconds = min(self.timeout, self._deadline - time.monotonic())
        if seconds <= 0:
            raise TimeoutError(f"{self.resource}: no time left for {command!r}")
        return seconds

    def _wait_for_answer(self, command: str) -> None:
        """On a socket, wait until the answer starts arriving: a hang-up fails now, where pyvisa-py would wait out
        its whole timeout on the closed socket."""
        sock = self._socket(self._visa)
        if sock is None or getattr(self._backend_session(self._visa), "_pending_buffer", None):
            return
        seconds = self._seconds(command)
        if not select.select([sock], [], [], seconds)[0]:
            raise TimeoutError(f"{self.resource} did not answer {command!r} within {seconds:g} s")
        if self._unread() == "closed the connection":
            raise DeviceError(f"{self.resource} closed the connection instead of answering {command!r}")

    def _io(self, command: str, function: Callable[..., T], *args: Any) -> T:
        """One VISA read or write, bounded by the instrument's timeout and the caller's deadline."""
        seconds = self._seconds(command)
        milliseconds = max(1, round(seconds * 1000))
        if self._milliseconds != milliseconds:  # remembered: reading pyvisa's attribute back costs a call per I/O
            self._visa.timeout = self._milliseconds = milliseconds
        try:
            return function(*args)
        except VisaIOError as e:
            if e.error_code != pyvisa.constants.StatusCode.error_timeout:
                raise DeviceError(f"{self.resource}: {command!r} failed: {e.description}") from None
            # Always give a TimeoutError a message: an empty one reaches the client as "<no details>".
            raise TimeoutError(f"{self.resource} did not answer {command!r} within {seconds:g} s") from None
        except UnicodeDecodeError as e:  # a ValueError: left alone, the client would get INVALID_ARGUMENT
            answer = reprlib.repr(e.object)
            raise DeviceError(f"{self.resource} answered {command!r} with {answer}, which is not ASCII") from None
        except OSError as e:  # pyvisa-py lets a socket's errors through (a broken pipe, a reset connection)
            raise DeviceError(f"{self.resource}: {command!r} failed: {e.strerror or e}") from None

    def _open(self) -> None:
        if self._manager is None:
            self._manager = pyvisa.ResourceManager("@py")
        milliseconds = round(self.open_timeout * 1000)
        try:
            # Termination "\n" both ways: what SCPI instruments on sockets and serial lines use (VXI-11 and USBTMC
            # also mark the end of a message themselves).
            visa = self._manager.open_resource(
                self.resource,
                read_termination="\n",
                write_termination="\n",
                timeout=round(self.timeout * 1000),
                open_timeout=milliseconds,
            )
        except VisaIOError as e:
            if e.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise TimeoutError(
                    f"cannot connect to {self.resource}: no answer within {self.open_timeout:g} s"
                ) from None
            raise DeviceError(f"cannot connect to {self.resource}: {e.description}") from None
        except Exception as e:  # pyvisa-py raises a bare Exception("could not connect: ...")
            reason = str(e).removeprefix("could not connect: ")
            raise DeviceError(f"cannot connect to {self.resource}: {reason}") from None
        # pyvisa-py 0.8 reports a refused TCP connection as open (its non-blocking connect only waits for the
        # socket to be writable): the socket's pending error says whether it really connected.
        sock = self._socket(visa)
        if sock is not None and (error := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)):
            visa.close()
            raise DeviceError(f"cannot connect to {self.resource}: {os.strerror(error)}")
        self._visa = visa
        self._milliseconds = round(self.timeout * 1000)
        self._prepared = False
        self._logger.debug("connected to %s", self.resource)

    def _drop(self) -> None:
        if self._visa is not None:
            visa, self._visa = self._visa, None
            try:
                visa.close()
            except Exception as e:  # a session whose connection is already gone may fail to close: it is gone
                self._logger.debug("closing the session to %s: %s", self.resource, e)

    @staticmethod
    def _backend_session(visa: Any) -> Any:
        """pyvisa-py's own session object behind a resource (None for another backend, or a closed session)."""
        try:
            return getattr(visa.visalib, "sessions", {}).get(visa.session)
        except Exception:  # pyvisa raises InvalidSession for a session closed meanwhile
            return None

    def _socket(self, visa: Any) -> socket.socket | None:
        """The TCP socket under a pyvisa-py SOCKET session; None for other transports and backends."""
        sock = getattr(self._backend_session(visa), "interface", None)
        return sock if isinstance(sock, socket.socket) else None

    def _unread(self, visa: Any = None) -> str | None:
        """What the instrument did since the last answer, if anything: "sent more", "closed the connection".

        pyvisa has no portable "bytes waiting" query for sockets: this looks at what pyvisa-py has buffered and
        peeks at its socket. For other transports it says nothing (None), and answers are checked by parsing only.
        """
        visa = self._visa if visa is None else visa
        if getattr(self._backend_session(visa), "_pending_buffer", None):
            return "sent more"
        sock = self._socket(visa)
        if sock is None:
            return None
        try:
            data = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return None  # nothing to read: open and quiet, as it should be
        except OSError:
            return "closed the connection"
        return "sent more" if data else "closed the connection"
