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
from .. import consent, i18n
from ..face.gates import GUIDANCE
from ..i18n import N_, _
from ..money import parse_amount
from ..payments.journal import new_sale_id
from ..runner import Runner
from ..staff import PinGate

_log = logging.getLogger(__name__)

SLOW = {co.Charge, co.ResolveCharge, co.StoreEnrolment, co.RevokeShopper, co.VerifyPhone, co.VerifyUnlock,
        co.LookupCard, co.OpenCamera, co.CloseCamera, co.DropCaptures}
STAFF_IDLE_LOCK_S = 300

# The machine's message ids, as the shopper reads them (English msgids of the catalogues, translated when
# shown).  The result screen's headline already says "Cancelled": these say what happened and what next.
MESSAGES = {
    "no_match": N_("We could not find you. Pay by card, or try again."),
    "no_match_too_close": N_("Your face is close to two enrolled shoppers, so we cannot tell which one you are. "
                             "Please pay by card. If you enrolled twice, delete one enrolment at My data with its "
                             "card."),
    "scan_timeout": N_("The camera is off again: no face was recognised in time."),
    "camera_fault": N_("The camera is not working. Please pay by card."),
    "stepup_unavailable": N_("We are not sure enough it is you. Please pay by card."),
    "phone_mismatch": N_("Those digits do not match. Try again."),
    "cancelled": N_("Nothing was charged."),
    "timed out": N_("Time ran out before you confirmed. Nothing was charged."),
    "shopper opted out": N_("This face pay account was just deleted. Nothing was charged."),
    "phone digits did not match": N_("The phone digits did not match. Nothing was charged."),
    "face_pay_suspended": N_("Face pay is paused for this account after too many wrong phone digits. Please pay "
                             "by card. To switch it back on: My data, tap your card, enter your digits."),
    "face_pay_unlocked": N_("Face pay is on again for this card."),
    "liveness_failed": N_("The head turn was not seen. Please try again or pay by card. Nothing was charged."),
    "random_uid": co.RANDOM_UID_SENTENCE,
    "not_recorded": N_("This terminal cannot record payments right now. Nothing was charged. Please ask staff."),
    "key_reused": N_("The payment service refused this payment before making it. Nothing was charged. "
                     "Please ask staff."),
    "not_sent": N_("This payment was not sent. Nothing was charged."),
    "declined": N_("The card issuer declined the payment. Nothing was charged."),
    "insufficient funds": N_("Declined: insufficient funds. Nothing was charged."),
}
# What the shopper typed wrong on the details form, from the machine's reasons.
FORM_ERRORS = {
    "a name is required": N_("Please enter your name."),
    "the phone digits must be exactly four digits": N_("Enter exactly 4 digits: the last 4 of your phone number."),
    "enter the last 4 digits of your phone number: they are asked before face payments":
        N_("Enter the last 4 digits of your phone number: they are asked before face payments."),
    "face pay is cooling down after failed liveness checks: try again in a minute":
        N_("Face pay is paused for a minute after failed head-turn checks. Try again in a minute."),
}
# A failed enrolment, in enrolment words: (what failed, what to do), English msgids translated when shown.
# "liveness:REASON:SIDE" codes come from the head-turn check (terminal/face/liveness.py REASONS); {side} is
# the side the arrow asked for (SIDES, translated too).
ENROL_FAILURES = {
    "liveness:not_frontal": (N_("We never saw your face straight on before the turn."),
                             N_("Try again: first look straight at the screen, then turn your head when the arrow "
                                "shows.")),
    "liveness:timeout": (N_("We did not see your head turn to your {side} in time."),
                         N_("Try again: look at the screen, then slowly turn your head to your {side}, "
                            "the way the arrow points.")),
    "liveness:wrong_direction": (N_("Your head turned to the other side first."),
                                 N_("Try again and turn only to your {side}, the way the arrow points.")),
    "liveness:face_lost": (N_("Your face left the picture or was hidden during the turn."),
                           N_("Try again: stay in the middle of the picture and turn slowly.")),
    "liveness:too_slow": (N_("The terminal could not keep up with your turn."),
                          N_("Try again: turn your head slowly, the way the arrow points.")),
    "liveness:flat": (N_("The face moved like a flat picture (a photo or a screen)."),
                      N_("Enrolment needs you in person in front of the camera.")),
    "liveness:cut": (N_("The picture changed in a way no head moves."),
                     N_("Enrolment needs you in person in front of the camera.")),
    "liveness:different_person": (N_("The face at the end of the turn was not the one at its start."),
                                  N_("Try again with only one person in front of the camera.")),
    "liveness:no_face": (N_("We could not see one face clearly."),
                         N_("Try again alone, about an arm's length from the screen, in good light.")),
    "camera_fault": (N_("The camera is not working."), N_("Please ask staff. You can still pay by card.")),
    "card_linked": (N_("This card is already linked to another face enrolment."),
                    N_("Try again with another card, or first delete that enrolment at My data with this card.")),
    "replace_phone_mismatch": (N_("The phone digits did not match your earlier enrolment, so it was kept."),
                               N_("Nothing was changed. Ask at the till if you no longer know them.")),
    "face_pay_suspended": (N_("Face pay is paused for your earlier enrolment after too many wrong phone digits."),
                           N_("Nothing was changed. To switch it back on: My data, tap that card, enter your "
                              "digits.")),
}
# An enrolment failure the kiosk has no words of its own for (the service's error, in English): said as
# a general failure, with the English reason kept in the log only.
ENROL_FAILED_OTHER = (N_("The enrolment could not be saved."), N_("Try again, or ask staff."))
NO_RETRY = ("camera_fault", "replace_phone_mismatch", "face_pay_suspended")
SIDES = {"left": N_("left"), "right": N_("right"), "": N_("left or right")}


