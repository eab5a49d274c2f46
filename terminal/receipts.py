"""Sale receipts: numbered, built from the sales journal, printed as text, ESC/POS, ZVT print lines or a QR code.

Every approved, declined, voided and refunded sale has a customer and a merchant receipt with
what card schemes ask a receipt to carry and nothing more: the merchant's name and location, the
terminal id, date and time, the transaction type, amount and currency, the masked card (for a face
payment the masked card of the shopper's linked card), the method (card or face), the processor's
authorisation reference, the trace and receipt numbers, and the result.  No card expiry, no
name (not even the masked one: the masked card is enough), no shopper id, nothing of a face.

Receipt and trace numbers come from ``receipts.db`` in the data folder (:class:`ReceiptBook`):
one trace number per sale, void and refund, counting up; the receipt number is the trace number's
last four digits (ZVT's BMP 87 holds four; BMP 0B six), found again by :meth:`ReceiptBook.by_receipt`
as the newest entry with that number.  The book also keeps the masked card the receipt shows, noted
when the charge is sent, and when the last end-of-day closing ran.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .datadir import connect
from .errors import NotFoundError
from .money import to_decimal_str
from .schema import migrate

_log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    trace INTEGER PRIMARY KEY AUTOINCREMENT,
    sale_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('sale', 'void', 'refund')),
    masked_card TEXT NOT NULL DEFAULT '',
    at TEXT NOT NULL,
    UNIQUE (sale_id, kind)
);
CREATE TABLE IF NOT EXISTS closings (id INTEGER PRIMARY KEY, at TEXT NOT NULL, first_trace INTEGER,
                                     last_trace INTEGER);
"""
MIGRATIONS = [SCHEMA]
KINDS = {"sale": "SALE", "void": "VOID", "refund": "REFUND"}
COPIES = ("customer", "merchant")


@dataclass(frozen=True)
class Entry:
    trace: int
    sale_id: str
    kind: str
    masked_card: str
    at: str

    @property
    def receipt(self) -> int:
        return self.trace % 10_000


def receipt_number(trace: int) -> int:
    return trace % 10_000


class ReceiptBook:
    def __init__(self, path: Path):
        self.path = path
        self.db = connect(path, wal=True, secure_delete=True)
        migrate(self.db, path, MIGRATIONS)

    def forget_cards(self, sale_ids: list[str]) -> int:
        """An opt-out: the receipts of the shopper's sales stay (the shop's books), their masked card goes."""
        if not sale_ids:
            return 0
        marks = ",".join("?" * len(sale_ids))
        return self.db.execute(f"UPDATE entries SET masked_card = '' WHERE masked_card != '' AND sale_id IN ({marks})",
                               sale_ids).rowcount

    def close(self) -> None:
        self.db.close()

    def _row(self, where: str, args) -> Entry | None:
        r = self.db.execute(f"SELECT trace, sale_id, kind, masked_card, at FROM entries WHERE {where} "
                            "ORDER BY trace DESC LIMIT 1", args).fetchone()
        return Entry(*r) if r else None

    def number(self, sale_id: str, kind: str = "sale", masked_card: str = "") -> Entry:
        """The entry of ``sale_id``'s ``kind``, numbered now if it has none yet (asking twice: the same)."""
        found = self.get(sale_id, kind)
        if found is not None:   # (an ignored INSERT would still use up a trace number)
            return found
        self.db.execute("INSERT OR IGNORE INTO entries (sale_id, kind, masked_card, at) VALUES (?,?,?,?)",
                        (sale_id, kind, masked_card, datetime.now(timezone.utc).isoformat(timespec="seconds")))
        return self.get(sale_id, kind)

    def get(self, sale_id: str, kind: str = "sale") -> Entry | None:
        return self._row("sale_id = ? AND kind = ?", (sale_id, kind))

    def by_receipt(self, receipt: int, kind: str = "sale") -> Entry | None:
        """The newest entry whose receipt number is ``receipt`` (they wrap after 9999)."""
        return self._row("trace % 10000 = ? AND kind = ?", (receipt, kind))

    def since_closing(self) -> list[Entry]:
        """Everything numbered after the last end-of-day closing."""
        last = self.db.execute("SELECT COALESCE(MAX(last_trace), 0) FROM closings").fetchone()[0]
        return [Entry(*r) for r in self.db.execute(
            "SELECT trace, sale_id, kind, masked_card, at FROM entries WHERE trace > ? ORDER BY trace", (last,))]

    def close_day(self, first: int | None, last: int | None) -> None:
        if last is None:
            last = self.db.execute("SELECT COALESCE(MAX(trace), 0) FROM entries").fetchone()[0]
        self.db.execute("INSERT INTO closings (at, first_trace, last_trace) VALUES (?,?,?)",
                        (datetime.now(timezone.utc).isoformat(timespec="seconds"), first, last))


