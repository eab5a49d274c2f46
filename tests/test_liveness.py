"""The liveness check end to end on generated material: real detection, landmarks and descriptors.

Sequences are rendered at test time from the demo shopper's photo (terminal/testing/synth.py): a head
turn rendered from the photo's own face mesh, and attacks made from the same photo.  Each goes
through ``run_challenge``, the code the kiosk and the CLI run.  The figures over many photos are in
docs/privacy.md (benchmarks/liveness_pad.py).
"""

import json

import cv2
import numpy as np
import pytest
from conftest import FACES

from terminal.camera import Camera, Frame
from terminal.camera.replay import ReplayCamera
from terminal.config import Config
from terminal.face.images import load_rgb
from terminal.hardware import DEMO_SHOPPER
from terminal.scan import run_challenge
from terminal.testing import synth

# A NaN or an overflow in the check's arithmetic is a bug here (a NaN lost to max() once let a frame
# with many lost tracks be judged without them), not a warning.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

FPS = 15.0


@pytest.fixture(scope="module")
def model(pipeline):
    m = synth.prepare(load_rgb(DEMO_SHOPPER / "1.jpg"), pipeline)
    assert m is not None and abs(m.own_yaw) < 25
    return m


def present(pipeline, frames, challenge, fps=FPS):
    cam = ReplayCamera(frames=frames, fps=fps, loop=False, paced=False)
    cam.open()
    cfg = Config()
    try:
        return run_challenge(pipeline, cam, challenge, cfg.liveness, cfg.match.threshold)
    finally:
        cam.close()


@pytest.mark.parametrize("side", ["left", "right"])
def test_a_head_turning_the_asked_way_is_live(pipeline, model, side):
    """A quick, uneven 25-degree turn in half a second passes; the descriptor comes from the challenge."""
    seq = synth.genuine(model, side, 25.0, 0.5, uneven=True, fps=FPS, back=False)
    result, probe = present(pipeline, seq.frames, side)
    assert result.live and result.reason == "live", result
    assert result.yaw_change_deg >= 15 and result.planarity >= Config().liveness.planarity_min
    assert probe is not None and probe.shape == (128,)
    # the descriptor is the start frame's: the same person as the photo
    photo = pipeline.analyse(load_rgb(DEMO_SHOPPER / "1.jpg")).embedding
    assert float(np.linalg.norm(probe - photo)) < Config().match.threshold


def test_a_genuine_turn_replayed_for_the_other_side_fails(pipeline, model):
    seq = synth.genuine(model, "left", 25.0, 1.0, fps=FPS)
    result, probe = present(pipeline, seq.frames, "right")
    assert not result.live and result.reason == "wrong_direction" and probe is None


@pytest.mark.parametrize("screen", [False, True], ids=["print", "screen"])
def test_a_print_turned_the_asked_way_fails(pipeline, model, screen):
    """The hardest print: turned 35 degrees toward the asked side; its nose moves with its plane."""
    seq = synth.print_turned(model.frontal(), "left", 35.0, 1.0, screen=screen, fps=FPS, seed=3)
    result, probe = present(pipeline, seq.frames, "left")
    assert not result.live and result.reason in ("flat", "timeout"), result
    assert result.planarity < Config().liveness.planarity_min
    assert probe is None


def test_a_bent_print_and_a_photo_switch_fail_and_a_copy_of_a_turn_passes(pipeline, model):
    """Issue 18: a print bent outward reads as a turn with a nose ahead of one plane (planarity above its
    old threshold) but has no relief; a cut from a frontal photo to a turned one has no intermediate pose;
    a re-saved, rescaled JPEG copy of a genuine turn gets the original's answer."""
    bent = synth.bent_print(model, "left", synth.Bend("cylinder", radius=1.0), 30.0, 1.0, fps=FPS, seed=1)
    result, probe = present(pipeline, bent.frames, "left")
    assert not result.live and result.reason == "flat" and probe is None, result
    assert result.planarity >= Config().liveness.planarity_min   # what the old statistic let through
    assert result.relief < Config().liveness.relief_min
    switch = synth.photo_switch(model, "left", 20.0, 0, fps=FPS, seed=1)
    result, probe = present(pipeline, switch.frames, "left")
    assert not result.live and result.reason == "cut" and probe is None, result
    turn = synth.genuine(model, "right", 20.0, 1.0, fps=FPS, seed=3, back=False)
    for seq in (turn, synth.reencoded(turn, 60, 0.75)):
        result, probe = present(pipeline, seq.frames, "right")
        assert result.live and result.relief >= Config().liveness.relief_min, (seq.label, result)