def enrol_failure(message: str) -> tuple[str, str, bool]:
    """What the failed-enrolment screen says, in the active language: what failed, what to do, and whether
    "Try again" is offered."""
    key, side = message, ""
    if message.startswith("liveness:"):
        _unused, reason, side = (message.split(":") + ["", ""])[:3]
        key = "liveness:" + reason
    if key in ENROL_FAILURES:
        what, todo = ENROL_FAILURES[key]
    else:
        _log.info("enrolment failed: %s", message)
        what, todo = ENROL_FAILED_OTHER
    side = _(SIDES.get(side, SIDES[""]))
    what, todo = _(what, side=side), _(todo, side=side)
    if key not in NO_RETRY:
        todo += " " + _("No face data was kept.")
    return what, todo, key not in NO_RETRY


# The head-turn challenge: an arrow and one short sentence.  The arrow points to the shopper's own side
# as they face the screen, whether or not the preview is mirrored.
CHALLENGE_ARROWS = {"left": "\u2190", "right": "\u2192"}
CHALLENGE_TEXT = {"left": N_("Slowly turn your head to your left"),
                  "right": N_("Slowly turn your head to your right")}
MODE_NAMES = {"normal": N_("Normal"), "card_only": N_("Card only"), "enrolment": N_("Enrolment"),
              "training": N_("Training"), "out_of_service": N_("Out of service")}
MORE_TIME_MAX = 3        # "More time" extends a timeout at most this often (EN 301 549 5.2: at least twice)
WARN_S = 5               # seconds before a timeout when the kiosk warns, by sight and sound
TICK_S = 3               # the last seconds, each with a tick


def _next_language(lang: str) -> str:
    codes = list(i18n.LANGUAGES)
    return codes[(codes.index(lang) + 1) % len(codes)]


