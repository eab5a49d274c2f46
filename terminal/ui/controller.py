"""The kiosk controller: owns the state machine and the effect runner, exposes state to the screens.

Screens bind to the Kivy properties below and call the methods; they never
touch hardware, the database or the processor.  Slow work (face scans,
charges, enrolment, deletion) runs on one worker thread; results come back to
the main thread through ``Clock.schedule_once``.  Card reader events arrive on
a queue polled from the main loop.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import time

from kivy.clock import Clock, mainthread
from kivy.event import EventDispatcher
from kivy.properties import BooleanProperty, DictProperty, ListProperty, NumericProperty, ObjectProperty, StringProperty

from .. import checkout as co
from .. import consent
from ..face.gates import GUIDANCE
from ..money import format_amount, parse_amount
from ..payments.journal import new_sale_id
from ..runner import Runner
from ..staff import PinGate

_log = logging.getLogger(__name__)

SLOW = {co.Charge, co.ResolveCharge, co.StoreEnrolment, co.RevokeShopper, co.VerifyPhone, co.VerifyUnlock,
        co.LookupCard, co.OpenCamera, co.CloseCamera, co.DropCaptures}
STAFF_IDLE_LOCK_S = 300

MESSAGES = {
    "no_match": "We could not find you. Pay by card, or try again.",
    "no_match_too_close": "Your face is close to two enrolled shoppers, so we cannot tell which one you are. Please "
                          "pay by card. If you enrolled twice, delete one enrolment at My data with its card.",
    "scan_timeout": "The camera is off again: no face was recognised in time.",
    "camera_fault": "The camera is not working. Please pay by card.",
    "stepup_unavailable": "We are not sure enough it is you. Please pay by card.",
    "phone_mismatch": "Those digits do not match. Try again.",
    "cancelled": "Cancelled. Nothing was charged.",
    "timed out": "Timed out. Nothing was charged.",
    "shopper opted out": "Cancelled. Nothing was charged.",
    "phone digits did not match": "The phone digits did not match. Nothing was charged.",
    "face_pay_suspended": "Face pay is paused for this account after too many wrong phone digits. Please pay by "
                          "card. To switch it back on: My data, tap your card, enter your digits.",
    "face_pay_unlocked": "Face pay is on again for this card.",
    "liveness_failed": "Please try again or pay by card",
    "random_uid": co.RANDOM_UID_SENTENCE,
    "not_recorded": "This terminal cannot record payments right now. Nothing was charged. Please ask staff.",
    "key_reused": "The payment service refused this payment before making it. Nothing was charged. Please ask staff.",
    "not_sent": "This payment was not sent. Nothing was charged.",
}
# A failed enrolment, in enrolment words: (what failed, what to do).  "liveness:REASON" codes come from the
# head-turn check (terminal/face/liveness.py REASONS); {side} is the side the arrow asked for.
ENROL_FAILURES = {
    "liveness:not_frontal": ("We never saw your face straight on before the turn.",
                             "Try again: first look straight at the screen, then turn your head when the arrow shows."),
    "liveness:timeout": ("We did not see your head turn to your {side} in time.",
                         "Try again: look at the screen, then slowly turn your head to your {side}, "
                         "the way the arrow points."),
    "liveness:wrong_direction": ("Your head turned to the other side first.",
                                 "Try again and turn only to your {side}, the way the arrow points."),
    "liveness:face_lost": ("Your face left the picture or was hidden during the turn.",
                           "Try again: stay in the middle of the picture and turn slowly."),
    "liveness:flat": ("The face moved like a flat picture (a photo or a screen).",
                      "Enrolment needs you in person in front of the camera."),
    "liveness:different_person": ("The face at the end of the turn was not the one at its start.",
                                  "Try again with only one person in front of the camera."),
    "liveness:no_face": ("We could not see one face clearly.",
                         "Try again alone, about an arm's length from the screen, in good light."),
    "camera_fault": ("The camera is not working.", "Please ask staff. You can still pay by card."),
    "card_linked": ("This card is already linked to another face enrolment.",
                    "Try again with another card, or first delete that enrolment at My data with this card."),
    "replace_phone_mismatch": ("The phone digits did not match your earlier enrolment, so it was kept.",
                               "Nothing was changed. Ask at the till if you no longer know them."),
    "face_pay_suspended": ("Face pay is paused for your earlier enrolment after too many wrong phone digits.",
                           "Nothing was changed. To switch it back on: My data, tap that card, enter your digits."),
}
NO_RETRY = ("camera_fault", "replace_phone_mismatch", "face_pay_suspended")


def enrol_failure(message: str) -> tuple[str, str, bool]:
    """What the failed-enrolment screen says: what failed, what to do, and whether "Try again" is offered."""
    key, side = message, ""
    if message.startswith("liveness:"):
        _, reason, side = (message.split(":") + ["", ""])[:3]
        key = "liveness:" + reason
    what, todo = ENROL_FAILURES.get(key, (message[:1].upper() + message[1:] + ".", "Try again, or ask staff."))
    if key not in NO_RETRY:
        todo += " No face data was kept."
    side = side or "left or right"
    return what.format(side=side), todo.format(side=side), key not in NO_RETRY


# The head-turn challenge: an arrow and one short sentence in the consent text's languages.  The arrow
# points to the shopper's own side as they face the screen, whether or not the preview is mirrored.
CHALLENGE_ARROWS = {"left": "\u2190", "right": "\u2192"}
CHALLENGE_TEXT = {"left": "Slowly turn your head to your left\n请慢慢向左转头",
                  "right": "Slowly turn your head to your right\n请慢慢向右转头"}


def screen_for(state: co.State) -> str:
    return {
        co.State.IDLE: "attract", co.State.AMOUNT_DUE: "pay", co.State.FACE_SCAN: "scan",
        co.State.CONSENT: "consent", co.State.CHARGING: "processing", co.State.APPROVED: "result",
        co.State.DECLINED: "result", co.State.UNKNOWN: "result", co.State.CANCELLED: "result",
        co.State.ENROL_CONSENT: "enrol_consent",
        co.State.ENROL_DETAILS: "enrol_details", co.State.ENROL_CAPTURE: "enrol_capture",
        co.State.ENROL_CARD: "enrol_card", co.State.ENROL_SAVING: "enrol_card", co.State.ENROL_DONE: "enrol_done",
        co.State.ENROL_DUPLICATE: "enrol_duplicate", co.State.ENROL_FAILED: "enrol_failed",
        co.State.MYDATA_TAP: "mydata_tap", co.State.MYDATA_LOOKUP: "mydata_tap", co.State.MYDATA_SHOW: "mydata_show",
        co.State.MYDATA_DELETING: "mydata_show", co.State.MYDATA_DELETED: "mydata_deleted",
        co.State.OUT_OF_SERVICE: "out_of_service",
    }[state]


class KioskController(EventDispatcher):
    screen = StringProperty("attract")
    state = StringProperty("idle")
    snap = DictProperty({})
    face_pay = BooleanProperty(True)
    camera_on = BooleanProperty(False)
    reader_ok = BooleanProperty(True)
    camera_ok = BooleanProperty(True)
    reader_reason = StringProperty("")
    mode = StringProperty("normal")
    merchant = StringProperty("")
    amount_text = StringProperty("")
    guidance = StringProperty("")
    message = StringProperty("")
    shopper_name = StringProperty("")
    shopper_card = StringProperty("")
    countdown = NumericProperty(0)
    preview = ObjectProperty(None, allownone=True)
    face_box = ListProperty([])
    frame_size = ListProperty([640, 480])
    captures = NumericProperty(0)
    captures_needed = NumericProperty(3)
    consent_lang = StringProperty("en")
    consent_title = StringProperty("")
    consent_body = StringProperty("")
    consent_version = StringProperty("")
    receipt_text = StringProperty("")
    mydata_text = StringProperty("")
    enrolled_text = StringProperty("")
    optout_code = StringProperty("")    # fleet only: shown once on the enrolment-done screen (text + QR)
    optout_qr = StringProperty("")      # what the QR code holds: the opt-out page's address with the code
    optout_url = StringProperty("")     # the opt-out page's address, printed beside the QR code
    failure_text = StringProperty("")   # the failed-enrolment screen: what failed ...
    failure_hint = StringProperty("")   # ... and what to do
    can_retry = BooleanProperty(False)
    duplicate_text = StringProperty("")  # "you are already enrolled": which enrolment, since when
    can_replace = BooleanProperty(False)  # the earlier enrolment can be moved to the new card (its phone digits)
    fleet_notice = StringProperty("")   # "Face pay paused: this terminal is offline" while failing closed
    staff_unlocked = BooleanProperty(False)
    staff_message = StringProperty("")
    keypad = StringProperty("")
    staff_view = StringProperty("")   # a staff screen shown over idle, or ""
    report_text = StringProperty("")
    demo = BooleanProperty(False)
    stepup_needed = BooleanProperty(False)   # the phone digits are asked and not yet given
    has_mydata = BooleanProperty(False)
    mydata_suspended = BooleanProperty(False)   # face pay paused for this card: the unlock keypad shows
    challenge = StringProperty("")        # "left"/"right" while the head-turn challenge is asked, else ""
    challenge_arrow = StringProperty("")
    challenge_text = StringProperty("")
    cooldown = NumericProperty(0)         # seconds left of the face-pay cool-down after failed challenges
    receipt_qr = StringProperty("")       # the customer receipt's text as a QR code on the result screen

    def __init__(self, term, hardware, demo: bool = False, **kw):
        super().__init__(**kw)
        self.term = term
        self.hw = hardware
        self.demo = demo
        self.machine = co.CheckoutMachine(term.policy(), face_pay=term.cfg.face_pay, mode=term.mode())
        self.runner = Runner(term, self.machine, hardware.camera, hardware.leds, on_timer=self._start_timer)
        self.runner.on_cooldown = self._start_cooldown
        self.agent = None
        if term.fleet is not None:  # fleet hook: the same agent as `facepay agent`, in a thread
            from ..fleet.agent import AgentThread

            self.machine.ctx.fleet_paused = term.fleet_paused()
            self.agent = AgentThread(term.cfg, term.data_dir, health=hardware.health,
                                     is_idle=lambda: self.state in ("idle", "out_of_service")).start()
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiosk-worker")
        self.pins = PinGate(term.cfg.staff.pin_hash, load=lambda: term.store.settings().get("staff_pin"),
                            save=lambda state: term.store.set_setting("staff_pin", state))
        self.merchant = term.cfg.payment.merchant
        self.captures_needed = term.cfg.match.enrol_captures
        self.rejections: list[str] = []
        self.observers: list = []           # called with every snapshot (the till link, terminal/ui/till.py)
        self._receipt_for: str | None = None
        self._countdown_ev = None
        self._staff_touched = 0.0
        self.load_consent("en")
        from ..sale import record_liveness_off

        record_liveness_off(term, "kiosk start")
        for eff in self.machine.startup_effects():
            self.runner.perform(eff)
        self._refresh()
        self.till = None
        if term.cfg.till.transport != "none":   # the shop's till sends amounts over ZVT
            from .till import KioskDesk

            self.till = KioskDesk(self).start()
        Clock.schedule_interval(self._poll_reader, 0.05)
        Clock.schedule_interval(self._follow_mode, 2.0)

    # -- plumbing ---------------------------------------------------------------
    def send(self, event) -> bool:
        """Hand an event to the machine (main thread); slow effects go to the worker."""
        try:
            slow = self.runner.dispatch(event, deferred=SLOW)
        except co.Rejected as exc:
            self.rejections.append(f"{type(event).__name__}: {exc}")
            _log.info("rejected %s: %s", type(event).__name__, exc)
            self._refresh()
            return False
        for eff in slow:
            self._run_slow(eff)
        self._refresh()
        return True

    def _post(self, event) -> None:
        Clock.schedule_once(lambda dt: self.send(event), 0)

    def _run_slow(self, eff) -> None:
        # dispatch has already dropped a closed scan's token: its loop stops after the current frame
        if isinstance(eff, co.CloseCamera):
            self.camera_on = False
            self.clear_preview()
        if isinstance(eff, co.OpenCamera):
            self.camera_on = True
        self.worker.submit(self._work, eff)

    def clear_preview(self) -> None:
        """The camera is off: the last picture goes, texture and all, so the next shopper never sees it."""
        self.preview = None
        self.face_box = []

    def _work(self, eff) -> None:
        def on_frame(frame, analysis):
            self._show_frame(frame.image, analysis.gate.face.box if analysis.gate.face else None, eff.scan)

        try:
            if isinstance(eff, co.OpenCamera) and eff.challenge and self.hw.shopper is not None:
                self.hw.shopper.follow(self.hw.camera, eff.challenge)   # the demo's simulated shopper
            self.runner.work(eff, self._post, on_frame)
            if isinstance(eff, co.OpenCamera):
                self.hw.camera_seen(None)  # for the fleet heartbeat
        except Exception as exc:  # a fault in a part must not kill the kiosk
            _log.exception("effect %s failed", type(eff).__name__)
            if isinstance(eff, co.OpenCamera):
                self.hw.camera_seen(str(exc))
                self.hw.leds.set_fault(True)  # a missing camera keeps the fault LED blinking
                self._post(co.CameraFault(str(exc)))
            elif isinstance(eff, co.Charge):
                # The runner turns every charge failure into an outcome; should anything still escape,
                # the outcome is unknown (never "declined": a shopper told so would pay again).
                self._post(co.ChargeResult(eff.sale.sale_id, "unknown", f"{type(exc).__name__}: {exc}"))
            elif isinstance(eff, co.StoreEnrolment):
                self._post(co.EnrolFailed(str(exc)))

    @mainthread
    def _show_frame(self, image, box, scan: int) -> None:
        from kivy.graphics.texture import Texture

        if not self.camera_on or not self.runner.scans.live(scan):
            return  # a frame of a scan that has ended (even if the next one has begun) is not shown
        h, w = image.shape[:2]
        tex = self.preview if self.preview is not None and tuple(self.preview.size) == (w, h) else None
        if tex is None:
            tex = Texture.create(size=(w, h), colorfmt="rgb")
            tex.flip_vertical()
        tex.blit_buffer(image.tobytes(), colorfmt="rgb", bufferfmt="ubyte")
        self.frame_size = [w, h]
        self.preview = tex
        self.face_box = list(box) if box else []
        self.property("preview").dispatch(self)

    def _start_timer(self, eff: co.StartTimer) -> None:
        Clock.schedule_once(lambda dt: self.send(co.Timeout(eff.token)), eff.seconds)
        if self._countdown_ev is not None:
            self._countdown_ev.cancel()
        self.countdown = int(eff.seconds)
        token = eff.token

        def tick(dt):
            if self.machine.ctx.timer != token or self.countdown <= 0:
                return False
            self.countdown -= 1
            return True

        self._countdown_ev = Clock.schedule_interval(tick, 1.0)

    def _start_cooldown(self, eff: co.StartCooldown) -> None:
        """Face pay pauses after failed liveness challenges; the pay screen counts the seconds down."""
        self.cooldown = int(eff.seconds)

        def tick(dt):
            self.cooldown = max(0, self.cooldown - 1)
            if self.cooldown == 0:
                self.send(co.CooldownOver(eff.token))
                return False
            return True

        Clock.schedule_interval(tick, 1.0)

    def _poll_reader(self, dt) -> None:
        from firmware_bridge.service import CardPresented, ReaderBack, ReaderLost

        while True:
            try:
                ev = self.hw.events.get_nowait()
            except queue.Empty:
                break
            if isinstance(ev, CardPresented):
                self.card_tapped(ev.uid)
            elif isinstance(ev, ReaderLost):
                self.reader_reason = ev.reason
                self.hw.leds.set_fault(True)
                self.send(co.ReaderStatus(False))
            elif isinstance(ev, ReaderBack):
                self.reader_reason = ""
                self.hw.leds.set_fault(False)
                self.send(co.ReaderStatus(True))
        self._staff_autolock()

    def _follow_mode(self, dt) -> None:
        """Pick up a mode set from the CLI (`facepay mode card_only` over SSH) once the terminal is idle."""
        mode = self.term.mode()
        if mode != self.machine.ctx.mode and self.machine.state in (co.State.IDLE, co.State.OUT_OF_SERVICE):
            self.send(co.SetMode(mode, record=False))
        if self.term.fleet is not None:  # fail closed while out of touch with the fleet's revocations
            from ..fleet.link import PAUSED_MESSAGE

            paused = self.term.fleet_paused()
            self.fleet_notice = PAUSED_MESSAGE if paused else ""
            if paused != self.machine.ctx.fleet_paused:
                self.send(co.FleetStatus(paused))

    def card_tapped(self, uid: bytes) -> None:
        s = self.machine.state
        if s in (co.State.AMOUNT_DUE, co.State.FACE_SCAN, co.State.ENROL_CARD, co.State.MYDATA_TAP):
            self.send(self.term.tap(uid))

    def _refresh(self) -> None:
        snap = self.machine.snapshot()
        self.snap = snap
        if snap["state"] == "enrol_duplicate" != self.state:
            self.keypad = ""   # the phone digits start empty
        self.state = snap["state"]
        self.mode = snap["mode"]
        self.face_pay = snap["face_pay"]
        self.reader_ok = snap["reader_ok"]
        self.camera_ok = snap["camera_ok"]
        sale = snap["sale"]
        self.amount_text = format_amount(sale["amount_minor"], sale["currency"]) if sale else ""
        g = snap["guidance"]
        self.guidance = GUIDANCE.get(g, MESSAGES.get(g, "")) if g else ""
        msg = snap["message"]
        self.message = MESSAGES.get(msg, msg or "") if msg else ""
        cand = snap["candidate"]
        self.shopper_name = cand["masked_name"] if cand else ""
        self.shopper_card = cand["masked_card"] if cand else ""
        self.captures = snap["enrol_captures"]
        self.stepup_needed = bool(snap["stepup_required"] and not snap["stepup_ok"])
        ch = snap["challenge"] if not snap["live"] else None
        self.challenge = ch or ""
        self.challenge_arrow = CHALLENGE_ARROWS.get(ch, "")
        self.challenge_text = CHALLENGE_TEXT.get(ch, "")
        md = snap["mydata"]
        self.has_mydata = bool(md)
        self.mydata_suspended = bool(md and md["suspended"])
        if md:
            self.mydata_text = (f"A face is enrolled for card {md['masked_card']}\n"
                                f"Name: {md['masked_name']}\nSince: {md['enrolled_at'][:10]}"
                                + ("\nFace pay is paused after too many wrong phone digits. Enter the last 4 "
                                   "digits of your phone number to switch it back on." if md["suspended"] else ""))
        elif self.state == "mydata_show":
            self.mydata_text = "No face is enrolled for this card. Nothing about you is stored for face pay."
        en = snap["enrolled"]
        self.optout_code = self.term.optout_codes.get(en["shopper_id"], "") if en else ""
        url = self.term.cfg.fleet.optout_url
        self.optout_qr = (f"{url}?code={self.optout_code}" if url else self.optout_code) if self.optout_code else ""
        self.optout_url = url if self.optout_code else ""
        dup = snap["duplicate"]
        if en:
            self.enrolled_text = (f"Stored: one encrypted face template (no photo), linked to card {en['masked_card']}"
                                  f"{', with a phone-digits check' if en['has_phone'] else ''}.\n"
                                  "To delete it: My data on this screen, or ask at the till."
                                  + (f"\nYour earlier enrolment (card {dup['masked_card']}) was deleted: receipt "
                                     f"{snap['receipt_id']}." if dup and snap["receipt_id"] else ""))
        if self.state == "enrol_failed" and msg:
            self.failure_text, self.failure_hint, self.can_retry = enrol_failure(msg)
        if self.state == "enrol_duplicate" and dup:
            new_card = self.machine.ctx.enrol_card.masked_card if self.machine.ctx.enrol_card else ""
            self.can_replace = not snap["duplicate_same_card"] and dup["has_phone"]
            if snap["duplicate_same_card"]:
                self.duplicate_text = (f"Your face is already set up for face pay with this card ({dup['masked_card']}), "
                                       f"since {dup['enrolled_at'][:10]}. Nothing new was stored: pay by face as before.")
            else:
                self.duplicate_text = (
                    f"Your face is already set up for face pay with card {dup['masked_card']} ({dup['masked_name']}, "
                    f"since {dup['enrolled_at'][:10]}). Nothing new was stored.\n"
                    + (f"To pay with the card you just tapped ({new_card}) instead, enter the last 4 phone digits "
                       "you gave then: the earlier enrolment is deleted, with a receipt."
                       if self.can_replace else
                       "To move face pay to the new card, delete the earlier enrolment at My data with its card, "
                       "then enrol again."))
        if snap["receipt_id"] and self.runner.last_receipt is not None:
            r = self.runner.last_receipt
            self.receipt_text = (f"Deletion receipt {r.id}\n{r.at}\nDeleted: " + "; ".join(r.deleted))
        self._receipt(snap)
        for fn in list(self.observers):
            fn(snap)
        screen = screen_for(self.machine.state)
        if self.staff_view and self.machine.state in (co.State.IDLE, co.State.OUT_OF_SERVICE):
            screen = self.staff_view
        self.screen = screen

    def _receipt(self, snap: dict) -> None:
        """A sale that ended approved or declined: its receipt as a QR code, and on [receipt] printer."""
        sale = snap["sale"]
        if snap["state"] not in ("approved", "declined") or not sale:
            if snap["state"] not in ("approved", "declined"):
                self.receipt_qr = ""
            return
        if self._receipt_for == sale["sale_id"]:
            return
        self._receipt_for = sale["sale_id"]
        from .. import receipts

        try:
            receipt = receipts.build(self.term, sale["sale_id"])
        except Exception:  # a receipt never stops the kiosk
            _log.exception("no receipt for sale %s", sale["sale_id"])
            return
        cfg = self.term.cfg
        self.receipt_qr = receipts.qr_text(receipt, cfg) if cfg.receipt.qr else ""
        if cfg.receipt.printer:
            import threading

            threading.Thread(target=receipts.print_on_printer, args=(receipt, cfg), daemon=True).start()

    # -- shopper actions (called by screens) ----------------------------------------------

    def card_hint(self):
        self.message = "Hold your card flat on the reader, below the screen."

    def choose_face(self):
        return self.send(co.ChooseFace())

    def cancel(self):
        return self.send(co.Cancel())

    def done(self):
        return self.send(co.Done())

    def confirm(self):
        sale, cand = self.machine.ctx.sale, self.machine.ctx.candidate
        if sale is None or cand is None:
            return False
        return self.send(co.Confirm(sale.amount_minor, cand.shopper_id))

    def phone_digits(self, digits: str):
        return self.send(co.PhoneDigits(digits))

    def start_enrolment(self):
        self.load_consent("en")
        return self.send(co.StartEnrolment())

    def load_consent(self, lang: str) -> None:
        text = consent.load(lang)
        self.consent_lang = lang
        title, _, body = text.body.partition("\n")
        self.consent_title = title.lstrip("# ").strip()
        self.consent_body = body.strip()
        self.consent_version = text.version
        self._consent = text

    def agree(self):
        return self.send(co.AgreeConsent(self._consent.version, self._consent.sha256))

    def enrol_details(self, name: str, phone: str):
        return self.send(co.EnrolDetails(name.strip(), phone.strip() or None))

    def start_mydata(self):
        self.receipt_text = ""
        self.keypad = ""
        return self.send(co.StartMyData())

    def unlock_face_pay(self, digits: str):
        return self.send(co.UnlockFacePay(digits))

    def delete_mydata(self):
        return self.send(co.DeleteMyData())

    def retry_enrolment(self):
        return self.send(co.RetryEnrolment())

    def replace_enrolment(self, digits: str):
        """"Use the new card": the earlier enrolment's phone digits prove it is the shopper's own."""
        return self.send(co.PhoneDigits(digits))

    # -- staff ---------------------------------------------------------------------------------
    def open_staff(self):
        self._staff_touched = time.monotonic()
        self.keypad = ""
        self.staff_message = ""
        self.staff_view = "staff_menu" if self.staff_unlocked else "staff_pin"
        self._refresh()

    def close_staff(self):
        self.staff_view = ""
        self._refresh()

    def lock_staff(self):
        self.staff_unlocked = False
        self.close_staff()

    def _staff_autolock(self):
        if self.staff_unlocked and time.monotonic() - self._staff_touched > STAFF_IDLE_LOCK_S:
            self.lock_staff()

    def key(self, k: str):
        self._staff_touched = time.monotonic()
        if k == "back":
            self.keypad = self.keypad[:-1]
        elif k == "clear":
            self.keypad = ""
        elif len(self.keypad) < 10:
            if k == "." and ("." in self.keypad or self.staff_view != "staff_amount"):
                return
            self.keypad += k

    def submit_pin(self):
        wait = self.pins.wait_seconds()
        if wait > 0:
            self.staff_message = f"Locked: try again in {int(wait) + 1} s"
            self.keypad = ""
            return False
        ok = self.pins.check(self.keypad)
        self.keypad = ""
        if ok:
            self.staff_unlocked = True
            self.staff_message = ""
            self.staff_view = "staff_menu"
            self._refresh()
            return True
        wait = self.pins.wait_seconds()
        self.staff_message = "Wrong PIN" + (f": locked for {int(wait) + 1} s" if wait else "")
        return False

    def staff_new_sale(self):
        self.keypad = ""
        self.staff_message = ""
        self.staff_view = "staff_amount"
        self._refresh()

    def submit_amount(self):
        cur = self.term.cfg.payment.currency
        try:
            minor = parse_amount(self.keypad, cur)
        except ValueError as exc:
            self.staff_message = str(exc)
            return False
        self.staff_view = ""
        self.keypad = ""
        return self.start_sale(minor)

    def start_sale(self, amount_minor: int):
        self.staff_view = ""
        return self.send(co.StartSale(new_sale_id(), amount_minor, self.term.cfg.payment.currency))

    def set_mode(self, mode: str):
        if not self.send(co.SetMode(mode)):
            self.staff_message = self.rejections[-1].split(": ", 1)[-1]
            return False
        self.term.set_mode(mode, record=False)  # the machine's Record effect wrote the ledger entry
        self.staff_message = f"Mode: {mode.replace('_', ' ')}"
        self.staff_view = "staff_menu"
        self._refresh()
        return True

    def void_last(self):
        return self._reverse("void")

    def refund_last(self):
        return self._reverse("refund")

    def _reverse(self, kind: str):
        from ..errors import FacepayError

        last = self.term.journal.last_sale()
        if last is None:
            self.staff_message = "No sales yet"
            return False
        try:
            r = self.term.reverse(kind, last.id)
        except FacepayError as exc:
            self.staff_message = exc.what
            return False
        amount = format_amount(last.amount_minor, last.currency)
        self.staff_message = f"{kind.capitalize()} of {amount}: {r['status']}" + (" (already done)" if r["repeated"] else "")
        return r["status"] == "approved"

    def show_report(self):
        from ..service import report_lines

        self.report_text = "\n".join(report_lines(self.term.report_day()))
        self.staff_view = "staff_report"
        self._refresh()

    def show_doctor(self):
        from ..doctor import collect

        results = collect(self.term, self.hw, skip={"camera"} if self.camera_on else set(),  # never during a scan
                          demo=self.demo)
        self.report_text = "\n".join(f"[{'FAIL' if not c.ok else 'WARN' if c.warn else 'OK'}] {c.name}: {c.detail}"
                                     for c in results)
        self.staff_view = "staff_report"
        self._refresh()

    # -- demo helpers: simulated hardware only ------------------------------------------------
    def demo_tap(self, which: str = "shopper"):
        """Put a card (or a phone, showing a random UID) on the simulated reader for a moment (demo only)."""
        if self.hw.sim is None:
            return
        from ..hardware import DEMO_CARD, DEMO_OTHER_CARD

        self.hw.sim.present({"shopper": DEMO_CARD, "other": DEMO_OTHER_CARD, "phone": "random"}[which])
        Clock.schedule_once(lambda dt: self.hw.sim.remove(), 0.8)

    def shutdown(self):
        if self.till is not None:
            self.till.stop()
        if self.agent is not None:
            self.agent.stop()
        self.runner.scans.drop()
        self.worker.shutdown(wait=True, cancel_futures=True)
        self.runner.perform(co.CloseCamera())
        self.clear_preview()