def test_a_print_held_still_fails(pipeline, model):
    seq = synth.print_still(model.frontal(), 3.0, fps=FPS)
    result, _ = present(pipeline, seq.frames, "right")
    assert not result.live and result.reason == "timeout"


def test_a_cut_to_another_person_at_the_end_fails(pipeline, model):
    """The turn is real, but the frames after it show someone else: the descriptors differ."""
    other = synth.prepare(load_rgb(FACES / "biden.jpg"), pipeline)
    a = synth.genuine(model, "left", 25.0, 1.0, fps=FPS, back=False).frames
    b = synth.genuine(other, "left", 25.0, 1.0, fps=FPS, back=False).frames
    # the first half of one turn, the second half of the other's: no jump of the box, another face
    n = len(a) - 8
    result, _ = present(pipeline, a[:n] + b[n:], "left")
    assert not result.live and result.reason in ("different_person", "cut", "face_lost", "flat", "timeout"), result


class LateCamera(Camera):
    """A test double of a camera read by a terminal that fell behind: every frame in order, stamped at
    ``times`` (a stretch with no frame read is a gap in the times, the pictures go on where they were)."""

    def __init__(self, frames, times):
        super().__init__()
        self.frames, self.times, self.i = frames, times, 0

    def _open_device(self):
        self.i = 0

    def _read(self):
        if self.i >= len(self.frames):
            return None
        self.i += 1
        return Frame(self.frames[self.i - 1], self.times[self.i - 1])

    def _close_device(self):
        pass


def present_late(pipeline, frames, challenge, late_at, late_s, fps=FPS):
    """The frames at ``fps``, except that the terminal analysed nothing for ``late_s`` before frame ``late_at``."""
    times = [i / fps + (late_s - 1 / fps if i >= late_at else 0.0) for i in range(len(frames))]
    cfg = Config()
    with LateCamera(frames, times) as cam:
        return run_challenge(pipeline, cam, challenge, cfg.liveness, cfg.match.threshold)


def test_a_terminal_falling_behind_is_not_a_face_lost(pipeline, model):
    """A slow frame on a loaded machine (an embedding taking 0.6 s) mid-turn: no frame was analysed for longer
    than MAX_GAP_S, yet the face never left; the box and image continuity judge that stretch, and the turn
    passes.  A stretch of frames that show no face still fails, and a photo switch hidden in a slow frame
    is still a cut; a terminal that saw nothing for over MAX_STALL_S starts over and says it was too slow."""
    from terminal.face.liveness import MAX_GAP_S, MAX_STALL_S

    seq = synth.genuine(model, "left", 25.0, 1.0, fps=FPS, back=False, seed=5)
    late = int(0.7 * len(seq.frames))   # the head is past frontal: a check that started over would not pass
    result, probe = present_late(pipeline, seq.frames, "left", late, MAX_GAP_S + 0.2)
    assert result.live and probe is not None, result
    # over MAX_STALL_S: the check starts over and sees no frontal start again
    result, _ = present_late(pipeline, seq.frames, "left", late, MAX_STALL_S + 0.3)
    assert not result.live and result.reason == "too_slow", result
    # a stretch as long as the first, but its frames were analysed and showed no face: the face was away
    blank = np.full_like(seq.frames[0], 128)
    away = seq.frames[:late] + [blank] * int((MAX_GAP_S + 0.2) * FPS) + seq.frames[late:]
    result, _ = present(pipeline, away, "left")
    assert not result.live and result.reason == "face_lost", result
    switch = synth.photo_switch(model, "left", 20.0, 0, fps=FPS, seed=1)
    result, probe = present_late(pipeline, switch.frames, "left", int(0.8 * FPS), MAX_GAP_S + 0.2)
    assert not result.live and result.reason == "cut" and probe is None, result


# --------------------------------------------------------------------------- facepay liveness
def write_frames(folder, frames):
    folder.mkdir()
    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:04d}.png"), f[:, :, ::-1])
    return folder


