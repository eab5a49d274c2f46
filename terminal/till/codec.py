"""ZVT (PA00P015, "ZVT 700") on the wire: APDUs, BMPs, TLV and the serial frame.

Where each layout comes from (looked up with the project's search tool):

- APDU = class byte, instruction byte, length byte (``FF`` then two bytes little-endian for
  255 bytes and more), data.  PA00P015 chapter 2 "APDU"; the same layout in ecrterm's
  ``ecrterm/packets/apdu.py`` (github.com/wirelane/ecrterm).
- The serial frame: ``DLE STX`` APDU ``DLE ETX`` CRC-low CRC-high, every DLE inside the APDU
  doubled; the CRC is CRC-16 with the reflected CCITT polynomial 0x8408, initial value 0,
  over the APDU (un-doubled) and the ETX byte; the receiver answers the byte ``ACK`` (06) for a
  good frame and ``NAK`` (15) for a bad one.  PA00P015 "transport protocol for RS232"; ecrterm's
  ``ecrterm/crc.py`` (``crc_xmodem16`` with poly 0x8408) and
  ``ecrterm/transmission/transport_serial.py`` (``SerialMessage``: ``[DLE, STX] + apdu + [DLE,
  ETX, crc_l, crc_h]``; ``write_ack``/``write_nak``).
- Over TCP/IP the APDUs travel as they are, without frame or CRC (PA00P015 "TCP/IP";
  ecrterm's ``transport_socket.py``), by convention on port 20007.
- BMP numbers and formats (fixed-length BCD, binary, LLVAR ``F0 Fx``, LLLVAR ``F0 Fx Fy``):
  ecrterm's ``ecrterm/packets/bitmaps.py``: 04 amount (6 BCD), 0B trace number (3 BCD), 0C time
  HHMMSS (3 BCD), 0D date MMDD (2 BCD), 19 payment type (1), 22 PAN (LLVAR, ``E`` masks a
  digit), 27 result code (1), 29 terminal id (4 BCD), 2A VU number (15 ASCII), 3C additional
  text (LLLVAR), 49 currency (2 BCD), 60 totals (LLLVAR), 87 receipt number (2 BCD), 88 turnover
  number (3 BCD), 8A card type (1), 8B card name (LLVAR), 06 TLV container.
- TLV (BMP 06): BER-style tags (``1F xx`` for two-byte tags), length ``< 0x80`` in one byte,
  ``81 xx`` or ``82 xx xx`` above; tag 24 display texts, 25 print texts, 07 one text line,
  1F07 receipt type.  PA00P015 chapter 9 "TLV-container"; ecrterm's ``ecrterm/packets/tlv.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DLE, STX, ETX, ACK, NAK = 0x10, 0x02, 0x03, 0x06, 0x15


class CodecError(ValueError):
    """Bytes that are not a well-formed ZVT APDU, BMP list, TLV or frame."""


# --------------------------------------------------------------------------- BCD
def bcd(value: int, nbytes: int) -> bytes:
    """``1250, 6`` -> ``00 00 00 00 12 50``: packed BCD, two digits a byte, left-padded with zeros."""
    digits = f"{value:0{nbytes * 2}d}"
    if value < 0 or len(digits) > nbytes * 2:
        raise CodecError(f"{value} does not fit in {nbytes} BCD bytes")
    return bytes.fromhex(digits)


def from_bcd(data: bytes) -> int:
    text = data.hex()
    if not text.isdigit():
        raise CodecError(f"not BCD: {data.hex(' ')}")
    return int(text)


# --------------------------------------------------------------------------- APDU
@dataclass(frozen=True)
class Apdu:
    cls: int
    instr: int
    data: bytes = b""

    @property
    def command(self) -> tuple[int, int]:
        return (self.cls, self.instr)

    def encode(self) -> bytes:
        n = len(self.data)
        if n > 0xFFFF:
            raise CodecError("APDU data longer than 65535 bytes")
        length = bytes([n]) if n < 0xFF else b"\xff" + n.to_bytes(2, "little")
        return bytes([self.cls, self.instr]) + length + self.data

    def __str__(self) -> str:
        return f"{self.cls:02X} {self.instr:02X} [{len(self.data)}] {self.data.hex(' ')}"


def apdu_length(head: bytes) -> tuple[int, int] | None:
    """(header length, data length) from the first bytes of an APDU, or None while too few bytes are in."""
    if len(head) < 3:
        return None
    if head[2] != 0xFF:
        return 3, head[2]
    if len(head) < 5:
        return None
    return 5, int.from_bytes(head[3:5], "little")


def decode_apdu(raw: bytes) -> Apdu:
    sizes = apdu_length(raw)
    if sizes is None:
        raise CodecError(f"APDU too short: {raw.hex(' ')}")
    head, n = sizes
    if len(raw) != head + n:
        raise CodecError(f"APDU length byte says {n} data bytes, {len(raw) - head} arrived")
    return Apdu(raw[0], raw[1], bytes(raw[head:]))


ACK_APDU = Apdu(0x80, 0x00)           # "80 00 00": received, positive


def nak_apdu(code: int) -> Apdu:
    """``84 XX 00``: refused, with the result code ``XX`` (PA00P015 "negative acknowledgement")."""
    return Apdu(0x84, code)


# --------------------------------------------------------------------------- BMPs
# BMP number -> fixed length in bytes, or "LL" / "LLL" for the variable ones, or "TLV".
BMP_FORMATS: dict[int, int | str] = {
    0x01: 1, 0x02: 1, 0x03: 1, 0x04: 6, 0x05: 1, 0x06: "TLV", 0x0B: 3, 0x0C: 3, 0x0D: 2, 0x0E: 2,
    0x17: 2, 0x19: 1, 0x22: "LL", 0x23: "LL", 0x24: "LLL", 0x27: 1, 0x29: 4, 0x2A: 15, 0x2D: "LL",
    0x2E: "LLL", 0x37: 3, 0x3A: 2, 0x3B: 8, 0x3C: "LLL", 0x3D: 3, 0x49: 2, 0x60: "LLL", 0x87: 2,
    0x88: 3, 0x8A: 1, 0x8B: "LL", 0x8C: 1, 0x92: "LLL", 0x9A: "LLL", 0xA0: 1, 0xA7: "LL", 0xAA: 3,
    0xAF: "LLL", 0xBA: 5, 0xD0: 1, 0xD1: "LL", 0xD2: 1, 0xD3: 1, 0xE0: 1, 0xE9: 1, 0xEA: 1, 0xEB: 8,
    0xF0: 1, 0xF9: 1, 0xFA: 1, 0xFB: 1, 0xFC: 1,
    **{b: "LL" for b in (0xE1, 0xE2, 0xE3, 0xE4, 0xE5, 0xE6, 0xE7, 0xE8,
                          0xF1, 0xF2, 0xF3, 0xF4, 0xF5, 0xF6, 0xF7, 0xF8)},
}


def _var_length(n: int, digits: int) -> bytes:
    text = f"{n:0{digits}d}"
    if len(text) > digits:
        raise CodecError(f"a variable BMP of {n} bytes is too long")
    return bytes(0xF0 | int(d) for d in text)


def _read_var_length(data: bytes, pos: int, digits: int) -> tuple[int, int]:
    raw = data[pos:pos + digits]
    if len(raw) < digits or any(b & 0xF0 != 0xF0 or (b & 0x0F) > 9 for b in raw):
        raise CodecError(f"bad length digits {raw.hex(' ')} at byte {pos}")
    return int("".join(str(b & 0x0F) for b in raw)), pos + digits


def encode_bmp(bmp: int, value: bytes) -> bytes:
    fmt = BMP_FORMATS[bmp]
    if fmt == "LL":
        return bytes([bmp]) + _var_length(len(value), 2) + value
    if fmt == "LLL":
        return bytes([bmp]) + _var_length(len(value), 3) + value
    if fmt == "TLV":
        return bytes([bmp]) + tlv_length(len(value)) + value
    if len(value) != fmt:
        raise CodecError(f"BMP {bmp:02X} takes {fmt} bytes, not {len(value)}")
    return bytes([bmp]) + value


def decode_bmps(data: bytes) -> dict[int, bytes]:
    """A run of BMPs -> {number: value}; an unknown BMP number or a short value is a CodecError."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        bmp = data[pos]
        pos += 1
        fmt = BMP_FORMATS.get(bmp)
        if fmt is None:
            raise CodecError(f"unknown BMP {bmp:02X} at byte {pos - 1}")
        if fmt == "LL":
            n, pos = _read_var_length(data, pos, 2)
        elif fmt == "LLL":
            n, pos = _read_var_length(data, pos, 3)
        elif fmt == "TLV":
            n, pos = _read_tlv_length(data, pos)
        else:
            n = fmt
        if pos + n > len(data):
            raise CodecError(f"BMP {bmp:02X} needs {n} bytes, {len(data) - pos} are left")
        out[bmp] = bytes(data[pos:pos + n])
        pos += n
    return out


