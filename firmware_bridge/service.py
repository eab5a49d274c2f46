"""The reader service: a daemon thread that polls the PN532 and reports card events on a queue.

Events: :class:`CardPresented` (once per tap; a phone left on the reader, whose random UID
changes at every poll, is one tap), :class:`CardRemoved`,
:class:`ReaderLost` (once, when the port vanishes or stops answering) and
:class:`ReaderBack`.  While the reader is lost the thread keeps trying to
reopen the port in the background; the rest of the terminal keeps running.

    svc = ReaderService("/dev/serial/by-id/usb-...", events=queue.Queue())
    svc.start()
    event = svc.events.get()
    svc.stop()
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

import serial

from .pn532 import PN532, PN532Error, is_random_uid

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CardPresented:
    uid: bytes

    @property
    def random_uid(self) -> bool:
        """A phone or card showing a random UID (08xxxxxx): a new number at every tap."""
        return is_random_uid(self.uid)


@dataclass(frozen=True)
class CardRemoved:
    uid: bytes


@dataclass(frozen=True)
class ReaderLost:
    reason: str


@dataclass(frozen=True)
class ReaderBack:
    firmware: tuple


def describe_open_error(port: str, exc: Exception) -> str:
    """A reason a technician can act on."""
    text = str(exc)
    if isinstance(exc, FileNotFoundError) or "No such file" in text or "could not open port" in text and "2]" in text:
        return f"port {port} does not exist: check the cable, or the port name in [reader] port"
    if isinstance(exc, PermissionError) or "Permission denied" in text or "13]" in text:
        return (f"permission denied on {port}: add the terminal's user to the 'dialout' group "
                "(sudo usermod -aG dialout USER) and log in again")
    if "busy" in text.lower() or "Could not exclusively lock" in text:
        return f"{port} is in use by another program (a serial console on /dev/serial0? see docs/deploy.md)"
    if isinstance(exc, PN532Error):
        return (f"no answer from a PN532 on {port}: check wiring (TX/RX crossed), the HSU mode switches, and that "
                "the serial console is off on /dev/serial0")
    return f"{port}: {text}"


class ReaderService:
    def __init__(self, port: str, events: queue.Queue | None = None, baudrate: int = 115200,
                 poll_timeout: float = 0.15, reconnect_every: float = 0.5, misses_for_removal: int = 2):
        self.port = port
        self.baudrate = baudrate
        self.events: queue.Queue = events if events is not None else queue.Queue()
        self.poll_timeout = poll_timeout
        self.reconnect_every = reconnect_every
        self.misses_for_removal = misses_for_removal
        self.reader: PN532 | None = None
        self.firmware: tuple | None = None
        self.lost_reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._card: bytes | None = None
        self._misses = 0
        self._ever_connected = False

    @property
    def connected(self) -> bool:
        return self.reader is not None

    def start(self) -> "ReaderService":
        self._thread = threading.Thread(target=self._run, name="reader", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=3)
        self._close()

    def _close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None

    def _connect(self) -> bool:
        try:
            reader = PN532.open(self.port, self.baudrate)
        except (serial.SerialException, OSError, ValueError) as exc:
            self._lost(describe_open_error(self.port, exc))
            return False
        try:
            reader.wake_up()
            fw = reader.firmware_version()
        except (PN532Error, serial.SerialException, OSError) as exc:
            reader.close()
            self._lost(describe_open_error(self.port, exc if isinstance(exc, PN532Error) else PN532Error(str(exc))))
            return False
        self.reader, self.firmware = reader, fw
        if self.lost_reason is not None or not self._ever_connected:
            self.events.put(ReaderBack(fw))
        self.lost_reason = None
        self._ever_connected = True
        return True

    def _lost(self, reason: str) -> None:
        self._close()
        if self._card is not None:
            self.events.put(CardRemoved(self._card))
            self._card = None
        if self.lost_reason is None:
            _log.warning("card reader lost: %s", reason)
            self.events.put(ReaderLost(reason))
        self.lost_reason = reason

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.reader is None and not self._connect():
                self._stop.wait(self.reconnect_every)
                continue
            reader = self.reader
            if reader is None:  # _connect() said it had one
                self._stop.wait(self.reconnect_every)
                continue
            try:
                target = reader.list_passive_target(self.poll_timeout)
                if target is not None:
                    self._misses = 0
                    # A phone left on the reader shows a new random UID at each poll: one tap, not many.
                    same_phone = target.random_uid and self._card is not None and is_random_uid(self._card)
                    if target.uid != self._card and not same_phone:
                        if self._card is not None:
                            self.events.put(CardRemoved(self._card))
                        self._card = target.uid
                        self.events.put(CardPresented(target.uid))
                    reader.release()
                    self._stop.wait(self.poll_timeout)
                elif self._card is not None:
                    self._misses += 1
                    if self._misses >= self.misses_for_removal:
                        self.events.put(CardRemoved(self._card))
                        self._card = None
            except (serial.SerialException, OSError) as exc:
                self._lost(f"the reader on {self.port} went away: {exc}")
            except PN532Error as exc:
                self._lost(f"the reader on {self.port} stopped answering: {exc}")
            except Exception as exc:  # the polling thread must never die: report, reconnect, go on
                _log.exception("unexpected reader error")
                self._lost(f"the reader on {self.port} failed: {exc}")
        self._close()
