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

The chip's behaviour (power states, wake-up, line speed, the commands) is
:class:`firmware_bridge.chip.PN532Chip`, a pure model; this module is its
pseudo-terminal and a cable's faults.

Line speed: the chip hears the host only while the host's port speed (the
pty's termios speed) is the chip's; a host that changes its speed alone gets
nothing back. A pty has no line timing, so each chunk read is handed to the
chip with its arrival time. Tests and the demo use the
:class:`PN532Simulator` class directly.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
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
from .chip import RANDOM, WAKE_UP_DELAY, PN532Chip
from .commands import BAUD_RATES

_log = logging.getLogger(__name__)

FAULTS = ("none", "drop", "corrupt", "silence", "garbage")
_TERMIOS_SPEEDS = {getattr(termios, f"B{n}"): n for n in BAUD_RATES if hasattr(termios, f"B{n}")}


class PN532Simulator:
    """A :class:`PN532Chip` on a pseudo-terminal whose slave end ``link`` points to, with a cable's faults."""

    def __init__(self, link: str | os.PathLike, card: bytes | str | None = None, fault: str = "none",
                 seed: int | None = None, wake_delay: float = WAKE_UP_DELAY):
        self.link = Path(link)
        self.fault = fault
        self.rng = random.Random(seed)
        self.log: list[tuple[str, bytes]] = []   # ("rx"/"tx"/"lost"/"garbled"/"flush", bytes), for tests
        self.chip = PN532Chip(card, rng=self.rng, wake_delay=wake_delay, log=self.log)
        self._lock = threading.RLock()
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # what tests and the demo read of the chip
    @property
    def power(self) -> str:
        return self.chip.power

    @property
    def baudrate(self) -> int:
        return self.chip.baudrate

    @property
    def asleep(self) -> bool:
        return self.chip.asleep

    @property
    def card(self) -> bytes | str | None:
        return self.chip.card

    @property
    def activations(self) -> list[bytes]:
        return self.chip.activations

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
        with self._lock:
            self.chip.present(uid)

    def present_random(self) -> None:
        self.present(RANDOM)

    def remove(self) -> None:
        with self._lock:
            self.chip.remove()

    def set_fault(self, mode: str) -> None:
        if mode not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        with self._lock:
            self.fault = mode

    def unplug(self) -> None:
        with self._lock:
            self._close_pty()

    def replug(self) -> None:
        """Plugged back: a power cycle of the chip and a new pty."""
        with self._lock:
            self._close_pty()
            self.chip.power_up()
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
        if self._slave is None:
            return None
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

    # -- the line ------------------------------------------------------------------------
    def _run(self) -> None:
        speed_before: int | None = self.baudrate
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
                        self.log.append(("flush", b""))
                        self._transmit(self.chip.host_flushed_output())
                    if chunk:
                        self.log.append(("rx", chunk))
                        # A host that switches speed alone is heard as noise.  It may switch right
                        # after writing, so a speed seen before or now will do, and the ACK that
                        # completes SetSerialBaudRate is sent at the old speed by every host.
                        speeds = (speed_before, speed_now)
                        if self.baudrate in speeds or None in speeds or self.chip.changing_speed:
                            self._transmit(self.chip.hear(chunk, time.monotonic()))
                        else:
                            self.log.append(("garbled", chunk))
                speed_before = speed_now
                if self.chip.listing and not (ready and not chunk) \
                        and not self._host_is_talking(fd):
                    # Not on a flush notice, nor while one (or a command) waits to be read: a host
                    # flushes its input just before it writes the next command, which supersedes the
                    # pending one.  On a wire that instant lasts a few bit times; here the thread may
                    # have slept through it, and a card found then would answer the old command into
                    # the new one's ACK far more often than a chip does.
                    self._transmit(self.chip.serve_pending())

    @staticmethod
    def _host_is_talking(fd: int) -> bool:
        """Something from the host (bytes or a flush notice) waits to be read."""
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):
            return False

    def _transmit(self, out: list[bytes]) -> None:
        for data in out:
            self._send(data)


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
