"""The checkout machine: the flows' tables composed, one place that refuses, the camera invariant, ``view()``.

Transitions are data (h11's rules): each flow module (payment, enrolment, mydata) and each side machine
(availability, scan) gives a ``{state: {event type: handler}}`` table of pure ``(ctx, event) -> (ctx,
effects)`` functions; :data:`TABLE` merges them.  An event with no handler in the current state is
refused in one place, :meth:`CheckoutMachine.handle`, with :class:`Rejected` and nothing changed; a
handler may refuse too (a wrong amount, a stale token), and then nothing changes either, since the new
context is only kept when the handler returns.  After every event the camera is open exactly in
:data:`CAMERA_STATES`.

The promises it enforces:
- the camera opens only in FACE_SCAN or ENROL_CAPTURE, and every way out of those states closes it;
- a face match never charges: only ``Confirm`` with the exact amount and shopper shown (and the phone
  digits when a step-up was asked) does;
- a revoked shopper is never shown again, whatever the matcher says;
- with face pay off (config, staff mode, fleet pause) no face step can start;
- no liveness, no match: with liveness required, a face is matched or an enrolment capture kept only
  after ``LivenessPassed`` in that very scan; three failed challenges in a row put face pay into a cool-down;
- a random card UID is never linked to a shopper: refused at enrolment and "my data", paid without a link;
- a charge is approved, declined, not charged or unknown; unknown is never shown as declined.

A new flow is one module with its sub-context and table, plus its table (and its ``forget`` for
``Revoked``) named here.  The staff flow (staff.py) is one such module.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from . import availability, enrolment, mydata, payment, scan, staff
from .availability import Availability
from .context import Context, Handler, Step, each, merge, to_idle
from .enrolment import EnrolCtx
from .messages import (
    EVENTS,
    Cancel,
    CardTapped,
    Done,
    DropGallery,
    EnrolDetails,
    Leds,
    LoadGallery,
    Rejected,
    Revoked,
    Sale,
    SetMode,
    ShopperView,
    StaffAmount,
    StaffSetMode,
    StartSale,
    Timeout,
)
from .mydata import MyDataCtx
from .payment import PaymentCtx
from .policy import MODES, Mode, Policy
from .scan import ScanCtx
from .staff import StaffCtx, StaffNote
from .states import CAMERA_STATES, RESULT_STATES, State


def _leave(c: Context, e) -> Step:
    return to_idle(c)


def _revoked(c: Context, e: Revoked) -> Step:
    """A shopper was deleted (here, from the CLI, by a purge or the fleet): forgotten by every flow."""
    c = replace(c, revoked=c.revoked | {e.shopper_id})
    c, eff = payment.forget(c, e.shopper_id)
    c, more = mydata.forget(c, e.shopper_id, e.receipt_id)
    eff += more
    c, more = enrolment.forget(c, e.shopper_id)
    return c, eff + more


# Leaving a flow before its end, or its result screen: back to rest.
_LEAVING = merge(
    each((State.ENROL_CONSENT, State.ENROL_DETAILS, State.ENROL_CAPTURE, State.ENROL_CARD, State.ENROL_DUPLICATE,
          State.MYDATA_TAP, State.MYDATA_SHOW, *RESULT_STATES), {Cancel: _leave}),
    each((*RESULT_STATES, State.MYDATA_SHOW, State.ENROL_DUPLICATE), {Done: _leave}),
    each((*(RESULT_STATES - {State.UNKNOWN}), State.ENROL_DUPLICATE), {Timeout: _leave}),
)

TABLE = merge(payment.TABLE, enrolment.TABLE, mydata.TABLE, staff.TABLE, scan.TABLE, availability.TABLE, _LEAVING)
# Valid in every state.
ANY_STATE: dict[type, Handler] = {**availability.ANY_STATE, **scan.ANY_STATE, **staff.ANY_STATE, Revoked: _revoked}

# What a refusal says, by (state, event) or by event; otherwise "not possible in state ...".
_REFUSALS_IN = {(State.OUT_OF_SERVICE, StartSale): "the terminal is out of service",
                (State.OUT_OF_SERVICE, StaffAmount): "the terminal is out of service"}
_REFUSALS = {
    Cancel: "nothing to cancel in state {state}",
    Timeout: "no timer runs in state {state}",
    CardTapped: "a card tap is not expected in state {state}",
    SetMode: "finish or cancel the current sale before changing mode",
    StaffSetMode: "finish or cancel the current sale before changing mode",
}


@dataclass(frozen=True)
class View:
    """What the screens, the CLI and the runner may read of the machine: no biometrics, no card tokens
    other than the ones the shopper's own flow holds."""

    state: State
    mode: Mode
    face_pay: bool
    reader_ok: bool
    camera_ok: bool
    camera_open: bool
    fleet_paused: bool
    sale: Sale | None
    candidate: ShopperView | None
    stepup_required: bool
    stepup_ok: bool
    guidance: str | None
    message: str | None
    charge_reference: str | None   # the processor's reference of the approved charge
    enrol_consent: tuple[str, str] | None
    enrol_details: EnrolDetails | None
    enrol_captures: int
    enrol_card_masked: str         # the card tapped for the enrolment being saved ("" before the tap)
    enrolled: ShopperView | None
    duplicate: ShopperView | None
    duplicate_same_card: bool
    mydata: ShopperView | None
    receipt_id: str | None
    scan: int                      # the current (or last) camera opening's token
    challenge: str | None
    challenge_more: int
    live: bool
    cooldown: int                  # the running cool-down's token, 0 when none
    timer: int                     # the token of the one timer that may still fire
    revoked: frozenset[str]
    staff_screen: str              # the staff panel shown over the idle screen ("": none)
    staff_unlocked: bool
    staff_note: StaffNote          # what the panel says (staff.py)
    staff_report: tuple[str, ...]


