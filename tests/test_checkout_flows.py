"""Example-based tests of each flow on the pure checkout machine: events in, effects out, no runner,
no camera, no database (milliseconds each; `make test-fast` runs this tier).

test_checkout_properties.py checks the same machine over random event sequences with the runner and a
real replay camera; these examples pin down what each flow does, step by step, as a reader would follow it.
"""

import copy

import pytest

from terminal import checkout as co
from terminal.checkout import State

ANA = co.ShopperView("shp_ana", "Ana N.", "•••• 0001", "tok_ana", has_phone=True)
BEN = co.ShopperView("shp_ben", "Ben O.", "•••• 0002", "tok_ben", has_phone=False)
CARD = co.CardTapped("h" * 64, "•••• 4242", "tok_card")
PHONE = co.CardTapped("r" * 64, "•••• 0808", "tok_phone", random_uid=True)
TEXT = ("v3-en", "c" * 64)


def machine(**policy) -> co.CheckoutMachine:
    policy.setdefault("false_match_rate", 0.0)   # no step-up unless a test asks for it
    return co.CheckoutMachine(co.Policy(**policy))


def kinds(effects) -> list[str]:
    return [type(e).__name__ for e in effects]


def one(effects, kind):
    (found,) = [e for e in effects if isinstance(e, kind)]
    return found


def timer(effects) -> int:
    return one(effects, co.StartTimer).token


def to_consent(m, shopper=ANA, margin=0.3, size=10) -> list:
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    opened = m.handle(co.ChooseFace("left"))
    assert one(opened, co.OpenCamera).challenge == "left"
    m.handle(co.LivenessPassed())
    return m.handle(co.FaceMatched(shopper, 0.3, margin, size))


# -- payment by card ----------------------------------------------------------------
def test_card_payment_charges_the_amount_due_and_ends_approved():
    m = machine()
    assert kinds(m.handle(co.StartSale("sale_1", 420, "EUR"))) == ["Leds"]
    assert m.state == State.AMOUNT_DUE
    charge = one(m.handle(CARD), co.Charge)
    assert (charge.sale.amount_minor, charge.method, charge.card_hash) == (420, "card", CARD.card_hash)
    assert m.state == State.CHARGING
    done = m.handle(co.ChargeResult("sale_1", "approved"))
    assert m.state == State.APPROVED and one(done, co.Leds).pattern == "approved"
    m.handle(co.Done())
    assert m.state == State.IDLE and m.view().sale is None


def test_a_phone_showing_a_random_uid_pays_but_is_never_linked_to_anyone():
    m = machine()
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    assert one(m.handle(PHONE), co.Charge).card_hash is None


def test_a_card_tapped_during_the_face_scan_closes_the_camera_and_pays_by_card():
    m = machine()
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    m.handle(co.ChooseFace("right"))
    assert m.view().camera_open
    effects = m.handle(CARD)
    assert kinds(effects)[0] == "CloseCamera" and not m.view().camera_open
    assert one(effects, co.Charge).method == "card"


# -- payment by face ------------------------------------------------------------------
def test_face_payment_asks_consent_then_charges_only_after_confirm():
    m = machine()
    effects = to_consent(m)
    assert m.state == State.CONSENT and "Charge" not in kinds(effects)
    assert not m.view().camera_open                       # the camera closed with the match
    with pytest.raises(co.Rejected):
        m.handle(co.Confirm(999, ANA.shopper_id))      # another amount than the screen showed
    effects = m.handle(co.Confirm(420, ANA.shopper_id))
    record, charge = one(effects, co.Record), one(effects, co.Charge)
    assert record.kind == "charge_confirmed" and record.subject == ANA.shopper_id
    assert (charge.method, charge.shopper_id, charge.token) == ("face", ANA.shopper_id, ANA.token)


def test_no_match_without_passing_liveness_first():
    m = machine()
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    m.handle(co.ChooseFace("left"))
    with pytest.raises(co.Rejected, match="liveness"):
        m.handle(co.FaceMatched(ANA, 0.3, 0.3, 10))