# --------------------------------------------------------------------------- what a receipt says
@dataclass(frozen=True)
class Receipt:
    sale_id: str
    kind: str            # sale, void, refund
    status: str          # approved, declined, pending (a sale whose outcome is not known yet), ...
    amount_minor: int
    currency: str
    method: str          # card or face
    masked_card: str
    reference: str
    reason: str
    trace: int
    original_receipt: int | None
    at: datetime
    training: bool

    @property
    def receipt(self) -> int:
        return receipt_number(self.trace)

    def lines(self, copy: str, cfg, width: int | None = None) -> list[str]:
        """The receipt as lines of at most ``width`` characters (``[receipt] width``)."""
        w = width or cfg.receipt.width
        result = {"approved": "APPROVED", "declined": "DECLINED", "pending": "OUTCOME NOT KNOWN",
                  "cancelled": "NOT CHARGED"}.get(self.status, self.status.upper())
        title = KINDS[self.kind] + (" (TRAINING)" if self.training else "")

        def row(label: str, value: str) -> str:
            value = str(value)
            return (label + " " * max(1, w - len(label) - len(value)) + value)[:w] if len(label) + len(value) < w \
                else f"{label} {value}"[:w]

        out = [cfg.payment.merchant.center(w)[:w]]
        out += [line.center(w)[:w] for line in cfg.receipt.location.split("\n") if line.strip()]
        out += ["-" * w, title.center(w), "",
                row("Terminal", cfg.terminal_id),
                row("Date", self.at.strftime("%Y-%m-%d %H:%M:%S")),
                # the ISO code, not the sign: ZVT print lines are Latin-1 and receipt printers' code pages vary
                row("Amount", f"{self.currency} {to_decimal_str(self.amount_minor, self.currency)}"),
                row("Card", self.masked_card.replace("•", "*") or "-"),
                row("Method", self.method),
                row("Trace no.", f"{self.trace % 1_000_000:06d}"),
                row("Receipt no.", f"{self.receipt:04d}")]
        if self.original_receipt is not None:
            out.append(row("Of receipt", f"{self.original_receipt:04d}"))
        if self.reference:
            out.append(row("Auth. ref.", self.reference))
        out += ["", result.center(w)]
        if self.status == "declined" and self.reason:
            out.append(self.reason[:w].center(w))
        if self.status == "pending":
            out += [s.center(w)[:w] for s in ("Do not pay again:", "staff will check", f"sale {self.sale_id}")]
        if self.training:
            out.append("No money moved".center(w))
        out += ["", f"{copy.upper()} COPY".center(w)]
        return out

    def text(self, cfg, copies=COPIES) -> str:
        return "\n\n".join("\n".join(self.lines(c, cfg)) for c in copies) + "\n"


def _local(at_iso: str, term) -> datetime:
    at = datetime.fromisoformat(at_iso)
    zone = term.report_zone()
    return at.astimezone(zone) if zone else at.astimezone()


def receipt_book(term) -> ReceiptBook:
    """The terminal's receipt book, opened once per Terminal."""
    book = getattr(term, "_receipt_book", None)
    if book is None:
        book = ReceiptBook(term.data_dir / "receipts.db")
        term._receipt_book = book
    return book