class CheckoutMachine:
    def __init__(self, policy: Policy | None = None, *, face_pay: bool = True, mode: str = "normal",
                 fleet_paused: bool = False):
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}")
        self.policy = policy or Policy()
        self._ctx = Context(state=State.OUT_OF_SERVICE if mode == Mode.OUT_OF_SERVICE else State.IDLE,
                            policy=self.policy, avail=Availability(mode=Mode(mode), face_pay_config=face_pay,
                                                                 fleet_paused=fleet_paused),
                            scan=ScanCtx(), pay=PaymentCtx(), enrol=EnrolCtx(), mine=MyDataCtx(),
                            staff=StaffCtx())

    @property
    def ctx(self) -> Context:
        """The whole frozen context (tests compare it; drivers read :meth:`view`)."""
        return self._ctx

    @property
    def state(self) -> State:
        return self._ctx.state

    @property
    def face_pay_on(self) -> bool:
        return self._ctx.avail.face_pay_on

    def startup_effects(self) -> list:
        eff: list = [LoadGallery()] if self.face_pay_on else [DropGallery()]
        return eff + [Leds(self._ctx.avail.idle_pattern())]

    # -- the transition function ------------------------------------------
    def handler(self, event) -> Handler:
        """The one place an event is refused: no handler for it in this state."""
        c = self._ctx
        kind = type(event)
        if kind not in EVENTS:
            raise Rejected(f"unknown event {kind.__name__}")
        if kind is Timeout and event.token != c.timer:
            raise Rejected("stale timer")
        found = TABLE.get(c.state, {}).get(kind) or ANY_STATE.get(kind)
        if found is None:
            words = _REFUSALS_IN.get((c.state, kind)) or _REFUSALS.get(kind, "not possible in state {state}")
            raise Rejected(words.format(state=c.state.value))
        return found

    def handle(self, event) -> list:
        before = self._ctx
        after, effects = self.handler(event)(before, event)
        assert after.scan.camera_open == (after.state in CAMERA_STATES), (before.state, event, after.state)
        self._ctx = after
        return effects

    def accepts(self, event) -> bool:
        """Whether ``event`` has a handler in the current state (the handler may still refuse it)."""
        try:
            self.handler(event)
        except Rejected:
            return False
        return True

    # -- what a screen shows ----------------------------------------------------
    def view(self) -> View:
        c = self._ctx
        return View(
            state=c.state, mode=c.avail.mode, face_pay=c.avail.face_pay_on, reader_ok=c.avail.reader_ok,
            camera_ok=c.avail.camera_ok, camera_open=c.scan.camera_open, fleet_paused=c.avail.fleet_paused,
            sale=c.pay.sale, candidate=c.pay.candidate, stepup_required=c.pay.stepup_required,
            stepup_ok=c.pay.stepup_ok, guidance=c.guidance, message=c.message, charge_reference=c.pay.reference,
            enrol_consent=c.enrol.consent, enrol_details=c.enrol.details, enrol_captures=c.enrol.captures,
            enrol_card_masked=c.enrol.card.masked_card if c.enrol.card else "", enrolled=c.enrol.enrolled,
            duplicate=c.enrol.duplicate, duplicate_same_card=c.enrol.duplicate_same_card, mydata=c.mine.shopper,
            receipt_id=c.receipt_id, scan=c.scan.token, challenge=c.scan.challenge, challenge_more=c.scan.more,
            live=c.scan.live, cooldown=c.scan.cooldown, timer=c.timer, revoked=c.revoked,
            staff_screen=c.staff.screen, staff_unlocked=c.staff.unlocked, staff_note=c.staff.note,
            staff_report=c.staff.report)

    def snapshot(self) -> dict:
        v = self.view()
        return {
            "state": v.state.value, "mode": v.mode.value, "face_pay": v.face_pay,
            "camera_open": v.camera_open, "reader_ok": v.reader_ok, "camera_ok": v.camera_ok,
            "sale": None if v.sale is None else asdict(v.sale),
            "candidate": None if v.candidate is None else asdict(replace(v.candidate, token="")),
            "stepup_required": v.stepup_required, "stepup_ok": v.stepup_ok,
            "guidance": v.guidance, "message": v.message, "enrol_captures": v.enrol_captures,
            "enrolled": None if v.enrolled is None else asdict(v.enrolled),
            "duplicate": None if v.duplicate is None else asdict(replace(v.duplicate, token="")),
            "duplicate_same_card": v.duplicate_same_card,
            "mydata": None if v.mydata is None else asdict(v.mydata), "receipt_id": v.receipt_id,
            "challenge": v.challenge, "live": v.live, "cooldown": bool(v.cooldown),
        }
