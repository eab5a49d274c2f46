"""Camera open and stop as one ordered protocol: the replay camera device itself is checked, not only the machine.

The kiosk defers OpenCamera/CloseCamera to one worker thread; these tests drive the runner the same way
(``dispatch(..., deferred=...)`` on the "main" thread, the effects performed on a worker) with a real
ReplayCamera and gpiozero MockFactory LEDs.
"""

import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import FACES, OBAMA_ENROL
from gpiozero.pins.mock import MockFactory
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from terminal import checkout as co
from terminal import consent
from terminal.camera.replay import ReplayCamera
from terminal.config import LedConfig
from terminal.leds import LedBoard
from terminal.runner import Runner

CAMERA_EFFECTS = {co.OpenCamera, co.CloseCamera}
SLOW = {co.OpenCamera, co.CloseCamera, co.Charge, co.StoreEnrolment, co.RevokeShopper, co.VerifyPhone,
        co.LookupCard}  # what the kiosk controller runs on its worker


@pytest.fixture
def board():
    b = LedBoard(LedConfig(backend="mock"), pin_factory=MockFactory())
    yield b
    b.close()


def privacy_lit(board) -> bool:
    return bool(board.pin_factory.pin(board.pins["privacy"]).state)


@pytest.mark.parametrize("stop", ["cancel", "timeout"])
def test_a_stop_before_the_worker_starts_never_opens_the_camera(term, board, stop):
    """Cancel (or the scan timer) while the worker is still busy with an earlier job: the device never opens."""
    cam = ReplayCamera(files=[FACES / "obama2.jpg"], loop=True, paced=False)
    m = co.CheckoutMachine(term.policy())
    r = Runner(term, m, cam, leds=board)
    worker = ThreadPoolExecutor(max_workers=1)
    busy = threading.Event()
    try:
        worker.submit(busy.wait, 30)  # an earlier slow effect still running
        r.dispatch(co.StartSale("s1", 500, "EUR"))
        jobs = [worker.submit(r.perform, eff) for eff in r.dispatch(co.ChooseFace(), deferred=CAMERA_EFFECTS)]
        assert m.view().camera_open and len(jobs) == 1
        stop_event = co.Cancel() if stop == "cancel" else co.Timeout(m.view().timer)
        jobs += [worker.submit(r.perform, eff) for eff in r.dispatch(stop_event, deferred=CAMERA_EFFECTS)]
        assert not m.view().camera_open and len(jobs) == 2
        busy.set()
        for j in jobs:
            j.result(timeout=30)
        assert cam.opened_count == 0, "the camera opened after the scan was stopped"
        assert not cam.is_open and not privacy_lit(board)
    finally:
        busy.set()
        worker.shutdown(wait=True)


def test_a_scan_of_a_stopped_token_reads_no_frame(term, board):
    """A scan started for a token that has been dropped returns at once, without reading the camera."""
    cam = ReplayCamera(files=[FACES / "obama2.jpg"], loop=True, paced=False)
    m = co.CheckoutMachine(term.policy())
    r = Runner(term, m, cam, leds=board)
    r.dispatch(co.StartSale("s1", 500, "EUR"))
    opening = r.dispatch(co.ChooseFace(), deferred=CAMERA_EFFECTS)[0]
    r.perform(opening)
    assert cam.is_open and privacy_lit(board)
    closing = r.dispatch(co.Cancel(), deferred=CAMERA_EFFECTS)[0]
    frames = []
    r.work(opening, frames.append, on_frame=lambda f, a: frames.append(f))  # the worker reaches the scan late
    assert frames == []
    r.perform(closing)
    assert not cam.is_open and not privacy_lit(board)