def short_receipt(sale_id: str) -> str:
    """The receipt number a shopper reads out to staff: the sale id's random tail, upper case ("A1B2C3")."""
    return sale_id.rsplit("_", 1)[-1].upper()


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
    lang = StringProperty("en")           # the shopper's language (terminal/i18n.py)
    high_contrast = BooleanProperty(False)  # the high-contrast large-text mode
    speech_on = BooleanProperty(False)
    notice = StringProperty("")           # the attract screen's line after a flow ended by itself
    result_title = StringProperty("")
    result_detail = StringProperty("")
    form_error = StringProperty("")       # why the details form was not accepted
    confirm_delete = BooleanProperty(False)   # "Delete my face data now" pressed once: ask again
    flow = NumericProperty(0)             # counts flows that ended: screens clear their fields on it
    timer_running = BooleanProperty(False)    # a shopper timeout counts down: "More time" shows
    time_low = BooleanProperty(False)     # the timeout is WARN_S seconds or less away
    more_time_left = NumericProperty(MORE_TIME_MAX)
    next_language_name = StringProperty("")   # the strip's language button: the next language, in itself
    receipt_qr = StringProperty("")       # the customer receipt's text as a QR code on the result screen

    def __init__(self, term, hardware, demo: bool = False, **kw):
        super().__init__(**kw)
        self.term = term
        self.hw = hardware
        self.demo = demo
        self.machine = co.CheckoutMachine(term.policy(), face_pay=term.cfg.face_pay, mode=term.mode(),
                                          fleet_paused=term.fleet is not None and term.fleet_paused())
        self.runner = Runner(term, self.machine, hardware.camera, hardware.leds, on_timer=self._start_timer)
        self.runner.on_cooldown = self._start_cooldown
        self.agent = None
        if term.fleet is not None:  # fleet hook: the same agent as `facepay agent`, in a thread
            from ..fleet_agent import AgentThread

            self.agent = AgentThread(term.cfg, term.data_dir, health=hardware.health,
                                     is_idle=lambda: self.state in ("idle", "out_of_service")).start()
        self.worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kiosk-worker")
        self.pins = PinGate(term.cfg.staff.pin_hash, load=lambda: term.store.settings().get("staff_pin"),
                            save=lambda state: term.store.set_setting("staff_pin", state))
        self.runner.pins = self.pins
        self.runner.doctor = self._doctor_lines
        self.merchant = term.cfg.payment.merchant
        self.captures_needed = term.cfg.match.enrol_captures
        self.refusals: list[co.Refusal] = []   # every event the machine refused, with its reason
        self.observers: list = []           # called with every snapshot (the till link, terminal/ui/till.py)
        self._receipt_for: str | None = None
        self._countdown_ev = None
        self._timer_ev = None
        self._timer_seconds = 0.0
        self._staff_touched = 0.0
        self._said = None
        self._prev_state = "idle"
        self.spoken: list[str] = []       # every line spoken (also with speech off: what would have been)
        a11y = term.cfg.accessibility
        from ..speech import make_speaker

        self.speaker = make_speaker(a11y)
        self.default_lang = a11y.language
        self.lang = a11y.language
        i18n.activate(self.lang)
        self.next_language_name = i18n.LANGUAGES[_next_language(self.lang)][0]
        self.speech_on = a11y.speech_on
        self.jack = None
        if a11y.headphone_gpio >= 0:
            from ..speech import HeadphoneJack

            self.jack = HeadphoneJack(a11y.headphone_gpio, lambda inserted: Clock.schedule_once(
                lambda dt: self.headphones(inserted), 0), pin_factory=getattr(hardware.leds, "pin_factory", None))
            self.speech_on = self.speech_on or self.jack.inserted
        self.load_consent(self.lang)
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
            self.refusals.append(co.Refusal(type(event).__name__, exc.reason))
            _log.info("rejected %s: %s", type(event).__name__, exc.reason)
            if isinstance(event, (co.EnrolDetails, co.PhoneDigits, co.UnlockFacePay)):
                reason = exc.reason
                self.form_error = _(FORM_ERRORS.get(reason, reason))
                self.say(self.form_error, cue="failure")
            self._refresh()
            return False
        before = self.state
        for eff in slow:
            self._run_slow(eff)
        self._refresh()
        if isinstance(event, co.Timeout) and before not in ("idle", "unknown") and self.state == "idle":
            # a flow that ended by itself says so where the next shopper looks, and out loud
            self.notice = _("Time ran out, so the previous screen was closed.")
            self.say(self.notice)
            Clock.schedule_once(lambda dt: setattr(self, "notice", ""), 12)
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
        if self._timer_ev is not None:
            self._timer_ev.cancel()
        token = eff.token
        self._timer_ev = Clock.schedule_once(lambda dt: self.send(co.Timeout(token)), eff.seconds)
        self._timer_seconds = eff.seconds
        if self._countdown_ev is not None:
            self._countdown_ev.cancel()
        self.countdown = int(eff.seconds)
        self.more_time_left = MORE_TIME_MAX
        self.time_low = False
        self.timer_running = self.machine.state != co.State.UNKNOWN   # asking the processor again is no timeout

        started_in = self.machine.state

        def tick(dt):
            # a timer ends with its state too (a scan that ended leaves its token behind)
            if self.machine.view().timer != token or self.countdown <= 0 or self.machine.state != started_in:
                self.timer_running = self.time_low = False
                return False
            self.countdown -= 1
            if self.timer_running:
                self._warn_time()
            return True

        self._countdown_ev = Clock.schedule_interval(tick, 1.0)

    def _warn_time(self) -> None:
        """Before a timeout runs out: by sight (time_low) and by sound (a warning, then ticks)."""
        self.time_low = 0 < self.countdown <= WARN_S
        if self.countdown == WARN_S:
            line = _("{seconds} seconds left.", seconds=self.countdown)
            if self.more_time_left:
                line += " " + _("Press More time, or the plus key, for more time.")
            self.say(line, cue="warning", force_cue=True)
        elif 0 < self.countdown <= TICK_S:
            self.cue("tick")

    def more_time(self) -> bool:
        """Push the running timeout back by its full length again (at most MORE_TIME_MAX times)."""
        if not self.timer_running or self._timer_ev is None or self.more_time_left <= 0:
            return False
        token = self.machine.view().timer
        self._timer_ev.cancel()
        self.countdown = int(self.countdown + self._timer_seconds)
        self._timer_ev = Clock.schedule_once(lambda dt: self.send(co.Timeout(token)), self.countdown)
        self.more_time_left -= 1
        self.time_low = False
        self.say(_("{seconds} seconds more.", seconds=int(self._timer_seconds)))
        if self.challenge and self.machine.state in co.CAMERA_STATES and not self.snap.get("live"):
            # the head turn's own window grows too (the runner's check reads it from the machine)
            if self.send(co.MoreTime()):
                self.say(_("More time to turn your head: {seconds} seconds more.",
                           seconds=int(self.term.cfg.liveness.timeout_s)))
        return True

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
        if mode != self.machine.view().mode and self.machine.state in (co.State.IDLE, co.State.OUT_OF_SERVICE):
            self.send(co.SetMode(mode, record=False))
        if self.term.fleet is not None:  # fail closed while out of touch with the fleet's revocations
            from ..fleet.link import PAUSED_MESSAGE

            paused = self.term.fleet_paused()
            self.fleet_notice = PAUSED_MESSAGE if paused else ""
            if paused != self.machine.view().fleet_paused:
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
        view = self.machine.view()
        self.staff_view, self.staff_unlocked = view.staff_screen, view.staff_unlocked
        self.staff_message = self._staff_words(view.staff_note)
        self.report_text = "\n".join(view.staff_report)
        self.mode = snap["mode"]
        self.face_pay = snap["face_pay"]
        self.reader_ok = snap["reader_ok"]
        self.camera_ok = snap["camera_ok"]
        sale = snap["sale"]
        self.amount_text = i18n.amount(sale["amount_minor"], sale["currency"], self.lang) if sale else ""
        g = snap["guidance"]
        self.guidance = _(GUIDANCE.get(g, MESSAGES.get(g, ""))) if g else ""
        msg = snap["message"]
        self.message = _(MESSAGES.get(msg, msg)) if msg else ""
        self._result_text(snap)
        cand = snap["candidate"]
        self.shopper_name = cand["masked_name"] if cand else ""
        self.shopper_card = cand["masked_card"] if cand else ""
        self.captures = snap["enrol_captures"]
        self.stepup_needed = bool(snap["stepup_required"] and not snap["stepup_ok"])
        ch = snap["challenge"] if not snap["live"] else None
        self.challenge = ch or ""
        self.challenge_arrow = CHALLENGE_ARROWS.get(ch, "")
        self.challenge_text = _(CHALLENGE_TEXT[ch]) if ch in CHALLENGE_TEXT else ""
        md = snap["mydata"]
        self.has_mydata = bool(md)
        self.mydata_suspended = bool(md and md["suspended"])
        if md:
            self.mydata_text = _("A face is enrolled for card {card}\nName: {name}\nSince: {since}",
                                 card=md["masked_card"], name=md["masked_name"],
                                 since=i18n.date(md["enrolled_at"], self.lang) if md["enrolled_at"] else "")
            if md["suspended"]:
                self.mydata_text += "\n" + _("Face pay is paused after too many wrong phone digits. Enter the "
                                              "last 4 digits of your phone number to switch it back on.")
        elif self.state == "mydata_show":
            self.mydata_text = _("No face is enrolled for this card. Nothing about you is stored for face pay.")
        if self.state != "mydata_show":
            self.confirm_delete = False
        en = snap["enrolled"]
        self.optout_code = self.term.optout_codes.get(en["shopper_id"], "") if en else ""
        url = self.term.cfg.fleet.optout_url
        self.optout_qr = (f"{url}?code={self.optout_code}" if url else self.optout_code) if self.optout_code else ""
        self.optout_url = url if self.optout_code else ""
        dup = snap["duplicate"]
        if en:
            self.enrolled_text = (_("Stored: one encrypted face template (no photo), linked to card {card}, with a "
                                    "phone-digits check.", card=en["masked_card"]) if en["has_phone"] else
                                  _("Stored: one encrypted face template (no photo), linked to card {card}.",
                                    card=en["masked_card"]))
            self.enrolled_text += "\n" + _("To delete it: My data on this screen, or ask at the till.")
            if dup and snap["receipt_id"]:
                self.enrolled_text += "\n" + _("Your earlier enrolment (card {card}) was deleted: receipt {id}.",
                                               card=dup["masked_card"], id=snap["receipt_id"])
        if self.state == "enrol_failed" and msg:
            self.failure_text, self.failure_hint, self.can_retry = enrol_failure(msg)
        if self.state == "enrol_duplicate" and dup:
            new_card = self.machine.view().enrol_card_masked
            self.can_replace = not snap["duplicate_same_card"] and dup["has_phone"]
            since = i18n.date(dup["enrolled_at"], self.lang) if dup["enrolled_at"] else ""
            if snap["duplicate_same_card"]:
                self.duplicate_text = _("Your face is already set up for face pay with this card ({card}), since "
                                        "{since}. Nothing new was stored: pay by face as before.",
                                        card=dup["masked_card"], since=since)
            else:
                self.duplicate_text = (
                    _("Your face is already set up for face pay with card {card} ({name}, since {since}). Nothing "
                      "new was stored.", card=dup["masked_card"], name=dup["masked_name"], since=since) + "\n"
                    + (_("To pay with the card you just tapped ({card}) instead, enter the last 4 phone digits "
                         "you gave then: the earlier enrolment is deleted, with a receipt.", card=new_card)
                       if self.can_replace else
                       _("To move face pay to the new card, delete the earlier enrolment at My data with its card, "
                         "then enrol again.")))
        r = self.term.store.receipt(snap["receipt_id"]) if snap["receipt_id"] else None
        if r is not None:
            self.receipt_text = _("Deletion receipt {id}\n{at}\nDeleted: {what}", id=r.id, at=r.at,
                                  what="; ".join(r.deleted))
        self._receipt(snap)
        for fn in list(self.observers):
            fn(snap)
        screen = screen_for(self.machine.state)
        if self.staff_view and self.machine.state in (co.State.IDLE, co.State.OUT_OF_SERVICE):
            screen = self.staff_view
        resting = ("idle", "out_of_service")
        if self._prev_state not in resting and self.state in resting:
            self._flow_ended()
        if self.state != self._prev_state:
            self.form_error = ""
        self._prev_state = self.state
        self.screen = screen
        self._announce()

    def _result_text(self, snap: dict) -> None:
        """The result screen's headline and one detail line, without saying the same thing twice."""
        st = snap["state"]
        sale = snap["sale"]
        if st == "approved":
            self.result_title = _("Paid {amount}", amount=self.amount_text)
            self.result_detail = _("Thank you!")
        elif st == "declined":
            self.result_title = _("Declined")
            self.result_detail = self.message or _("Nothing was charged.")
        elif st == "unknown":
            self.result_title = _("Not confirmed")
            self.result_detail = _("Payment not confirmed: do not pay again. Staff will check receipt number "
                                   "{receipt}.", receipt=short_receipt(sale["sale_id"]) if sale else "")
        elif st == "cancelled":
            self.result_title = _("Cancelled")
            self.result_detail = self.message or _("Nothing was charged.")
            if _("Nothing was charged.") not in self.result_detail and sale is not None:
                self.result_detail += " " + _("Nothing was charged.")
        else:
            self.result_title = self.result_detail = ""

    def _flow_ended(self) -> None:
        """A shopper's flow is over: forget what they typed and chose, for the next shopper."""
        self.flow += 1
        self.keypad = ""
        self.form_error = ""
        self.confirm_delete = False
        if self.lang != self.default_lang:
            self.set_language(self.default_lang)
        self.high_contrast = False

    # -- speech ----------------------------------------------------------------------------
    def say(self, text: str, cue: str | None = None, force_cue: bool = False) -> None:
        """Speak a line (when speech is on); every line is kept in ``spoken`` either way."""
        self.spoken.append(text)
        if self.speech_on:
            if cue:
                self.speaker.cue(cue)
            self.speaker.say(text, self.lang)
        elif cue and force_cue:
            self.speaker.cue(cue)

    def cue(self, name: str) -> None:
        """Audio cues sound for everyone: scan start, success, failure, the countdown's last seconds."""
        self.speaker.cue(name)

    def _announce(self) -> None:
        from .spoken import announcement, cue_for

        key = (self.screen, self.state, self.message, self.guidance, self.challenge, self.captures,
               self.stepup_needed, self.mydata_suspended, self.confirm_delete, self.lang, self.notice)
        if key == self._said:
            return
        first = self._said is None or self._said[:2] != key[:2]
        if first or self._said[9:] != key[9:]:
            line = announcement(self)
        else:   # the same screen: only what changed on it (a guidance, the head turn, a message)
            old = dict(zip(("message", "guidance", "challenge"), self._said[2:5]))
            line = " ".join(t for t in (self.message if self.message != old["message"] else "",
                                        self.guidance if self.guidance != old["guidance"] else "",
                                        self.challenge_text if self.challenge != old["challenge"] else "") if t)
            if not line and key[5:9] != self._said[5:9]:
                line = announcement(self)
        self._said = key
        c = cue_for(self.state) if first else None
        if c:
            self.cue(c)
        if line:
            self.say(line)

    def repeat(self) -> None:
        """Say the screen again (the keypad's "." or a second long press)."""
        from .spoken import announcement

        self.say(announcement(self))

    def set_speech(self, on: bool) -> None:
        self.speech_on = on
        if on:
            self.speaker.say(_("Speech is on."), self.lang)
            self.repeat()
        else:
            self.speaker.stop()
            self.spoken.append(_("Speech is off."))

    def toggle_speech(self) -> None:
        self.set_speech(not self.speech_on)

    def headphones(self, inserted: bool) -> None:
        self.set_speech(inserted)

    def set_language(self, lang: str) -> None:
        i18n.activate(lang)
        self.lang = lang
        self.next_language_name = i18n.LANGUAGES[_next_language(lang)][0]
        self.load_consent(lang)   # every kiosk language has its own versioned consent text
        self._said = None
        self._refresh()

    def next_language(self) -> None:
        self.set_language(_next_language(self.lang))

    def toggle_contrast(self) -> None:
        self.high_contrast = not self.high_contrast
        self.say(_("High contrast, large text.") if self.high_contrast else _("Normal contrast and text size."))

    def typed_amount(self, keypad: str, lang: str) -> str:
        """What the staff keypad holds, as the shopper will see it ("€4.20"; "€0.00" before any key)."""
        cur = self.term.cfg.payment.currency
        try:
            minor = parse_amount(keypad, cur) if keypad.strip(".") else 0
        except ValueError:
            return keypad + " " + cur
        return i18n.amount(minor, cur, lang)

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
        self.message = _("Hold your card flat on the reader, below the screen.")
        self.say(self.message)

    def choose_face(self):
        return self.send(co.ChooseFace())

    def cancel(self):
        return self.send(co.Cancel())

    def done(self):
        return self.send(co.Done())

    def confirm(self):
        view = self.machine.view()
        sale, cand = view.sale, view.candidate
        if sale is None or cand is None:
            return False
        return self.send(co.Confirm(sale.amount_minor, cand.shopper_id))

    def phone_digits(self, digits: str):
        return self.send(co.PhoneDigits(digits))

    def start_enrolment(self):
        self.load_consent(self.lang)
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
        self.form_error = ""
        return self.send(co.EnrolDetails(name.strip(), phone.strip() or None))

    def start_mydata(self):
        self.receipt_text = ""
        self.keypad = ""
        return self.send(co.StartMyData())

    def unlock_face_pay(self, digits: str):
        return self.send(co.UnlockFacePay(digits))

    def delete_mydata(self):
        """The first press asks once more; only the second ("Yes, delete now") deletes."""
        if not self.confirm_delete:
            self.confirm_delete = self.has_mydata
            self._announce()
            return False
        self.confirm_delete = False
        return self.send(co.DeleteMyData())

    def keep_mydata(self):
        self.confirm_delete = False
        self._announce()

    def retry_enrolment(self):
        return self.send(co.RetryEnrolment())

    def replace_enrolment(self, digits: str):
        """"Use the new card": the earlier enrolment's phone digits prove it is the shopper's own."""
        return self.send(co.PhoneDigits(digits))

    # -- staff: the machine's staff flow (checkout/staff.py); the keypad and the idle clock are the kiosk's --
    def open_staff(self):
        self._staff_touched = time.monotonic()
        self.keypad = ""
        return self.send(co.OpenStaff())

    def close_staff(self):
        return self.send(co.CloseStaff())

    def lock_staff(self):
        return self.send(co.LockStaff())

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
        digits, self.keypad = self.keypad, ""
        self.send(co.StaffPin(digits))
        return self.staff_unlocked

    def staff_new_sale(self):
        self.keypad = ""
        return self.send(co.StaffNewSale())

    def submit_amount(self):
        if not self.send(co.StaffAmount(self.keypad, self.term.cfg.payment.currency, new_sale_id())):
            self.keypad = ""
            self.send(co.CloseStaff())   # refused (out of service, enrolment mode): the reason is shown at rest
            return False
        if self.machine.view().staff_note.code == "amount":
            return False   # not an amount: the panel says why, the keypad keeps what was typed
        self.keypad = ""
        return True

    def start_sale(self, amount_minor: int):
        self.send(co.CloseStaff())
        return self.send(co.StartSale(new_sale_id(), amount_minor, self.term.cfg.payment.currency))

    def set_mode(self, mode: str):
        """The staff menu's mode: the machine's PersistMode and Record effects store it and write the ledger."""
        if not self.send(co.StaffSetMode(mode)):
            self.staff_message = self.refusals[-1].reason
            return False
        return True

    def void_last(self):
        return self._reverse("void")

    def refund_last(self):
        return self._reverse("refund")

    def _reverse(self, kind: str):
        self.send(co.StaffReverse(kind))
        done = self.machine.view().staff_note.reversal
        return done is not None and done.status == "approved"

    def show_report(self):
        return self.send(co.ShowReport())

    def show_doctor(self):
        return self.send(co.ShowDoctor())

    def _doctor_lines(self, skip_camera: bool) -> list[str]:
        from ..doctor import collect

        results = collect(self.term, self.hw, skip={"camera"} if skip_camera else set(), demo=self.demo)
        return [f"[{'FAIL' if not c.ok else 'WARN' if c.warn else 'OK'}] {c.name}: {c.detail}" for c in results]

    def _staff_words(self, note: co.StaffNote) -> str:
        """What the staff panel says, in the kiosk's language."""
        code = note.code
        if code == "pin_locked":
            return _("Locked: try again in {seconds} s", seconds=int(note.wait_s) + 1)
        if code == "pin_wrong":
            return _("Wrong PIN: locked for {seconds} s", seconds=int(note.wait_s) + 1) if note.wait_s else _("Wrong PIN")
        if code in ("amount", "error"):
            return note.words
        if code == "mode":
            return _("Mode: {mode}", mode=_(MODE_NAMES[note.mode]))
        if code == "no_sales":
            return _("No sales yet")
        if code == "reversed":
            r = note.reversal
            amount = i18n.amount(r.amount_minor, r.currency, self.lang)
            what = _("Void of {amount}: {status}", amount=amount, status=r.status) if r.kind == "void" else \
                _("Refund of {amount}: {status}", amount=amount, status=r.status)
            return what + (" " + _("(already done)") if r.repeated else "")
        return ""

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
