"""PN532 frames: encode and parse (pure functions, no I/O).

Normal frame:   00 00 FF LEN LCS TFI PD0..PDn DCS 00
Extended frame: 00 00 FF FF FF LENM LENL LCS TFI PD0..PDn DCS 00
ACK 00 00 FF 00 FF 00, NACK 00 00 FF FF 00 00, error 00 00 FF 01 FF 7F 81 00.

:func:`parse` takes a byte buffer and returns the first complete frame in it
(or None) and how many bytes were used up.  Garbage before a start code, and
frames whose checksums fail, are consumed and reported, never returned as
frames; an incomplete frame is left in the buffer for the next read.

>>> encode(bytes([0x02]))
b'\\x00\\x00\\xff\\x02\\xfe\\xd4\\x02*\\x00'
"""

from __future__ import annotations

from dataclasses import dataclass

HOST_TO_PN532 = 0xD4
PN532_TO_HOST = 0xD5

ACK = bytes.fromhex("0000FF00FF00")
NACK = bytes.fromhex("0000FFFF0000")
ERROR_FRAME = bytes.fromhex("0000FF01FF7F8100")

MAX_NORMAL = 255       # LEN counts TFI + data
MAX_EXTENDED = 265


@dataclass(frozen=True)
class Frame:
    kind: str               # "data", "ack", "nack", "error"
    tfi: int = 0
    data: bytes = b""

    @property
    def command(self) -> int | None:
        return self.data[0] if self.kind == "data" and self.data else None


@dataclass(frozen=True)
class ParseResult:
    frame: Frame | None
    consumed: int
    problem: str | None = None   # "garbage", "checksum", None


def encode(data: bytes, tfi: int = HOST_TO_PN532) -> bytes:
    """One information frame carrying ``data`` (command code first); extended when it does not fit."""
    body = bytes([tfi]) + bytes(data)
    n = len(body)
    if n > MAX_EXTENDED:
        raise ValueError(f"frame body of {n} bytes is longer than the PN532's {MAX_EXTENDED}")
    dcs = (-sum(body)) & 0xFF
    if n <= MAX_NORMAL:
        head = bytes([0x00, 0x00, 0xFF, n, (-n) & 0xFF])
    else:
        m, lo = n >> 8, n & 0xFF
        head = bytes([0x00, 0x00, 0xFF, 0xFF, 0xFF, m, lo, (-(m + lo)) & 0xFF])
    return head + body + bytes([dcs, 0x00])


def _find_start(buf: bytes, frm: int = 0) -> int:
    """Index of the 00 FF start code (the 00 of it), or -1."""
    i = buf.find(b"\x00\xff", frm)
    return i


def parse(buf: bytes) -> ParseResult:
    """The first frame in ``buf``: see the module docstring."""
    start = _find_start(buf)
    if start < 0:
        # keep a trailing 00 that may begin a start code
        keep = 1 if buf.endswith(b"\x00") else 0
        used = len(buf) - keep
        return ParseResult(None, used, "garbage" if any(buf[:used]) else None)
    if start > 0 and any(buf[:start]):
        return ParseResult(None, start, "garbage")
    p = start + 2
    if len(buf) < p + 2:
        return ParseResult(None, start)
    a, b = buf[p], buf[p + 1]
    if (a, b) == (0x00, 0xFF):
        return ParseResult(Frame("ack"), p + 2 + (1 if len(buf) > p + 2 and buf[p + 2] == 0 else 0))
    if (a, b) == (0xFF, 0x00):
        return ParseResult(Frame("nack"), p + 2 + (1 if len(buf) > p + 2 and buf[p + 2] == 0 else 0))
    if (a, b) == (0xFF, 0xFF):  # extended
        if len(buf) < p + 5:
            return ParseResult(None, start)
        m, lo, lcs = buf[p + 2], buf[p + 3], buf[p + 4]
        if (m + lo + lcs) & 0xFF:
            return ParseResult(None, p, "checksum")
        n = (m << 8) | lo
        body_at = p + 5
    else:
        n, lcs = a, b
        if (n + lcs) & 0xFF:
            return ParseResult(None, p, "checksum")
        body_at = p + 2
    if n == 0 or n > MAX_EXTENDED:
        return ParseResult(None, p, "checksum")
    end = body_at + n + 1          # DCS after the body
    if len(buf) < end:
        return ParseResult(None, start)
    body = buf[body_at:body_at + n]
    if (sum(body) + buf[body_at + n]) & 0xFF:
        return ParseResult(None, end, "checksum")
    used = end + (1 if len(buf) > end and buf[end] == 0 else 0)   # postamble
    if n == 1 and body[0] == 0x7F:
        return ParseResult(Frame("error"), used)
    return ParseResult(Frame("data", body[0], bytes(body[1:])), used)


def parse_all(buf: bytes) -> tuple[list[Frame], bytes, list[str]]:
    """Every complete frame in ``buf``, the bytes left over, and the problems met."""
    frames, problems = [], []
    while buf:
        r = parse(buf)
        if r.problem:
            problems.append(r.problem)
        if r.frame:
            frames.append(r.frame)
        if r.consumed == 0:
            break
        buf = buf[r.consumed:]
    return frames, buf, problems
