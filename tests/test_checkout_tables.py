"""The checkout package's structure, on the pure machine (milliseconds; `make test-fast`): transitions as
data, one place that refuses, a deterministic core, a frozen view."""

import dataclasses
import itertools

import pytest

from terminal import checkout as co
from terminal import modes
from terminal.checkout import State, availability, enrolment, machine, mydata, payment, scan, staff

ANA = co.ShopperView("shp_ana", "Ana N.", "•••• 0001", "tok_ana", has_phone=True)
CARD = co.CardTapped("h" * 64, "•••• 4242", "tok_card")


def sample_events() -> list:
    """One event of every type the machine knows."""
    return [co.StartSale("s1", 100, "EUR"), co.ChooseFace("left"), CARD, co.MoreTime(), co.FaceGuidance("no_face"),
            co.FaceMatched(ANA, 0.3, 0.3, 5), co.FaceNoMatch("x"), co.LivenessPassed(), co.LivenessFailed("flat"),
            co.CooldownOver(1), co.PhoneDigits("1234"), co.PhoneChecked(True), co.UnlockFacePay("1234"),
            co.UnlockChecked(True), co.Confirm(100, "shp_ana"), co.Cancel(), co.Timeout(0),
            co.ChargeResult("s1", "approved"), co.Done(), co.StartEnrolment(), co.AgreeConsent("v1", "c" * 64),
            co.EnrolDetails("Ana", "1234", "left"), co.CaptureAccepted(1), co.EnrolStored(ANA),
            co.EnrolFailed("x"), co.AlreadyEnrolled(ANA, False), co.RetryEnrolment("left"), co.StartMyData(),
            co.LookupResult(ANA), co.DeleteMyData(), co.Revoked("shp_x", "rcp_1"), co.SetMode("normal"),
            co.ReaderStatus(True), co.FleetStatus(False), co.CameraFault("x"), co.CameraRestored(),
            co.OpenStaff(), co.CloseStaff(), co.LockStaff(), co.StaffPin("1234"), co.PinChecked(False),
            co.StaffNewSale(), co.StaffAmount("1.00", "EUR", "s9"), co.StaffSetMode("normal"),
            co.StaffReverse("void"), co.Reversed("void", 100, "EUR", "approved", False), co.ReverseFailed("x"),
            co.ShowReport(), co.ShowDoctor(), co.ReportReady(("a",))]


def test_every_event_type_is_in_the_union_and_sampled_here():
    assert {type(e) for e in sample_events()} == set(co.EVENTS)


def test_each_flow_table_names_only_its_own_events_and_the_merge_has_no_clash():
    tables = [payment.TABLE, enrolment.TABLE, mydata.TABLE, staff.TABLE, scan.TABLE, availability.TABLE]
    for table in tables:
        for state, row in table.items():
            assert isinstance(state, State) and all(t in co.EVENTS for t in row)
    for a, b in itertools.combinations(tables, 2):
        for state in a.keys() & b.keys():
            assert not a[state].keys() & b[state].keys(), state
    # the merged table holds every flow's handlers, unchanged
    for table in tables:
        for state, row in table.items():
            for kind, handler in row.items():
                assert machine.TABLE[state][kind] is handler


