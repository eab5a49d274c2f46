"""A PN532 on a pseudo-terminal, answering byte for byte as the chip does over HSU.

    python -m firmware_bridge.sim --link /tmp/pn532 [--card 04A1B2C3] [--fault MODE]

opens a pty, makes ``--link`` a symlink to it, and serves.  Control lines on
stdin change it while it runs:

    present 04A1B2C3   put a card (4, 7 or 10 byte UID) in the field
    remove             take it away
    unplug             the USB adapter is pulled: the pty disappears
    replug             plugged back: a new pty, the link points to it, the chip is asleep again
    fault MODE         none | drop (lose a byte of each answer) | corrupt (bad checksums)
                       | silence (answer nothing) | garbage (stray bytes before answers)
    quit

What it does, as the chip does: it sleeps (LowVbat) until it sees 55 bytes;
ignores leading 55/00 bytes; ACKs each good command, then answers; answers a
host NACK by sending its last answer again; NACKs a command whose checksum
fails; answers GetFirmwareVersion with 32 01 06 07; answers
InListPassiveTarget only while a card is present (or with zero targets when
the host set finite retries with RFConfiguration), and drops that command
when the host sends an ACK; handles extended frames and SetSerialBaudRate;
answers unknown commands with the application error frame.  Tests and the
demo use the :class:`PN532Simulator` class directly.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import select
import sys
import threading
import time
import tty
from pathlib import Path

from . import frames

_log = logging.getLogger(__name__)

FIRMWARE = bytes([0x32, 0x01, 0x06, 0x07])
FAULTS = ("none", "drop", "corrupt", "silence", "garbage")


def target_bytes(uid: bytes) -> bytes:
    """Tg SENS_RES(2) SEL_RES NFCIDLen NFCID for a MIFARE-like card of this UID size."""
    sens, sel = {4: (b"\x00\x04", 0x08), 7: (b"\x00\x44", 0x00), 10: (b"\x00\x84", 0x00)}[len(uid)]
    return bytes([0x01]) + sens + bytes([sel, len(uid)]) + uid


class PN532Simulator:
    def __init__(self, link: str | os.PathLike, card: bytes | None = None, fault: str = "none", seed: int | None = None):
        self.link = Path(link)
        self.card = card
        self.fault = fault
        self.rng = random.Random(seed)
        self.baudrate = 115200
        self.log: list[tuple[str, bytes]] = []   # ("rx"/"tx", bytes), for tests
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reset_chip()

    def _reset_chip(self) -> None:
        self.asleep = True
        self._rx = b""
        self._last_answer: bytes | None = None
        self._pending_list: bytes | None = None   # params of a waiting InListPassiveTarget
        self._pending_baud: int | None = None
        self._finite_retries = False
        self._card_selected = False

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

    def present(self, uid: bytes) -> None:
        if len(uid) not in (4, 7, 10):
            raise ValueError("ISO 14443A UIDs have 4, 7 or 10 bytes")
        with self._lock:
            self.card = bytes(uid)

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
                if ready:
                    try:
                        chunk = os.read(fd, 4096)
                    except (BlockingIOError, InterruptedError):
                        chunk = b""
                    except OSError:
                        chunk = b""  # nobody has the port open
                    if chunk:
                        self.log.append(("rx", chunk))
                        self._receive(chunk)
                self._serve_pending_list()

    def _receive(self, chunk: bytes) -> None:
        if self.asleep:
            if 0x55 not in chunk:
                return  # a sleeping chip hears nothing but the wake-up
            self.asleep = False
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
        self._send(frames.ACK)
        self._command(f.data[0], f.data[1:])

    def _command(self, code: int, p: bytes) -> None:
        reply = code + 1
        if code == 0x02:                                   # GetFirmwareVersion
            self._answer(bytes([reply]) + FIRMWARE)
        elif code == 0x14:                                 # SAMConfiguration
            self._answer(bytes([reply]))
        elif code == 0x4A:                                 # InListPassiveTarget
            if len(p) < 2 or p[0] not in (1, 2) or p[1] != 0x00:
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
            self._pending_baud = [9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000][p[0]]
            self._answer(bytes([reply]))
        elif code == 0x32:                                 # RFConfiguration
            if p[:1] == b"\x05" and len(p) >= 4:           # MaxRetries: MxRtyPassiveActivation
                self._finite_retries = p[3] != 0xFF
            self._answer(bytes([reply]))
        elif code == 0x06:                                 # ReadRegister: 2-byte addresses
            self._answer(bytes([reply]) + bytes(len(p) // 2))
        elif code in (0x08, 0x12):                         # WriteRegister, SetParameters
            self._answer(bytes([reply]))
        elif code == 0x04:                                 # GetGeneralStatus
            self._answer(bytes([reply, 0x00, 0x01 if self.card else 0x00, 0x00, 0x80]))
        elif code == 0x16:                                 # PowerDown
            self._answer(bytes([reply, 0x00]))
            self.asleep = True
        elif code == 0x00:                                 # Diagnose: echo back the test data
            self._answer(bytes([reply]) + p)
        elif code == 0x40:                                 # InDataExchange
            status = 0x00 if self.card and self._card_selected else 0x01
            self._answer(bytes([reply, status]))
        else:
            self._send(frames.ERROR_FRAME)

    def _serve_pending_list(self, immediate: bool = False) -> None:
        if self._pending_list is None:
            return
        if self.card is not None:
            self._pending_list = None
            self._card_selected = True
            self._answer(bytes([0x4B, 0x01]) + target_bytes(self.card))
        elif immediate and self._finite_retries:
            self._pending_list = None
            self._answer(bytes([0x4B, 0x00]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--link", required=True, help="path of the symlink to create (e.g. /tmp/pn532)")
    ap.add_argument("--card", help="UID (hex) of a card already in the field")
    ap.add_argument("--fault", default="none", choices=FAULTS)
    a = ap.parse_args(argv)
    card = None
    if a.card:
        try:
            card = bytes.fromhex(a.card)
            if len(card) not in (4, 7, 10):
                raise ValueError
        except ValueError:
            ap.exit(2, f"{ap.prog}: error: --card {a.card!r} is not a 4, 7 or 10 byte hex UID\n")
    link = Path(a.link)
    if link.exists() and not link.is_symlink():
        ap.exit(2, f"{ap.prog}: error: {link} exists and is not a symlink; choose another --link\n")
    sim = PN532Simulator(link, card, a.fault).start()
    print(f"PN532 simulator ready on {link} -> {os.readlink(link)}", flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd = words[0]
            try:
                if cmd == "present" and len(words) == 2:
                    sim.present(bytes.fromhex(words[1]))
                elif cmd == "remove":
                    sim.remove()
                elif cmd == "unplug":
                    sim.unplug()
                elif cmd == "replug":
                    sim.replug()
                elif cmd == "fault" and len(words) == 2:
                    sim.set_fault(words[1])
                elif cmd == "quit":
                    break
                else:
                    print(f"unknown control line: {line.strip()!r}", file=sys.stderr, flush=True)
                    continue
            except ValueError as exc:
                print(f"error: {exc}", file=sys.stderr, flush=True)
                continue
            print(f"ok {cmd}", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
