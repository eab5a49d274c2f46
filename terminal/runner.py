"""Performing the state machine's effects: camera, LEDs, charges, the ledger, the shopper store.

:class:`Runner` is what the CLI's ``facepay sale`` drives synchronously and what the kiosk controller
drives from worker threads: the same code path for both.  ``dispatch(event)`` hands the event to the
machine, performs every effect (:meth:`Runner.perform`, one ``match`` over the effect types) and feeds
the events those effects produce back in, until nothing is left.  What an effect comes to is an event
(the charge's reference, the deletion receipt's id, the liveness reason all travel in events and so in
the machine's ``view()``), or a returned result (:meth:`Runner.charge`, the scans in
:mod:`terminal.scan`); the runner keeps no record of the last one.

The face scans on the open camera, and the scan token protocol (:class:`~terminal.scan.ScanGate`), are
in :mod:`terminal.scan`.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from . import checkout as co
from . import consent
from .camera import Camera
from .errors import FacepayError
from .leds import LedBoard
from .payments.journal import SaleNotRecorded
from .payments.processor import IdempotencyKeyReused
from .scan import FaceScanner, ScanGate
from .service import AlreadyEnrolled, CardAlreadyLinked, Terminal, report_lines

_log = logging.getLogger(__name__)

# ChargeReport.status -> the machine's outcome; anything else is "unknown"
_OUTCOME = {"approved": "approved", "declined": "declined", "cancelled": "not_charged"}


def _result(report) -> co.ChargeResult:
    outcome = _OUTCOME.get(report.status, "unknown")
    # a key closed at the processor (`facepay recover` ran meanwhile): the shopper sees "not sent"
    return co.ChargeResult(report.sale_id, outcome, "not_sent" if outcome == "not_charged" else report.reason,
                           report.reference if outcome == "approved" else "")


@dataclass(frozen=True)
class ChargeOutcome:
    """What one charge came to: the event for the machine, and the error when it ended unknown or not charged."""

    event: co.ChargeResult
    error: Exception | None = None


class Runner:
    def __init__(self, term: Terminal, machine: co.CheckoutMachine, camera: Camera | None,
                 leds: LedBoard | None = None, on_timer: Callable[[co.StartTimer], None] | None = None):
        self.term = term
        self.machine = machine
        self.camera = camera
        self.leds = leds
        self.on_timer = on_timer
        self.on_cooldown: Callable[[co.StartCooldown], None] | None = None
        self.pins = None   # the kiosk's staff PinGate (terminal.staff): CheckPin needs it
        self.doctor: Callable[[bool], list[str]] | None = None   # the kiosk's health check (skip the camera?)
        self.scans = ScanGate()
        self.scanner = FaceScanner(term, camera, self.scans, machine.view)
        self.lock = threading.RLock()

    # -- the loop -----------------------------------------------------------
    def dispatch(self, event, *, deferred: set[type] | None = None) -> list:
        """Handle ``event`` and its consequences; effects of a type in ``deferred`` are returned, not run."""
        queue = deque([event])
        left = []
        with self.lock:
            while queue:
                ev = queue.popleft()
                effects = self.machine.handle(ev)
                for eff in effects:
                    match eff:
                        case co.OpenCamera(scan=token):
                            self.scans.want(token)
                        case co.CloseCamera(scan=token):
                            self.scans.drop(token)
                    if deferred and type(eff) in deferred:
                        left.append(eff)
                        continue
                    queue.extend(self.perform(eff))
        return left

    def perform(self, eff) -> list:
        """Carry out one effect; return the events it produced."""
        t = self.term
        match eff:
            case co.OpenCamera():
                return self._open_camera(eff)
            case co.CloseCamera():
                self._close_camera()
            case co.Leds(pattern=pattern):
                if self.leds:
                    self.leds.show(pattern)
            case co.StartCooldown():
                if self.on_cooldown:
                    self.on_cooldown(eff)
            case co.StartTimer():
                if self.on_timer:
                    self.on_timer(eff)
            case co.Record(kind=kind, subject=subject, details=details):
                t.ledger.append(kind, subject, terminal_id=t.cfg.terminal_id, **details)
            case co.PersistMode(mode=mode):
                t.set_mode(mode, record=False)   # the machine's own Record effect writes the ledger entry
            case co.Charge():
                return [self.charge(eff).event]
            case co.ResolveCharge(sale_id=sale_id):
                return self._resolve(sale_id)
            case co.VerifyPhone(shopper_id=sid, digits=digits):
                sale = self.machine.view().sale
                ok, suspended = t.check_phone(sid, digits, sale.sale_id if sale else None)
                return [co.PhoneChecked(ok, suspended)]
            case co.VerifyUnlock(shopper_id=sid, digits=digits):
                return [co.UnlockChecked(t.unlock_face_pay(sid, digits))]
            case co.StoreEnrolment():
                return [self._store_enrolment(eff)]
            case co.DropCaptures():
                self.scanner.captures = []
            case co.LookupCard(card_hash=card_hash):
                shopper = t.store.by_card_hash(card_hash)
                return [co.LookupResult(t.view(shopper) if shopper else None)]
            case co.RevokeShopper(shopper_id=sid):
                return [co.Revoked(sid, t.revoke(sid).id)]
            case co.LoadGallery():
                t.gallery()
            case co.DropGallery():
                t.drop_gallery()
            case co.CheckPin(digits=digits):
                return [self._check_pin(digits)]
            case co.Reverse(kind=kind):
                return [self._reverse(kind)]
            case co.BuildReport():
                return [co.ReportReady(tuple(report_lines(t.report_day())))]
            case co.RunDoctor(skip_camera=skip):
                if self.doctor is None:
                    raise TypeError("RunDoctor needs the kiosk's health check (Runner.doctor)")
                return [co.ReportReady(tuple(self.doctor(skip)))]
            case _:
                raise TypeError(f"unknown effect {eff!r}")
        return []

    def _open_camera(self, eff: co.OpenCamera) -> list:
        if not self.scans.live(eff.scan):
            return []  # stopped (Cancel, timeout) before it could start: the camera stays closed
        if eff.purpose == "enrolment":
            self.scanner.captures = []
        if self.leds:
            self.leds.privacy(True)  # lit before the first frame can be taken
        try:
            self.camera.open()
        except BaseException:
            self._close_camera()  # no camera, no light
            raise
        if not self.scans.live(eff.scan):
            self._close_camera()  # stopped while the device was opening
        # it opened: after a CameraFault, the machine learns the camera works again
        return [] if self.machine.view().camera_ok else [co.CameraRestored()]

    def charge(self, eff: co.Charge) -> ChargeOutcome:
        """Perform a charge; anything but the processor's clear answer is "unknown", never "declined"."""
        sale_id = eff.sale.sale_id
        try:
            report = self.term.charge(sale_id, eff.sale.amount_minor, eff.sale.currency, eff.method,
                                      eff.token, eff.shopper_id, eff.sale.training, masked_card=eff.masked_card)
        except SaleNotRecorded as exc:
            return ChargeOutcome(co.ChargeResult(sale_id, "not_charged", "not_recorded"), exc)
        except IdempotencyKeyReused as exc:
            _log.error("sale %s was refused: %s", sale_id, exc)
            return ChargeOutcome(co.ChargeResult(sale_id, "not_charged", "key_reused"), exc)
        except Exception as exc:  # the journal, the shopper store or the gateway failed mid-charge
            _log.exception("sale %s: the outcome is unknown", sale_id)
            return ChargeOutcome(co.ChargeResult(sale_id, "unknown", f"{type(exc).__name__}: {exc}"), exc)
        return ChargeOutcome(_result(report))

    def _resolve(self, sale_id: str) -> list:
        try:
            report = self.term.resolve(sale_id)
        except Exception as exc:  # the processor cannot be asked yet: still unknown, asked again later
            _log.warning("sale %s: the processor cannot be asked yet: %s", sale_id, exc)
            return []
        if report is None or report.status not in _OUTCOME:
            return []
        return [_result(report)]

    def _check_pin(self, digits: str) -> co.PinChecked:
        if self.pins is None:
            raise TypeError("CheckPin needs the staff PIN gate (Runner.pins)")
        wait = self.pins.wait_seconds()
        if wait > 0:
            return co.PinChecked(False, wait, locked=True)
        ok = self.pins.check(digits)
        return co.PinChecked(ok, 0.0 if ok else self.pins.wait_seconds())

    def _reverse(self, kind: str):
        last = self.term.journal.last_sale()
        if last is None:
            return co.ReverseFailed("", no_sales=True)
        try:
            r = self.term.reverse(kind, last.id)
        except FacepayError as exc:
            return co.ReverseFailed(exc.what)
        return co.Reversed(kind, last.amount_minor, last.currency, r["status"], bool(r["repeated"]))

    def _close_camera(self) -> None:
        if self.camera is not None:
            self.camera.close()
        if self.leds:
            self.leds.privacy(False)

    def work(self, eff, post: Callable, on_frame: Callable | None = None) -> None:
        """The kiosk worker's part: perform one effect, ``post`` its events; an opening runs its scan."""
        for ev in self.perform(eff):
            post(ev)
        if isinstance(eff, co.OpenCamera) and self.scans.live(eff.scan):
            if eff.purpose == "payment":
                self.scanner.scan_payment(post, on_frame, scan=eff.scan)
            else:
                self.scanner.capture_enrolment(post, on_frame, scan=eff.scan)

    # -- enrolment -----------------------------------------------------------
    def _store_enrolment(self, eff: co.StoreEnrolment):
        text = next((c for c in (consent.load(lang) for lang in consent.LANGUAGES)
                     if c.version == eff.consent_version and c.sha256 == eff.consent_text_hash), None)
        embeddings, self.scanner.captures = self.scanner.captures, []
        if text is None:
            return co.EnrolFailed("the consent text shown is not one this terminal knows")
        try:
            shopper = self.term.enrol_hashed(name=eff.name, card_hash=eff.card_hash, masked_card=eff.masked_card,
                                             token=eff.token, embeddings=embeddings, consent_text=text,
                                             phone_last4=eff.phone_last4, replace=eff.replace)
        except AlreadyEnrolled as exc:
            self.scanner.captures = embeddings  # kept while the shopper decides: replacing stores these
            return co.AlreadyEnrolled(self.term.view(exc.shopper), exc.same_card)
        except CardAlreadyLinked:
            return co.EnrolFailed("card_linked")
        except FacepayError as exc:
            return co.EnrolFailed(exc.what)
        receipt = self.term.replaced.pop(shopper.id, None)
        return co.EnrolStored(self.term.view(shopper), receipt.id if receipt else None)