def test_an_event_without_a_handler_in_a_state_is_refused_in_one_place_and_changes_nothing():
    """Drive the machine into each state; every event with no handler there is refused by handler(), before
    any flow code runs, and the context is the very same object afterwards."""
    m = co.CheckoutMachine(co.Policy(false_match_rate=0.0))
    seen = set()
    walk = [co.StartSale("s1", 100, "EUR"), co.ChooseFace("left"), co.LivenessPassed(), co.FaceMatched(ANA, .3, .3, 5),
            co.Confirm(100, "shp_ana"), co.ChargeResult("s1", "approved"), co.Done(), co.StartEnrolment(),
            co.AgreeConsent("v1", "c" * 64), co.EnrolDetails("Ana", "1234", "left"), co.Cancel(), co.StartMyData(),
            CARD, co.LookupResult(ANA), co.Done()]
    for step in walk:
        seen.add(m.state)
        for ev in sample_events():
            handled = (machine.TABLE.get(m.state, {}).get(type(ev)) or machine.ANY_STATE.get(type(ev)))
            if handled is not None or type(ev) is co.Timeout:
                continue
            before = m.ctx
            with pytest.raises(co.Rejected):
                m.handle(ev)
            assert m.ctx is before and not m.accepts(ev)
        m.handle(step)
    assert {State.IDLE, State.AMOUNT_DUE, State.FACE_SCAN, State.CONSENT, State.CHARGING, State.APPROVED,
            State.ENROL_CONSENT, State.ENROL_DETAILS, State.ENROL_CAPTURE, State.MYDATA_TAP,
            State.MYDATA_LOOKUP, State.MYDATA_SHOW} <= seen


def test_the_refusal_says_why_in_the_words_the_screens_show():
    m = co.CheckoutMachine(mode="out_of_service")
    with pytest.raises(co.Rejected, match="out of service"):
        m.handle(co.StartSale("s1", 100, "EUR"))
    m = co.CheckoutMachine()
    with pytest.raises(co.Rejected, match="nothing to cancel in state idle"):
        m.handle(co.Cancel())
    with pytest.raises(co.Rejected, match="a card tap is not expected in state idle"):
        m.handle(CARD)
    with pytest.raises(co.Rejected, match="not possible in state idle"):
        m.handle(co.Confirm(100, "shp_ana"))

    class Stray:
        pass

    with pytest.raises(co.Rejected, match="unknown event Stray"):
        m.handle(Stray())


def test_the_core_is_deterministic_the_challenge_side_comes_in_the_event():
    """The same events give equal contexts and effects; the side is drawn when the event is built."""
    sides = {co.ChooseFace().challenge for _ in range(64)}
    assert sides == {"left", "right"}
    events = [co.StartSale("s1", 100, "EUR"), co.ChooseFace(), co.LivenessFailed("flat"), co.ChooseFace()]
    runs = []
    for _ in range(2):
        m = co.CheckoutMachine()
        runs.append(([m.handle(e) for e in events], m.ctx))
    assert runs[0] == runs[1]
    assert runs[0][1].scan.challenge == events[3].challenge
    with pytest.raises(co.Rejected, match="handed in"):   # liveness required and no side: refused, not drawn
        m = co.CheckoutMachine()
        m.handle(co.StartSale("s1", 100, "EUR"))
        m.handle(co.ChooseFace(None))


def test_the_view_is_frozen_and_holds_no_card_token_of_a_tapped_card():
    m = co.CheckoutMachine()
    v = m.view()
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.message = "x"
    assert "enrol_card" not in {f.name for f in dataclasses.fields(co.View)}
    assert v.state == State.IDLE and v.mode == co.Mode.NORMAL and v.face_pay


def test_modes_and_policy_come_from_one_place():
    from terminal.config import Config, parse_config

    assert tuple(co.Mode) == co.MODES and co.Mode is modes.Mode   # the config's mode is the machine's Mode
    assert Config().mode is co.Mode.NORMAL
    assert parse_config('terminal_id = "t"\nmode = "card_only"', "t").mode is co.Mode.CARD_ONLY
    cfg = Config()
    p = co.Policy.from_config(cfg)
    assert (p.threshold, p.enrol_captures, p.consent_timeout_s, p.liveness_required) == (
        cfg.match.threshold, cfg.match.enrol_captures, cfg.payment.consent_timeout_s, cfg.liveness.required)


# -- the staff flow (checkout/staff.py) ----------------------------------------------------
def unlocked() -> co.CheckoutMachine:
    m = co.CheckoutMachine()
    assert m.handle(co.OpenStaff()) == [] and m.view().staff_screen == "staff_pin"
    assert m.handle(co.StaffPin("1234")) == [co.CheckPin("1234")]
    m.handle(co.PinChecked(True))
    assert m.view().staff_unlocked and m.view().staff_screen == "staff_menu"
    return m


