"""The payment flow: amount due, face scan or card, consent (with the phone step-up), charging, the outcome.

A face match never charges: only ``Confirm`` with the exact amount and shopper shown (and the phone
digits when a step-up was asked) does.  A charge ends approved, declined, not charged or unknown;
unknown is never shown as declined: the screen says :data:`UNKNOWN_MESSAGE` and the processor is asked
by the sale's idempotency key (``ResolveCharge``) until it answers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..face.decisions import TOO_CLOSE
from . import scan
from .context import (
    Context,
    Step,
    Table,
    back_to_amount_due,
    cancel_sale,
    close_camera,
    four_digits,
    go,
    need_live,
    open_camera,
    present,
    result,
    timer,
)
from .messages import (
    OUTCOMES,
    UNKNOWN_MESSAGE,
    Cancel,
    CardTapped,
    Charge,
    ChargeResult,
    ChooseFace,
    Confirm,
    FaceMatched,
    FaceNoMatch,
    Leds,
    LivenessFailed,
    PhoneChecked,
    PhoneDigits,
    Record,
    Rejected,
    ResolveCharge,
    Sale,
    ShopperView,
    StartSale,
    Timeout,
    VerifyPhone,
)
from .policy import Mode
from .states import PAYING_STATES, State

MAX_PHONE_TRIES = 3


@dataclass(frozen=True)
class PaymentCtx:
    sale: Sale | None = None
    candidate: ShopperView | None = None   # the matched shopper the consent screen names
    stepup_required: bool = False
    stepup_ok: bool = False
    phone_tries: int = 0
    reference: str | None = None           # the processor's reference of the approved charge

    def entering(self, state: State) -> PaymentCtx:
        """The sub-context in ``state``: the shopper stays only while the sale is about them; the step-up is
        the consent screen's."""
        if state == State.CONSENT:
            return self
        return replace(self, candidate=self.candidate if state in PAYING_STATES else None,
                       stepup_required=False, stepup_ok=False, phone_tries=0)

    def cleared(self) -> PaymentCtx:
        return PaymentCtx()


def _pay(c: Context, **changes) -> Context:
    return replace(c, pay=replace(c.pay, **changes))


def start_sale(c: Context, e: StartSale) -> Step:
    if c.avail.mode == Mode.ENROLMENT:
        raise Rejected("the terminal is in enrolment mode: no sales")
    if not isinstance(e.amount_minor, int) or e.amount_minor <= 0:
        raise Rejected("the amount must be a positive whole number of minor units")
    c = _pay(c, sale=Sale(e.sale_id, e.amount_minor, e.currency, training=c.avail.mode == Mode.TRAINING),
             reference=None)
    return go(c, State.AMOUNT_DUE, message=None), [Leds("amount_due")]


def choose_face(c: Context, e: ChooseFace) -> Step:
    if not c.avail.face_pay_on:
        raise Rejected("face pay is off at this terminal")
    if not c.avail.camera_ok:
        raise Rejected("the camera is not working: pay by card")
    scan.need_no_cooldown(c, "pay by card")
    c, eff = open_camera(c, "payment", e.challenge)
    c = go(c, State.FACE_SCAN, message=None)
    c, t = timer(c, c.policy.scan_timeout_s)
    return c, eff + [Leds("scanning"), t]


def pay_by_card(c: Context, e: CardTapped) -> Step:
    c, eff = close_camera(c)
    c = go(c, State.CHARGING, message=None)
    # the processor decides on the card; a random UID never links the sale to anyone
    return c, eff + [Leds("processing"), Charge(present(c.pay.sale, "sale"), "card", e.token, None,
                                                None if e.random_uid else e.card_hash, e.masked_card)]


def face_matched(c: Context, e: FaceMatched) -> Step:
    need_live(c)
    c, eff = close_camera(c)
    if e.shopper.shopper_id in c.revoked:
        # Defence in depth: a revoked shopper resolves to no one, whatever the matcher said.
        c, more = back_to_amount_due(c, "no_match")
        return c, eff + more
    if e.shopper.suspended:
        # Too many wrong phone digits: no consent screen, no name; card, or unlock at "my data".
        c, more = back_to_amount_due(c, "face_pay_suspended")
        return c, eff + more
    stepup = c.policy.needs_stepup(e.margin, e.gallery_size)
    if stepup and not e.shopper.has_phone:
        # Not sure enough, and no second factor to ask for: treat as no match, offer the card.
        c, more = back_to_amount_due(c, "stepup_unavailable")
        return c, eff + more
    c = _pay(go(c, State.CONSENT), candidate=e.shopper, stepup_required=stepup, stepup_ok=False)
    c, t = timer(c, c.policy.consent_timeout_s)
    return c, eff + [Leds("consent"), t]


def no_match(c: Context, e: FaceNoMatch) -> Step:
    # two enrolled faces equally close: say so, it is not "we could not find you"
    return back_to_amount_due(c, "no_match_too_close" if e.reason == TOO_CLOSE else "no_match")


