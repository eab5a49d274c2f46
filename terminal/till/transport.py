"""The two ways a till reaches the terminal: a serial line (framed, CRC, ACK/NAK) and one TCP listener.

Both give the link the same :class:`Channel`: ``recv(timeout)`` returns the next APDU, None when
nothing came in time, or a :class:`Garbled` (bytes that are not an APDU: the channel has already
said NAK on a serial line; the link answers ``84 9A 00`` on TCP); ``send(apdu)`` writes one, and
on a serial line waits for the till's ACK byte, sending again up to three times on NAK or silence
(PA00P015 "transport protocol for RS232"; ecrterm's ``transport_serial.py`` waits for the one ACK
byte the same way).  A channel that is gone raises :class:`LinkLost`.

The TCP side opens exactly one listening socket, on ``[till] listen`` (loopback unless configured),
and serves one till at a time: a new connection while the last one is idle replaces it (the till
reconnected), one while a sale or an administration command runs is told ``84 83 00`` (function
not possible) to each command and closed.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from dataclasses import dataclass

from .codec import ACK, NAK, Apdu, CodecError, Deframer, apdu_length, decode_apdu, frame, nak_apdu

_log = logging.getLogger(__name__)

INTER_BYTE_S = 1.0    # a frame or APDU that stops arriving for this long is cut short (ZVT's T1 is 100 ms;
                      # USB adapters and loaded machines need more)
ACK_WAIT_S = 2.0      # how long a serial sender waits for ACK/NAK before sending again
SEND_TRIES = 3


class LinkLost(Exception):
    """The till's connection is gone (socket closed, serial device gone, no ACK after three tries)."""


@dataclass(frozen=True)
class Garbled:
    reason: str


class Channel:
    name = "channel"

    def recv(self, timeout: float) -> Apdu | Garbled | None:
        raise NotImplementedError

    def send(self, apdu: Apdu) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# --------------------------------------------------------------------------- TCP
class TcpChannel(Channel):
    def __init__(self, sock: socket.socket, peer: str):
        self.sock = sock
        self.name = f"tcp {peer}"
        self._buf = bytearray()
        self._lock = threading.Lock()

    def _fill(self, timeout: float) -> bool:
        r, _, _ = select.select([self.sock], [], [], max(0.0, timeout))
        if not r:
            return False
        try:
            chunk = self.sock.recv(4096)
        except OSError as exc:
            raise LinkLost(str(exc)) from None
        if not chunk:
            raise LinkLost("the till closed the connection")
        self._buf += chunk
        return True

    def recv(self, timeout: float) -> Apdu | Garbled | None:
        deadline = time.monotonic() + timeout
        while True:
            sizes = apdu_length(bytes(self._buf))
            if sizes is not None and len(self._buf) >= sum(sizes):
                n = sum(sizes)
                raw, self._buf = bytes(self._buf[:n]), self._buf[n:]
                return decode_apdu(raw)
            wait = deadline - time.monotonic() if not self._buf else INTER_BYTE_S
            if wait <= 0:
                return None
            if not self._fill(wait):
                if self._buf:
                    cut, self._buf = bytes(self._buf), bytearray()
                    return Garbled(f"APDU cut short after {len(cut)} bytes: {cut[:16].hex(' ')}")
                return None

    def send(self, apdu: Apdu) -> None:
        with self._lock:
            try:
                self.sock.sendall(apdu.encode())
            except OSError as exc:
                raise LinkLost(str(exc)) from None

    def hang_up(self) -> None:
        """End the connection from another thread: the session's next read sees it closed."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class TcpListener:
    """Exactly one listening socket; ``accept`` yields one channel at a time."""

    def __init__(self, host: str, port: int):
        self.sock = socket.create_server((host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET,
                                         reuse_port=False)
        self.address = self.sock.getsockname()[:2]
        self._busy = threading.Event()

    def accept(self, timeout: float) -> TcpChannel | None:
        r, _, _ = select.select([self.sock], [], [], timeout)
        if not r:
            return None
        conn, peer = self.sock.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return TcpChannel(conn, f"{peer[0]}:{peer[1]}")

    def refuse(self, channel: TcpChannel) -> None:
        """Another till while one is served: every command it sends gets 84 83 00, then it is closed."""
        def run():
            try:
                while (got := channel.recv(2.0)) is not None:
                    if isinstance(got, Apdu) and got.command == (0x80, 0x00):
                        continue
                    channel.send(nak_apdu(0x83))
            except (LinkLost, CodecError, OSError):
                pass
            finally:
                channel.close()
        threading.Thread(target=run, name="till-refuse", daemon=True).start()

    def close(self) -> None:
        self.sock.close()


# --------------------------------------------------------------------------- serial
class SerialChannel(Channel):
    """A till on RS-232 (or a USB adapter): 9600 baud 8N2 unless the till is set otherwise."""

    def __init__(self, device: str, baudrate: int = 9600):
        import serial

        self.name = f"serial {device}"
        try:
            self.port = serial.serial_for_url(device, baudrate=baudrate, bytesize=8, parity="N", stopbits=2,
                                              timeout=0)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise LinkLost(f"cannot open {device}: {exc}") from None
        self._deframer = Deframer()
        self._frames: list = []
        self._acks: list[int] = []
        self._lock = threading.Lock()

    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting up to ``timeout``); frames and ACK/NAK bytes are sorted out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = self.port.read(4096)
            except Exception as exc:  # the adapter was pulled: SerialException, OSError, termios.error
                raise LinkLost(f"{self.name}: {exc}") from None
            if chunk:
                self._sort(chunk)
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def _sort(self, chunk: bytes) -> None:
        for b in chunk:
            if not self._deframer.in_frame and b in (ACK, NAK):
                self._acks.append(b)
                continue
            self._frames += self._deframer.feed(bytes([b]))

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except Exception as exc:
            raise LinkLost(f"{self.name}: {exc}") from None

    def recv(self, timeout: float) -> Apdu | Garbled | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._frames:
                got = self._frames.pop(0)
                if isinstance(got, CodecError):
                    self._write(bytes([NAK]))
                    return Garbled(str(got))
                try:
                    apdu = decode_apdu(got)
                except CodecError as exc:
                    self._write(bytes([NAK]))
                    return Garbled(str(exc))
                self._write(bytes([ACK]))
                return apdu
            wait = deadline - time.monotonic()
            if self._deframer.in_frame:
                wait = INTER_BYTE_S
            if wait <= 0:
                return None
            if not self._read(wait):
                if self._deframer.in_frame:
                    self._deframer.reset()
                    self._write(bytes([NAK]))
                    return Garbled("frame cut short")
                if time.monotonic() >= deadline:
                    return None

    def send(self, apdu: Apdu) -> None:
        data = frame(apdu.encode())
        with self._lock:
            for _ in range(SEND_TRIES):
                self._acks.clear()
                self._write(data)
                deadline = time.monotonic() + ACK_WAIT_S
                while not self._acks and time.monotonic() < deadline:
                    self._read(deadline - time.monotonic())
                if self._acks and self._acks[0] == ACK:
                    self._acks.pop(0)
                    return
        raise LinkLost(f"{self.name}: the till did not acknowledge {apdu.cls:02X} {apdu.instr:02X} "
                       f"after {SEND_TRIES} tries")

    def close(self) -> None:
        try:
            self.port.close()
        except Exception:
            pass
