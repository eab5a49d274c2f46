"""Property-based tests of the checkout state machine over random event sequences.

The camera effects are performed by the real runner on a real replay camera and gpiozero mock LEDs, so
the promises are checked against the device's own open state and the privacy LED, not only the machine's flag.
"""

import copy

from conftest import FACES
from gpiozero.pins.mock import MockFactory
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from terminal import checkout as co
from terminal.camera.replay import ReplayCamera
from terminal.config import LedConfig
from terminal.leds import LedBoard
from terminal.runner import Runner

SHOPPERS = [co.ShopperView(f"shp_{i}", f"Name{i} X.", f"•••• 000{i}", f"tok_{i}", has_phone=bool(i % 2))
            for i in range(3)]
# the store gives every enrolment a fresh random id (never one that was revoked)
NEW_SHOPPER = co.ShopperView("shp_fresh", "Ann L.", "•••• 0009", "tok_fresh")
CARDS = [co.CardTapped(f"hash{i}", f"•••• 10{i}", f"tok_card{i}") for i in range(2)]
HASH = "a" * 64
# Effects left to the test (they need a terminal); the camera and LED effects are performed for real.
DEFERRED = {co.StartTimer, co.Record, co.PersistMode, co.Charge, co.VerifyPhone, co.StoreEnrolment, co.LookupCard,
            co.RevokeShopper, co.LoadGallery, co.DropGallery, co.ResolveCharge, co.StartCooldown}
CAMERA = ReplayCamera(files=[FACES / "obama2.jpg"], loop=True, paced=False)


