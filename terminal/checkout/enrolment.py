"""The enrolment flow: consent, details, the capture (after the head turn), the card, saving.

The 1:N search before storing may find this face enrolled already (``AlreadyEnrolled``): the shopper
keeps that enrolment, or moves it to the new card with its phone digits.  A random card UID is never
linked to a shopper.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import scan
from .context import Context, Step, Table, close_camera, four_digits, go, need_live, open_camera, present, result, timer, to_idle
from .messages import (
    AgreeConsent,
    AlreadyEnrolled,
    CaptureAccepted,
    CardTapped,
    EnrolDetails,
    EnrolFailed,
    EnrolStored,
    Leds,
    LivenessFailed,
    PhoneChecked,
    PhoneDigits,
    Rejected,
    RetryEnrolment,
    ShopperView,
    StartEnrolment,
    StoreEnrolment,
    Timeout,
    VerifyPhone,
)
from .payment import MAX_PHONE_TRIES
from .states import State


@dataclass(frozen=True)
class EnrolCtx:
    consent: tuple[str, str] | None = None   # (version, text hash) agreed to
    details: EnrolDetails | None = None
    captures: int = 0
    card: CardTapped | None = None           # the card tapped for the enrolment being saved
    enrolled: ShopperView | None = None
    duplicate: ShopperView | None = None     # the earlier enrolment of the face being enrolled
    duplicate_same_card: bool = False
    replace_tries: int = 0                   # wrong phone digits offered to move the earlier enrolment

    def cleared(self) -> EnrolCtx:
        return EnrolCtx()


def _enrol(c: Context, **changes) -> Context:
    return replace(c, enrol=replace(c.enrol, **changes))


def start(c: Context, e: StartEnrolment) -> Step:
    if not c.avail.face_pay_on:
        raise Rejected("face pay is off at this terminal")
    return go(c, State.ENROL_CONSENT), [Leds("idle")]


def agree(c: Context, e: AgreeConsent) -> Step:
    if not e.version or len(e.text_hash) != 64:
        raise Rejected("the consent text version and hash are required")
    return go(_enrol(c, consent=(e.version, e.text_hash)), State.ENROL_DETAILS), []


def details(c: Context, e: EnrolDetails) -> Step:
    if not e.name.strip():
        raise Rejected("a name is required")
    if e.phone_last4 is not None and not (len(e.phone_last4) == 4 and e.phone_last4.isdigit()):
        raise Rejected("the phone digits must be exactly four digits")
    if e.phone_last4 is None and c.policy.phone_required:
        raise Rejected("enter the last 4 digits of your phone number: they are asked before face payments")
    c, eff = _start_capture(c, e.challenge)
    return _enrol(c, details=e), eff


def _start_capture(c: Context, challenge: str | None) -> Step:
    scan.need_no_cooldown(c, "try again in a minute")
    c, eff = open_camera(c, "enrolment", challenge)
    c = go(_enrol(c, captures=0), State.ENROL_CAPTURE, message=None)
    c, t = timer(c, c.policy.scan_timeout_s * 2)
    return c, eff + [Leds("scanning"), t]


def retry(c: Context, e: RetryEnrolment) -> Step:
    if c.enrol.details is None or c.enrol.consent is None:
        raise Rejected("start the enrolment again from the first screen")
    if not c.avail.face_pay_on:
        raise Rejected("face pay is off at this terminal")
    return _start_capture(c, e.challenge)


def capture(c: Context, e: CaptureAccepted) -> Step:
    need_live(c)
    c = replace(_enrol(c, captures=e.count), guidance=None)
    if e.count >= c.policy.enrol_captures:
        c, eff = close_camera(c)
        return go(c, State.ENROL_CARD), eff + [Leds("consent")]
    return c, []


def _scan_failed(c: Context, e: LivenessFailed, challenge: str) -> Step:
    return result(c, State.ENROL_FAILED, f"liveness:{e.reason}:{challenge}", "declined")


def card(c: Context, e: CardTapped) -> Step:
    if e.random_uid:
        return replace(c, message="random_uid"), []   # nothing is stored; a physical card may follow
    return _store(_enrol(c, card=e))


def _store(c: Context, replaces: str | None = None) -> Step:
    d, tapped = present(c.enrol.details, "details"), present(c.enrol.card, "card")
    version, text_hash = present(c.enrol.consent, "consent")
    c = go(c, State.ENROL_SAVING, message=None)
    return c, [StoreEnrolment(d.name, d.phone_last4, version, text_hash,
                              tapped.card_hash, tapped.masked_card, tapped.token, replaces)]


def stored(c: Context, e: EnrolStored) -> Step:
    replaced = c.enrol.duplicate if e.replaced_receipt else None
    c, eff = result(c, State.ENROL_DONE, None, "approved")
    c = _enrol(c, enrolled=e.shopper, duplicate=replaced)
    if replaced is not None:   # the done screen says the earlier enrolment was deleted, with its receipt
        c = replace(c, revoked=c.revoked | {replaced.shopper_id}, receipt_id=e.replaced_receipt)
    return c, eff


def failed(c: Context, e: EnrolFailed) -> Step:
    return result(c, State.ENROL_FAILED, e.reason, "declined")


def already(c: Context, e: AlreadyEnrolled) -> Step:
    if e.shopper.shopper_id in c.revoked:
        raise Rejected("that enrolment was deleted")
    c = _enrol(go(c, State.ENROL_DUPLICATE), duplicate=e.shopper, duplicate_same_card=e.same_card, replace_tries=0)
    c, t = timer(c, c.policy.consent_timeout_s)
    return c, [Leds("consent"), t]


def _replaceable(c: Context) -> ShopperView:
    """The earlier enrolment the shopper may move to the new card: theirs only with its phone digits."""
    dup = c.enrol.duplicate
    if dup is None or c.enrol.duplicate_same_card:
        raise Rejected("this card already holds this face's enrolment: nothing to replace")
    if not dup.has_phone:
        raise Rejected("that enrolment has no phone digits to prove it is yours: delete it at My data with "
                       "its card, then enrol again")
    return dup


def replace_digits(c: Context, e: PhoneDigits) -> Step:
    return c, [VerifyPhone(_replaceable(c).shopper_id, four_digits(e.digits))]


def replace_checked(c: Context, e: PhoneChecked) -> Step:
    duplicate = _replaceable(c)
    if e.ok:
        return _store(c, replaces=duplicate.shopper_id)
    c = _enrol(c, replace_tries=c.enrol.replace_tries + 1)
    if e.suspended:
        return result(c, State.ENROL_FAILED, "face_pay_suspended", "declined")
    if c.enrol.replace_tries >= MAX_PHONE_TRIES:
        return result(c, State.ENROL_FAILED, "replace_phone_mismatch", "declined")
    return replace(c, guidance="phone_mismatch"), []


def capture_timeout(c: Context, e: Timeout) -> Step:
    return to_idle(c)


def forget(c: Context, shopper_id: str) -> Step:
    """``Revoked``: a shopper deleted meanwhile is no longer the one enrolled or offered to replace."""
    if c.enrol.enrolled is not None and c.enrol.enrolled.shopper_id == shopper_id:
        c = _enrol(c, enrolled=None)
    if c.state == State.ENROL_DUPLICATE and c.enrol.duplicate is not None \
            and c.enrol.duplicate.shopper_id == shopper_id:
        return to_idle(c)   # deleted meanwhile (My data elsewhere, the fleet): nothing left to offer
    return c, []


TABLE: Table = {
    State.IDLE: {StartEnrolment: start},
    State.ENROL_CONSENT: {AgreeConsent: agree},
    State.ENROL_DETAILS: {EnrolDetails: details},
    State.ENROL_CAPTURE: {CaptureAccepted: capture, EnrolFailed: failed, Timeout: capture_timeout,
                          LivenessFailed: scan.liveness_failed("enrolment", _scan_failed)},
    State.ENROL_CARD: {CardTapped: card},
    State.ENROL_SAVING: {EnrolStored: stored, EnrolFailed: failed, AlreadyEnrolled: already},
    State.ENROL_DUPLICATE: {PhoneDigits: replace_digits, PhoneChecked: replace_checked},
    State.ENROL_FAILED: {RetryEnrolment: retry},
}