# --------------------------------------------------------------------------- TLV
def tlv_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    if n <= 0xFF:
        return bytes([0x81, n])
    if n <= 0xFFFF:
        return b"\x82" + n.to_bytes(2, "big")
    raise CodecError("TLV value longer than 65535 bytes")


def _read_tlv_length(data: bytes, pos: int) -> tuple[int, int]:
    if pos >= len(data):
        raise CodecError("TLV length missing")
    first = data[pos]
    if first < 0x80:
        return first, pos + 1
    k = first & 0x7F
    if k not in (1, 2) or pos + 1 + k > len(data):
        raise CodecError(f"bad TLV length byte {first:02X}")
    return int.from_bytes(data[pos + 1:pos + 1 + k], "big"), pos + 1 + k


@dataclass(frozen=True)
class Tlv:
    tag: int
    value: bytes = b""
    children: tuple = field(default_factory=tuple)

    @property
    def constructed(self) -> bool:
        first = self.tag >> 8 if self.tag > 0xFF else self.tag
        return bool(first & 0x20)

    def encode(self) -> bytes:
        body = b"".join(c.encode() for c in self.children) if self.children else self.value
        tag = self.tag.to_bytes(2 if self.tag > 0xFF else 1, "big")
        return tag + tlv_length(len(body)) + body


