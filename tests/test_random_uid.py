"""Random card UIDs (ISO/IEC 14443-3: a 4-byte UID starting 08, new at every tap, as phones and many
bank cards show) never become identities: the reader service, the state machine, the CLI."""

import json
import time

import pytest
from conftest import OBAMA_ENROL

from firmware_bridge.pn532 import is_random_uid
from firmware_bridge.service import CardPresented, CardRemoved, ReaderBack, ReaderService
from firmware_bridge.sim import PN532Simulator
from terminal import checkout as co

SENTENCE = "This card or phone shows a different number each time. Please use a physical card."
RANDOM = bytes.fromhex("08A1B2C3")


def test_which_uids_are_random():
    assert is_random_uid(RANDOM) and is_random_uid(bytes.fromhex("08000000"))
    for uid in ("04A1B2C3", "88A1B2C3", "0811223344556677", "08112233445566", "0811223344556677889A"):
        assert not is_random_uid(bytes.fromhex(uid)), uid       # only single-size UIDs start a random ID
    assert co.RANDOM_UID_SENTENCE == SENTENCE


# -- the reader service ---------------------------------------------------------------
def test_service_reports_a_phone_once_however_often_its_uid_changes(tmp_path):
    sim = PN532Simulator(tmp_path / "pn532", seed=3).start()
    svc = ReaderService(str(sim.link), poll_timeout=0.1, reconnect_every=0.1).start()
    try:
        deadline = time.monotonic() + 5
        while not any(isinstance(e, ReaderBack) for e in list(svc.events.queue)) and time.monotonic() < deadline:
            time.sleep(0.05)
        sim.present_random()
        time.sleep(1.5)                 # a phone held on the reader: many polls, a new UID at each
        sim.remove()
        time.sleep(0.8)
        events = [e for e in list(svc.events.queue) if isinstance(e, (CardPresented, CardRemoved))]
        assert len(set(sim.activations)) >= 4, "the phone was activated several times, each with a new UID"
        assert [type(e) for e in events] == [CardPresented, CardRemoved]
        assert events[0].random_uid and events[0].uid in sim.activations
        sim.present(bytes.fromhex("04A1B2C3"))       # a physical card is not random
        time.sleep(0.6)
        presented = [e for e in list(svc.events.queue) if isinstance(e, CardPresented)]
        assert presented[-1].uid == bytes.fromhex("04A1B2C3") and not presented[-1].random_uid
    finally:
        svc.stop()
        sim.stop()


# -- the state machine -------------------------------------------------------------------
def tap(random_uid: bool, n: int = 1) -> co.CardTapped:
    return co.CardTapped(f"hash{n}", "•••• B2C3", f"tok{n}", random_uid=random_uid)


def at_enrol_card() -> co.CheckoutMachine:
    m = co.CheckoutMachine(co.Policy())
    m.handle(co.StartEnrolment())
    m.handle(co.AgreeConsent("v1", "a" * 64))
    m.handle(co.EnrolDetails("Kit Harington", "4321"))
    m.handle(co.LivenessPassed())   # the head-turn challenge comes before any capture is kept
    m.handle(co.CaptureAccepted(3))
    assert m.state == co.State.ENROL_CARD
    return m


def test_machine_refuses_a_random_uid_at_enrolment_and_takes_a_physical_card_after():
    m = at_enrol_card()
    assert m.handle(tap(True)) == []                          # nothing stored, nothing looked up
    assert m.state == co.State.ENROL_CARD and m.snapshot()["message"] == "random_uid"
    assert m.handle(tap(True, 2)) == []                       # a second tap of the phone: the same
    eff = m.handle(tap(False, 3))
    assert [type(e) for e in eff] == [co.StoreEnrolment] and eff[0].card_hash == "hash3"
    assert m.snapshot()["message"] is None


def test_machine_refuses_a_random_uid_at_my_data():
    m = co.CheckoutMachine(co.Policy())
    m.handle(co.StartMyData())
    assert m.handle(tap(True)) == []
    assert m.state == co.State.MYDATA_TAP and m.snapshot()["message"] == "random_uid"
    eff = m.handle(tap(False, 2))
    assert eff == [co.LookupCard("hash2")] and m.snapshot()["message"] is None


@pytest.mark.parametrize("via_face_scan", [False, True])
def test_machine_pays_by_random_uid_without_a_shopper_link(via_face_scan):
    m = co.CheckoutMachine(co.Policy())
    m.handle(co.StartSale("s1", 420, "EUR"))
    if via_face_scan:
        m.handle(co.ChooseFace())
    eff = m.handle(tap(True))
    charge = next(e for e in eff if isinstance(e, co.Charge))
    assert m.state == co.State.CHARGING                        # the sale goes on: the processor decides
    assert charge.method == "card" and charge.token == "tok1"
    assert charge.shopper_id is None and charge.card_hash is None
    assert not m.view().camera_open


# -- the terminal and the CLI ------------------------------------------------------------------
def test_card_sale_by_random_uid_is_charged_with_no_shopper(term):
    from terminal.sale import run_sale

    result = run_sale(term, amount="4.20", card_uid=RANDOM)
    assert result["status"] == "approved" and result["method"] == "card" and result["shopper"] is None
    sale = term.journal.get(result["sale_id"])
    assert sale.status == "approved" and sale.shopper_id is None
    assert term.store.count() == 0 and term.store.by_card(RANDOM) is None


def test_terminal_refuses_to_enrol_a_random_uid(term, embeddings):
    from terminal import consent
    from terminal.errors import InputError

    with pytest.raises(InputError, match="different number each time"):
        term.enrol(name="Kit Harington", card_uid=RANDOM, consent_text=consent.load("en"), phone_last4="4321",
                   embeddings=[embeddings[p.name] for p in OBAMA_ENROL])
    assert term.store.count() == 0
    assert not [e for e in term.ledger.events() if e.kind == "consent_granted"]


def test_cli_enroll_refuses_a_random_uid_with_the_sentence(cli):
    r = cli("enroll", "--name", "Kit Harington", "--card-uid", "08a1b2c3", "--phone-last4", "4321", "--consent",
            *OBAMA_ENROL)
    assert r.returncode == 2 and SENTENCE in r.stderr and r.stdout == ""
    assert "--card-uid" in r.stderr
    assert not cli.data_dir.exists()                  # refused before anything was created
    r = cli("shoppers", "list", "--json")
    assert json.loads(r.stdout) == []
    r = cli("audit", "show", "--json", "--kind", "consent_granted")
    assert json.loads(r.stdout) == []


def test_cli_revoke_by_random_uid_is_refused_with_the_sentence(cli):
    r = cli("revoke", "--card-uid", "08:A1:B2:C3")
    assert r.returncode == 2 and SENTENCE in r.stderr