def test_staff_actions_need_the_pin_and_a_wrong_pin_says_how_long_it_locks():
    m = co.CheckoutMachine()
    for ev in (co.StaffNewSale(), co.StaffReverse("void"), co.ShowReport(), co.ShowDoctor(),
               co.StaffSetMode("card_only"), co.StaffAmount("4.20", "EUR", "s1")):
        with pytest.raises(co.Rejected, match="staff PIN first"):
            m.handle(ev)
    m.handle(co.OpenStaff())
    m.handle(co.PinChecked(False, 30.0))
    assert m.view().staff_note == co.StaffNote("pin_wrong", wait_s=30.0) and not m.view().staff_unlocked
    m.handle(co.PinChecked(False, 12.0, locked=True))
    assert m.view().staff_note == co.StaffNote("pin_locked", wait_s=12.0)
    m = unlocked()
    m.handle(co.LockStaff())
    assert not m.view().staff_unlocked and m.view().staff_screen == ""
    m.handle(co.OpenStaff())
    assert m.view().staff_screen == "staff_pin"


def test_staff_key_a_sale_in_or_get_a_clear_note():
    m = unlocked()
    m.handle(co.StaffNewSale())
    assert m.view().staff_screen == "staff_amount"
    assert m.handle(co.StaffAmount("4.2.0", "EUR", "s1")) == [] and m.view().staff_note.code == "amount"
    assert m.state == State.IDLE
    assert m.handle(co.StaffAmount("4.20", "EUR", "s1")) == [co.Leds("amount_due")]
    assert m.state == State.AMOUNT_DUE and m.view().sale == co.Sale("s1", 420, "EUR")
    assert m.view().staff_screen == ""
    with pytest.raises(co.Rejected, match="not possible in state amount_due"):
        m.handle(co.StaffAmount("1.00", "EUR", "s2"))


def test_staff_mode_switch_records_it_and_out_of_service_takes_no_sale():
    m = unlocked()
    effects = m.handle(co.StaffSetMode("out_of_service"))
    assert co.Record("mode_changed", "", {"from": "normal", "to": "out_of_service"}) in effects
    assert co.DropGallery() in effects and m.state == State.OUT_OF_SERVICE
    assert m.view().staff_note == co.StaffNote("mode", mode="out_of_service") and m.view().staff_screen == "staff_menu"
    with pytest.raises(co.Rejected, match="out of service"):
        m.handle(co.StaffAmount("4.20", "EUR", "s1"))
    m.handle(co.StaffSetMode("normal"))
    m.handle(co.StartSale("s1", 100, "EUR"))
    with pytest.raises(co.Rejected, match="finish or cancel"):
        m.handle(co.StaffSetMode("card_only"))


def test_staff_void_report_and_health_check_are_effects_whose_results_come_back_as_events():
    m = unlocked()
    assert m.handle(co.StaffReverse("void")) == [co.Reverse("void")]
    with pytest.raises(co.Rejected, match="void or a refund"):
        m.handle(co.StaffReverse("chargeback"))
    m.handle(co.Reversed("void", 420, "EUR", "approved", False))
    assert m.view().staff_note == co.StaffNote("reversed", reversal=co.Reversed("void", 420, "EUR", "approved", False))
    m.handle(co.ReverseFailed("", no_sales=True))
    assert m.view().staff_note == co.StaffNote("no_sales")
    assert m.handle(co.ShowReport()) == [co.BuildReport()]
    m.handle(co.ReportReady(("2 sales", "total €8.40")))
    assert m.view().staff_screen == "staff_report" and m.view().staff_report == ("2 sales", "total €8.40")
    assert m.handle(co.ShowDoctor()) == [co.RunDoctor(skip_camera=False)]
    m.handle(co.CloseStaff())
    m.handle(co.StartSale("s1", 100, "EUR"))
    m.handle(co.ChooseFace("left"))
    assert m.handle(co.ShowDoctor()) == [co.RunDoctor(skip_camera=True)]   # never during a scan


