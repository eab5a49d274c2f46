"""What the kiosk says on each screen: its essential content, in the shopper's language.

:func:`announcement` reads the controller's state as the screen shows it (amount, guidance, the
head-turn asked, the result) and returns one line for the speaker; the controller says it whenever
the screen, the state or what it shows changes.  No Kivy here.
"""

from __future__ import annotations

from ..i18n import _

# the cue each state starts with: scan start, success, failure
CUES = {"face_scan": "scan_start", "enrol_capture": "scan_start", "approved": "success", "enrol_done": "success",
        "mydata_deleted": "success", "enrol_failed": "failure", "declined": "failure", "cancelled": "failure",
        "unknown": "failure"}


def cue_for(state: str) -> str | None:
    return CUES.get(state)


def keys_hint() -> str:
    return _("Keys: arrows or 2, 4, 6, 8 to move, Enter to press, plus for more time, minus to go back, "
             "star for speech.")


def announcement(ctl) -> str:
    """One line for the screen shown now (empty for staff screens but their title)."""
    s, st = ctl.screen, ctl.state
    parts: list[str] = []
    add = parts.append
    if s == "attract":
        if ctl.notice:
            add(ctl.notice)
        add(_("Welcome to {merchant}.", merchant=ctl.merchant))
        add(_("Face pay is on at this terminal.") if ctl.face_pay else _("Face pay is off. Please pay by card."))
        add(_("Speech: plug in headphones, press and hold the screen for two seconds, or press the star key."))
        if ctl.speech_on:
            add(keys_hint())
    elif s == "pay":
        add(_("Amount due: {amount}.", amount=ctl.amount_text))
        if ctl.message:
            add(ctl.message)
        add(_("To pay by card, tap your card on the reader below the screen.") if ctl.reader_ok else
            _("The card reader is not working."))
        if ctl.face_pay and ctl.camera_ok and not ctl.cooldown:
            add(_("Or choose Pay with face."))
    elif s == "scan":
        add(_("Camera on. Look at the camera to pay {amount}.", amount=ctl.amount_text))
        if ctl.challenge_text:
            add(ctl.challenge_text + ".")
        elif ctl.guidance:
            add(ctl.guidance + ".")
    elif s == "consent":
        add(_("Confirm your payment of {amount} to {merchant}, for {name}, card {card}.", amount=ctl.amount_text,
              merchant=ctl.merchant, name=ctl.shopper_name, card=ctl.shopper_card))
        if ctl.stepup_needed:
            add(_("First enter the last 4 digits of your phone number on the keypad, then press Check digits."))
        if ctl.guidance:
            add(ctl.guidance)
        add(_("Nothing is charged until you press Confirm. Not you? Press Cancel."))
    elif s == "processing":
        add(_("Processing {amount}. Please wait. Do not pay again.", amount=ctl.amount_text))
    elif s == "result":
        add(ctl.result_title + ".")
        add(ctl.result_detail)
        if ctl.receipt_qr and st in ("approved", "declined"):
            add(_("Your receipt is on the screen as a QR code."))
    elif s == "enrol_consent":
        add(ctl.consent_title + ".")
        add(ctl.consent_body)
        add(_("Press I agree, or No thanks."))
    elif s == "enrol_details":
        add(_("Your details: type your name and the last 4 digits of your phone number, then press Next."))
        if ctl.form_error:
            add(ctl.form_error)
    elif s == "enrol_capture":
        add(_("Camera on. Capture {n} of {total}.", n=min(ctl.captures + 1, ctl.captures_needed),
              total=ctl.captures_needed))
        if ctl.challenge_text:
            add(ctl.challenge_text + ".")
        elif ctl.guidance:
            add(ctl.guidance + ".")
    elif s == "enrol_card":
        add(_("Tap the card to link.") if st == "enrol_card" else _("Saving."))
        if ctl.message:
            add(ctl.message)
    elif s == "enrol_done":
        add(_("Face pay is set up."))
        add(ctl.enrolled_text)
        if ctl.optout_code:
            add(_("Your opt-out code: {code}.", code=" ".join(ctl.optout_code)))
    elif s == "enrol_duplicate":
        add(_("You are already enrolled."))
        add(ctl.duplicate_text.replace("\n", " "))
        if ctl.can_replace:
            add(_("Type the 4 digits on the keypad, then press Use the new card. Or press Keep my enrolment."))
        if ctl.guidance:
            add(ctl.guidance)
    elif s == "enrol_failed":
        add(_("Face pay was not set up."))
        add(ctl.failure_text)
        add(ctl.failure_hint)
        add(_("Press Try again, or Done.") if ctl.can_retry else _("Press Done."))
    elif s == "mydata_tap":
        add(_("My data. Tap your card on the reader to see whether a face is enrolled for it.")
            if st == "mydata_tap" else _("Looking up."))
        if ctl.message:
            add(ctl.message)
    elif s == "mydata_show":
        if st != "mydata_show":
            add(_("Deleting."))
        elif ctl.confirm_delete:
            add(_("Delete your face data now? This cannot be undone. Press Yes, delete now, or Keep my data."))
        else:
            add(ctl.mydata_text.replace("\n", ". ") + ".")
            if ctl.message:
                add(ctl.message)
            if ctl.guidance:
                add(ctl.guidance)
    elif s == "mydata_deleted":
        add(_("Deleted. Your face template and its key are destroyed. Your face matches no one at this terminal."))
    elif s == "out_of_service":
        add(_("Out of service. Please pay at another till."))
    elif s == "staff_pin":
        add(_("Staff PIN"))
    elif s == "staff_amount":
        add(_("Amount to charge"))
    elif s == "staff_menu":
        add(_("Staff menu"))
    return " ".join(p for p in parts if p and p.strip(" ."))