def write_video(path, frames, fps=FPS):
    h, w = frames[0].shape[:2]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for f in frames:
        out.write(np.ascontiguousarray(f[:, :, ::-1]))
    out.release()
    return path


def test_cli_on_a_folder_and_a_video(cli, model, tmp_path):
    seq = synth.genuine(model, "right", 25.0, 1.0, fps=30.0)
    folder = write_frames(tmp_path / "turn", seq.frames)
    r = cli("liveness", "--frames", folder, "--challenge", "right", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == {"live", "challenge", "reason", "yaw_change_deg", "planarity", "relief", "frames"}
    assert out["live"] is True and out["challenge"] == "right" and out["reason"] == "live"
    r = cli("liveness", "--frames", folder, "--challenge", "left")
    assert r.returncode == 1 and r.stdout.startswith("NOT LIVE") and "other side" in r.stdout

    video = write_video(tmp_path / "turn.avi", seq.frames, fps=30.0)
    r = cli("liveness", "--video", video, "--challenge", "right", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["live"], r.stdout + r.stderr
    # only the first half second: the head has not turned yet
    r = cli("liveness", "--video", video, "--end-frame", "15", "--challenge", "right", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["reason"] == "timeout"
    assert json.loads(r.stdout)["frames"] == 16


def test_cli_attack_and_unusable_input(cli, model, tmp_path):
    seq = synth.print_turned(model.frontal(), "left", 35.0, 1.0, fps=FPS, seed=2)
    r = cli("liveness", "--frames", write_frames(tmp_path / "print", seq.frames), "--fps", "15",
            "--challenge", "left", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["live"] is False
    empty = write_frames(tmp_path / "empty", [np.full((480, 640, 3), 90, np.uint8)] * 5)
    bent = synth.bent_print(model, "right", synth.Bend("fold", fold_deg=25.0), 30.0, 1.0, fps=FPS, seed=2)
    r = cli("liveness", "--frames", write_frames(tmp_path / "bent", bent.frames), "--fps", "15",
            "--challenge", "right", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["live"] is False, r.stdout
    assert json.loads(r.stdout)["reason"] == "flat"
    switch = synth.photo_switch(model, "right", 25.0, 4, fps=FPS, seed=2)
    r = cli("liveness", "--frames", write_frames(tmp_path / "switch", switch.frames), "--fps", "15",
            "--challenge", "right", "--json")
    assert r.returncode == 1 and json.loads(r.stdout)["live"] is False, r.stdout
    r = cli("liveness", "--frames", empty, "--challenge", "left")
    assert r.returncode == 2 and "no single face" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("liveness", "--frames", empty, "--challenge", "left", "--json")
    assert r.returncode == 2 and json.loads(r.stdout)["reason"] == "no_face"
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    r = cli("liveness", "--video", tmp_path / "bad.mp4", "--challenge", "left")
    assert r.returncode == 2 and "not a video" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr   # FFmpeg's own complaint stays out of it
    r = cli("liveness", "--video", tmp_path / "missing.mp4", "--challenge", "left")
    assert r.returncode == 2 and "no such video file" in r.stderr
    r = cli("liveness", "--frames", empty, "--challenge", "up")
    assert r.returncode == 2
    r = cli("liveness", "--challenge", "left")
    assert r.returncode == 2 and "either --video FILE or --frames DIR" in r.stderr


# --------------------------------------------------------------------------- sale and enroll on videos
def test_stills_are_refused_while_liveness_is_required(cli):
    r = cli("sale", "--amount", "5.00", "--face", FACES / "obama2.jpg", "--confirm")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "still photo" in r.stderr and "--face-video" in r.stderr
    r = cli("enroll", "--name", "A B", "--card-uid", "04A1B2C3", "--phone-last4", "1234", "--consent",
            FACES / "obama.jpg", FACES / "obama3.jpg", FACES / "obama2.jpg")
    assert r.returncode == 2 and "still photo" in r.stderr and "--video" in r.stderr
    r = cli("sale", "--amount", "5.00", "--face-video", FACES / "obama2.jpg")
    assert r.returncode == 2 and "--challenge" in r.stderr
    # nothing recorded but the data folder's own genesis entry
    assert [e["kind"] for e in json.loads(cli("audit", "show", "--json").stdout)] == ["genesis"]


def test_enrol_and_pay_on_videos_and_a_print_never_pays(cli, model, tmp_path):
    enrol = write_video(tmp_path / "enrol.avi", synth.genuine(model, "left", 25.0, 1.0, fps=FPS, seed=5).frames)
    r = cli("enroll", "--json", "--name", "Barack Obama", "--card-uid", "04A1B2C3", "--phone-last4", "1234",
            "--consent", "--video", enrol, "--challenge", "left")
    assert r.returncode == 0, r.stderr
    pay = write_video(tmp_path / "pay.avi", synth.genuine(model, "right", 22.0, 0.7, uneven=True, fps=FPS,
                                                          seed=6).frames)
    r = cli("sale", "--json", "--amount", "7.50", "--face-video", pay, "--challenge", "right", "--confirm",
            "--phone-last4", "1234")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["status"] == "approved" and out["method"] == "face", r.stdout + r.stderr
    # the same video for the other side: a replay; then a print turned the asked way
    r = cli("sale", "--json", "--amount", "7.50", "--face-video", pay, "--challenge", "left", "--confirm",
            "--phone-last4", "1234")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["status"] == "not_live" and out["liveness"]["reason"] == "wrong_direction"
    printed = write_video(tmp_path / "print.avi", synth.print_turned(model.frontal(), "right", 35.0, 1.0,
                                                                     fps=FPS, seed=4).frames)
    r = cli("sale", "--json", "--amount", "7.50", "--face-video", printed, "--challenge", "right", "--confirm",
            "--phone-last4", "1234")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["status"] == "not_live" and out["shopper"] is None
    assert "nothing charged" in out["reason"]
    bent = write_video(tmp_path / "bent.avi", synth.bent_print(model, "right", synth.Bend("cylinder", radius=0.6),
                                                               30.0, 1.0, fps=FPS, seed=4).frames)
    r = cli("sale", "--json", "--amount", "7.50", "--face-video", bent, "--challenge", "right", "--confirm",
            "--phone-last4", "1234")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["status"] == "not_live" and out["liveness"]["reason"] == "flat", out
    charges = json.loads(cli("processor", "charges", "--json").stdout)
    assert len(charges) == 1
    # the failures are in the consent ledger with their reason, and nothing biometric
    failed = json.loads(cli("audit", "show", "--kind", "liveness_failed", "--json").stdout)
    assert [e["details"]["reason"] for e in failed] == ["wrong_direction", failed[1]["details"]["reason"], "flat"]
    assert all(set(e["details"]) == {"reason", "challenge", "purpose", "strike", "terminal_id", "channel"}
               and e["details"]["channel"] == "cli" for e in failed)
    assert all(e["subject"] == "" for e in failed)
    text = cli("audit", "show").stdout
    assert "liveness_failed" in text and "wrong_direction" in text
    # a print cannot enrol anyone
    r = cli("enroll", "--name", "Some One", "--card-uid", "04D5E6F7", "--phone-last4", "9876", "--consent",
            "--video", printed, "--challenge", "right")
    assert r.returncode == 1 and "liveness check failed" in r.stderr
    switch = write_video(tmp_path / "switch.avi", synth.photo_switch(model, "left", 20.0, 0, fps=FPS, seed=5).frames)
    r = cli("enroll", "--name", "Some One", "--card-uid", "04D5E6F7", "--phone-last4", "9876", "--consent",
            "--video", switch, "--challenge", "left")
    assert r.returncode == 1 and "liveness check failed" in r.stderr
    assert len(json.loads(cli("shoppers", "--json").stdout)) == 1
    failed = json.loads(cli("audit", "show", "--kind", "liveness_failed", "--json").stdout)
    assert [e["details"]["purpose"] for e in failed[-2:]] == ["enrolment", "enrolment"]
    assert failed[-1]["details"]["reason"] == "cut"


def test_liveness_off_is_recorded(stills):
    r = stills("enroll", "--name", "Barack Obama", "--card-uid", "04A1B2C3", "--phone-last4", "1234", "--consent",
               FACES / "obama.jpg", FACES / "obama3.jpg", FACES / "extra" / "obama_4.jpg")
    assert r.returncode == 0, r.stderr
    off = json.loads(stills("audit", "show", "--kind", "liveness_off", "--json").stdout)
    assert len(off) == 1 and off[0]["details"]["where"] == "facepay enroll"
