"""The till link: each ZVT command from the till, run through the terminal's own checkout.

An Authorisation (06 01) starts a sale exactly as the staff keypad does: the same state machine
(terminal/checkout/), so the same consent screen, card or face, step-up and confirmation.  The
link only watches the machine's state (a :class:`Desk` hands it every snapshot) and tells the till:

- while the shopper acts: Intermediate Status 04 FF (0A "insert card" while the amount is due,
  17 "please wait" while scanning or charging, 00 "waiting for amount confirmation" on the consent
  screen), again every few seconds so the till knows the terminal is alive;
- approved: Status Information 04 0F (result 00, amount, trace, time, receipt number ...), the
  receipts as print lines when the till registered to print them, then Completion 06 0F;
- declined: Status Information with the decline's result code, the receipts, then Abort 06 1E with
  the same code; cancelled by the shopper (or by a time-out, or the till's own 06 B0): Abort 6C;
- unknown (the processor did not answer): never a decline.  The till keeps getting Intermediate
  Status FF whose text says "outcome not known - do not pay again" with the receipt number, until
  the machine's own look-ups (or ``facepay recover``) settle the sale; then the real answer follows.

Refused while a sale runs: a second Authorisation (84 83 00), the till's abort once the shopper has
confirmed (the charge is under way: 84 83 00).  A connection lost before the shopper confirmed
cancels the sale (nothing is charged after the till gave up); once confirmed, the charge goes on
with its idempotency key and journal entry as always, and its result and receipts stay in the
journal and the receipt book (``facepay receipt``).  Nothing sent over the link carries a name, a
template or a card UID: only amounts, numbers, the masked card and the receipt's text.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime

from .. import checkout as co
from .. import receipts as rc
from . import messages as m
from .codec import ACK_APDU, Apdu, CodecError, decode_bmps, from_bcd, nak_apdu
from .transport import Channel, Garbled, LinkLost, SerialChannel, TcpChannel, TcpListener

_log = logging.getLogger(__name__)

KEEPALIVE_S = 4.0      # Intermediate Status again after this long without news
ACK_TIMEOUT_S = 5.0    # how long the till may take to answer 80 00 00
UNCONFIRMED = ("amount_due", "face_scan", "consent")
RUNNING = UNCONFIRMED + ("charging", "unknown")
STATUS = {"amount_due": (m.INSERT_CARD, ["Tap a card or pay by face"]),
          "face_scan": (m.PLEASE_WAIT, ["Face scan running"]),
          "consent": (m.WAITING_CONFIRMATION, ["Shopper confirms the amount"]),
          "charging": (m.PLEASE_WAIT, ["Payment in progress"])}


class Desk:
    """What the link needs of a checkout (headless or the kiosk's): start, abort, watch."""

    term = None
    prints = False   # True: the desk prints receipts on [receipt] printer itself (the kiosk), not the link

    def start_sale(self, amount_minor: int) -> str:
        """Start a sale with the amount; returns its sale id.  Raises co.Rejected when not possible now."""
        raise NotImplementedError

    def till_abort(self) -> bool:
        """The till gave up: cancel the sale if the shopper has not confirmed it; True if cancelled."""
        raise NotImplementedError

    def subscribe(self, fn) -> None:
        """``fn(snapshot)`` after every change of the machine."""
        raise NotImplementedError

    def snapshot(self) -> dict:
        raise NotImplementedError

    def locked(self):
        """A context manager: the runner's lock (voids and refunds go through the same Terminal)."""
        raise NotImplementedError


class Session:
    def __init__(self, link: TillLink, ch: Channel):
        self.link, self.ch = link, ch
        self.cfg, self.term = link.cfg, link.desk.term
        self.config_byte: int | None = None
        self.currency = m.CURRENCY_NUMBERS[self.cfg.payment.currency]
        self.tid = m.terminal_number(self.cfg.terminal_id)
        self.busy = False   # a sale or an administration command is running

    # -- plumbing ---------------------------------------------------------------------
    def send(self, apdu: Apdu, on_command=None) -> bool:
        """Send and wait for the till's 80 00 00; commands arriving meanwhile go to ``on_command``."""
        self.ch.send(apdu)
        deadline = time.monotonic() + ACK_TIMEOUT_S
        while time.monotonic() < deadline:
            got = self.ch.recv(deadline - time.monotonic())
            if got is None:
                break
            if isinstance(got, Garbled):
                self.garbled(got)
                continue
            if got.command == (0x80, 0x00):
                return True
            if got.cls == 0x84:
                _log.warning("till refused %02X %02X: %02X", apdu.cls, apdu.instr, got.instr)
                return False
            (on_command or self.refuse)(got)
        _log.warning("the till did not acknowledge %02X %02X", apdu.cls, apdu.instr)
        return False

    def garbled(self, g: Garbled) -> None:
        _log.warning("%s: garbled input (%s)", self.ch.name, g.reason)
        if isinstance(self.ch, TcpChannel):  # on a serial line the channel has said NAK already
            self.ch.send(nak_apdu(m.PROTOCOL_ERROR))

    def refuse(self, apdu: Apdu, code: int = m.NOT_POSSIBLE) -> None:
        if apdu.command != (0x80, 0x00):
            self.ch.send(nak_apdu(code))

    def password_ok(self, pw: int) -> bool:
        return pw == int(self.cfg.till.password)

    # -- the command loop ---------------------------------------------------------------
    def run(self) -> None:
        while not self.link.stopping.is_set():
            got = self.ch.recv(0.5)
            if got is None:
                continue
            if isinstance(got, Garbled):
                self.garbled(got)
                continue
            try:
                self.command(got)
            except CodecError as exc:
                _log.warning("%s: bad %02X %02X: %s", self.ch.name, got.cls, got.instr, exc)
                self.ch.send(nak_apdu(m.PROTOCOL_ERROR))

    def command(self, a: Apdu) -> None:
        self.busy = True
        try:
            self._command(a)
        finally:
            self.busy = False

    def _command(self, a: Apdu) -> None:
        c = a.command
        if c == (0x80, 0x00) or a.cls == 0x84:
            return
        if c == m.REGISTRATION:
            return self.registration(a)
        if c == m.LOG_OFF:
            self.ch.send(ACK_APDU)
            self.config_byte = None
            return
        if c not in m.COMMANDS or c == m.ABORT_REQUEST:
            return self.refuse(a)   # nothing runs to abort; an unknown command is not possible
        if self.config_byte is None:
            return self.refuse(a, m.NOT_REGISTERED)
        if c == m.AUTHORISATION:
            return self.authorisation(a)
        pw, bmps = m.parse_password(a.data)
        if not self.password_ok(pw):
            return self.refuse(a)
        {m.REVERSAL: self.reversal, m.REFUND: self.refund, m.END_OF_DAY: self.end_of_day,
         m.DIAGNOSIS: self.diagnosis}[c](bmps)

    def registration(self, a: Apdu) -> None:
        reg = m.parse_registration(a.data)
        if not self.password_ok(reg.password):
            return self.refuse(a)
        if reg.currency is not None and reg.currency != self.currency:
            return self.refuse(a, m.WRONG_CURRENCY)
        self.ch.send(ACK_APDU)
        self.config_byte = reg.config
        from .codec import bcd, encode_bmp

        self.send(m.completion(encode_bmp(0x19, b"\x00") + encode_bmp(0x29, bcd(self.tid, 4)) +
                               encode_bmp(0x49, bcd(self.currency, 2))))

    # -- a sale -------------------------------------------------------------------------------
    def authorisation(self, a: Apdu) -> None:
        bmps = decode_bmps(a.data)
        amount = m.amount_of(bmps)
        if not amount:
            return self.refuse(a)
        if 0x49 in bmps and from_bcd(bmps[0x49]) != self.currency:
            return self.refuse(a, m.WRONG_CURRENCY)
        snaps: queue.Queue = queue.Queue()
        self.link.listeners.append(snaps.put)
        try:
            try:
                sale_id = self.link.desk.start_sale(amount)
            except co.Rejected as exc:
                _log.info("authorisation refused: %s", exc)
                return self.refuse(a)
            self.ch.send(ACK_APDU)
            self.follow(sale_id, amount, snaps)
        finally:
            self.link.listeners.remove(snaps.put)

    def follow(self, sale_id: str, amount: int, snaps: queue.Queue) -> None:
        state, last, sent_at, seen = "amount_due", None, 0.0, False
        wants_status = bool(self.config_byte & m.WANTS_STATUS)

        def on_command(cmd: Apdu) -> None:
            if cmd.command == m.ABORT_REQUEST:
                if state in UNCONFIRMED and self.link.desk.till_abort():
                    self.ch.send(ACK_APDU)
                else:
                    self.refuse(cmd)      # confirmed: the charge is under way and cannot be stopped
            else:
                self.refuse(cmd)          # a second authorisation (or anything else) while one runs

        try:
            while True:
                snap = None
                while True:
                    try:
                        snap = snaps.get_nowait()
                    except queue.Empty:
                        break
                    s = snap["state"]
                    mine = snap["sale"] is not None and snap["sale"]["sale_id"] == sale_id
                    if mine:
                        state, seen = s, True
                    elif seen and state in RUNNING:
                        state = self.left(sale_id, state)
                    if state not in RUNNING:
                        break
                if state not in RUNNING:
                    return self.finish(sale_id, amount, state, snap)
                if wants_status and (state != last or time.monotonic() - sent_at > KEEPALIVE_S):
                    self.send(self.status_for(sale_id, state), on_command)
                    last, sent_at = state, time.monotonic()
                got = self.ch.recv(0.2)
                if isinstance(got, Garbled):
                    self.garbled(got)
                elif got is not None:
                    on_command(got)
        except LinkLost:
            if state in UNCONFIRMED and self.link.desk.till_abort():
                _log.warning("the till's connection was lost before the shopper confirmed: sale %s cancelled",
                             sale_id)
            else:
                _log.warning("the till's connection was lost during sale %s (%s): its result stays in the "
                             "journal and `facepay receipt %s`", sale_id, state, sale_id)
            raise

    def left(self, sale_id: str, state: str) -> str:
        """The machine moved on from this sale (staff pressed Done on "unknown"): ask the journal."""
        sale = self.term.journal.get(sale_id)
        if sale is None:
            return "cancelled"
        return {"pending": "unknown", "approved": "approved", "declined": "declined"}.get(sale.status, "cancelled")

    def status_for(self, sale_id: str, state: str) -> Apdu:
        if state == "unknown":
            entry = rc.receipt_book(self.term).get(sale_id)
            number = f"{entry.receipt:04d}" if entry else "----"
            return m.intermediate(m.SEE_TEXT, ["Outcome not known", "Do not pay again", f"Receipt {number}",
                                               f"Sale {sale_id}"])
        code, lines = STATUS[state]
        return m.intermediate(code, lines)

    def finish(self, sale_id: str, amount: int, state: str, snap: dict | None) -> None:
        if state == "cancelled":
            reason = (snap or {}).get("message") or ""
            sale = self.term.journal.get(sale_id)
            code = m.COMMUNICATION if sale is not None else m.ABORTED
            _log.info("sale %s cancelled (%s): abort %02X", sale_id, reason, code)
            self.send(m.abort(code))
            return
        receipt = rc.build(self.term, sale_id)
        code = m.OK if state == "approved" else m.DECLINE_CODES.get(receipt.reason, m.DO_NOT_HONOUR)
        self.report(receipt, code)
        if code == m.OK:
            self.send(m.completion())
        else:
            self.send(m.abort(code))

    def report(self, receipt: rc.Receipt, code: int) -> None:
        """Status Information, then the receipts as print lines or text blocks when the till prints them.

        The masked card goes in BMP 3C (additional text), not BMP 22: a contactless UID is not a PAN,
        and BMP 22 holds BCD digits only."""
        self.send(m.status_information(
            result=code, amount_minor=receipt.amount_minor, currency=self.currency, trace=receipt.trace,
            receipt=receipt.receipt, at=receipt.at, terminal_id=self.tid, card_name=f"facepay {receipt.method}",
            text=f"Card {receipt.masked_card.replace('•', '*')} ({receipt.method})" if receipt.masked_card else ""))
        self.link.print_receipt(receipt)
        if self.config_byte & m.PRINTS_PAYMENT:
            self.print_texts([(1, receipt.lines("merchant", self.cfg)), (2, receipt.lines("customer", self.cfg))])

    def print_texts(self, copies: list[tuple[int, list[str]]]) -> None:
        """06 D1 print lines (config byte bit 80) or 06 D3 text blocks, one receipt after another."""
        for kind, text in copies:
            if self.config_byte & m.PRINT_LINES:
                for apdu in m.print_lines(text):
                    self.send(apdu)
            else:
                self.send(m.text_block(text, kind))

    # -- administration -----------------------------------------------------------------------
    def _reverse(self, kind: str, bmps: dict) -> None:
        self.ch.send(ACK_APDU)
        if 0x87 not in bmps:
            return self.send(m.abort(m.NOT_POSSIBLE))
        book = rc.receipt_book(self.term)
        entry = book.by_receipt(from_bcd(bmps[0x87]))
        if entry is None:
            return self.send(m.abort(m.REVERSAL_NOT_POSSIBLE))
        sale = self.term.journal.get(entry.sale_id)
        if kind == "refund" and m.amount_of(bmps) not in (None, sale.amount_minor):
            return self.send(m.abort(m.AMOUNT_WRONG))
        from ..errors import FacepayError
        from ..payments.processor import ProcessorError

        try:
            with self.link.desk.locked():
                result = self.term.reverse(kind, entry.sale_id)
        except FacepayError as exc:
            _log.info("%s of receipt %04d refused: %s", kind, entry.receipt, exc.what)
            return self.send(m.abort(m.REVERSAL_NOT_POSSIBLE))
        except ProcessorError as exc:
            _log.warning("%s of sale %s not answered by the processor (sent again by `facepay recover`): %s",
                         kind, entry.sale_id, exc)
            return self.send(m.abort(m.COMMUNICATION))
        if result.get("repeated"):
            return self.send(m.abort(m.ALREADY_REVERSED))
        receipt = rc.build(self.term, entry.sale_id, kind)
        code = m.OK if result["status"] == "approved" else m.REVERSAL_NOT_POSSIBLE
        self.report(receipt, code)
        self.send(m.completion() if code == m.OK else m.abort(code))

    def reversal(self, bmps: dict) -> None:
        self._reverse("void", bmps)

    def refund(self, bmps: dict) -> None:
        self._reverse("refund", bmps)

    def end_of_day(self, bmps: dict) -> None:
        """Totals of everything booked since the last end of day: approved sales less voids and refunds."""
        self.ch.send(ACK_APDU)
        book = rc.receipt_book(self.term)
        entries = book.since_closing()
        count, net = 0, 0
        for e in entries:
            sale = self.term.journal.get(e.sale_id)
            if sale is None or sale.training:
                continue
            if e.kind == "sale" and sale.status == "approved":
                count, net = count + 1, net + sale.amount_minor
            elif e.kind != "sale":
                op = self.term.journal.operation(f"{sale.key}:{e.kind}")
                if op and op["status"] == "approved":
                    net -= op["amount_minor"]
        first = entries[0].trace if entries else 0
        last = entries[-1].trace if entries else 0
        from ..money import to_decimal_str

        cur = self.cfg.payment.currency
        w = self.cfg.receipt.width
        lines = [self.cfg.payment.merchant.center(w)[:w], "END OF DAY".center(w), "",
                 f"Terminal {self.cfg.terminal_id}"[:w], datetime.now().strftime("%Y-%m-%d %H:%M:%S"),
                 f"Receipts {rc.receipt_number(first):04d}-{rc.receipt_number(last):04d}",
                 f"Sales approved {count}", f"Net {cur} {to_decimal_str(net, cur)}"]
        self.send(m.status_information(result=m.OK, amount_minor=max(net, 0), currency=self.currency,
                                       trace=last, receipt=rc.receipt_number(last), at=datetime.now(),
                                       terminal_id=self.tid,
                                       totals=m.totals_bmp(first, last, count, max(net, 0))))
        if self.config_byte & m.PRINTS_ADMIN:
            self.print_texts([(3, lines)])
        book.close_day(first or None, last or None)
        self.send(m.completion())

    def diagnosis(self, bmps: dict) -> None:
        """The terminal's own check: card reader, camera and processor; printed when the till prints admin receipts."""
        self.ch.send(ACK_APDU)
        snap = self.link.desk.snapshot()
        try:
            self.term.processor.lookup("diagnosis:probe")
            proc = "OK"
        except Exception as exc:
            proc = f"FAULT ({type(exc).__name__})"
        lines = ["DIAGNOSIS", f"Terminal {self.cfg.terminal_id}", f"Card reader {'OK' if snap['reader_ok'] else 'FAULT'}",
                 f"Camera {'OK' if snap['camera_ok'] else 'FAULT'}", f"Processor {proc}"]
        if self.config_byte & m.PRINTS_ADMIN:
            self.print_texts([(3, lines)])
        self.send(m.completion())


class TillLink:
    """Serves the till on the configured transport, one connection at a time, until ``stop``."""

    def __init__(self, desk: Desk, cfg):
        self.desk, self.cfg = desk, cfg
        self.stopping = threading.Event()
        self.listeners: list = []
        self.listener: TcpListener | None = None
        self.thread: threading.Thread | None = None
        self.address: tuple | None = None
        self.session: Session | None = None
        desk.subscribe(self._snapshot)

    def _snapshot(self, snap: dict) -> None:
        for fn in list(self.listeners):
            fn(snap)

    def print_receipt(self, receipt: rc.Receipt) -> None:
        if self.cfg.receipt.printer and not self.desk.prints:
            threading.Thread(target=rc.print_on_printer, args=(receipt, self.cfg), daemon=True).start()

    def start_tcp(self, host: str, port: int) -> TillLink:
        self.listener = TcpListener(host, port)
        self.address = self.listener.address
        self.thread = threading.Thread(target=self._serve_tcp, name="till-tcp", daemon=True)
        self.thread.start()
        return self

    def start_serial(self, device: str, baudrate: int = 9600) -> TillLink:
        self.address = (device,)
        # Open the line here, before the caller says the link is up: opening a port flushes what is
        # waiting in it, so a till that writes as soon as it is told would lose its first frame.
        try:
            first: SerialChannel | None = SerialChannel(device, baudrate)
        except LinkLost as exc:
            _log.warning("till serial line: %s; trying again in 5 s", exc)
            first = None
        self.thread = threading.Thread(target=self._serve_serial, args=(device, baudrate, first),
                                       name="till-serial", daemon=True)
        self.thread.start()
        return self

    def start(self) -> TillLink:
        """From [till]: tcp on ``listen``, serial on ``device``."""
        till = self.cfg.till
        if till.transport == "tcp":
            host, _, port = till.listen.rpartition(":")
            return self.start_tcp(host.strip("[]"), int(port))
        return self.start_serial(till.device, till.baudrate)

    def _session(self, ch: Channel) -> None:
        _log.info("till connected: %s", ch.name)
        try:
            self.session = Session(self, ch)
            self.session.run()
        except LinkLost as exc:
            _log.warning("till link lost (%s): %s", ch.name, exc)
        finally:
            ch.close()

    def _serve_tcp(self) -> None:
        busy = threading.Lock()

        def serve(ch):
            try:
                self._session(ch)
            finally:
                busy.release()

        while not self.stopping.is_set():
            try:
                ch = self.listener.accept(0.5)
            except OSError:
                break
            if ch is None:
                continue
            if not busy.acquire(blocking=False):
                old = self.session
                for _ in range(20):   # a command just answered: give it a moment to come back to idle
                    if old is None or not old.busy:
                        break
                    time.sleep(0.1)
                if old is None or old.busy:
                    _log.warning("till connection %s refused: %s is %s", ch.name,
                                 old.ch.name if old else "another", "busy" if old else "starting")
                    self.listener.refuse(ch)
                    continue
                _log.info("till reconnected from %s: the idle connection %s is closed", ch.name, old.ch.name)
                old.ch.hang_up()
                if not busy.acquire(timeout=3):
                    _log.warning("till connection %s refused: %s did not end", ch.name, old.ch.name)
                    self.listener.refuse(ch)
                    continue
            threading.Thread(target=serve, args=(ch,), name="till-session", daemon=True).start()

    def _serve_serial(self, device: str, baudrate: int, first: SerialChannel | None = None) -> None:
        if first is not None:
            self._session(first)
        while not self.stopping.is_set():
            try:
                ch = SerialChannel(device, baudrate)
            except LinkLost as exc:
                _log.warning("till serial line: %s; trying again in 5 s", exc)
                self.stopping.wait(5)
                continue
            self._session(ch)

    def stop(self) -> None:
        self.stopping.set()
        if self.listener is not None:
            self.listener.close()
        if self.thread is not None:
            self.thread.join(timeout=3)