def test_a_staff_mode_change_asks_to_store_the_mode_and_record_it_once_a_cli_change_asks_neither():
    m = unlocked()
    effects = m.handle(co.StaffSetMode("card_only"))
    stored = [e for e in effects if isinstance(e, co.PersistMode)]
    records = [e for e in effects if isinstance(e, co.Record)]
    assert stored == [co.PersistMode("card_only")]
    assert records == [co.Record("mode_changed", "", {"from": "normal", "to": "card_only"})]
    assert effects.index(stored[0]) < effects.index(records[0]), "stored before the ledger says it changed"
    # the kiosk picking up `facepay mode normal` (the CLI stored and recorded it already): neither again
    effects = m.handle(co.SetMode("normal", record=False))
    assert not [e for e in effects if isinstance(e, (co.PersistMode, co.Record))]
    assert m.view().mode == co.Mode.NORMAL
    # refused (a sale is open): nothing to store, nothing recorded, nothing changed
    m.handle(co.StartSale("s1", 100, "EUR"))
    before = m.ctx
    with pytest.raises(co.Rejected):
        m.handle(co.StaffSetMode("card_only"))
    assert m.ctx == before


def test_a_refusal_carries_its_reason_as_a_field():
    m = co.CheckoutMachine()
    with pytest.raises(co.Rejected) as refused:
        m.handle(co.StaffSetMode("card_only"))
    assert refused.value.reason == "enter the staff PIN first" == str(refused.value)
    m = unlocked()
    with pytest.raises(co.Rejected) as refused:
        m.handle(co.StaffSetMode("party"))
    assert refused.value.reason == "unknown mode 'party'"
    m.handle(co.StartSale("s1", 100, "EUR"))
    with pytest.raises(co.Rejected) as refused:   # the machine's one place: no handler in this state
        m.handle(co.StaffSetMode("card_only"))
    reason = refused.value.reason
    assert reason == "finish or cancel the current sale before changing mode"
    kept = co.Refusal("StaffSetMode", reason)   # what a driver keeps of it
    assert (kept.event, kept.reason) == ("StaffSetMode", reason) and str(kept) == f"StaffSetMode: {reason}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        kept.reason = "x"


def test_the_staff_note_is_read_by_name_and_every_code_is_one_of_NOTES():
    m = unlocked()
    assert m.view().staff_note == co.StaffNote() and m.view().staff_note.code == ""
    notes = []
    for event in (co.PinChecked(False, 4.0), co.PinChecked(False, 9.0, locked=True), co.StaffSetMode("training"),
                  co.Reversed("refund", 250, "EUR", "declined", True), co.ReverseFailed("processor offline"),
                  co.ReverseFailed("", no_sales=True)):
        m.handle(event)
        notes.append(m.view().staff_note)
    m.handle(co.StaffNewSale())
    m.handle(co.StaffAmount("abc", "EUR", "s1"))
    notes.append(m.view().staff_note)
    wrong, locked, mode, refund, error, none, amount = notes
    assert (wrong.code, wrong.wait_s, locked.code, locked.wait_s) == ("pin_wrong", 4.0, "pin_locked", 9.0)
    assert (mode.code, mode.mode) == ("mode", "training")
    assert refund.code == "reversed" and refund.reversal == co.Reversed("refund", 250, "EUR", "declined", True)
    assert (error.code, error.words, error.reversal) == ("error", "processor offline", None)
    assert (none.code, none.words) == ("no_sales", "")
    assert amount.code == "amount" and amount.words and m.view().staff_screen == "staff_amount"
    assert {n.code for n in notes} | {""} == set(co.NOTES)
    with pytest.raises(dataclasses.FrozenInstanceError):
        amount.code = "mode"
    m.handle(co.OpenStaff())   # the panel opened again starts with nothing to say
    assert m.view().staff_note == co.StaffNote()
