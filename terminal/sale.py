"""One sale, headless: ``facepay sale`` drives the same state machine, runner and processor as the kiosk.

A face sale uses the photo as a one-frame replay camera.  Without
``confirm`` the consent step times out, exactly as if the shopper walked
away: the sale ends cancelled and nothing is charged.
"""

from __future__ import annotations

from . import checkout as co
from .errors import FacepayError, InputError, UsageError
from .face.gates import GUIDANCE
from .money import parse_amount, to_decimal_str
from .payments.journal import new_sale_id
from .runner import Runner
from .service import Terminal

SUSPENDED = ("face pay is suspended for this shopper after too many wrong phone digits: pay by card; "
             "the shopper switches it back on at the kiosk (My data, tap the card, enter the digits)")


def run_sale(term: Terminal, *, amount: str, card_uid: bytes | None = None, face: str | None = None,
             confirm: bool = False, phone_last4: str | None = None) -> dict:
    currency = term.cfg.payment.currency
    try:
        minor = parse_amount(amount, currency)
    except ValueError as exc:
        raise UsageError(str(exc), "--amount") from None
    camera = None
    if face is not None and term.fleet_paused():
        from .fleet.link import PAUSED_MESSAGE

        return {"sale_id": None, "amount": to_decimal_str(minor, currency), "amount_minor": minor,
                "currency": currency, "method": "face", "status": "face_pay_paused",
                "reason": PAUSED_MESSAGE + ": pay by card"}
    if face is not None:
        from .camera.replay import single_image

        camera = single_image(face)
    machine = co.CheckoutMachine(term.policy(), face_pay=term.cfg.face_pay, mode=term.mode())
    runner = Runner(term, machine, camera)
    for eff in machine.startup_effects():
        runner.perform(eff)
    sale_id = new_sale_id()
    result = {"sale_id": sale_id, "amount": to_decimal_str(minor, currency), "amount_minor": minor,
              "currency": currency, "method": "face" if face else "card", "shopper": None,
              "step_up": False, "reason": None}
    try:
        runner.dispatch(co.StartSale(sale_id, minor, currency))
        if card_uid is not None:
            runner.dispatch(term.tap(card_uid))
        else:
            runner.dispatch(co.ChooseFace())
            guidance = []
            runner.scan_payment(lambda ev: (guidance.append(ev.reason) if isinstance(ev, co.FaceGuidance) else None,
                                            runner.dispatch(ev)))
            if machine.state == co.State.AMOUNT_DUE:
                if guidance and runner.last_match is None:
                    raise InputError(f"unusable photo: {guidance[-1]} ({GUIDANCE.get(guidance[-1], '')})", face)
                if machine.ctx.message == "face_pay_suspended":
                    return result | {"status": "no_match", "reason": SUSPENDED}
                if machine.ctx.message == "stepup_unavailable":
                    return result | {"status": "no_match", "reason": "the match is not certain enough and no phone "
                                     "check is on file for it: pay by card"}
                m = runner.last_match
                return result | {"status": "no_match", "reason": m.reason if m else "no match"}
            cand = machine.ctx.candidate
            result["shopper"] = {"masked_name": cand.masked_name, "masked_card": cand.masked_card}
            result["step_up"] = machine.ctx.stepup_required
            if machine.ctx.stepup_required and phone_last4 is not None:
                runner.dispatch(co.PhoneDigits(phone_last4))
                if machine.ctx.message == "face_pay_suspended":
                    return result | {"status": "cancelled", "reason": "phone digits did not match: " + SUSPENDED}
            if not confirm:
                runner.dispatch(co.Timeout(runner.last_timer.token))
                return result | {"status": "cancelled", "reason": "not confirmed by the shopper: nothing charged"}
            if machine.ctx.stepup_required and not machine.ctx.stepup_ok:
                reason = ("phone digits did not match" if phone_last4 else
                          "this match needs the last 4 digits of the shopper's phone (--phone-last4)")
                runner.dispatch(co.Cancel())
                return result | {"status": "cancelled", "reason": reason + ": nothing charged"}
            runner.dispatch(co.Confirm(minor, cand.shopper_id))
    except co.Rejected as exc:
        raise UsageError(str(exc), "sale") from None
    status = machine.state
    if status == co.State.CANCELLED and isinstance(runner.charge_error, FacepayError):
        raise runner.charge_error  # nothing was charged: the journal could not record it, or the key was refused
    if status == co.State.APPROVED:
        return result | {"status": "approved", "reference": runner.last_charge.reference}
    return result | {"status": status.value, "reason": machine.ctx.message}