def decode_tlv(data: bytes) -> list[Tlv]:
    out = []
    pos = 0
    while pos < len(data):
        tag = data[pos]
        pos += 1
        if tag & 0x1F == 0x1F:
            if pos >= len(data):
                raise CodecError("two-byte TLV tag cut short")
            tag = (tag << 8) | data[pos]
            pos += 1
        n, pos = _read_tlv_length(data, pos)
        if pos + n > len(data):
            raise CodecError(f"TLV tag {tag:X} needs {n} bytes")
        value = bytes(data[pos:pos + n])
        pos += n
        first = tag >> 8 if tag > 0xFF else tag
        out.append(Tlv(tag, value, tuple(decode_tlv(value)) if first & 0x20 else ()))
    return out


def text_lines_tlv(container: int, lines: list[str], extra: tuple = ()) -> bytes:
    """A TLV container (24 display texts, 25 print texts) of 07 text lines, as BMP 06's value."""
    children = tuple(Tlv(0x07, line.encode("latin-1", "replace")) for line in lines) + tuple(extra)
    return Tlv(container, children=children).encode()


# --------------------------------------------------------------------------- serial frames
def crc16(data: bytes) -> int:
    """CRC-16, reflected polynomial 0x8408, initial 0 (ZVT serial; ecrterm's crc_xmodem16)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


def frame(apdu: bytes) -> bytes:
    """One APDU as a serial frame: DLE STX, the APDU with DLEs doubled, DLE ETX, CRC low then high."""
    crc = crc16(apdu + bytes([ETX]))
    return bytes([DLE, STX]) + apdu.replace(bytes([DLE]), bytes([DLE, DLE])) + bytes([DLE, ETX]) + \
        crc.to_bytes(2, "little")


class Deframer:
    """Bytes from the serial line in, frames out: ``feed`` returns a list of (apdu bytes | CodecError).

    Bytes outside a frame (line noise) are skipped; a frame whose CRC does not match, or with a DLE
    followed by anything but DLE or ETX, comes out as a CodecError (the caller answers NAK).
    ``reset`` drops a frame cut short (the caller's inter-byte time-out).
    """

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self._state = "idle"
        self._buf = bytearray()
        self._crc = bytearray()

    @property
    def in_frame(self) -> bool:
        return self._state != "idle"

    def feed(self, data: bytes) -> list:
        out = []
        for b in data:
            s = self._state
            if s == "idle":
                if b == DLE:
                    self._state = "start"
            elif s == "start":
                self._state = "body" if b == STX else ("start" if b == DLE else "idle")
                self._buf = bytearray()
            elif s == "body":
                if b == DLE:
                    self._state = "dle"
                else:
                    self._buf.append(b)
            elif s == "dle":
                if b == DLE:
                    self._buf.append(DLE)
                    self._state = "body"
                elif b == ETX:
                    self._state = "crc"
                    self._crc = bytearray()
                else:
                    out.append(CodecError(f"DLE followed by {b:02X} inside a frame"))
                    self.reset()
            elif s == "crc":
                self._crc.append(b)
                if len(self._crc) == 2:
                    want = crc16(bytes(self._buf) + bytes([ETX]))
                    got = int.from_bytes(self._crc, "little")
                    out.append(bytes(self._buf) if want == got else
                               CodecError(f"CRC {got:04X} does not match {want:04X}"))
                    self.reset()
        return out
