"""The checkout state machine: pure Python, no Kivy, no hardware, no threads.

The UI and the CLI both drive it.  Hardware and processor results arrive as
events; :meth:`CheckoutMachine.handle` returns the effects to perform (open
the camera, close it, charge an amount, record a consent event, light LEDs).
An event that makes no sense in the current state raises :class:`Rejected`
with the reason and changes nothing.

The promises it enforces:
- the camera opens only in FACE_SCAN or ENROL_CAPTURE, and every way out of
  those states closes it;
- a face match never charges: only ``Confirm`` with the exact amount and
  shopper shown (and the phone digits when a step-up was asked) does;
- a revoked shopper is never shown again, whatever the matcher says;
- with face pay off (config or staff mode) no face step can start;
- no liveness, no match: with liveness required, a face is matched or an
  enrolment capture kept only after ``LivenessPassed`` in that very scan; three
  failed challenges in a row put face pay into a cool-down.
- a random card UID (a phone, many bank cards: a new number at each tap) is never linked to a
  shopper: refused at enrolment and "my data", paid without a shopper link;
- a charge has one of three outcomes: approved, declined (the processor said
  no) or unknown.  Unknown is never shown as declined: the screen says
  :data:`UNKNOWN_MESSAGE`, the fault LED blinks, and the processor is asked by
  the idempotency key (:class:`ResolveCharge`) until it answers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from .face.liveness import CHALLENGES, pick_challenge
from .face.matcher import TOO_CLOSE, false_match_in_gallery


class State(enum.StrEnum):
    IDLE = "idle"
    AMOUNT_DUE = "amount_due"
    FACE_SCAN = "face_scan"
    CONSENT = "consent"
    CHARGING = "charging"
    APPROVED = "approved"
    DECLINED = "declined"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    ENROL_CONSENT = "enrol_consent"
    ENROL_DETAILS = "enrol_details"
    ENROL_CAPTURE = "enrol_capture"
    ENROL_CARD = "enrol_card"
    ENROL_SAVING = "enrol_saving"
    ENROL_DONE = "enrol_done"
    ENROL_DUPLICATE = "enrol_duplicate"   # this face is enrolled already: keep that enrolment, or move it here
    ENROL_FAILED = "enrol_failed"         # nothing was stored: what failed, what to do, "Try again"
    MYDATA_TAP = "mydata_tap"
    MYDATA_LOOKUP = "mydata_lookup"
    MYDATA_SHOW = "mydata_show"
    MYDATA_DELETING = "mydata_deleting"
    MYDATA_DELETED = "mydata_deleted"
    OUT_OF_SERVICE = "out_of_service"


CAMERA_STATES = frozenset({State.FACE_SCAN, State.ENROL_CAPTURE})
RESULT_STATES = frozenset({State.APPROVED, State.DECLINED, State.UNKNOWN, State.CANCELLED, State.ENROL_DONE,
                           State.ENROL_FAILED, State.MYDATA_DELETED})
MODES = ("normal", "card_only", "enrolment", "training", "out_of_service")
MAX_PHONE_TRIES = 3
LIVENESS_STRIKES = 3       # failed liveness challenges in a row before the cool-down
# What the shopper reads when a random UID is tapped where the card must name them.
RANDOM_UID_SENTENCE = "This card or phone shows a different number each time. Please use a physical card."

# What a Charge can come to.  "not_charged": the request was certainly never made (the journal could
# not record the sale, or the processor refused a reused idempotency key), so the sale ends cancelled.
OUTCOMES = ("approved", "declined", "unknown", "not_charged")
UNKNOWN_MESSAGE = "Payment not confirmed - do not pay again; staff will check sale {sale_id}"


class Rejected(Exception):
    """An event that is not valid in the current state; nothing changed."""


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ShopperView:
    """What the machine may know of a matched or looked-up shopper: no biometrics."""

    shopper_id: str
    masked_name: str
    masked_card: str
    token: str
    has_phone: bool = False
    enrolled_at: str = ""
    suspended: bool = False   # face pay suspended after too many wrong phone digits (unlock at "my data")


@dataclass(frozen=True)
class Sale:
    sale_id: str
    amount_minor: int
    currency: str
    training: bool = False


@dataclass(frozen=True)
class Policy:
    threshold: float = 0.55
    stepup_margin: float = 0.15
    stepup_false_match_bound: float = 0.001
    false_match_rate: float = 0.033
    enrol_captures: int = 3
    scan_timeout_s: float = 15.0
    consent_timeout_s: float = 20.0
    result_timeout_s: float = 6.0
    liveness_required: bool = True
    cooldown_s: float = 60.0
    resolve_interval_s: float = 5.0   # how often an unknown outcome is asked about again

    def needs_stepup(self, margin: float | None, gallery_size: int) -> bool:
        """Ask for the phone digits: the margin is small, or 1-(1-f)^N for this gallery passes the bound."""
        if margin is not None and margin < self.stepup_margin:
            return True
        return false_match_in_gallery(self.false_match_rate, gallery_size) > self.stepup_false_match_bound

    @property
    def phone_required(self) -> bool:
        """Even a one-shopper gallery needs the step-up: enrolment must then take phone digits."""
        return self.needs_stepup(None, 1)


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class StartSale:
    sale_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class ChooseFace:
    challenge: str | None = None   # None: the machine draws left or right at random (the kiosk)


@dataclass(frozen=True)
class CardTapped:
    card_hash: str
    masked_card: str
    token: str
    random_uid: bool = False   # ISO/IEC 14443-3 random ID (08xxxxxx): a new number at every tap


@dataclass(frozen=True)
class FaceGuidance:
    reason: str


@dataclass(frozen=True)
class FaceMatched:
    shopper: ShopperView
    distance: float
    margin: float | None
    gallery_size: int


@dataclass(frozen=True)
class FaceNoMatch:
    reason: str


@dataclass(frozen=True)
class LivenessPassed:
    pass


@dataclass(frozen=True)
class LivenessFailed:
    reason: str


@dataclass(frozen=True)
class CooldownOver:
    token: int


@dataclass(frozen=True)
class PhoneDigits:
    digits: str


@dataclass(frozen=True)
class PhoneChecked:
    ok: bool
    suspended: bool = False   # this wrong entry reached the per-shopper limit: face pay suspended


@dataclass(frozen=True)
class UnlockFacePay:
    """At "my data": the digits a shopper whose face pay is suspended typed to switch it back on."""

    digits: str


@dataclass(frozen=True)
class UnlockChecked:
    ok: bool


@dataclass(frozen=True)
class Confirm:
    amount_minor: int
    shopper_id: str


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Timeout:
    token: int


@dataclass(frozen=True)
class ChargeResult:
    sale_id: str
    outcome: str      # one of OUTCOMES
    reason: str = ""


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class StartEnrolment:
    pass


@dataclass(frozen=True)
class AgreeConsent:
    version: str
    text_hash: str


@dataclass(frozen=True)
class EnrolDetails:
    name: str
    phone_last4: str | None = None
    challenge: str | None = None   # None: drawn at random


@dataclass(frozen=True)
class CaptureAccepted:
    count: int


@dataclass(frozen=True)
class EnrolStored:
    shopper: ShopperView
    replaced_receipt: str | None = None   # the deletion receipt of the earlier enrolment it replaced


@dataclass(frozen=True)
class EnrolFailed:
    reason: str   # a code the kiosk explains ("card_linked", "camera_fault", ...) or the error's own words


@dataclass(frozen=True)
class AlreadyEnrolled:
    """The 1:N search before storing found this face enrolled already: nothing was stored."""

    shopper: ShopperView
    same_card: bool   # enrolled with the very card just tapped


@dataclass(frozen=True)
class RetryEnrolment:
    """"Try again" after a failed enrolment: the same consent and details, a new capture."""


@dataclass(frozen=True)
class StartMyData:
    pass


@dataclass(frozen=True)
class LookupResult:
    shopper: ShopperView | None


@dataclass(frozen=True)
class DeleteMyData:
    pass


@dataclass(frozen=True)
class Revoked:
    shopper_id: str
    receipt_id: str


@dataclass(frozen=True)
class SetMode:
    mode: str
    record: bool = True   # False when another process (the CLI) already recorded the change


@dataclass(frozen=True)
class ReaderStatus:
    ok: bool


@dataclass(frozen=True)
class FleetStatus:
    paused: bool  # in a fleet and not caught up with its revocations within [fleet] max_staleness_s: card only


@dataclass(frozen=True)
class CameraFault:
    reason: str


# --------------------------------------------------------------------------- effects
@dataclass(frozen=True)
class OpenCamera:
    purpose: str  # "payment" or "enrolment"
    scan: int = 0  # this opening's token: the runner opens the device only while it is the scan wanted
    challenge: str | None = None  # the head turn asked for; None when liveness is not required


@dataclass(frozen=True)
class StartCooldown:
    token: int
    seconds: float


@dataclass(frozen=True)
class CloseCamera:
    scan: int = 0  # the token of the scan it ends


@dataclass(frozen=True)
class StartTimer:
    token: int
    seconds: float


@dataclass(frozen=True)
class Charge:
    sale: Sale
    method: str  # "face" or "card"
    token: str
    shopper_id: str | None
    card_hash: str | None
    masked_card: str = ""   # what the receipt shows of the card (the shopper's linked card for a face payment)


@dataclass(frozen=True)
class ResolveCharge:
    """Ask the processor by the sale's idempotency key what became of it; never charges."""

    sale_id: str