def test_no_match_returns_to_the_amount_with_the_card_offered():
    m = machine()
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    m.handle(co.ChooseFace("left"))
    effects = m.handle(co.FaceNoMatch("no_match"))
    assert m.state == State.AMOUNT_DUE and m.view().message == "no_match" and "CloseCamera" in kinds(effects)
    m.handle(co.ChooseFace("left"))
    m.handle(co.FaceNoMatch(co.TOO_CLOSE))
    assert m.view().message == "no_match_too_close"


def test_a_small_margin_asks_for_the_phone_digits_before_confirm():
    m = machine()
    to_consent(m, margin=0.01)
    assert m.view().stepup_required
    with pytest.raises(co.Rejected, match="phone"):
        m.handle(co.Confirm(420, ANA.shopper_id))
    assert one(m.handle(co.PhoneDigits("1234")), co.VerifyPhone).shopper_id == ANA.shopper_id
    m.handle(co.PhoneChecked(True))
    assert one(m.handle(co.Confirm(420, ANA.shopper_id)), co.Charge).method == "face"


def test_a_small_margin_and_no_phone_digits_is_treated_as_no_match():
    m = machine()
    to_consent(m, shopper=BEN, margin=0.01)
    assert m.state == State.AMOUNT_DUE and m.view().message == "stepup_unavailable"


def test_consent_times_out_into_a_recorded_cancellation_and_nothing_is_charged():
    m = machine()
    token = timer(to_consent(m))
    effects = m.handle(co.Timeout(token))
    assert m.state == State.CANCELLED and "Charge" not in kinds(effects)
    assert one(effects, co.Record).kind == "charge_cancelled"


def test_an_opt_out_during_consent_cancels_the_sale_and_the_face_resolves_to_no_one():
    m = machine()
    to_consent(m)
    m.handle(co.Revoked(ANA.shopper_id, "rcp_1"))
    assert m.state == State.CANCELLED and m.view().candidate is None
    m.handle(co.Done())
    m.handle(co.StartSale("sale_2", 100, "EUR"))
    m.handle(co.ChooseFace("left"))
    m.handle(co.LivenessPassed())
    m.handle(co.FaceMatched(ANA, 0.2, 0.3, 10))        # a stale matcher still says Ana
    assert m.state == State.AMOUNT_DUE and m.view().message == "no_match"


def test_an_unknown_outcome_stays_on_screen_and_asks_the_processor_again():
    m = machine()
    to_consent(m)
    m.handle(co.Confirm(420, ANA.shopper_id))
    token = timer(m.handle(co.ChargeResult("sale_1", "unknown")))
    assert m.state == State.UNKNOWN and "do not pay again" in m.view().message
    assert one(m.handle(co.Timeout(token)), co.ResolveCharge).sale_id == "sale_1"
    with pytest.raises(co.Rejected):
        m.handle(co.ChargeResult("sale_1", "unknown"))
    m.handle(co.ChargeResult("sale_1", "declined", "insufficient funds"))
    assert m.state == State.DECLINED and m.view().message == "insufficient funds"


def test_three_failed_head_turns_in_a_row_start_the_cool_down():
    m = machine(cooldown_s=60.0)
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    for strike in range(1, co.LIVENESS_STRIKES + 1):
        m.handle(co.ChooseFace("left"))
        effects = m.handle(co.LivenessFailed("flat"))
        assert one([e for e in effects if isinstance(e, co.Record) and e.kind == "liveness_failed"],
                   co.Record).details["strike"] == strike
    cooldown = one(effects, co.StartCooldown)
    with pytest.raises(co.Rejected, match="cooling down"):
        m.handle(co.ChooseFace("left"))
    m.handle(co.CooldownOver(cooldown.token))
    assert kinds(m.handle(co.ChooseFace("left")))[0] == "OpenCamera"


