"""A PN532 on a pseudo-terminal, answering byte for byte as the chip does over HSU.

    python -m firmware_bridge.sim --link /tmp/pn532 [--card 04A1B2C3 | --card random] [--fault MODE]

opens a pty, makes ``--link`` a symlink to it, and serves until ``quit`` or a
signal (SIGTERM, SIGINT, SIGHUP).  Control lines on stdin change it while it
runs; when stdin closes (started with ``&`` from a script or a unit file) it
keeps serving:

    present 04A1B2C3   put a card (4, 7 or 10 byte UID) in the field
    present random     put a phone (or a bank card) in the field: a new random UID 08xxxxxx at
                       each activation, ISO/IEC 14443-4 (SAK 20, with an ATS), as phones do
    remove             take it away
    unplug             the USB adapter is pulled: the pty disappears
    replug             plugged back (a power cycle): a new pty, the link points to it, the chip
                       is in LowVbat again at 115200 baud
    fault MODE         none | drop (lose a byte of each answer) | corrupt (bad checksums)
                       | silence (answer nothing) | garbage (stray bytes before answers)
    quit

Power states, as in the PN532 user manual (UM0701): the chip starts in
LowVbat; there, and after PowerDown (with HSU among its wake-up sources), any
byte on its RX line wakes it, whatever its value; the bytes that arrive while
it wakes (:data:`WAKE_UP_DELAY` of line time, counted at the current baud rate
from the first byte) are lost; then it answers.  A pty has no line timing, so
the simulator gives each received byte its place on the line (10 bit times
each, back to back) to decide which ones fall inside the wake-up.

Line speed: the chip hears the host only while the host's port speed (the
pty's termios speed) is the chip's; SetSerialBaudRate changes the chip's speed
when the host ACKs the answer, as the chip does.  A host that changes its speed
alone gets nothing back.

Otherwise: ignores leading 55/00 bytes; ACKs each good command, then answers;
answers a host NACK by sending its last answer again; NACKs a command whose
checksum fails; answers GetFirmwareVersion with 32 01 06 07; answers
InListPassiveTarget only while a card is present (or with zero targets when
the host set finite retries with RFConfiguration), and drops that command
when the host sends an ACK; handles extended frames, Diagnose, the CIU
registers drivers read, and SetSerialBaudRate; answers unknown commands with
the application error frame.  Tests and the demo use the
:class:`PN532Simulator` class directly.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import math
import os
import random
import select
import signal
import struct
import sys
import termios
import threading
import time
import tty
from pathlib import Path

from . import frames
from .pn532 import BAUD_RATES

_log = logging.getLogger(__name__)

FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])
FAULTS = ("none", "drop", "corrupt", "silence", "garbage")
# Wake-up time from LowVbat or PowerDown.  Bounded by what works and fails on real chips at
# 115200 baud: nfcpy's ten zero bytes (0.87 ms of line) are enough, libnfc's old five-byte
# preamble 55 55 00 00 00 (0.43 ms) was not (it lost the command after PowerDown).
WAKE_UP_DELAY = 0.00065
RANDOM = "random"
# What a phone (Apple Pay / Google Pay) or a bank card shows: ISO/IEC 14443-4, and an ATS
# (TL T0 TA TB TC, one historical byte).
PHONE_ATS = bytes.fromhex("067577810280")
PD_WAKE_HSU = 0x10          # PowerDown WakeUpEnable bit for the HSU
CIU_FIFO_DATA = 0x6339
_TERMIOS_SPEEDS = {getattr(termios, f"B{n}"): n for n in BAUD_RATES if hasattr(termios, f"B{n}")}


def random_uid(rng: random.Random) -> bytes:
    """A single-size random ID as ISO/IEC 14443-3 defines it: 08 then three random bytes."""
    return bytes([0x08]) + bytes(rng.randrange(256) for _ in range(3))


def target_bytes(uid: bytes, ats: bytes = b"") -> bytes:
    """Tg SENS_RES(2) SEL_RES NFCIDLen NFCID [ATS] for a card of this UID size (with ATS: ISO 14443-4)."""
    if ats:
        return bytes([0x01, 0x00, 0x04, 0x20, len(uid)]) + uid + ats
    sens, sel = {4: (b"\x00\x04", 0x08), 7: (b"\x00\x44", 0x00), 10: (b"\x00\x84", 0x00)}[len(uid)]
    return bytes([0x01]) + sens + bytes([sel, len(uid)]) + uid


class PN532Simulator:
    def __init__(self, link: str | os.PathLike, card: bytes | str | None = None, fault: str = "none",
                 seed: int | None = None, wake_delay: float = WAKE_UP_DELAY):
        self.link = Path(link)
        self.card = card            # a UID, RANDOM (a phone), or None
        self.fault = fault
        self.rng = random.Random(seed)
        self.wake_delay = wake_delay
        self.log: list[tuple[str, bytes]] = []   # ("rx"/"tx"/"lost"/"garbled", bytes), for tests
        self.activations: list[bytes] = []       # the UID shown at each activation, for tests
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reset_chip()

    def _reset_chip(self) -> None:
        """Power-up: LowVbat, 115200 baud, nothing pending."""
        self.power = "lowvbat"      # lowvbat | powerdown | awake
        self.baudrate = 115200
        self._hsu_wakes = True
        self._wake_until: float | None = None
        self._line_free = 0.0       # when the last received byte ended, in line time
        self._rx = b""
        self._last_answer: bytes | None = None
        self._pending_list: bytes | None = None   # params of a waiting InListPassiveTarget
        self._pending_baud: int | None = None
        self._finite_retries = False
        self._card_selected = False
        self._registers: dict[int, int] = {}
        self._auto_rats = True      # SetParameters fAutomaticRATS, on after power-up

    @property
    def asleep(self) -> bool:
        return self.power != "awake"

    # -- control ------------------------------------------------------------------
    def start(self) -> "PN532Simulator":
        self._open_pty()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="pn532-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        self._close_pty()

    def present(self, uid: bytes | str) -> None:
        """Put a card in the field: a UID, or :data:`RANDOM` for a phone showing a new random UID each time."""
        if uid != RANDOM and len(uid) not in (4, 7, 10):
            raise ValueError("ISO 14443A UIDs have 4, 7 or 10 bytes")
        with self._lock:
            self.card = RANDOM if uid == RANDOM else bytes(uid)

    def present_random(self) -> None:
        self.present(RANDOM)

    def remove(self) -> None:
        with self._lock:
            self.card = None
            self._card_selected = False

    def set_fault(self, mode: str) -> None:
        if mode not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        with self._lock:
            self.fault = mode

    def unplug(self) -> None:
        with self._lock:
            self._close_pty()

    def replug(self) -> None:
        with self._lock:
            self._close_pty()
            self._reset_chip()
            self._open_pty()

    @property
    def plugged(self) -> bool:
        return self._master is not None

    # -- the pty -----------------------------------------------------------------------
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        tty.setraw(master)
        attrs = termios.tcgetattr(slave)
        attrs[4] = attrs[5] = termios.B115200   # the line as the chip comes up: 115200 8N1
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        # Packet mode: a host's tcflush(TCOFLUSH) right after a write (nfcpy reopens the port at once
        # after the ACK that completes SetSerialBaudRate) then reaches us as a notice instead of
        # discarding bytes that a real UART would already have put on the wire.
        fcntl.ioctl(master, termios.TIOCPKT, struct.pack("i", 1))
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        name = os.ttyname(slave)
        tmp = self.link.with_name(self.link.name + ".new")
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(name)
        tmp.replace(self.link)  # atomic: a reader never sees a missing link while we swap
        _log.info("PN532 simulator on %s -> %s", self.link, name)

    def _close_pty(self) -> None:
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        try:
            if self.link.is_symlink():
                self.link.unlink()
        except OSError:
            pass

    def _host_baud(self) -> int | None:
        """The speed the host set on its end of the line (None: one the chip's table does not have)."""
        try:
            return _TERMIOS_SPEEDS.get(termios.tcgetattr(self._slave)[5])
        except (termios.error, OSError, TypeError):
            return None

    def _send(self, data: bytes) -> None:
        if self.fault == "silence" or self._master is None:
            return
        if self.fault == "garbage":
            data = bytes(self.rng.choice([0x13, 0x37, 0xAA, 0x5A]) for _ in range(3)) + data
        elif self.fault == "drop" and len(data) > 6:
            i = self.rng.randrange(3, len(data))
            data = data[:i] + data[i + 1:]
        elif self.fault == "corrupt" and len(data) > 6 and data not in (frames.ACK, frames.NACK):
            data = data[:-2] + bytes([data[-2] ^ 0x5A]) + data[-1:]
        host = self._host_baud()
        if host is not None and host != self.baudrate:
            # sent at one speed, sampled at another: the host reads framing errors, not our bytes
            data = bytes(self.rng.randrange(256) for _ in range(max(1, len(data) * min(host, self.baudrate)
                                                                   // max(host, self.baudrate))))
        self.log.append(("tx", data))
        try:
            os.write(self._master, data)
        except OSError:
            pass

    def _answer(self, data: bytes) -> None:
        frame = frames.encode(data, tfi=frames.PN532_TO_HOST)
        self._last_answer = frame
        self._send(frame)

    # -- the chip ------------------------------------------------------------------------
    def _run(self) -> None:
        speed_before = self.baudrate
        while not self._stop.is_set():
            with self._lock:
                fd = self._master
            if fd is None:
                time.sleep(0.02)
                continue
            try:
                ready, _, _ = select.select([fd], [], [], 0.01)
            except (OSError, ValueError):
                continue
            with self._lock:
                if self._master != fd:
                    continue
                speed_now = self._host_baud()
                if ready:
                    try:
                        packet = os.read(fd, 4097)
                    except (BlockingIOError, InterruptedError):
                        packet = b""
                    except OSError:
                        packet = b""  # nobody has the port open
                    chunk = packet[1:] if packet[:1] == b"\x00" else b""   # else a status notice
                    if packet[:1] not in (b"", b"\x00") and packet[0] & termios.TIOCPKT_FLUSHWRITE:
                        self._host_flushed_output()
                    if chunk:
                        self.log.append(("rx", chunk))
                        # A host that switches speed alone is heard as noise.  It may switch right
                        # after writing, so a speed seen before or now will do, and the ACK that
                        # completes SetSerialBaudRate is sent at the old speed by every host.
                        speeds = (speed_before, speed_now)
                        if self.baudrate in speeds or None in speeds or self._pending_baud is not None:
                            self._receive(chunk, time.monotonic())
                        else:
                            self.log.append(("garbled", chunk))
                speed_before = speed_now
                if self._pending_list is not None and not (ready and not chunk) \
                        and not self._host_is_talking(fd):
                    # Not on a flush notice, nor while one (or a command) waits to be read: a host
                    # flushes its input just before it writes the next command, which supersedes the
                    # pending one.  On a wire that instant lasts a few bit times; here the thread may
                    # have slept through it, and a card found then would answer the old command into
                    # the new one's ACK far more often than a chip does.
                    self._serve_pending_list()

    @staticmethod
    def _host_is_talking(fd: int) -> bool:
        """Something from the host (bytes or a flush notice) waits to be read."""
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _host_flushed_output(self) -> None:
        """The host discarded what it had written and we had not read yet (tcflush TCOFLUSH).

        On a UART those bytes were already in the transmit FIFO and reached the chip; on a pty they
        are gone.  The one place a driver writes and flushes at once is the ACK that completes
        SetSerialBaudRate (nfcpy reopens the port at the new speed right after it), so while the
        chip waits for that ACK, the flush stands for it.
        """
        self.log.append(("flush", b""))
        if self._pending_baud is not None:
            self._frame(frames.Frame("ack"))

    def _on_the_line(self, chunk: bytes, now: float) -> bytes:
        """What the chip hears of ``chunk``: all of it when awake; what follows the wake-up otherwise."""
        bit_time = 10 / self.baudrate      # start bit, 8 data bits, stop bit
        start = max(now, self._line_free)
        self._line_free = start + len(chunk) * bit_time
        if self.power != "awake":
            if self.power == "powerdown" and not self._hsu_wakes:
                self.log.append(("lost", chunk))
                return b""                  # the host did not allow the HSU to wake it
            self.power = "awake"            # any byte wakes it, whatever its value
            self._wake_until = start + self.wake_delay
        if self._wake_until is None:
            return chunk
        lost = min(len(chunk), max(0, math.ceil((self._wake_until - start) / bit_time - 1e-9)))
        if start + lost * bit_time >= self._wake_until:
            self._wake_until = None
        if lost:
            self.log.append(("lost", chunk[:lost]))
        return chunk[lost:]

    def _receive(self, chunk: bytes, now: float | None = None) -> None:
        chunk = self._on_the_line(chunk, time.monotonic() if now is None else now)
        if not chunk:
            return
        self._rx += chunk
        while self._rx:
            buf = self._rx.lstrip(b"\x55")
            if not buf:
                self._rx = b""
                return
            r = frames.parse(buf)
            self._rx = buf[r.consumed:]
            if r.problem == "checksum":
                self._send(frames.NACK)
            if r.frame is not None:
                self._frame(r.frame)
            if r.consumed == 0:
                return

    def _frame(self, f: frames.Frame) -> None:
        if f.kind == "ack":
            if self._pending_baud is not None:
                self.baudrate, self._pending_baud = self._pending_baud, None
            self._pending_list = None  # a host ACK aborts the running command
            return
        if f.kind == "nack":
            if self._last_answer is not None:
                self._send(self._last_answer)
            return
        if f.kind != "data" or f.tfi != frames.HOST_TO_PN532 or not f.data:
            return
        if self.power != "awake":
            return
        self._send(frames.ACK)
        self._command(f.data[0], f.data[1:])

    def _command(self, code: int, p: bytes) -> None:
        reply = code + 1
        if code == 0x02:                                   # GetFirmwareVersion
            self._answer(bytes([reply]) + FIRMWARE)
        elif code == 0x14:                                 # SAMConfiguration
            self._answer(bytes([reply]))
        elif code == 0x4A:                                 # InListPassiveTarget
            if len(p) < 2 or p[0] not in (1, 2) or p[1] > 4:
                self._send(frames.ERROR_FRAME)
                return
            self._pending_list = p
            self._serve_pending_list(immediate=True)
        elif code in (0x52, 0x44):                         # InRelease, InDeselect
            self._card_selected = False
            self._answer(bytes([reply, 0x00]))
        elif code == 0x10:                                 # SetSerialBaudRate
            if not p or p[0] > 8:
                self._send(frames.ERROR_FRAME)
                return
            self._pending_baud = BAUD_RATES[p[0]]
            self._answer(bytes([reply]))
        elif code == 0x32:                                 # RFConfiguration
            if p[:1] == b"\x05" and len(p) >= 4:           # MaxRetries: MxRtyPassiveActivation
                self._finite_retries = p[3] != 0xFF
            self._answer(bytes([reply]))
        elif code == 0x06:                                 # ReadRegister: 2-byte addresses
            addrs = [(p[i] << 8) | p[i + 1] for i in range(0, len(p) - 1, 2)]
            self._answer(bytes([reply]) + bytes(self._registers.get(a, 0) for a in addrs))
        elif code == 0x08:                                 # WriteRegister: address (2) + value
            for i in range(0, len(p) - 2, 3):
                self._registers[(p[i] << 8) | p[i + 1]] = p[i + 2]
            self._answer(bytes([reply]))
        elif code == 0x12:                                 # SetParameters: Flags
            if p:
                self._auto_rats = bool(p[0] & 0x10)       # fAutomaticRATS: fetch the ATS of a -4 card
            self._answer(bytes([reply]))
        elif code == 0x04:                                 # GetGeneralStatus
            self._answer(bytes([reply, 0x00, 0x01 if self.card else 0x00, 0x00, 0x80]))
        elif code == 0x16:                                 # PowerDown: WakeUpEnable [GenerateIRQ]
            if not p:
                self._send(frames.ERROR_FRAME)
                return
            self.power = "powerdown"                       # asleep once the answer is out
            self._hsu_wakes = bool(p[0] & PD_WAKE_HSU)
            self._pending_list = None
            self._rx = b""                                 # what follows is heard only after a wake-up
            self._answer(bytes([reply, 0x00]))
        elif code == 0x00:                                 # Diagnose: echo back the test data
            self._answer(bytes([reply]) + p)
        elif code == 0x40:                                 # InDataExchange
            status = 0x00 if self.card and self._card_selected else 0x01
            self._answer(bytes([reply, status]))
        else:
            self._send(frames.ERROR_FRAME)

    def _activate(self) -> bytes:
        """The target bytes of the card in the field; a phone shows a new random UID each time."""
        if self.card == RANDOM:
            uid = random_uid(self.rng)
            self.activations.append(uid)
            if self._auto_rats:
                return target_bytes(uid, PHONE_ATS)
            return bytes([0x01, 0x00, 0x04, 0x20, len(uid)]) + uid      # SAK 20, no RATS sent
        self.activations.append(self.card)
        return target_bytes(self.card)

    def _serve_pending_list(self, immediate: bool = False) -> None:
        if self._pending_list is None:
            return
        type_a = self._pending_list[1] == 0x00     # the field holds type A (106 kbps) cards only
        if self.card is not None and type_a:
            self._pending_list = None
            self._card_selected = True
            self._answer(bytes([0x4B, 0x01]) + self._activate())
        elif immediate and self._finite_retries:
            self._pending_list = None
            if type_a:
                self._registers[CIU_FIFO_DATA] = 0x26   # the REQA still in the FIFO: nobody answered
            self._answer(bytes([0x4B, 0x00]))


def _control(sim: PN532Simulator, line: str) -> bool:
    """Carry out one control line; False when it says quit."""
    words = line.split()
    if not words:
        return True
    cmd = words[0]
    try:
        if cmd == "present" and len(words) == 2:
            sim.present(RANDOM if words[1] == RANDOM else bytes.fromhex(words[1]))
        elif cmd == "remove":
            sim.remove()
        elif cmd == "unplug":
            sim.unplug()
        elif cmd == "replug":
            sim.replug()
        elif cmd == "fault" and len(words) == 2:
            sim.set_fault(words[1])
        elif cmd == "quit":
            return False
        else:
            print(f"unknown control line: {line.strip()!r}", file=sys.stderr, flush=True)
            return True
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return True
    print(f"ok {cmd}", flush=True)
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--link", required=True, help="path of the symlink to create (e.g. /tmp/pn532)")
    ap.add_argument("--card", help="UID (hex) of a card already in the field, or 'random' for a phone")
    ap.add_argument("--fault", default="none", choices=FAULTS)
    a = ap.parse_args(argv)
    card: bytes | str | None = None
    if a.card == RANDOM:
        card = RANDOM
    elif a.card:
        try:
            card = bytes.fromhex(a.card)
            if len(card) not in (4, 7, 10):
                raise ValueError
        except ValueError:
            ap.exit(2, f"{ap.prog}: error: --card {a.card!r} is not a 4, 7 or 10 byte hex UID, nor 'random'\n")
    link = Path(a.link)
    if link.exists() and not link.is_symlink():
        ap.exit(2, f"{ap.prog}: error: {link} exists and is not a symlink; choose another --link\n")
    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)

    def read_control_lines():
        for line in sys.stdin:
            if not _control(sim, line):
                done.set()
                return
        # stdin closed (started with & from a script, or by a unit file): keep serving
        print("standard input closed: serving until SIGTERM or SIGINT", file=sys.stderr, flush=True)

    sim = PN532Simulator(link, card, a.fault).start()
    try:
        print(f"PN532 simulator ready on {link} -> {os.readlink(link)}", flush=True)
        threading.Thread(target=read_control_lines, name="control", daemon=True).start()
        while not done.wait(0.5):
            pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
