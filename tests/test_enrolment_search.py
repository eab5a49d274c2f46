"""One face, one enrolment (issue 21 item 6): the 1:N search before storing, "you are already enrolled"
(keep, or move to the new card with the earlier enrolment's phone digits), and a no-match between two
close shoppers that says so.  The kiosk's screens for it: tests/scenarios/enrol_already_enrolled.toml."""

import json

import numpy as np
import pytest
from conftest import OBAMA_ENROL, OBAMA_PROBES

from terminal import checkout as co
from terminal import consent
from terminal.errors import InputError
from terminal.face.matcher import TOO_CLOSE, Gallery
from terminal.runner import Runner
from terminal.service import AlreadyEnrolled, CardAlreadyLinked

CARD, NEW_CARD = bytes.fromhex("04A1B2C3"), bytes.fromhex("04D5E6F7")
HIDDEN = {co.OpenCamera, co.CloseCamera}  # no camera here: the captures are given, the rest is real


def obama(term, embeddings, card=CARD, **kw):
    return term.enrol(name="Barack Obama", card_uid=card, consent_text=consent.load("en"),
                      embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234", **kw)


def test_the_same_face_under_another_card_is_found_not_stored(term, embeddings):
    first = obama(term, embeddings)
    with pytest.raises(AlreadyEnrolled) as err:
        obama(term, embeddings, card=NEW_CARD)
    assert err.value.shopper.id == first.id and not err.value.same_card and err.value.exit_code == 1
    assert "already enrolled as " + first.id in str(err.value) and "--replace " + first.id in str(err.value)
    assert term.store.count() == 1 and term.store.by_card(NEW_CARD) is None
    assert [e.kind for e in term.ledger.events(kind="consent_granted")] == ["consent_granted"]  # no second grant
    [dup] = term.ledger.events(kind="enrolment_duplicate")
    assert dup.subject == first.id and dup.details["same_card"] is False
    # the defect: with two enrolments of one face, each face payment was "too close to call"
    m = term.match(embeddings[OBAMA_PROBES[0].name])
    assert m.shopper_id == first.id, m.reason


def test_the_same_face_and_card_again_says_so(term, embeddings):
    first = obama(term, embeddings)
    with pytest.raises(AlreadyEnrolled) as err:
        obama(term, embeddings)
    assert err.value.same_card and err.value.shopper.id == first.id and "with this card" in str(err.value)


def test_another_face_on_a_linked_card_is_still_refused(term, embeddings):
    obama(term, embeddings)
    with pytest.raises(CardAlreadyLinked):
        term.enrol(name="Kit Harington", card_uid=CARD, consent_text=consent.load("en"), phone_last4="5678",
                   embeddings=[embeddings[n] for n in ("kit_harington_1.jpg", "kit_harington_2.jpg",
                                                       "kit_harington_3.jpg")])


def test_replace_deletes_the_earlier_enrolment_first_with_a_receipt(term, embeddings):
    first = obama(term, embeddings)
    with pytest.raises(AlreadyEnrolled):  # --replace must name this face's own enrolment
        obama(term, embeddings, card=NEW_CARD, replace="shp_nobody")
    with pytest.raises(InputError, match=f"not the one enrolled as {first.id}"):  # nor another face's
        term.enrol(name="Kit Harington", card_uid=NEW_CARD, consent_text=consent.load("en"), phone_last4="5678",
                   replace=first.id, embeddings=[embeddings[n] for n in ("kit_harington_1.jpg",
                                                                         "kit_harington_2.jpg", "kit_harington_3.jpg")])
    assert term.store.get(first.id) is not None
    new = obama(term, embeddings, card=NEW_CARD, replace=first.id)
    receipt = term.replaced.pop(new.id)
    assert receipt.shopper_id == first.id and receipt.cause == "replaced"
    assert term.store.get(first.id) is None and term.store.count() == 1
    kinds = [e.kind for e in term.ledger.events() if e.kind in ("consent_revoked", "consent_granted")]
    assert kinds == ["consent_granted", "consent_revoked", "consent_granted"]  # the old one goes first
    assert term.match(embeddings[OBAMA_PROBES[0].name]).shopper_id == new.id


def walk_to_card(term):
    m = co.CheckoutMachine(term.policy())
    r = Runner(term, m, None)
    for ev in (co.StartEnrolment(), co.AgreeConsent(consent.load("en").version, consent.load("en").sha256),
               co.EnrolDetails("Barack Obama", "9876", challenge="left"), co.LivenessPassed(),
               co.CaptureAccepted(3)):
        r.dispatch(ev, deferred=HIDDEN)
    assert m.state == co.State.ENROL_CARD
    return m, r


def test_kiosk_offers_already_enrolled_and_moves_it_with_the_phone_digits(term, embeddings):
    first = obama(term, embeddings)
    m, r = walk_to_card(term)
    r.scanner.captures = [embeddings[p.name] for p in OBAMA_ENROL]
    r.dispatch(term.tap(NEW_CARD), deferred=HIDDEN)
    assert m.state == co.State.ENROL_DUPLICATE and term.store.count() == 1
    snap = m.snapshot()
    assert snap["duplicate"]["shopper_id"] == first.id and snap["duplicate"]["token"] == ""
    assert not snap["duplicate_same_card"]
    r.dispatch(co.PhoneDigits("0000"), deferred=HIDDEN)   # wrong: the earlier enrolment stays
    assert m.state == co.State.ENROL_DUPLICATE and m.view().guidance == "phone_mismatch"
    assert term.store.get(first.id) is not None
    r.dispatch(co.PhoneDigits("1234"), deferred=HIDDEN)
    assert m.state == co.State.ENROL_DONE
    receipt = term.store.receipt(m.view().receipt_id)
    assert receipt is not None and receipt.shopper_id == first.id and receipt.cause == "replaced"
    new = term.store.by_card(NEW_CARD)
    assert new is not None and term.store.get(first.id) is None and m.view().enrolled.shopper_id == new.id
    assert first.id in m.view().revoked
    r.dispatch(co.Done(), deferred=HIDDEN)
    assert r.scanner.captures == []


def test_kiosk_keep_stores_nothing_and_forgets_the_captures(term, embeddings):
    obama(term, embeddings)
    m, r = walk_to_card(term)
    r.scanner.captures = [embeddings[p.name] for p in OBAMA_ENROL]
    r.dispatch(term.tap(NEW_CARD), deferred=HIDDEN)
    assert m.state == co.State.ENROL_DUPLICATE and r.scanner.captures  # held while the shopper decides
    r.dispatch(co.Done(), deferred=HIDDEN)
    assert m.state == co.State.IDLE and r.scanner.captures == [] and term.store.count() == 1


def test_three_wrong_digits_keep_the_earlier_enrolment():
    m = co.CheckoutMachine(co.Policy(liveness_required=False))
    for ev in (co.StartEnrolment(), co.AgreeConsent("v1", "a" * 64), co.EnrolDetails("A B", "1111"),
               co.CaptureAccepted(3), co.CardTapped("h", "•••• 0001", "t")):
        m.handle(ev)
    m.handle(co.AlreadyEnrolled(co.ShopperView("shp_1", "A B.", "•••• 0002", "t2", has_phone=True), False))
    for _ in range(co.MAX_PHONE_TRIES):
        assert m.handle(co.PhoneChecked(False)) == [] or m.state == co.State.ENROL_FAILED
    assert m.state == co.State.ENROL_FAILED and m.view().message == "replace_phone_mismatch"
    # no phone digits on file, or the same card: nothing to replace
    for view, same in ((co.ShopperView("shp_2", "A B.", "•••• 0002", "t2"), False),
                       (co.ShopperView("shp_3", "A B.", "•••• 0001", "t", has_phone=True), True)):
        m = co.CheckoutMachine(co.Policy(liveness_required=False))
        for ev in (co.StartEnrolment(), co.AgreeConsent("v1", "a" * 64), co.EnrolDetails("A B", "1111"),
                   co.CaptureAccepted(3), co.CardTapped("h", "•••• 0001", "t"), co.AlreadyEnrolled(view, same)):
            m.handle(ev)
        with pytest.raises(co.Rejected):
            m.handle(co.PhoneDigits("1234"))


def test_a_failed_enrolment_names_what_failed_and_offers_try_again():
    m = co.CheckoutMachine(co.Policy())
    for ev in (co.StartEnrolment(), co.AgreeConsent("v1", "a" * 64), co.EnrolDetails("A B", "1111", "right")):
        m.handle(ev)
    m.handle(co.LivenessFailed("wrong_direction"))
    assert m.state == co.State.ENROL_FAILED and m.view().message == "liveness:wrong_direction:right"
    eff = m.handle(co.RetryEnrolment())   # the same consent and details, a new challenge
    assert m.state == co.State.ENROL_CAPTURE and any(isinstance(e, co.OpenCamera) for e in eff)
    m.handle(co.CameraFault("unplugged"))
    assert m.state == co.State.ENROL_FAILED and m.view().message == "camera_fault"


def test_two_close_shoppers_are_not_we_could_not_find_you():
    v = np.ones(128, np.float32) / np.sqrt(128)
    assert Gallery(["a", "b"], np.vstack([v, v])).match(v, 0.55, 0.06).reason == TOO_CLOSE
    m = co.CheckoutMachine(co.Policy())
    m.handle(co.StartSale("s1", 100, "EUR"))
    m.handle(co.ChooseFace("left"))
    m.handle(co.LivenessPassed())
    m.handle(co.FaceNoMatch(TOO_CLOSE))
    assert m.state == co.State.AMOUNT_DUE and m.view().message == "no_match_too_close"
    m.handle(co.ChooseFace("left"))
    m.handle(co.LivenessPassed())
    m.handle(co.FaceNoMatch("no enrolled face is close enough"))
    assert m.view().message == "no_match"


def test_enroll_cli_refuses_an_enrolled_face_and_replaces_on_request(stills):
    args = ("enroll", "--name", "Barack Obama", "--phone-last4", "1234", "--consent", *OBAMA_ENROL)
    first = json.loads(stills(*args[:1], "--json", "--card-uid", "04A1B2C3", *args[1:]).stdout)["shopper_id"]
    r = stills(*args[:1], "--card-uid", "04D5E6F7", *args[1:])
    assert r.returncode == 1 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("facepay enroll: error: this face is already enrolled as " + first)
    assert f"--replace {first}" in line
    r = stills(*args[:1], "--json", "--card-uid", "04D5E6F7", *args[1:])
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["shopper_id"] is None and out["already_enrolled"]["shopper_id"] == first
    r = stills(*args[:1], "--json", "--card-uid", "04D5E6F7", "--replace", first, *args[1:])
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["replaced"]["shopper_id"] == first and out["replaced"]["cause"] == "replaced"
    shoppers = json.loads(stills("shoppers", "list", "--json").stdout)
    assert [s["shopper_id"] for s in shoppers] == [out["shopper_id"]]