def _scan_failed(c: Context, e: LivenessFailed, challenge: str) -> Step:
    return back_to_amount_due(c, "liveness_failed")


def phone_digits(c: Context, e: PhoneDigits) -> Step:
    if not c.pay.stepup_required:
        raise Rejected("no phone check was asked for")
    return c, [VerifyPhone(present(c.pay.candidate, "shopper").shopper_id, four_digits(e.digits))]


def phone_checked(c: Context, e: PhoneChecked) -> Step:
    if not c.pay.stepup_required:
        raise Rejected("no phone check was asked for")
    if e.ok:
        return replace(_pay(c, stepup_ok=True), guidance=None), []
    c = _pay(c, phone_tries=c.pay.phone_tries + 1)
    if e.suspended:
        return cancel_sale(c, "face_pay_suspended")
    if c.pay.phone_tries >= MAX_PHONE_TRIES:
        return cancel_sale(c, "phone digits did not match")
    return replace(c, guidance="phone_mismatch"), []


def confirm(c: Context, e: Confirm) -> Step:
    p = c.pay
    sale = present(p.sale, "sale")
    if p.candidate is None or e.shopper_id != p.candidate.shopper_id:
        raise Rejected("the confirmation is for another shopper")
    if e.amount_minor != sale.amount_minor:
        raise Rejected("the confirmation is for another amount")
    if p.stepup_required and not p.stepup_ok:
        raise Rejected("enter the last four digits of your phone number first")
    shopper = p.candidate
    c = go(c, State.CHARGING)
    return c, [Record("charge_confirmed", shopper.shopper_id,
                      {"sale_id": sale.sale_id, "amount_minor": sale.amount_minor,
                       "currency": sale.currency, "step_up": p.stepup_required}),
               Leds("processing"),
               Charge(sale, "face", shopper.token, shopper.shopper_id, None, shopper.masked_card)]


def cancel(c: Context, e: Cancel) -> Step:
    return cancel_sale(c, "cancelled")


def charge_result(c: Context, e: ChargeResult) -> Step:
    sale = c.pay.sale
    if sale is None or e.sale_id != sale.sale_id:
        raise Rejected("a result for another sale")
    if e.outcome not in OUTCOMES:
        raise Rejected(f"unknown charge outcome {e.outcome!r}")
    if c.state == State.UNKNOWN and e.outcome == "unknown":
        raise Rejected("the outcome is still unknown")
    if e.outcome == "approved":
        return result(_pay(c, reference=e.reference or None), State.APPROVED, None, "approved")
    if e.outcome == "declined":
        return result(c, State.DECLINED, e.reason or "declined", "declined")
    if e.outcome == "not_charged":
        return result(c, State.CANCELLED, e.reason or "not_charged", "fault")
    c, eff = close_camera(c)
    c = go(c, State.UNKNOWN, message=UNKNOWN_MESSAGE.format(sale_id=sale.sale_id))
    c, t = timer(c, c.policy.resolve_interval_s)
    return c, eff + [Leds("fault"), t]


def scan_timeout(c: Context, e: Timeout) -> Step:
    return back_to_amount_due(c, "scan_timeout")


def consent_timeout(c: Context, e: Timeout) -> Step:
    return cancel_sale(c, "timed out")


def ask_again(c: Context, e: Timeout) -> Step:
    # The screen stays until staff press Done; meanwhile the processor is asked again.
    sale_id = present(c.pay.sale, "sale").sale_id
    c, t = timer(c, c.policy.resolve_interval_s)
    return c, [ResolveCharge(sale_id), t]


def forget(c: Context, shopper_id: str) -> Step:
    """``Revoked``: the shopper on the consent screen opted out meanwhile: the sale is cancelled."""
    if c.pay.candidate is None or c.pay.candidate.shopper_id != shopper_id:
        return c, []
    eff: list = []
    if c.state == State.CONSENT:
        c, eff = cancel_sale(c, "shopper opted out")
    return _pay(c, candidate=None), eff


TABLE: Table = {
    State.IDLE: {StartSale: start_sale},
    State.AMOUNT_DUE: {ChooseFace: choose_face, CardTapped: pay_by_card, Cancel: cancel},
    State.FACE_SCAN: {CardTapped: pay_by_card, FaceMatched: face_matched, FaceNoMatch: no_match,
                      LivenessFailed: scan.liveness_failed("payment", _scan_failed), Timeout: scan_timeout,
                      Cancel: cancel},
    State.CONSENT: {PhoneDigits: phone_digits, PhoneChecked: phone_checked, Confirm: confirm,
                    Timeout: consent_timeout, Cancel: cancel},
    State.CHARGING: {ChargeResult: charge_result},
    State.UNKNOWN: {ChargeResult: charge_result, Timeout: ask_again},
}
