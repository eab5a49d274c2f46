"""The ZVT messages this terminal reads from the till and writes to it.

Layouts (PA00P015; the same in ecrterm's ``ecrterm/packets/base_packets.py``, github.com/wirelane/ecrterm):

- 06 00 Registration: password (3 BCD), config byte, currency (2 BCD, optional), BMP 03 service byte.
  Config byte bits (ecrterm ``types.ConfigByte``): 02 the till prints payment receipts, 04 it prints
  administration receipts, 08 the terminal sends intermediate status, 10 the till controls payment,
  20 it controls administration, 80 print lines (06 D1) rather than text blocks (06 D3).
- 06 01 Authorisation: BMP 04 amount, BMP 49 currency (and others this terminal ignores).
- 06 30 Reversal: password, BMP 87 receipt number.  06 31 Refund: password, BMP 04 amount, here also
  BMP 87 (the sale to refund: this terminal refunds a sale in full, never an amount on its own).
- 06 50 End of Day, 06 70 Diagnosis: password (3 BCD).  06 02 Log-Off, 06 B0 Abort: no data.
- 04 FF Intermediate Status: status byte, time-out byte, optional BMP 06 with TLV 24 (display texts).
- 04 0F Status Information: BMPs 27 result, 04 amount, 49 currency, 0B trace, 0C time, 0D date,
  87 receipt, 88 turnover, 29 terminal id, 19 payment type, 22 masked PAN, 8A card type, 8B card name,
  3C additional text; after End of Day BMP 60 totals.
- 06 0F Completion (BMP 19 status byte, 29 terminal id, 49 currency after a registration); 06 1E
  Abort with one result-code byte; 06 D1 Print Line (attribute byte, text; attribute FF = last line);
  06 D3 Print Text Block (BMP 06: TLV 25 of 07 lines, 1F07 receipt type 01 merchant, 02 customer,
  03 administration).
- Result codes (PA00P015 chapter 10 "Error-messages"; the table in ecrterm ``common.py``): 00 no
  error, 01-63 the authorisation system's codes (05 do not honour, 2B = 43 stolen card, 33 = 51
  insufficient funds: the ISO 8583 response codes), 6C abort via time-out or abort key, 6E card in
  blocked list, 6F wrong currency, 7D communication error, 83 function not possible, 9A protocol
  error, 6B function deactivated (terminal not registered), B4 already reversed, B5 reversal not
  possible, B7 amount wrong.
- Intermediate status codes (PA00P015 "Intermediate status-information"): 00 waiting for amount
  confirmation, 0A insert card, 17 please wait, FF no code fits (the text in TLV 24 says it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .codec import Apdu, CodecError, Tlv, bcd, decode_bmps, encode_bmp, from_bcd, text_lines_tlv

# config byte bits
PRINTS_PAYMENT, PRINTS_ADMIN, WANTS_STATUS, PRINT_LINES = 0x02, 0x04, 0x08, 0x80

# result codes
OK = 0x00
DO_NOT_HONOUR, STOLEN, INSUFFICIENT = 0x05, 43, 51
ABORTED, BLOCKED_LIST, WRONG_CURRENCY, COMMUNICATION = 0x6C, 0x6E, 0x6F, 0x7D
NOT_POSSIBLE, PROTOCOL_ERROR, NOT_REGISTERED = 0x83, 0x9A, 0x6B
ALREADY_REVERSED, REVERSAL_NOT_POSSIBLE, AMOUNT_WRONG = 0xB4, 0xB5, 0xB7

# intermediate status codes
WAITING_CONFIRMATION, INSERT_CARD, PLEASE_WAIT, SEE_TEXT = 0x00, 0x0A, 0x17, 0xFF

# the sandbox processor's decline reasons -> result code; any other decline is "do not honour"
DECLINE_CODES = {"card reported stolen": STOLEN, "insufficient funds": INSUFFICIENT, "do not honour": DO_NOT_HONOUR}

# ISO 4217 numeric codes of the currencies a ZVT till is found with (BMP 49, registration)
CURRENCY_NUMBERS = {"EUR": 978, "CHF": 756, "GBP": 826, "USD": 840, "SEK": 752, "DKK": 208, "NOK": 578,
                    "PLN": 985, "CZK": 203, "HUF": 348, "RON": 946, "BGN": 975, "JPY": 392, "CNY": 156}

# commands from the till
REGISTRATION, AUTHORISATION, LOG_OFF, REVERSAL, REFUND = (6, 0x00), (6, 0x01), (6, 0x02), (6, 0x30), (6, 0x31)
END_OF_DAY, DIAGNOSIS, ABORT_REQUEST = (6, 0x50), (6, 0x70), (6, 0xB0)
COMMANDS = {REGISTRATION: "registration", AUTHORISATION: "authorisation", LOG_OFF: "log-off",
            REVERSAL: "reversal", REFUND: "refund", END_OF_DAY: "end of day", DIAGNOSIS: "diagnosis",
            ABORT_REQUEST: "abort"}


@dataclass(frozen=True)
class Registration:
    password: int
    config: int
    currency: int | None


def parse_registration(data: bytes) -> Registration:
    if len(data) < 4:
        raise CodecError("registration needs a password and a config byte")
    currency = from_bcd(data[4:6]) if len(data) >= 6 and data[4] != 0x03 else None
    return Registration(from_bcd(data[:3]), data[3], currency)


def parse_password(data: bytes) -> tuple[int, dict[int, bytes]]:
    """A command starting with the 3-byte BCD password, then BMPs."""
    if len(data) < 3:
        raise CodecError("the command needs the 3-byte password")
    return from_bcd(data[:3]), decode_bmps(data[3:])


def amount_of(bmps: dict[int, bytes]) -> int | None:
    return from_bcd(bmps[0x04]) if 0x04 in bmps else None


# --------------------------------------------------------------------------- what the terminal sends
def completion(bmps: bytes = b"") -> Apdu:
    return Apdu(0x06, 0x0F, bmps)


def abort(code: int) -> Apdu:
    return Apdu(0x06, 0x1E, bytes([code]))


def intermediate(status: int, lines: list[str] | None = None, timeout_s: int = 0) -> Apdu:
    data = bytes([status, min(timeout_s, 255)])
    if lines:
        data += encode_bmp(0x06, text_lines_tlv(0x24, lines))
    return Apdu(0x04, 0xFF, data)


def when(at: datetime) -> bytes:
    """BMPs 0C time and 0D date of ``at`` (local time of the terminal)."""
    return (encode_bmp(0x0C, bcd(int(at.strftime("%H%M%S")), 3)) +
            encode_bmp(0x0D, bcd(int(at.strftime("%m%d")), 2)))


def status_information(*, result: int, amount_minor: int | None, currency: int, trace: int, receipt: int,
                       at: datetime, terminal_id: int, card_name: str = "",
                       text: str = "", totals: bytes | None = None) -> Apdu:
    data = encode_bmp(0x27, bytes([result]))
    if amount_minor is not None:
        data += encode_bmp(0x04, bcd(amount_minor, 6))
    data += encode_bmp(0x49, bcd(currency, 2))
    data += encode_bmp(0x0B, bcd(trace % 1_000_000, 3)) + when(at)
    data += encode_bmp(0x87, bcd(receipt % 10_000, 2)) + encode_bmp(0x29, bcd(terminal_id, 4))
    if card_name:
        data += encode_bmp(0x8B, card_name.encode("ascii", "replace")[:99])
    if totals is not None:
        data += encode_bmp(0x60, totals)
    if text:
        data += encode_bmp(0x3C, text.encode("latin-1", "replace")[:999])
    return Apdu(0x04, 0x0F, data)


def print_lines(lines: list[str]) -> list[Apdu]:
    """06 D1 per line; the last one has attribute FF (end of the receipt)."""
    out = [Apdu(0x06, 0xD1, b"\x00" + line.encode("latin-1", "replace")) for line in lines]
    if out:
        out[-1] = Apdu(0x06, 0xD1, b"\xff" + out[-1].data[1:])
    return out


def text_block(lines: list[str], receipt_type: int) -> Apdu:
    """06 D3 with TLV 25 (print texts) of 07 lines and 1F07 the receipt type (1 merchant, 2 customer, 3 admin)."""
    return Apdu(0x06, 0xD3, encode_bmp(0x06, text_lines_tlv(0x25, lines, (Tlv(0x1F07, bytes([receipt_type])),))))


def totals_bmp(first_receipt: int, last_receipt: int, count: int, total_minor: int) -> bytes:
    """BMP 60's value: receipt range, then count and turnover for ec, JCB, Eurocard, Amex, VISA, Diners and
    "remaining" cards, each 1 byte and 6 BCD; this terminal books everything under "remaining"."""
    out = bcd(first_receipt % 10_000, 2) + bcd(last_receipt % 10_000, 2)
    out += (b"\x00" + bcd(0, 6)) * 6
    return out + bytes([min(count, 255)]) + bcd(total_minor, 6)


def terminal_number(terminal_id: str) -> int:
    """BMP 29 holds eight digits: the terminal id's own digits when it has eight or fewer, else a stable
    number made from its text (ZVT terminal ids are numbers; facepay's are names)."""
    digits = "".join(c for c in terminal_id if c.isdigit())
    if digits and len(digits) <= 8:
        return int(digits)
    import zlib

    return zlib.crc32(terminal_id.encode()) % 100_000_000