class CheckoutRules(RuleBasedStateMachine):
    @initialize(face_pay=st.sampled_from([True, True, False]),
                mode=st.sampled_from(["normal", "normal", "training", "card_only", "enrolment", "out_of_service"]),
                f=st.sampled_from([0.0, 0.00001, 0.033]), live=st.sampled_from([True, True, False]))
    def setup(self, face_pay, mode, f, live):
        self.m = co.CheckoutMachine(co.Policy(false_match_rate=f, liveness_required=live), face_pay=face_pay,
                                    mode=mode)
        self.passed_in_scan = False   # LivenessPassed was accepted since the camera last opened
        self.failures_in_row = 0
        CAMERA.close()
        self.cam = CAMERA
        if getattr(self, "board", None) is None:
            self.board = LedBoard(LedConfig(backend="mock"), pin_factory=MockFactory())
        self.runner = Runner(None, self.m, self.cam, leds=self.board)
        self.sale_counter = 0
        self.charges = {}
        self.revoked = set()
        self.matched_in_sale = {}
        self.outcome = {}   # sale id -> the last charge outcome the machine accepted

    def teardown(self):
        CAMERA.close()
        if getattr(self, "board", None) is not None:
            self.board.close()

    def send(self, event):
        before = copy.deepcopy(self.m.ctx)
        was_open, opened = self.cam.is_open, self.cam.opened_count
        try:
            effects = self.runner.dispatch(event, deferred=DEFERRED)
        except co.Rejected:
            assert self.m.ctx == before, f"{event} was rejected but changed the state"
            assert (self.cam.is_open, self.cam.opened_count) == (was_open, opened), "a rejected event moved the camera"
            return None
        if isinstance(event, co.ChargeResult):
            self.outcome[event.sale_id] = event.outcome
        if self.cam.opened_count != opened:
            assert self.cam.opened_count == opened + 1 and not was_open
            assert self.m.face_pay_on, "camera opened while face pay is off"
            assert not self.m.view().cooldown, "camera opened during the liveness cool-down"
            assert (self.m.view().challenge in ("left", "right")) == self.m.policy.liveness_required
            self.passed_in_scan = False
        if isinstance(event, co.LivenessPassed):
            self.passed_in_scan = True
            self.failures_in_row = 0
        if isinstance(event, co.LivenessFailed):
            self.failures_in_row += 1
        if isinstance(event, (co.FaceMatched, co.CaptureAccepted)) and self.m.policy.liveness_required:
            assert self.passed_in_scan, "no liveness, no match: a face was used without the challenge passed"
        for eff in effects:
            if isinstance(eff, co.StartCooldown):
                assert self.failures_in_row == co.LIVENESS_STRIKES
                self.failures_in_row = 0
            if isinstance(eff, co.ResolveCharge):
                # asking the processor again is the only thing an unknown outcome leads to: never a new charge
                assert self.m.state == co.State.UNKNOWN and eff.sale_id == self.m.view().sale.sale_id
                assert isinstance(event, co.Timeout)
            elif isinstance(eff, co.Charge):
                sid = eff.sale.sale_id
                assert sid not in self.charges, "two charges for one sale"
                self.charges[sid] = eff
                if eff.method == "face":
                    # a face charge only ever follows the shopper's own Confirm for that amount and shopper
                    assert isinstance(event, co.Confirm)
                    assert event.amount_minor == eff.sale.amount_minor
                    assert event.shopper_id == eff.shopper_id
                    assert self.matched_in_sale.get(sid) == eff.shopper_id
                    assert eff.shopper_id not in self.revoked
                else:
                    assert isinstance(event, co.CardTapped) and eff.shopper_id is None
            if isinstance(eff, co.StoreEnrolment):
                if eff.replace is None:
                    assert isinstance(event, co.CardTapped)
                else:
                    # an earlier enrolment is replaced only after its own phone digits were checked right
                    dup = before.duplicate
                    assert isinstance(event, co.PhoneChecked) and event.ok and before.state == co.State.ENROL_DUPLICATE
                    assert dup.shopper_id == eff.replace and dup.has_phone and not before.duplicate_same_card
                    assert eff.replace not in self.revoked
        if isinstance(event, co.FaceMatched) and self.m.state == co.State.CONSENT:
            self.matched_in_sale[self.m.view().sale.sale_id] = event.shopper.shopper_id
        return effects

    # -- sales --------------------------------------------------------------
    @rule(amount=st.integers(min_value=-5, max_value=100_000))
    def start_sale(self, amount):
        self.sale_counter += 1
        self.send(co.StartSale(f"s{self.sale_counter}", amount, "EUR"))

    @precondition(lambda self: self.m.state in (co.State.AMOUNT_DUE,))
    @rule()
    def choose_face(self):
        self.send(co.ChooseFace())

    @rule(card=st.sampled_from(CARDS))
    def tap(self, card):
        self.send(card)

    @rule(reason=st.sampled_from(["no_face", "too_small", "multiple_faces"]))
    def guidance(self, reason):
        self.send(co.FaceGuidance(reason))

    @precondition(lambda self: self.m.state in (co.State.FACE_SCAN,))
    @rule(shopper=st.sampled_from(SHOPPERS), margin=st.one_of(st.none(), st.floats(0, 1)),
          n=st.integers(0, 100_000), distance=st.floats(0, 0.6))
    def matched(self, shopper, margin, n, distance):
        self.send(co.FaceMatched(shopper, distance, margin, n))

    @rule()
    def no_match(self):
        self.send(co.FaceNoMatch("no match"))

    @precondition(lambda self: self.m.state in co.CAMERA_STATES)
    @rule()
    def liveness_passed(self):
        self.send(co.LivenessPassed())

    @precondition(lambda self: self.m.state in co.CAMERA_STATES)
    @rule(reason=st.sampled_from(["flat", "timeout", "wrong_direction"]))
    def liveness_failed(self, reason):
        self.send(co.LivenessFailed(reason))

    @rule(stale=st.booleans())
    def cooldown_over(self, stale):
        if self.send(co.CooldownOver(self.m.view().cooldown - (1 if stale else 0))) is not None:
            assert not self.m.view().cooldown

    @precondition(lambda self: self.m.state == co.State.AMOUNT_DUE)
    @rule()
    def fail_three_times(self):
        """Three failed challenges in a row: face pay cools down, and no face step starts until it is over."""
        for _ in range(3):
            self.send(co.ChooseFace())
            self.send(co.LivenessFailed("flat"))
        if self.m.policy.liveness_required and self.m.face_pay_on and self.m.view().camera_ok:
            assert self.m.view().cooldown
            assert self.send(co.ChooseFace()) is None

    @rule(digits=st.sampled_from(["1234", "12", "abcd"]))
    def phone(self, digits):
        self.send(co.PhoneDigits(digits))

    @precondition(lambda self: self.m.state in (co.State.CONSENT, co.State.ENROL_DUPLICATE))
    @rule(ok=st.booleans(), suspended=st.sampled_from([False, False, True]))
    def phone_checked(self, ok, suspended):
        self.send(co.PhoneChecked(ok, suspended and not ok))

    @precondition(lambda self: self.m.state in (co.State.CONSENT,))
    @rule(delta=st.sampled_from([0, 0, 1, -1]), shopper=st.sampled_from(SHOPPERS + [None]))
    def confirm(self, delta, shopper):
        sale = self.m.view().sale
        amount = (sale.amount_minor if sale else 100) + delta
        cand = self.m.view().candidate
        sid = shopper.shopper_id if shopper else (cand.shopper_id if cand else "shp_0")
        self.send(co.Confirm(amount, sid))

    @precondition(lambda self: self.m.state == co.State.IDLE)
    @rule(amount=st.integers(1, 10_000), shopper=st.sampled_from(SHOPPERS),
          margin=st.one_of(st.none(), st.floats(0, 1)), n=st.integers(1, 1000))
    def walk_to_consent(self, amount, shopper, margin, n):
        """A shortcut through the common path, so later random events hit the consent screen often."""
        self.start_sale(amount)
        self.send(co.ChooseFace())
        self.send(co.LivenessPassed())
        self.send(co.FaceMatched(shopper, 0.3, margin, n))

    @precondition(lambda self: self.m.state == co.State.IDLE)
    @rule()
    def walk_to_enrol_card(self):
        for ev in (co.StartEnrolment(), co.AgreeConsent("v1", HASH), co.EnrolDetails("Ann Lee", "4321"),
                   co.LivenessPassed(), co.CaptureAccepted(3)):
            self.send(ev)

    @rule()
    def cancel(self):
        self.send(co.Cancel())

    @rule(stale=st.booleans())
    def timeout(self, stale):
        self.send(co.Timeout(self.m.view().timer - (1 if stale else 0)))

    @precondition(lambda self: self.m.state in (co.State.CHARGING, co.State.UNKNOWN))
    @rule(outcome=st.sampled_from(co.OUTCOMES + ("unknown", "unknown", "maybe")), other=st.booleans())
    def charge_result(self, outcome, other):
        """The processor's answer, or the runner's "unknown"; in UNKNOWN, the answer a lookup found."""
        sale = self.m.view().sale
        self.send(co.ChargeResult("other" if other or sale is None else sale.sale_id, outcome))

    @rule()
    def done(self):
        self.send(co.Done())

    # -- enrolment and my data ---------------------------------------------------
    @rule()
    def start_enrolment(self):
        self.send(co.StartEnrolment())

    @rule(good=st.booleans())
    def agree(self, good):
        self.send(co.AgreeConsent("v1", HASH if good else "short"))

    @rule(name=st.sampled_from(["Ann Lee", " "]), phone=st.sampled_from([None, "4321", "12x"]))
    def details(self, name, phone):
        self.send(co.EnrolDetails(name, phone))

    @precondition(lambda self: self.m.state in (co.State.ENROL_CAPTURE,))
    @rule(count=st.integers(1, 4))
    def capture(self, count):
        self.send(co.CaptureAccepted(count))

    @precondition(lambda self: self.m.state in (co.State.ENROL_SAVING,))
    @rule(shopper=st.sampled_from(SHOPPERS))
    def enrol_stored(self, shopper):
        # the store gives every enrolment a fresh random id; ids are never reused
        self.sale_counter += 1
        self.send(co.EnrolStored(co.ShopperView(f"shp_new{self.sale_counter}", "Ann L.", "•••• 0009", "tok_n")))

    @precondition(lambda self: self.m.state in (co.State.ENROL_SAVING,))
    @rule(shopper=st.sampled_from(SHOPPERS), same_card=st.booleans())
    def already_enrolled(self, shopper, same_card):
        """The 1:N search before storing found this face enrolled already."""
        if self.send(co.AlreadyEnrolled(shopper, same_card)) is not None:
            assert self.m.state == co.State.ENROL_DUPLICATE and shopper.shopper_id not in self.revoked

    @rule()
    def retry_enrolment(self):
        self.send(co.RetryEnrolment())

    @rule()
    def start_mydata(self):
        self.send(co.StartMyData())

    @precondition(lambda self: self.m.state in (co.State.MYDATA_LOOKUP,))
    @rule(shopper=st.one_of(st.none(), st.sampled_from(SHOPPERS)))
    def lookup(self, shopper):
        self.send(co.LookupResult(shopper))

    @rule()
    def delete_mydata(self):
        self.send(co.DeleteMyData())

    @rule(shopper=st.sampled_from(SHOPPERS))
    def revoked(self, shopper):
        self.revoked.add(shopper.shopper_id)
        self.send(co.Revoked(shopper.shopper_id, "del_x"))

    # -- staff and faults -----------------------------------------------------------
    @rule(mode=st.sampled_from(co.MODES))
    def set_mode(self, mode):
        self.send(co.SetMode(mode))

    @rule(ok=st.booleans())
    def reader(self, ok):
        self.send(co.ReaderStatus(ok))

    @rule()
    def camera_fault(self):
        self.send(co.CameraFault("unplugged"))

    @rule()
    def camera_back(self):
        self.send(co.CameraRestored())

    @rule(event=st.sampled_from([co.ChooseFace(), co.Confirm(100, "shp_0"), co.FaceNoMatch("x"), co.Done(),
                                 co.CaptureAccepted(3), co.EnrolStored(NEW_SHOPPER), co.LookupResult(SHOPPERS[1]),
                                 co.DeleteMyData(), co.PhoneChecked(True), co.ChargeResult("s1", "approved"),
                                 co.ChargeResult("s1", "unknown"),
                                 co.FaceMatched(SHOPPERS[2], 0.3, None, 1), co.LivenessPassed(),
                                 co.LivenessFailed("flat"), co.CooldownOver(1), co.ChooseFace("up")]))
    def any_event_any_state(self, event):
        """Events out of turn must be rejected without changing anything."""
        self.send(event)

    # -- the promises ----------------------------------------------------------------
    @invariant()
    def camera_only_while_scanning(self):
        if not hasattr(self, "m"):
            return
        open_ = self.cam.is_open  # the device itself
        assert open_ == self.m.view().camera_open == (self.m.state in co.CAMERA_STATES)
        assert bool(self.board.pin_factory.pin(self.board.pins["privacy"]).state) == open_
        if open_:
            assert self.m.face_pay_on

    @invariant()
    def revoked_shopper_never_shown(self):
        if not hasattr(self, "m"):
            return
        snap = self.m.snapshot()
        for key in ("candidate", "mydata", "enrolled"):
            if snap[key] is not None:
                assert snap[key]["shopper_id"] not in self.revoked, (key, snap)

    @invariant()
    def unknown_is_never_shown_as_declined(self):
        """Only the processor's own "no" declines; an unknown outcome says so, with the sale id, and lights the fault LED."""
        if not hasattr(self, "m"):
            return
        c = self.m.view()
        if c.state == co.State.DECLINED:
            assert self.outcome[c.sale.sale_id] == "declined"
            assert self.board.pattern == "declined"
        if c.state == co.State.UNKNOWN:
            assert self.outcome[c.sale.sale_id] == "unknown"
            assert c.message == co.UNKNOWN_MESSAGE.format(sale_id=c.sale.sale_id)
            assert c.message == f"Payment not confirmed - do not pay again; staff will check sale {c.sale.sale_id}"
            assert self.board.pattern == "fault"
        if c.state == co.State.APPROVED:
            assert self.outcome[c.sale.sale_id] == "approved"

    @invariant()
    def consent_screen_shows_amount_and_shopper(self):
        if hasattr(self, "m") and self.m.state == co.State.CONSENT:
            assert self.m.view().sale is not None and self.m.view().candidate is not None


TestCheckoutRules = CheckoutRules.TestCase
TestCheckoutRules.settings = settings(max_examples=1000, stateful_step_count=30, deadline=None)