def build(term, sale_id: str, kind: str = "sale") -> Receipt:
    """The receipt of ``sale_id`` (``kind`` sale, void or refund), numbered if it has no number yet."""
    sale = term.journal.get(sale_id)
    if sale is None:
        raise NotFoundError(f"no sale {sale_id}", hint="`facepay sales list` shows the sales")
    book = receipt_book(term)
    original = book.number(sale_id, "sale")
    if kind == "sale":
        return Receipt(sale.id, "sale", sale.status, sale.amount_minor, sale.currency, sale.method,
                       original.masked_card, sale.reference, sale.reason, original.trace, None,
                       _local(sale.created_at, term), sale.training)
    op = term.journal.operation(f"{sale.key}:{kind}")
    if op is None:
        raise NotFoundError(f"sale {sale_id} has no {kind}", hint=f"`facepay sales {kind} {sale_id}` makes one")
    entry = book.number(sale_id, kind, original.masked_card)
    return Receipt(sale.id, kind, op["status"], op["amount_minor"], sale.currency, sale.method,
                   original.masked_card, "", op["reason"], entry.trace, original.receipt,
                   _local(entry.at, term), sale.training)


def receipts_of(term, sale_id: str) -> list[Receipt]:
    """Every receipt a sale has: the sale's, then its void's and refund's when there are any."""
    out = [build(term, sale_id)]
    sale = term.journal.get(sale_id)
    for kind in ("void", "refund"):
        if term.journal.operation(f"{sale.key}:{kind}") is not None:
            out.append(build(term, sale_id, kind))
    return out


# --------------------------------------------------------------------------- delivery
def escpos_bytes(receipt: Receipt, cfg, copies=COPIES, printer=None) -> bytes:
    """The receipt through python-escpos: each copy's lines, a paper cut after each.  ``printer`` is an
    escpos printer (``Usb``, ``Serial``, ``Network``); None renders into a ``Dummy`` and returns its bytes."""
    from escpos.printer import Dummy

    p = printer or Dummy()
    for copy in copies:
        lines = receipt.lines(copy, cfg)
        p.set(align="center", bold=True)
        p.text(lines[0] + "\n")
        p.set(align="left", bold=False)
        p.text("\n".join(lines[1:]) + "\n")
        p.cut()
    return p.output if printer is None else b""


def open_printer(spec: str):
    """``[receipt] printer``: ``usb:VID:PID``, ``serial:/dev/ttyUSB0[:BAUD]`` or ``network:HOST[:PORT]``."""
    from escpos import printer as ep

    kind, _, rest = spec.partition(":")
    if kind == "usb":
        vid, pid = (int(x, 16) for x in rest.split(":"))
        return ep.Usb(vid, pid)
    if kind == "serial":
        dev, _, baud = rest.partition(":")
        return ep.Serial(dev, baudrate=int(baud or 9600))
    if kind == "network":
        host, _, port = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
        return ep.Network(host or rest, port=int(port or 9100))
    raise ValueError(f"unknown printer {spec!r}")


def print_on_printer(receipt: Receipt, cfg) -> bool:
    """Print on ``[receipt] printer`` when one is named; a printer fault is logged, never stops a sale."""
    if not cfg.receipt.printer:
        return False
    try:
        p = open_printer(cfg.receipt.printer)
        try:
            escpos_bytes(receipt, cfg, printer=p)
        finally:
            p.close()
        return True
    except Exception as exc:  # out of paper, unplugged, network down
        _log.warning("receipt %04d not printed on %s: %s", receipt.receipt, cfg.receipt.printer, exc)
        return False


def qr_text(receipt: Receipt, cfg) -> str:
    """What the result screen's QR code holds: the customer receipt's own text (it opens nothing)."""
    import re

    lines = (re.sub(r"\s{2,}", " ", line.strip()) for line in receipt.lines("customer", cfg))
    return "\n".join(line for line in lines if line and not set(line) <= {"-"})


def qr_png(text: str, path: Path) -> None:
    """The QR code as a PNG (tests decode it with zbarimg)."""
    import qrcode

    img = qrcode.make(text, error_correction=qrcode.constants.ERROR_CORRECT_M, border=4)
    img.save(str(path))
