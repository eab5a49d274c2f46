"""A till (ECR) for the tests, written from the ZVT spec (PA00P015) apart from terminal/till/.

Deliberately built another way than the terminal's codec: commands are written as hex strings
the way the spec's examples print them, the serial CRC is computed from ``binascii.crc_hqx`` (the
MSB-first CCITT CRC) by reflecting bits in and out (CRC-16/KERMIT = reflected CCITT, init 0),
and answers are picked apart with a small BMP walker that knows only the BMPs a terminal sends.
"""

from __future__ import annotations

import binascii
import os
import select
import socket
import time

DLE, STX, ETX, ACK, NAK = b"\x10", b"\x02", b"\x03", b"\x06", b"\x15"


def _rev8(b: int) -> int:
    return int(f"{b:08b}"[::-1], 2)


def kermit(data: bytes) -> int:
    """CRC-16/KERMIT via the normal CCITT CRC: reflect each byte in, the 16-bit result out."""
    normal = binascii.crc_hqx(bytes(_rev8(b) for b in data), 0)
    return int(f"{normal:016b}"[::-1], 2)


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def amount_bcd(minor: int) -> str:
    return f"{minor:012d}"


# the commands, as the spec writes them
def registration(password="000000", config="BA", currency="0978") -> bytes:
    body = password + config + currency
    return h(f"0600 {len(body) // 2:02x} {body}")


def authorisation(minor: int, currency="0978") -> bytes:
    body = "04" + amount_bcd(minor) + "49" + currency
    return h(f"0601 {len(body) // 2:02x} {body}")


def reversal(receipt: int, password="000000") -> bytes:
    body = password + "87" + f"{receipt:04d}"
    return h(f"0630 {len(body) // 2:02x} {body}")


def refund(receipt: int, minor: int, password="000000") -> bytes:
    body = password + "04" + amount_bcd(minor) + "87" + f"{receipt:04d}"
    return h(f"0631 {len(body) // 2:02x} {body}")


def end_of_day(password="000000") -> bytes:
    return h(f"0650 03 {password}")


def diagnosis(password="000000") -> bytes:
    return h(f"0670 03 {password}")


LOG_OFF = h("0602 00")
ABORT = h("06B0 00")
RECEIVED = h("8000 00")


# what comes back: a walker over the BMPs of 04 0F / 06 0F
FIXED = {0x04: 6, 0x0B: 3, 0x0C: 3, 0x0D: 2, 0x19: 1, 0x27: 1, 0x29: 4, 0x49: 2, 0x87: 2, 0x88: 3, 0x8A: 1}
LL = {0x22, 0x8B}
LLL = {0x3C, 0x60}