class Kiosk:
    """The controller's threading without Kivy: events on this thread, slow effects on one worker."""

    def __init__(self, term, board):
        self.cam = ReplayCamera(files=[FACES / "obama2.jpg"], loop=True, paced=False)
        self.m = co.CheckoutMachine(term.policy())
        self.r = Runner(term, self.m, self.cam, leds=board)
        self.board = board
        self.worker = ThreadPoolExecutor(max_workers=1)
        self.posted: queue.Queue = queue.Queue()
        self.blockers: list[threading.Event] = []
        self.queued_openings = 0
        self.sales = 0
        self.jobs = []

    def send(self, event) -> None:
        try:
            slow = self.r.dispatch(event, deferred=SLOW)
        except co.Rejected:
            return
        for eff in slow:
            if isinstance(eff, co.OpenCamera):
                self.queued_openings += 1
            self.jobs.append(self.worker.submit(self.r.work, eff, self.posted.put))

    def block(self) -> None:
        ev = threading.Event()
        self.blockers.append(ev)
        self.worker.submit(ev.wait, 30)

    def settle(self) -> None:
        """Let the worker finish everything, feeding its events back in, until nothing is left."""
        for ev in self.blockers:
            ev.set()
        self.blockers = []
        while True:
            self.worker.submit(lambda: None).result(timeout=60)
            for job in self.jobs:
                assert job.exception() is None, job.exception()
            if self.posted.empty():
                return
            while not self.posted.empty():
                self.send(self.posted.get())

    def act(self, action: str) -> None:
        if action == "sale":
            self.sales += 1
            self.send(co.StartSale(f"s{self.sales}", 100 + self.sales, "EUR"))
        elif action == "face":
            self.send(co.ChooseFace())
        elif action == "cancel":
            self.send(co.Cancel())
        elif action == "timeout":
            self.send(co.Timeout(self.m.view().timer))
        elif action == "done":
            self.send(co.Done())


@pytest.fixture
def enrolled(term, embeddings):
    term.enrol(name="Barack Obama", card_uid=bytes.fromhex("04A1B2C3"), consent_text=consent.load("en"),
               embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    return term


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["sale", "face", "face", "cancel", "timeout", "done"]),
                                st.booleans()), min_size=1, max_size=14))
def test_the_device_follows_the_machine_under_random_interleavings(enrolled, board, steps):
    """Random sales, face scans, cancels and timeouts, with the worker sometimes busy: the device opens once
    per scan the machine still wants when the worker gets to it, never for one already stopped, and is
    closed (privacy LED off) whenever the machine says closed."""
    k = Kiosk(enrolled, board)
    expected = 0
    try:
        for action, busy in steps:
            if busy and not k.blockers:
                k.block()
                k.queued_openings = 0
            k.act(action)
            if not k.blockers:
                k.settle()
                expected += k.queued_openings  # the worker was free: every opening asked for happened
                k.queued_openings = 0
            assert k.cam.opened_count == expected  # a busy worker has opened nothing yet
            if not k.blockers:
                assert k.cam.is_open == k.m.view().camera_open == privacy_lit(board), (action, k.m.state)
                assert k.cam.opened_count == expected, (steps, k.m.state)
        if k.blockers:
            # only the scan the machine still has open when the worker comes free may open the device
            wanted = k.m.view().camera_open and k.queued_openings > 0
            k.settle()
            expected += 1 if wanted else 0
        assert k.cam.opened_count == expected, (steps, k.m.state)
        assert k.cam.is_open == k.m.view().camera_open == privacy_lit(board)
        assert not k.cam.is_open  # every scan ended: matched (consent) or stopped
    finally:
        k.settle()
        k.worker.shutdown(wait=True)
        k.cam.close()


def test_the_runner_reports_the_camera_restored_when_it_opens_after_a_fault(term, board):
    """CameraRestored's producer: the first opening that works after a CameraFault (here an enrolment's)."""
    cam = ReplayCamera(files=[FACES / "obama2.jpg"], loop=True, paced=False)
    m = co.CheckoutMachine(term.policy())
    r = Runner(term, m, cam, leds=board)
    r.dispatch(co.CameraFault("no such device"))   # what the kiosk posts when an opening raised
    assert not m.view().camera_ok
    text = consent.load("en")
    for ev in (co.StartEnrolment(), co.AgreeConsent(text.version, text.sha256), co.EnrolDetails("A B", "1111")):
        r.dispatch(ev)
    assert cam.is_open and m.state == co.State.ENROL_CAPTURE and m.view().camera_ok
    r.dispatch(co.Cancel())
    assert not cam.is_open
    r.dispatch(co.StartSale("s1", 500, "EUR"))
    r.dispatch(co.ChooseFace())                     # face pay is offered again
    assert m.state == co.State.FACE_SCAN and cam.is_open
    r.dispatch(co.Cancel())
