"""A PN532 driver over HSU (UART) with pyserial.

Open any pyserial URL (``loop://``, a pty path, ``/dev/serial/by-id/...``,
``spy:///dev/ttyS0`` to watch the traffic)::

    reader = PN532.open("/dev/serial0")
    reader.wake_up()                          # 55 55 00..., then SAMConfiguration
    print(reader.firmware_version())          # (0x32, 1, 6, 7)
    target = reader.list_passive_target(timeout=0.5)
    if target:
        print(target.uid.hex())
        reader.release()

Each command waits for the ACK (default 100 ms) and then for the answer (a
per-command timeout), retries a bounded number of times, answers a corrupt
response with a NACK so the chip resends it, resynchronises after garbage,
and aborts a pending InListPassiveTarget with an ACK when it times out.
"""

from __future__ import annotations

import contextlib
import logging
import termios
import time
from dataclasses import dataclass

import serial

from . import frames
from .commands import BAUD_RATES, Command

_log = logging.getLogger(__name__)

WAKE_UP = b"\x55\x55" + b"\x00" * 14
ACK_TIMEOUT = 0.1


class PN532Error(IOError):
    """The reader answered with an error, or not in the protocol."""


class PN532Timeout(PN532Error):
    """No ACK or no answer in time."""


def is_random_uid(uid: bytes) -> bool:
    """ISO/IEC 14443-3: a single-size (4-byte) UID whose first byte is 08 is a random ID.

    Phones (Apple Pay, Google Pay) and many bank cards show one, new at every activation: it
    never names the same card twice, so it must not become an identity.
    """
    return len(uid) == 4 and uid[0] == 0x08


@dataclass(frozen=True)
class Target:
    number: int
    sens_res: bytes
    sel_res: int
    uid: bytes
    ats: bytes = b""

    @property
    def random_uid(self) -> bool:
        return is_random_uid(self.uid)


def parse_targets(data: bytes) -> list[Target]:
    """The body of an InListPassiveTarget answer (after D5 4B) for 106 kbps type A."""
    if not data:
        raise PN532Error("empty InListPassiveTarget answer")
    count, i, out = data[0], 1, []
    for _ in range(count):
        if len(data) < i + 5:
            raise PN532Error("short InListPassiveTarget answer")
        tg, sens, sel, n = data[i], data[i + 1:i + 3], data[i + 3], data[i + 4]
        i += 5
        if n not in (4, 7, 10) or len(data) < i + n:
            raise PN532Error(f"bad NFCID length {n}")
        uid = data[i:i + n]
        i += n
        ats = b""
        if sel & 0x20 and len(data) > i:
            ats_len = data[i]
            ats = data[i:i + ats_len]
            i += ats_len
        out.append(Target(tg, bytes(sens), sel, bytes(uid), bytes(ats)))
    return out


@contextlib.contextmanager
def _port_gone_is_serial_error():
    """A vanished tty raises termios.error (from tcflush, tcdrain, TIOCINQ), not an OSError."""
    try:
        yield
    except termios.error as exc:
        raise serial.SerialException(f"the port went away: {exc}") from None