def bmps(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i < len(data):
        tag = data[i]
        i += 1
        if tag in FIXED:
            n = FIXED[tag]
        elif tag in LL:
            n = (data[i] & 0xF) * 10 + (data[i + 1] & 0xF)
            i += 2
        elif tag in LLL:
            n = (data[i] & 0xF) * 100 + (data[i + 1] & 0xF) * 10 + (data[i + 2] & 0xF)
            i += 3
        else:
            raise AssertionError(f"BMP {tag:02x} not expected at {i - 1} in {data.hex()}")
        out[tag] = data[i:i + n]
        i += n
    return out


def number(b: bytes) -> int:
    return int(b.hex())


def body(apdu: bytes) -> bytes:
    return apdu[5:] if apdu[2] == 0xFF else apdu[3:]


class Wire:
    def write_apdu(self, apdu: bytes) -> None: ...
    def read_apdu(self, timeout: float) -> bytes | None: ...


class TcpWire(Wire):
    def __init__(self, host: str, port: int):
        self.sock = socket.create_connection((host, port), timeout=5)

    def write_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def write_apdu(self, apdu: bytes) -> None:
        self.sock.sendall(apdu)

    def _exact(self, n: int, deadline: float) -> bytes | None:
        got = b""
        while len(got) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(n - len(got))
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("terminal closed the connection")
            got += chunk
        return got

    def read_apdu(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        head = self._exact(3, deadline)
        if head is None:
            return None
        if head[2] == 0xFF:
            ext = self._exact(2, deadline + 5)
            head += ext
            n = ext[0] | ext[1] << 8
        else:
            n = head[2]
        return head + (self._exact(n, deadline + 5) or b"")

    def close(self) -> None:
        self.sock.close()


class PtyWire(Wire):
    """The till's end of a pseudo-terminal pair: frames, CRC, ACK/NAK by hand."""

    def __init__(self, fd: int):
        self.fd = fd
        self.naks = 0

    def _byte(self, deadline: float) -> bytes | None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([self.fd], [], [], left)
        return os.read(self.fd, 1) if r else None

    def write_raw(self, data: bytes) -> None:
        os.write(self.fd, data)

    def framed(self, apdu: bytes) -> bytes:
        crc = kermit(apdu + ETX)
        return DLE + STX + apdu.replace(DLE, DLE + DLE) + DLE + ETX + bytes([crc & 0xFF, crc >> 8])

    def write_apdu(self, apdu: bytes) -> None:
        os.write(self.fd, self.framed(apdu))
        answer = self._byte(time.monotonic() + 5)
        assert answer == ACK, f"terminal answered {answer!r} to a good frame"

    def read_ack_byte(self, timeout: float = 5) -> bytes | None:
        return self._byte(time.monotonic() + timeout)

    def read_apdu(self, timeout: float) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            b = self._byte(deadline)
            if b is None:
                return None
            if b == DLE and self._byte(deadline + 2) == STX:
                break
        data = b""
        while True:
            b = self._byte(deadline + 2)
            if b == DLE:
                nxt = self._byte(deadline + 2)
                if nxt == ETX:
                    break
                data += nxt
            else:
                data += b
        crc = self._byte(deadline + 2) + self._byte(deadline + 2)
        want = kermit(data + ETX)
        if crc != bytes([want & 0xFF, want >> 8]):
            os.write(self.fd, NAK)
            self.naks += 1
            return self.read_apdu(timeout)
        os.write(self.fd, ACK)
        return data


class Ecr:
    """Send a command, answer every message with 80 00 00, collect them until 06 0F or 06 1E."""

    def __init__(self, wire: Wire):
        self.wire = wire

    def send(self, apdu: bytes) -> bytes:
        """Send ``apdu``; the terminal's first answer (80 00 00 or 84 xx 00)."""
        self.wire.write_apdu(apdu)
        answer = self.wire.read_apdu(10)
        assert answer is not None, "no answer to the command"
        return answer

    def collect(self, timeout: float = 30, on_message=None) -> list[bytes]:
        out = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.wire.read_apdu(deadline - time.monotonic())
            if msg is None:
                break
            out.append(msg)
            self.wire.write_apdu(RECEIVED)
            if on_message:
                on_message(msg)
            if msg[:2] in (h("060F"), h("061E")):
                return out
        raise AssertionError(f"no completion or abort within {timeout} s; got {[m.hex() for m in out]}")

    def run(self, apdu: bytes, timeout: float = 30, on_message=None) -> list[bytes]:
        first = self.send(apdu)
        assert first == RECEIVED, f"command refused: {first.hex()}"
        return self.collect(timeout, on_message)


def of(messages: list[bytes], cls_instr: str) -> list[bytes]:
    return [m for m in messages if m[:2] == h(cls_instr)]


def status_info(messages: list[bytes]) -> dict[int, bytes]:
    infos = of(messages, "040F")
    assert infos, f"no status information in {[m.hex() for m in messages]}"
    return bmps(body(infos[-1]))


def printed(messages: list[bytes]) -> str:
    """The text of the 06 D1 print lines (attribute byte dropped)."""
    return "\n".join(body(m)[1:].decode("latin-1") for m in of(messages, "06D1"))


def send_refused(e: Ecr, apdu: bytes, skip_status: bool = False) -> int:
    """Send a command that must be refused; the XX of its 84 XX 00 (status messages meanwhile are answered)."""
    e.wire.write_apdu(apdu)
    while True:
        msg = e.wire.read_apdu(10)
        assert msg is not None, "no answer"
        if skip_status and msg[:2] == h("04FF"):
            e.wire.write_apdu(RECEIVED)
            continue
        assert msg[0] == 0x84, f"not refused: {msg.hex()}"
        return msg[1]