@dataclass(frozen=True)
class Record:
    kind: str
    subject: str
    details: dict


@dataclass(frozen=True)
class VerifyPhone:
    shopper_id: str
    digits: str


@dataclass(frozen=True)
class VerifyUnlock:
    shopper_id: str
    digits: str


@dataclass(frozen=True)
class StoreEnrolment:
    name: str
    phone_last4: str | None
    consent_version: str
    consent_text_hash: str
    card_hash: str
    masked_card: str
    token: str
    replace: str | None = None   # the shopper id of this face's earlier enrolment, deleted first (a receipt)


@dataclass(frozen=True)
class DropCaptures:
    """The enrolment flow ended: forget the captured descriptors held in memory."""


@dataclass(frozen=True)
class LookupCard:
    card_hash: str


@dataclass(frozen=True)
class RevokeShopper:
    shopper_id: str


@dataclass(frozen=True)
class LoadGallery:
    pass


@dataclass(frozen=True)
class DropGallery:
    pass


@dataclass(frozen=True)
class Leds:
    pattern: str  # idle, amount_due, scanning, consent, processing, approved, declined, fault, off


# --------------------------------------------------------------------------- machine
@dataclass
class Context:
    state: State = State.IDLE
    mode: str = "normal"
    face_pay_config: bool = True
    sale: Sale | None = None
    candidate: ShopperView | None = None
    stepup_required: bool = False
    stepup_ok: bool = False
    phone_tries: int = 0
    guidance: str | None = None
    message: str | None = None
    enrol_consent: tuple[str, str] | None = None
    enrol_details: EnrolDetails | None = None
    enrol_captures: int = 0
    enrolled: ShopperView | None = None
    duplicate: ShopperView | None = None    # the earlier enrolment of the face being enrolled
    duplicate_same_card: bool = False
    enrol_card: CardTapped | None = None    # the card tapped for the enrolment being saved
    mydata: ShopperView | None = None
    unlock_tries: int = 0
    receipt_id: str | None = None
    reader_ok: bool = True
    camera_ok: bool = True
    camera_open: bool = False
    fleet_paused: bool = False
    scan: int = 0
    timer: int = 0
    revoked: frozenset = field(default_factory=frozenset)
    challenge: str | None = None      # the head turn asked of the shopper in this scan
    live: bool = False                # the challenge was passed in this scan
    liveness_strikes: int = 0         # failed challenges in a row
    cooldown: int = 0                 # token of the running face-pay cool-down, 0 when none
    cooldown_token: int = 0


