"""The checkout package's structure, on the pure machine (milliseconds; `make test-fast`): transitions as
data, one place that refuses, a deterministic core, a frozen view."""

import dataclasses
import itertools

import pytest

from terminal import checkout as co
from terminal.checkout import State, availability, enrolment, machine, mydata, payment, scan

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
            co.ReaderStatus(True), co.FleetStatus(False), co.CameraFault("x"), co.CameraRestored()]


def test_every_event_type_is_in_the_union_and_sampled_here():
    assert {type(e) for e in sample_events()} == set(co.EVENTS)


def test_each_flow_table_names_only_its_own_events_and_the_merge_has_no_clash():
    tables = [payment.TABLE, enrolment.TABLE, mydata.TABLE, scan.TABLE, availability.TABLE]
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
    from terminal.config import TERMINAL_MODES, Config

    assert co.MODES == TERMINAL_MODES == tuple(co.Mode)
    cfg = Config()
    p = co.Policy.from_config(cfg)
    assert (p.threshold, p.enrol_captures, p.consent_timeout_s, p.liveness_required) == (
        cfg.match.threshold, cfg.match.enrol_captures, cfg.payment.consent_timeout_s, cfg.liveness.required)