def test_face_pay_off_or_card_only_never_opens_the_camera():
    m = co.CheckoutMachine(co.Policy(), face_pay=False)
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    with pytest.raises(co.Rejected):
        m.handle(co.ChooseFace("left"))
    m = machine()
    m.handle(co.SetMode("card_only"))
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    with pytest.raises(co.Rejected):
        m.handle(co.ChooseFace("left"))
    assert not m.view().camera_open


# -- enrolment ------------------------------------------------------------------------
def to_enrol_card(m) -> None:
    m.handle(co.StartEnrolment())
    m.handle(co.AgreeConsent(*TEXT))
    m.handle(co.EnrolDetails("Ana Newcomer", "1234", challenge="right"))
    assert m.view().camera_open and m.state == State.ENROL_CAPTURE
    m.handle(co.LivenessPassed())
    for n in range(1, m.policy.enrol_captures + 1):
        m.handle(co.CaptureAccepted(n))
    assert m.state == State.ENROL_CARD and not m.view().camera_open


def test_enrolment_stores_the_consented_text_with_the_card():
    m = machine()
    to_enrol_card(m)
    store = one(m.handle(CARD), co.StoreEnrolment)
    assert (store.name, store.phone_last4, store.card_hash) == ("Ana Newcomer", "1234", CARD.card_hash)
    assert (store.consent_version, store.consent_text_hash) == TEXT
    m.handle(co.EnrolStored(ANA))
    assert m.state == State.ENROL_DONE and m.view().enrolled == ANA


def test_enrolment_refuses_a_random_uid_and_waits_for_a_physical_card():
    m = machine()
    to_enrol_card(m)
    assert m.handle(PHONE) == [] and m.state == State.ENROL_CARD and m.view().message == "random_uid"


def test_an_already_enrolled_face_is_offered_a_replace_proved_by_its_phone_digits():
    m = machine()
    to_enrol_card(m)
    m.handle(CARD)
    m.handle(co.AlreadyEnrolled(ANA, same_card=False))
    assert m.state == State.ENROL_DUPLICATE
    assert one(m.handle(co.PhoneDigits("1234")), co.VerifyPhone).shopper_id == ANA.shopper_id
    assert one(m.handle(co.PhoneChecked(True)), co.StoreEnrolment).replace == ANA.shopper_id
    m.handle(co.EnrolStored(co.ShopperView("shp_new", "Ana N.", "•••• 4242", "tok_new"), replaced_receipt="rcp_9"))
    assert m.state == State.ENROL_DONE and m.view().receipt_id == "rcp_9"
    assert ANA.shopper_id in m.view().revoked


def test_a_failed_enrolment_can_be_tried_again_without_retyping_the_details():
    m = machine()
    m.handle(co.StartEnrolment())
    m.handle(co.AgreeConsent(*TEXT))
    m.handle(co.EnrolDetails("Ana Newcomer", "1234", challenge="left"))
    m.handle(co.LivenessFailed("turn_not_seen"))
    assert m.state == State.ENROL_FAILED and m.view().message.startswith("liveness:turn_not_seen")
    assert kinds(m.handle(co.RetryEnrolment()))[0] == "OpenCamera"
    assert m.view().enrol_details.name == "Ana Newcomer"


def test_leaving_enrolment_drops_the_captures_and_clears_the_details():
    m = machine()
    m.handle(co.StartEnrolment())
    m.handle(co.AgreeConsent(*TEXT))
    token = timer(m.handle(co.EnrolDetails("Ana Newcomer", "1234", challenge="left")))
    effects = m.handle(co.Timeout(token))
    assert "DropCaptures" in kinds(effects) and "CloseCamera" in kinds(effects)
    assert m.state == State.IDLE and m.view().enrol_details is None and m.view().enrol_consent is None


