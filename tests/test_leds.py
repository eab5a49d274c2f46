"""LED patterns on gpiozero's MockFactory, driven by the state machine's effects."""

import time

import pytest
from conftest import OBAMA_ENROL
from gpiozero.pins.mock import MockFactory

from terminal import checkout as co
from terminal import consent
from terminal.camera.replay import ReplayCamera
from terminal.config import LedConfig
from terminal.leds import PATTERNS, LedBoard
from terminal.runner import Runner


@pytest.fixture
def board():
    b = LedBoard(LedConfig(), pin_factory=MockFactory())
    yield b
    b.close()


def pin(board, name):
    return board.pin_factory.pin(board.pins[name]).state


def lit(board):
    return {name for name in board.pins if pin(board, name)}


def test_every_pattern_drives_the_right_pins(board):
    for pattern, wanted in PATTERNS.items():
        board.show(pattern)
        steady = {n for n, m in wanted.items() if m == "on"}
        for name in ("consent", "approved", "declined", "fault"):
            mode = wanted.get(name, "off")
            assert board.state[name] == mode, (pattern, name)
            if mode == "on":
                assert pin(board, name) == 1
            elif mode == "off":
                assert pin(board, name) == 0
        assert steady <= lit(board)


def test_blink_really_toggles(board):
    board.show("consent")
    p = board.pin_factory.pin(board.pins["consent"])
    seen = set()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and len(seen) < 2:
        seen.add(p.state)
        time.sleep(0.05)
    assert seen == {0, 1}
    board.show("idle")
    assert p.state == 0


def test_fault_latch_survives_patterns(board):
    board.set_fault(True)
    board.show("amount_due")
    assert board.state["fault"] == "blink" and board.state["consent"] == "on"
    board.set_fault(False)
    assert board.state["fault"] == "off"


def test_leds_follow_a_face_sale(term, embeddings, board, pipeline):
    """Privacy LED lit exactly while frames are processed (every frame of the head-turn challenge);
    consent blinks while awaiting Confirm."""
    from terminal.face.images import load_rgb
    from terminal.hardware import DEMO_SHOPPER
    from terminal.testing import synth

    term.enrol(name="Barack Obama", card_uid=bytes.fromhex("04A1B2C3"), consent_text=consent.load("en"),
               embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    turn = synth.genuine(synth.prepare(load_rgb(DEMO_SHOPPER / "1.jpg"), pipeline), "left", 25.0, 1.0, fps=15.0)
    cam = ReplayCamera(frames=turn.frames, fps=15.0, loop=False, paced=False)
    m = co.CheckoutMachine(term.policy())
    r = Runner(term, m, cam, leds=board)
    privacy_while_processing = []
    r.dispatch(co.StartSale("s1", 500, "EUR"))
    assert lit(board) == {"consent"}
    r.dispatch(co.ChooseFace("left"))
    assert pin(board, "privacy") == 1 and cam.is_open
    found = r.scanner.scan_payment(r.dispatch, on_frame=lambda f, a: privacy_while_processing.append(pin(board, "privacy")))
    assert len(privacy_while_processing) > 10 and set(privacy_while_processing) == {1}
    assert found.liveness.live
    assert m.state == co.State.CONSENT
    assert pin(board, "privacy") == 0 and not cam.is_open
    assert board.state["consent"] == "blink"
    r.dispatch(co.PhoneDigits("1234"))
    r.dispatch(co.Confirm(500, m.view().candidate.shopper_id))
    assert m.state == co.State.APPROVED
    assert lit(board) == {"approved"}


def test_leds_on_decline_and_reader_fault(term, board):
    m = co.CheckoutMachine(term.policy())
    r = Runner(term, m, None, leds=board)
    r.dispatch(co.StartSale("s2", 713, "EUR"))
    r.dispatch(co.CardTapped(*term.card(bytes.fromhex("04000001"))))
    assert m.state == co.State.DECLINED and lit(board) == {"declined"}
    r.dispatch(co.Done())
    r.dispatch(co.ReaderStatus(False))
    assert board.state["fault"] == "blink"
    r.dispatch(co.ReaderStatus(True))
    assert board.state["fault"] == "off"
