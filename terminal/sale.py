"""One sale, headless: ``facepay sale`` drives the same state machine, runner and processor as the kiosk.

A face sale uses the photo as a one-frame replay camera, or, with the
liveness check required (the default), a video of the shopper doing the
head-turn challenge (``--face-video FILE --challenge left|right``).  Without
``confirm`` the consent step times out, exactly as if the shopper walked
away: the sale ends cancelled and nothing is charged.
"""

from __future__ import annotations

from . import checkout as co
from .errors import FacepayError, InputError, UsageError
from .face.gates import GUIDANCE
from .money import parse_amount, to_decimal_str
from .payments.journal import new_sale_id
from .runner import ChargeOutcome, Runner
from .service import Terminal

SUSPENDED = ("face pay is suspended for this shopper after too many wrong phone digits: pay by card; "
             "the shopper switches it back on at the kiosk (My data, tap the card, enter the digits)")


def face_source(term: Terminal, still: str | None, video: str | None, challenge: str | None, flag: str):
    """The camera standing in for the kiosk's: a still photo (only without liveness) or a challenge video."""
    if still is not None:
        if term.cfg.liveness.required:
            raise UsageError("a still photo cannot do the head-turn liveness check ([liveness] required = true)",
                             flag, f"film the shopper turning their head and pass {flag}-video FILE --challenge "
                                   "left|right" if flag == "--face" else "pass --video FILE --challenge left|right")
        from .camera.replay import single_image

        return single_image(still)
    if challenge is None:
        raise UsageError("a face video needs the side the shopper was asked to turn to", "--challenge",
                         "pass --challenge left or --challenge right")
    from .camera.replay import open_clip

    cam = open_clip(video, None, None)
    cam.close()
    return cam


def record_liveness_off(term: Terminal, where: str) -> None:
    """Running a face step with liveness switched off is itself a consent-ledger event."""
    if not term.cfg.liveness.required:
        term.ledger.append("liveness_off", "", terminal_id=term.cfg.terminal_id, where=where,
                           config=term.cfg.source)


def run_sale(term: Terminal, *, amount: str, card_uid: bytes | None = None, face: str | None = None,
             confirm: bool = False, phone_last4: str | None = None, face_video: str | None = None,
             challenge: str | None = None) -> dict:
    currency = term.cfg.payment.currency
    try:
        minor = parse_amount(amount, currency)
    except ValueError as exc:
        raise UsageError(str(exc), "--amount") from None
    camera = None
    by_face = face is not None or face_video is not None
    if by_face and term.fleet_paused():
        from .fleet.link import PAUSED_MESSAGE

        return {"sale_id": None, "amount": to_decimal_str(minor, currency), "amount_minor": minor,
                "currency": currency, "method": "face", "status": "face_pay_paused",
                "reason": PAUSED_MESSAGE + ": pay by card"}
    if by_face:
        camera = face_source(term, face, face_video, challenge, "--face")
        record_liveness_off(term, "facepay sale")
    machine = co.CheckoutMachine(term.policy(), face_pay=term.cfg.face_pay, mode=term.mode())
    runner = Runner(term, machine, camera)
    for eff in machine.startup_effects():
        runner.perform(eff)
    sale_id = new_sale_id()
    result = {"sale_id": sale_id, "amount": to_decimal_str(minor, currency), "amount_minor": minor,
              "currency": currency, "method": "face" if by_face else "card", "shopper": None,
              "step_up": False, "reason": None}
    charged: list[ChargeOutcome] = []

    def send(event) -> None:
        """Dispatch; a charge it asks for is performed here, so its error (if any) comes back with it."""
        for eff in runner.dispatch(event, deferred={co.Charge}):
            charged.append(runner.charge(eff))
            send(charged[-1].event)

    try:
        send(co.StartSale(sale_id, minor, currency))
        if card_uid is not None:
            send(term.tap(card_uid))
        else:
            send(co.ChooseFace(challenge if term.cfg.liveness.required else None))
            found = runner.scanner.scan_payment(send)
            view = machine.view()
            if view.state == co.State.AMOUNT_DUE:
                lv = found.liveness
                if lv is not None and not lv.live:
                    if lv.reason == "no_face":
                        raise InputError("no single face in the video", face_video, "film one face, facing the camera")
                    return result | {"status": "not_live", "reason": f"liveness check failed: {lv.words} "
                                     f"({lv.reason}); nothing charged: try again or pay by card",
                                     "liveness": lv.as_dict()}
                if found.guidance and found.match is None:
                    raise InputError(f"unusable photo: {found.guidance[-1]} ({GUIDANCE.get(found.guidance[-1], '')})",
                                     face or face_video)
                if view.message == "face_pay_suspended":
                    return result | {"status": "no_match", "reason": SUSPENDED}
                if view.message == "stepup_unavailable":
                    return result | {"status": "no_match", "reason": "the match is not certain enough and no phone "
                                     "check is on file for it: pay by card"}
                m = found.match
                return result | {"status": "no_match", "reason": m.reason if m else "no match"}
            cand = view.candidate
            result["shopper"] = {"masked_name": cand.masked_name, "masked_card": cand.masked_card}
            result["step_up"] = view.stepup_required
            if view.stepup_required and phone_last4 is not None:
                send(co.PhoneDigits(phone_last4))
                if machine.view().message == "face_pay_suspended":
                    return result | {"status": "cancelled", "reason": "phone digits did not match: " + SUSPENDED}
            if not confirm:
                send(co.Timeout(machine.view().timer))
                return result | {"status": "cancelled", "reason": "not confirmed by the shopper: nothing charged"}
            if view.stepup_required and not machine.view().stepup_ok:
                reason = ("phone digits did not match" if phone_last4 else
                          "this match needs the last 4 digits of the shopper's phone (--phone-last4)")
                send(co.Cancel())
                return result | {"status": "cancelled", "reason": reason + ": nothing charged"}
            send(co.Confirm(minor, cand.shopper_id))
    except co.Rejected as exc:
        raise UsageError(str(exc), "sale") from None
    view = machine.view()
    error = charged[-1].error if charged else None
    if view.state == co.State.CANCELLED and isinstance(error, FacepayError):
        raise error  # nothing was charged: the journal could not record it, or the key was refused
    if view.state == co.State.APPROVED:
        return result | {"status": "approved", "reference": view.charge_reference}
    return result | {"status": view.state.value, "reason": view.message}