# -- my data --------------------------------------------------------------------------
def test_my_data_looks_up_the_card_and_deletes_on_request():
    m = machine()
    m.handle(co.StartMyData())
    assert one(m.handle(CARD), co.LookupCard).card_hash == CARD.card_hash
    m.handle(co.LookupResult(ANA))
    assert m.state == State.MYDATA_SHOW and m.view().mydata == ANA
    assert one(m.handle(co.DeleteMyData()), co.RevokeShopper).shopper_id == ANA.shopper_id
    m.handle(co.Revoked(ANA.shopper_id, "rcp_1"))
    assert m.state == State.MYDATA_DELETED and m.view().receipt_id == "rcp_1" and m.view().mydata is None


def test_my_data_shows_no_one_for_a_revoked_shopper():
    m = machine()
    m.handle(co.Revoked(ANA.shopper_id, "rcp_1"))
    m.handle(co.StartMyData())
    m.handle(CARD)
    m.handle(co.LookupResult(ANA))      # a stale store answer
    assert m.view().mydata is None
    with pytest.raises(co.Rejected):
        m.handle(co.DeleteMyData())


# -- what every flow shares -----------------------------------------------------------
@pytest.mark.parametrize("event", [co.Confirm(420, "shp_ana"), co.CardTapped("h", "m", "t"), co.Done(),
                                   co.LivenessPassed(), co.Timeout(99), co.DeleteMyData(), co.Cancel()])
def test_an_event_invalid_in_the_state_is_rejected_and_changes_nothing(event):
    m = machine()
    before = copy.deepcopy(m.ctx)
    with pytest.raises(co.Rejected):
        m.handle(event)
    assert m.ctx == before


def test_a_stale_timer_is_rejected_and_so_is_a_timeout_where_none_runs():
    m = machine()
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    scan_timer = timer(m.handle(co.ChooseFace("left")))
    m.handle(co.LivenessPassed())
    consent_timer = timer(m.handle(co.FaceMatched(ANA, 0.3, 0.3, 10)))
    with pytest.raises(co.Rejected, match="stale"):
        m.handle(co.Timeout(scan_timer))           # the scan's timer, overtaken by the consent screen's
    m.handle(co.Confirm(420, ANA.shopper_id))
    with pytest.raises(co.Rejected, match="no timer runs"):
        m.handle(co.Timeout(consent_timer))        # charging waits for the processor, not a clock
    assert m.state == State.CHARGING


def test_the_machine_imports_without_numpy_or_a_model():
    import subprocess
    import sys
    code = ("import sys, terminal.checkout; heavy = sorted(m for m in ('numpy', 'cv2', 'mediapipe', 'dlib', 'kivy')"
            " if m in sys.modules); print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- availability: the camera -------------------------------------------------------
def test_a_camera_fault_stops_face_steps_until_the_camera_is_restored():
    m = machine()
    assert kinds(m.handle(co.CameraFault("unplugged"))) == ["Leds"] and not m.view().camera_ok
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    with pytest.raises(co.Rejected, match="camera is not working"):
        m.handle(co.ChooseFace("left"))
    m.handle(co.Cancel())
    m.handle(co.Done())
    assert one(m.handle(co.CameraRestored()), co.Leds).pattern == "idle" and m.view().camera_ok
    assert m.handle(co.CameraRestored()) == []       # already working: nothing to change
    m.handle(co.StartSale("sale_2", 420, "EUR"))
    assert kinds(m.handle(co.ChooseFace("left")))[0] == "OpenCamera"


def test_a_camera_fault_during_a_scan_closes_it_and_offers_the_card():
    m = machine()
    m.handle(co.StartSale("sale_1", 420, "EUR"))
    m.handle(co.ChooseFace("left"))
    effects = m.handle(co.CameraFault("read failed"))
    assert kinds(effects) == ["CloseCamera", "Leds"] and m.state == State.AMOUNT_DUE
    assert m.view().message == "camera_fault" and not m.view().camera_open
    assert m.handle(co.CameraRestored()) == [] and m.view().camera_ok   # not at rest: the LEDs stay as they are