class PN532:
    def __init__(self, port: serial.SerialBase, retries: int = 2):
        self.port = port
        self.retries = retries
        self._buf = b""
        self.stats = {"nacks_sent": 0, "garbage": 0, "checksum": 0, "timeouts": 0, "retries": 0}

    @classmethod
    def open(cls, url: str, baudrate: int = 115200, **kw) -> "PN532":
        port = serial.serial_for_url(url, baudrate=baudrate, timeout=0.02, write_timeout=1.0, exclusive=True
                                     if not url.startswith(("loop://", "spy://", "socket://", "rfc2217://")) else None)
        return cls(port, **kw)

    def close(self) -> None:
        try:
            self.port.close()
        except (OSError, serial.SerialException):
            pass

    # -- bytes ------------------------------------------------------------------
    def _fill(self) -> None:
        """Read what is there, waiting at most the port's short read timeout."""
        with _port_gone_is_serial_error():
            self._buf += self.port.read(max(1, self.port.in_waiting))

    def _next_frame(self, deadline: float) -> frames.Frame | None:
        while True:
            if self._buf:
                r = frames.parse(self._buf)
                if r.problem:
                    self.stats[r.problem] += 1
                self._buf = self._buf[r.consumed:]
                if r.problem == "checksum":
                    return frames.Frame("corrupt")
                if r.frame is not None:
                    return r.frame
                if r.consumed:
                    continue
            if time.monotonic() >= deadline:
                return None
            self._fill()

    def _write(self, data: bytes) -> None:
        with _port_gone_is_serial_error():
            self.port.write(data)
            self.port.flush()

    # -- commands -------------------------------------------------------------
    def command(self, code: int, params: bytes = b"", timeout: float = 0.5) -> bytes:
        """Send one command; return the answer's data after the reply code."""
        frame = frames.encode(bytes([code]) + params)
        last: Exception | None = None
        for attempt in range(1 + self.retries):
            if attempt:
                self.stats["retries"] += 1
            self._buf = b""
            with _port_gone_is_serial_error():
                self.port.reset_input_buffer()
            self._write(frame)
            ack = self._next_frame(time.monotonic() + ACK_TIMEOUT)
            if ack is None:
                self.stats["timeouts"] += 1
                last = PN532Timeout(f"no ACK for command 0x{code:02X}")
                continue
            if ack.kind == "nack":
                last = PN532Error("the reader asked for a resend (NACK)")
                continue
            if ack.kind != "ack":
                last = PN532Error(f"expected an ACK for command 0x{code:02X}, got {ack.kind}")
                continue
            try:
                return self._answer(code, timeout)
            except PN532Timeout as exc:
                last = exc
                self.abort()
                if code == Command.IN_LIST_PASSIVE_TARGET:
                    raise  # no card is not a fault: let the caller poll again
            except PN532Error as exc:
                last = exc
        raise last or PN532Error(f"command 0x{code:02X} failed")

    def _answer(self, code: int, timeout: float) -> bytes:
        deadline = time.monotonic() + timeout
        nacks = 0
        while True:
            f = self._next_frame(deadline)
            if f is None:
                self.stats["timeouts"] += 1
                raise PN532Timeout(f"no answer to command 0x{code:02X} within {timeout:.2f} s")
            if f.kind == "corrupt":
                if nacks >= self.retries:
                    raise PN532Error(f"answer to command 0x{code:02X} kept failing its checksum")
                nacks += 1
                self.stats["nacks_sent"] += 1
                self._write(frames.NACK)
                deadline = time.monotonic() + timeout
                continue
            if f.kind == "error":
                raise PN532Error(f"the reader reported an application error for command 0x{code:02X}")
            if f.kind in ("ack", "nack"):
                continue
            if f.tfi != frames.PN532_TO_HOST or f.command != code + 1:  # the answer carries the code plus one
                continue  # a stale answer to something earlier: skip it
            return f.data[1:]

    def abort(self) -> None:
        """An ACK from the host cancels the command the chip is running."""
        try:
            self._write(frames.ACK)
        except (OSError, serial.SerialException):
            pass  # the port is gone; the next command reports it

    def wake_up(self) -> None:
        """Wake the chip from LowVbat and put it in normal mode (SAMConfiguration must follow the wake-up)."""
        self._write(WAKE_UP)
        self.command(Command.SAM_CONFIGURATION, bytes([0x01, 0x14, 0x01]), timeout=0.5)

    def firmware_version(self) -> tuple[int, int, int, int]:
        data = self.command(Command.GET_FIRMWARE_VERSION, timeout=0.5)
        if len(data) != 4:
            raise PN532Error(f"GetFirmwareVersion answered {data.hex()}")
        return tuple(data)  # type: ignore[return-value]

    def list_passive_target(self, timeout: float = 0.5) -> Target | None:
        """Look for one ISO 14443A card; None when none came into the field within ``timeout``."""
        try:
            data = self.command(Command.IN_LIST_PASSIVE_TARGET, bytes([0x01, 0x00]), timeout=timeout)
        except PN532Timeout:
            return None
        targets = parse_targets(data)
        return targets[0] if targets else None

    def release(self, target: int = 0) -> None:
        self.command(Command.IN_RELEASE, bytes([target]), timeout=0.3)

    def set_baud_rate(self, baud: int) -> None:
        """SetSerialBaudRate: the chip answers, the host ACKs, then both switch."""
        code = BAUD_RATES.index(baud)
        self.command(Command.SET_SERIAL_BAUD_RATE, bytes([code]), timeout=0.3)
        self._write(frames.ACK)
        time.sleep(0.005)
        with _port_gone_is_serial_error():
            self.port.baudrate = baud