def _four_digits(digits: str) -> str:
    if not (len(digits) == 4 and digits.isdigit()):
        raise Rejected("enter exactly four digits")
    return digits


class CheckoutMachine:
    def __init__(self, policy: Policy | None = None, *, face_pay: bool = True, mode: str = "normal"):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.policy = policy or Policy()
        self.ctx = Context(mode=mode, face_pay_config=face_pay)
        if mode == "out_of_service":
            self.ctx.state = State.OUT_OF_SERVICE

    # -- views -----------------------------------------------------------
    @property
    def state(self) -> State:
        return self.ctx.state

    @property
    def face_pay_on(self) -> bool:
        return (self.ctx.face_pay_config and not self.ctx.fleet_paused
                and self.ctx.mode not in ("card_only", "out_of_service"))

    def startup_effects(self) -> list:
        eff = [LoadGallery()] if self.face_pay_on else [DropGallery()]
        return eff + [Leds(self._idle_pattern())]

    # -- helpers ---------------------------------------------------------
    def _idle_pattern(self) -> str:
        if self.ctx.mode == "out_of_service" or not self.ctx.reader_ok or not self.ctx.camera_ok:
            return "fault"
        return "idle"

    def _timer(self, seconds: float) -> StartTimer:
        self.ctx.timer += 1
        return StartTimer(self.ctx.timer, seconds)

    def _close_camera(self) -> list:
        if self.ctx.camera_open:
            self.ctx.camera_open = False
            self.ctx.challenge = None
            self.ctx.live = False
            return [CloseCamera(self.ctx.scan)]
        return []

    def _need_live(self) -> None:
        if self.policy.liveness_required and not self.ctx.live:
            raise Rejected("no liveness, no match: the head-turn challenge has not been passed in this scan")

    def _open_camera(self, purpose: str, challenge: str | None = None) -> list:
        if challenge is not None and challenge not in CHALLENGES:
            raise Rejected(f"the challenge must be left or right, not {challenge!r}")
        c = self.ctx
        c.camera_open = True
        c.scan += 1
        c.live = False
        c.challenge = (challenge or pick_challenge()) if self.policy.liveness_required else None
        return [OpenCamera(purpose, c.scan, c.challenge)]

    def _go(self, state: State) -> None:
        self.ctx.state = state
        self.ctx.guidance = None
        if state not in (State.CONSENT,):
            if state not in (State.CHARGING, State.APPROVED, State.DECLINED, State.UNKNOWN):
                self.ctx.candidate = None
            self.ctx.stepup_required = self.ctx.stepup_ok = False
            self.ctx.phone_tries = 0

    def _to_idle(self) -> list:
        eff = self._close_camera()
        c = self.ctx
        if c.enrol_details is not None:
            eff.append(DropCaptures())
        c.sale = c.candidate = c.mydata = c.enrolled = c.duplicate = c.enrol_card = None
        c.enrol_consent = c.enrol_details = None
        c.enrol_captures = c.unlock_tries = 0
        c.message = c.receipt_id = None
        self._go(State.OUT_OF_SERVICE if c.mode == "out_of_service" else State.IDLE)
        c.timer += 1  # any pending timer is now stale
        return eff + [Leds(self._idle_pattern())]

    def _result(self, state: State, message: str | None, pattern: str) -> list:
        eff = self._close_camera()
        self._go(state)
        self.ctx.message = message
        # a failed enrolment says what failed and what to do: time to read it, as long as the consent screen
        seconds = self.policy.consent_timeout_s if state == State.ENROL_FAILED else self.policy.result_timeout_s
        return eff + [Leds(pattern), self._timer(seconds)]

    def _back_to_amount_due(self, message: str) -> list:
        """The scan ended without a payment: the camera closes, the amount is due again, offer the card."""
        eff = self._close_camera()
        self._go(State.AMOUNT_DUE)
        self.ctx.message = message
        return eff + [Leds("amount_due")]

    def _gallery_effects(self, was_on: bool) -> list:
        """Drop or load the gallery when face pay has just been switched off or on."""
        if was_on and not self.face_pay_on:
            return [DropGallery()]
        if self.face_pay_on and not was_on:
            return [LoadGallery()]
        return []

    def _cancel_sale(self, why: str) -> list:
        eff = []
        c = self.ctx
        if c.state == State.CONSENT and c.candidate is not None:
            eff.append(Record("charge_cancelled", c.candidate.shopper_id,
                              {"sale_id": c.sale.sale_id, "amount_minor": c.sale.amount_minor,
                               "currency": c.sale.currency, "why": why}))
        return eff + self._result(State.CANCELLED, why, "declined")

    def _need(self, *states: State) -> None:
        if self.ctx.state not in states:
            raise Rejected(f"not possible in state {self.ctx.state.value}")

    # -- the transition function ------------------------------------------
    def handle(self, event) -> list:
        c = self.ctx
        s = c.state
        name = type(event).__name__
        method = getattr(self, "_on_" + name, None)
        if method is None:
            raise Rejected(f"unknown event {name}")
        before = (s, c.camera_open)
        effects = method(event)
        assert c.camera_open == (c.state in CAMERA_STATES), (before, event, c.state)
        return effects

    def _on_StartSale(self, e: StartSale) -> list:
        if self.ctx.state == State.OUT_OF_SERVICE:
            raise Rejected("the terminal is out of service")
        self._need(State.IDLE)
        if self.ctx.mode == "enrolment":
            raise Rejected("the terminal is in enrolment mode: no sales")
        if not isinstance(e.amount_minor, int) or e.amount_minor <= 0:
            raise Rejected("the amount must be a positive whole number of minor units")
        self.ctx.sale = Sale(e.sale_id, e.amount_minor, e.currency, training=self.ctx.mode == "training")
        self._go(State.AMOUNT_DUE)
        self.ctx.message = None
        return [Leds("amount_due")]

    def _on_ChooseFace(self, e: ChooseFace) -> list:
        self._need(State.AMOUNT_DUE)
        if not self.face_pay_on:
            raise Rejected("face pay is off at this terminal")
        if not self.ctx.camera_ok:
            raise Rejected("the camera is not working: pay by card")
        if self.ctx.cooldown:
            raise Rejected("face pay is cooling down after failed liveness checks: pay by card")
        eff = self._open_camera("payment", e.challenge)
        self._go(State.FACE_SCAN)
        self.ctx.message = None
        return eff + [Leds("scanning"), self._timer(self.policy.scan_timeout_s)]

    def _on_CardTapped(self, e: CardTapped) -> list:
        c = self.ctx
        if c.state in (State.AMOUNT_DUE, State.FACE_SCAN):
            eff = self._close_camera()
            self._go(State.CHARGING)
            c.message = None
            # the processor decides on the card; a random UID never links the sale to anyone
            return eff + [Leds("processing"), Charge(c.sale, "card", e.token, None,
                                                     None if e.random_uid else e.card_hash, e.masked_card)]
        if e.random_uid and c.state in (State.ENROL_CARD, State.MYDATA_TAP):
            c.message = "random_uid"        # nothing is stored or looked up; a physical card may follow
            return []
        if c.state == State.ENROL_CARD:
            c.enrol_card = e
            return self._store_enrolment()
        if c.state == State.MYDATA_TAP:
            self._go(State.MYDATA_LOOKUP)
            c.message = None
            return [LookupCard(e.card_hash)]
        raise Rejected(f"a card tap is not expected in state {c.state.value}")

    def _on_FaceGuidance(self, e: FaceGuidance) -> list:
        self._need(State.FACE_SCAN, State.ENROL_CAPTURE)
        self.ctx.guidance = e.reason
        return []

    def _on_FaceMatched(self, e: FaceMatched) -> list:
        self._need(State.FACE_SCAN)
        self._need_live()
        c = self.ctx
        eff = self._close_camera()
        if e.shopper.shopper_id in c.revoked:
            # Defence in depth: a revoked shopper resolves to no one, whatever the matcher said.
            return eff + self._back_to_amount_due("no_match")
        if e.shopper.suspended:
            # Too many wrong phone digits: no consent screen, no name; card, or unlock at "my data".
            return eff + self._back_to_amount_due("face_pay_suspended")
        stepup = self.policy.needs_stepup(e.margin, e.gallery_size)
        if stepup and not e.shopper.has_phone:
            # Not sure enough, and no second factor to ask for: treat as no match, offer the card.
            return eff + self._back_to_amount_due("stepup_unavailable")
        self._go(State.CONSENT)
        c.candidate = e.shopper
        c.stepup_required = stepup
        c.stepup_ok = False
        return eff + [Leds("consent"), self._timer(self.policy.consent_timeout_s)]

    def _on_FaceNoMatch(self, e: FaceNoMatch) -> list:
        self._need(State.FACE_SCAN)
        # two enrolled faces equally close: say so, it is not "we could not find you"
        return self._back_to_amount_due("no_match_too_close" if e.reason == TOO_CLOSE else "no_match")

    # -- liveness ------------------------------------------------------------
    def _on_LivenessPassed(self, e: LivenessPassed) -> list:
        self._need(State.FACE_SCAN, State.ENROL_CAPTURE)
        if self.ctx.challenge is None:
            raise Rejected("no challenge was asked in this scan")
        self.ctx.live = True
        self.ctx.liveness_strikes = 0
        self.ctx.guidance = None
        return []

    def _on_LivenessFailed(self, e: LivenessFailed) -> list:
        self._need(State.FACE_SCAN, State.ENROL_CAPTURE)
        c = self.ctx
        if c.challenge is None or c.live:
            raise Rejected("no challenge is pending in this scan")
        purpose = "payment" if c.state == State.FACE_SCAN else "enrolment"
        c.liveness_strikes += 1
        eff = [Record("liveness_failed", "", {"reason": e.reason, "challenge": c.challenge, "purpose": purpose,
                                              "strike": c.liveness_strikes})]
        if c.state == State.FACE_SCAN:
            eff += self._back_to_amount_due("liveness_failed")
        else:
            eff += self._result(State.ENROL_FAILED, f"liveness:{e.reason}:{c.challenge}", "declined")
        if c.liveness_strikes >= LIVENESS_STRIKES:
            c.liveness_strikes = 0
            c.cooldown_token += 1
            c.cooldown = c.cooldown_token
            eff += [Record("liveness_cooldown", "", {"seconds": self.policy.cooldown_s,
                                                     "after_failures": LIVENESS_STRIKES}),
                    StartCooldown(c.cooldown, self.policy.cooldown_s)]
        return eff

    def _on_CooldownOver(self, e: CooldownOver) -> list:
        if e.token != self.ctx.cooldown or not e.token:
            raise Rejected("no such cool-down is running")
        self.ctx.cooldown = 0
        return []

    def _on_PhoneDigits(self, e: PhoneDigits) -> list:
        c = self.ctx
        if c.state == State.ENROL_DUPLICATE:
            return [VerifyPhone(self._replaceable().shopper_id, _four_digits(e.digits))]
        self._need(State.CONSENT)
        if not c.stepup_required:
            raise Rejected("no phone check was asked for")
        return [VerifyPhone(c.candidate.shopper_id, _four_digits(e.digits))]

    def _on_PhoneChecked(self, e: PhoneChecked) -> list:
        c = self.ctx
        if c.state == State.ENROL_DUPLICATE:
            return self._replace_checked(e)
        self._need(State.CONSENT)
        if not c.stepup_required:
            raise Rejected("no phone check was asked for")
        if e.ok:
            c.stepup_ok = True
            c.guidance = None
            return []
        c.phone_tries += 1
        if e.suspended:
            return self._cancel_sale("face_pay_suspended")
        if c.phone_tries >= MAX_PHONE_TRIES:
            return self._cancel_sale("phone digits did not match")
        c.guidance = "phone_mismatch"
        return []

    def _on_Confirm(self, e: Confirm) -> list:
        self._need(State.CONSENT)
        c = self.ctx
        if c.candidate is None or e.shopper_id != c.candidate.shopper_id:
            raise Rejected("the confirmation is for another shopper")
        if e.amount_minor != c.sale.amount_minor:
            raise Rejected("the confirmation is for another amount")
        if c.stepup_required and not c.stepup_ok:
            raise Rejected("enter the last four digits of your phone number first")
        shopper, step_up = c.candidate, c.stepup_required
        self._go(State.CHARGING)
        c.candidate = shopper
        return [Record("charge_confirmed", shopper.shopper_id,
                       {"sale_id": c.sale.sale_id, "amount_minor": c.sale.amount_minor,
                        "currency": c.sale.currency, "step_up": step_up}),
                Leds("processing"),
                Charge(c.sale, "face", shopper.token, shopper.shopper_id, None, shopper.masked_card)]

    def _on_Cancel(self, e: Cancel) -> list:
        c = self.ctx
        if c.state in (State.AMOUNT_DUE, State.FACE_SCAN, State.CONSENT):
            return self._cancel_sale("cancelled")
        if c.state in (State.ENROL_CONSENT, State.ENROL_DETAILS, State.ENROL_CAPTURE, State.ENROL_CARD,
                       State.ENROL_DUPLICATE, State.MYDATA_TAP, State.MYDATA_SHOW) or c.state in RESULT_STATES:
            return self._to_idle()
        raise Rejected(f"nothing to cancel in state {c.state.value}")

    def _on_Timeout(self, e: Timeout) -> list:
        c = self.ctx
        if e.token != c.timer:
            raise Rejected("stale timer")
        if c.state == State.FACE_SCAN:
            return self._back_to_amount_due("scan_timeout")
        if c.state == State.CONSENT:
            return self._cancel_sale("timed out")
        if c.state == State.ENROL_CAPTURE:
            return self._to_idle()
        if c.state == State.UNKNOWN:
            # The screen stays until staff press Done; meanwhile the processor is asked again.
            return [ResolveCharge(c.sale.sale_id), self._timer(self.policy.resolve_interval_s)]
        if c.state in RESULT_STATES or c.state == State.ENROL_DUPLICATE:
            return self._to_idle()
        raise Rejected(f"no timer runs in state {c.state.value}")

    def _on_ChargeResult(self, e: ChargeResult) -> list:
        self._need(State.CHARGING, State.UNKNOWN)
        c = self.ctx
        if c.sale is None or e.sale_id != c.sale.sale_id:
            raise Rejected("a result for another sale")
        if e.outcome not in OUTCOMES:
            raise Rejected(f"unknown charge outcome {e.outcome!r}")
        if c.state == State.UNKNOWN and e.outcome == "unknown":
            raise Rejected("the outcome is still unknown")
        if e.outcome == "approved":
            return self._result(State.APPROVED, None, "approved")
        if e.outcome == "declined":
            return self._result(State.DECLINED, e.reason or "declined", "declined")
        if e.outcome == "not_charged":
            return self._result(State.CANCELLED, e.reason or "not_charged", "fault")
        eff = self._close_camera()
        self._go(State.UNKNOWN)
        c.message = UNKNOWN_MESSAGE.format(sale_id=c.sale.sale_id)
        return eff + [Leds("fault"), self._timer(self.policy.resolve_interval_s)]

    def _on_Done(self, e: Done) -> list:
        self._need(*RESULT_STATES, State.MYDATA_SHOW, State.ENROL_DUPLICATE)
        return self._to_idle()

    # -- enrolment --------------------------------------------------------
    def _on_StartEnrolment(self, e: StartEnrolment) -> list:
        self._need(State.IDLE)
        if not self.face_pay_on:
            raise Rejected("face pay is off at this terminal")
        self._go(State.ENROL_CONSENT)
        return [Leds("idle")]

    def _on_AgreeConsent(self, e: AgreeConsent) -> list:
        self._need(State.ENROL_CONSENT)
        if not e.version or len(e.text_hash) != 64:
            raise Rejected("the consent text version and hash are required")
        self.ctx.enrol_consent = (e.version, e.text_hash)
        self._go(State.ENROL_DETAILS)
        return []

    def _on_EnrolDetails(self, e: EnrolDetails) -> list:
        self._need(State.ENROL_DETAILS)
        if not e.name.strip():
            raise Rejected("a name is required")
        if e.phone_last4 is not None and not (len(e.phone_last4) == 4 and e.phone_last4.isdigit()):
            raise Rejected("the phone digits must be exactly four digits")
        if e.phone_last4 is None and self.policy.phone_required:
            raise Rejected("enter the last 4 digits of your phone number: they are asked before face payments")
        eff = self._start_capture(e.challenge)
        self.ctx.enrol_details = e
        return eff

    def _start_capture(self, challenge: str | None) -> list:
        if self.ctx.cooldown:
            raise Rejected("face pay is cooling down after failed liveness checks: try again in a minute")
        eff = self._open_camera("enrolment", challenge)
        self.ctx.enrol_captures = 0
        self.ctx.message = None
        self._go(State.ENROL_CAPTURE)
        return eff + [Leds("scanning"), self._timer(self.policy.scan_timeout_s * 2)]

    def _on_RetryEnrolment(self, e: RetryEnrolment) -> list:
        self._need(State.ENROL_FAILED)
        c = self.ctx
        if c.enrol_details is None or c.enrol_consent is None:
            raise Rejected("start the enrolment again from the first screen")
        if not self.face_pay_on:
            raise Rejected("face pay is off at this terminal")
        return self._start_capture(None)

    def _on_CaptureAccepted(self, e: CaptureAccepted) -> list:
        self._need(State.ENROL_CAPTURE)
        self._need_live()
        self.ctx.enrol_captures = e.count
        self.ctx.guidance = None
        if e.count >= self.policy.enrol_captures:
            eff = self._close_camera()
            self._go(State.ENROL_CARD)
            return eff + [Leds("consent")]
        return []

    def _store_enrolment(self, replace: str | None = None) -> list:
        c = self.ctx
        d, card = c.enrol_details, c.enrol_card
        self._go(State.ENROL_SAVING)
        c.message = None
        return [StoreEnrolment(d.name, d.phone_last4, c.enrol_consent[0], c.enrol_consent[1],
                               card.card_hash, card.masked_card, card.token, replace)]

    def _on_EnrolStored(self, e: EnrolStored) -> list:
        self._need(State.ENROL_SAVING)
        c = self.ctx
        replaced = c.duplicate if e.replaced_receipt else None
        eff = self._result(State.ENROL_DONE, None, "approved")
        c.enrolled = e.shopper
        if replaced is not None:   # the done screen says the earlier enrolment was deleted, with its receipt
            c.revoked = c.revoked | {replaced.shopper_id}
            c.duplicate, c.receipt_id = replaced, e.replaced_receipt
        else:
            c.duplicate = None
        return eff

    def _on_EnrolFailed(self, e: EnrolFailed) -> list:
        self._need(State.ENROL_SAVING, State.ENROL_CAPTURE)
        return self._result(State.ENROL_FAILED, e.reason, "declined")

    def _on_AlreadyEnrolled(self, e: AlreadyEnrolled) -> list:
        self._need(State.ENROL_SAVING)
        c = self.ctx
        if e.shopper.shopper_id in c.revoked:
            raise Rejected("that enrolment was deleted")
        self._go(State.ENROL_DUPLICATE)
        c.duplicate, c.duplicate_same_card = e.shopper, e.same_card
        return [Leds("consent"), self._timer(self.policy.consent_timeout_s)]

    def _replaceable(self) -> ShopperView:
        """The earlier enrolment the shopper may move to the new card: theirs only with its phone digits."""
        c = self.ctx
        if c.duplicate is None or c.duplicate_same_card:
            raise Rejected("this card already holds this face's enrolment: nothing to replace")
        if not c.duplicate.has_phone:
            raise Rejected("that enrolment has no phone digits to prove it is yours: delete it at My data with "
                           "its card, then enrol again")
        return c.duplicate

    def _replace_checked(self, e: PhoneChecked) -> list:
        c = self.ctx
        self._replaceable()
        if e.ok:
            return self._store_enrolment(replace=c.duplicate.shopper_id)
        c.phone_tries += 1
        if e.suspended:
            return self._result(State.ENROL_FAILED, "face_pay_suspended", "declined")
        if c.phone_tries >= MAX_PHONE_TRIES:
            return self._result(State.ENROL_FAILED, "replace_phone_mismatch", "declined")
        c.guidance = "phone_mismatch"
        return []

    # -- my data -------------------------------------------------------------
    def _on_StartMyData(self, e: StartMyData) -> list:
        self._need(State.IDLE)
        self._go(State.MYDATA_TAP)
        return []

    def _on_LookupResult(self, e: LookupResult) -> list:
        self._need(State.MYDATA_LOOKUP)
        shopper = e.shopper
        if shopper is not None and shopper.shopper_id in self.ctx.revoked:
            shopper = None
        self._go(State.MYDATA_SHOW)
        self.ctx.mydata = shopper
        return [self._timer(self.policy.consent_timeout_s)]

    def _suspended_mydata(self) -> ShopperView:
        self._need(State.MYDATA_SHOW)
        if self.ctx.mydata is None or not self.ctx.mydata.suspended:
            raise Rejected("face pay is not suspended for this card")
        return self.ctx.mydata

    def _on_UnlockFacePay(self, e: UnlockFacePay) -> list:
        return [VerifyUnlock(self._suspended_mydata().shopper_id, _four_digits(e.digits))]

    def _on_UnlockChecked(self, e: UnlockChecked) -> list:
        c = self.ctx
        self._suspended_mydata()
        if e.ok:
            c.mydata = replace(c.mydata, suspended=False)
            c.guidance, c.message = None, "face_pay_unlocked"
            return [Leds("approved")]
        c.unlock_tries += 1
        if c.unlock_tries >= MAX_PHONE_TRIES:
            return self._to_idle()
        c.guidance = "phone_mismatch"
        return []

    def _on_DeleteMyData(self, e: DeleteMyData) -> list:
        self._need(State.MYDATA_SHOW)
        if self.ctx.mydata is None:
            raise Rejected("no face is enrolled for this card")
        sid = self.ctx.mydata.shopper_id
        self._go(State.MYDATA_DELETING)
        return [RevokeShopper(sid)]

    def _on_Revoked(self, e: Revoked) -> list:
        """A shopper was deleted (here, from the CLI or by a purge): forget them everywhere."""
        c = self.ctx
        c.revoked = c.revoked | {e.shopper_id}
        eff = []
        if c.candidate is not None and c.candidate.shopper_id == e.shopper_id:
            if c.state == State.CONSENT:
                eff += self._cancel_sale("shopper opted out")
            c.candidate = None
        if c.state == State.MYDATA_DELETING:
            c.mydata = None
            eff += self._result(State.MYDATA_DELETED, None, "approved")
            c.receipt_id = e.receipt_id
        elif c.mydata is not None and c.mydata.shopper_id == e.shopper_id:
            c.mydata = None
        if c.enrolled is not None and c.enrolled.shopper_id == e.shopper_id:
            c.enrolled = None
        if c.state == State.ENROL_DUPLICATE and c.duplicate.shopper_id == e.shopper_id:
            eff += self._to_idle()   # deleted meanwhile (My data elsewhere, the fleet): nothing left to offer
        return eff

    # -- staff and faults ---------------------------------------------------------
    def _on_SetMode(self, e: SetMode) -> list:
        c = self.ctx
        if e.mode not in MODES:
            raise Rejected(f"unknown mode {e.mode!r}")
        if c.state not in (State.IDLE, State.OUT_OF_SERVICE):
            raise Rejected("finish or cancel the current sale before changing mode")
        was_on = self.face_pay_on
        old = c.mode
        c.mode = e.mode
        eff = [Record("mode_changed", "", {"from": old, "to": e.mode})] if e.record else []
        return eff + self._gallery_effects(was_on) + self._to_idle()

    def _on_FleetStatus(self, e: FleetStatus) -> list:
        was_on = self.face_pay_on
        self.ctx.fleet_paused = e.paused
        return self._gallery_effects(was_on)

    def _on_ReaderStatus(self, e: ReaderStatus) -> list:
        self.ctx.reader_ok = e.ok
        if self.ctx.state in (State.IDLE, State.OUT_OF_SERVICE):
            return [Leds(self._idle_pattern())]
        return []

    def _on_CameraFault(self, e: CameraFault) -> list:
        c = self.ctx
        c.camera_ok = False
        if c.state == State.FACE_SCAN:
            eff = self._close_camera()
            self._go(State.AMOUNT_DUE)
            c.message = "camera_fault"
            return eff + [Leds("fault")]
        if c.state == State.ENROL_CAPTURE:
            return self._result(State.ENROL_FAILED, "camera_fault", "fault")
        return [Leds("fault")] if c.state == State.IDLE else []

    def camera_back(self) -> None:
        self.ctx.camera_ok = True

    # -- what a screen shows ----------------------------------------------------
    def snapshot(self) -> dict:
        c = self.ctx
        return {
            "state": c.state.value, "mode": c.mode, "face_pay": self.face_pay_on,
            "camera_open": c.camera_open, "reader_ok": c.reader_ok, "camera_ok": c.camera_ok,
            "sale": None if c.sale is None else {"sale_id": c.sale.sale_id, "amount_minor": c.sale.amount_minor,
                                                 "currency": c.sale.currency, "training": c.sale.training},
            "candidate": None if c.candidate is None else replace(c.candidate, token="").__dict__,
            "stepup_required": c.stepup_required, "stepup_ok": c.stepup_ok,
            "guidance": c.guidance, "message": c.message, "enrol_captures": c.enrol_captures,
            "enrolled": None if c.enrolled is None else c.enrolled.__dict__,
            "duplicate": None if c.duplicate is None else replace(c.duplicate, token="").__dict__,
            "duplicate_same_card": c.duplicate_same_card,
            "mydata": None if c.mydata is None else c.mydata.__dict__, "receipt_id": c.receipt_id,
            "challenge": c.challenge, "live": c.live, "cooldown": bool(c.cooldown),
        }
