"""Why the unseen split's left turns of Grace Hopper were refused as `flat`, and that they are not any more.

Two faults of the relief measurement, both found against the renderer's own truth (the exact image
positions of the mesh points it drew, ``HeadModel.project``), not against a threshold:

1. The chords took in the face's outline.  At the level of the nose the outline is the silhouette,
   1.2-1.6 eye distances behind the tip, where the cheek turns away far faster than a parabola through
   the cheeks: the horizontal chord's parabola bent back to it and came up to the nose in the middle.
   From the true points, Grace Hopper's relief at a 25 degree turn was 0.07 (left) and 0.10 (right).
2. The tracked nose tip lagged behind the turn: a 21-pixel tracking window is as wide as the tip of a
   nose, half of it saw the cheeks behind, which move less, and Lucas-Kanade settled between the two.

Both together brought her left turns under ``relief_min``.  docs/privacy.md has the numbers.
"""

from pathlib import Path

import numpy as np
import pytest
from test_liveness import present

from terminal.config import Config
from terminal.face import liveness as lv
from terminal.face.images import load_rgb
from terminal.hardware import DEMO_SHOPPER
from terminal.testing import synth

# A NaN or an overflow in the check's arithmetic is a bug here (a NaN lost to max() once let a frame
# with many lost tracks be judged without them), not a warning.
pytestmark = pytest.mark.filterwarnings("error::RuntimeWarning")

GRACE = Path(__file__).parent / "fixtures" / "pad_unseen" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def models(pipeline):
    out = {}
    for name, photo in (("tuning", DEMO_SHOPPER / "1.jpg"), ("grace", GRACE)):
        m = synth.prepare(load_rgb(photo), pipeline)
        assert m is not None and abs(m.own_yaw) < 12, photo
        out[name] = m
    return out


def true_landmarks(model, yaw):
    """The 468 mesh points where the renderer draws them for a head turned ``yaw`` degrees from frontal."""
    uv, _ = model.project(yaw - model.own_yaw)
    return np.c_[uv[:468], np.zeros(468)].astype(np.float32)


@pytest.mark.parametrize("name", ["tuning", "grace"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_the_relief_of_a_rendered_head_from_its_true_points(models, name, side):
    """From the exact positions, a head's relief is over 0.12 on every chord, both ways (0.14-0.26 here;
    ``relief_min`` is 0.07).  With the outline in the chords and the tip at points 1 and 4, Grace Hopper's
    horizontal chord gave 0.070 (left) and 0.105 (right)."""
    m, sign = models[name], 1.0 if side == "left" else -1.0
    start = true_landmarks(m, 0.0)
    ch = lv.chords(start)
    assert ch is not None
    assert not set(np.concatenate(ch.points)) & set(lv.FACE_OVAL)
    for yaw in (10.0, 20.0, 25.0):
        r = lv.relief(start, true_landmarks(m, sign * yaw), sign * yaw, ch, sign)
        assert r > 0.12, (name, side, yaw, r)


@pytest.mark.parametrize("side", ["left", "right"])
def test_the_tracked_nose_tip_keeps_up_with_the_turn(models, side):
    """Followed by optical flow through a 25 degree turn (12 steps, sensor noise), the tracked nose tip
    stays within 0.025 eye distances of where the renderer drew it, on the tuning photo.  With the
    21-pixel window it lagged 0.038 (left) and 0.054 (right) behind."""
    m, sign = models["tuning"], 1.0 if side == "left" else -1.0
    rng = np.random.default_rng(0)
    start = true_landmarks(m, 0.0)
    gray = lv._gray(synth._noise(rng, m.render(0.0), 3.0))
    tracks = lv._Tracks(lv._Frame(0, 0.0, start, 0.0, 0.0, gray), lv.chords(start))
    for i, yaw in enumerate(np.linspace(0.0, 25.0, 13)[1:], 1):
        truth = true_landmarks(m, sign * yaw)
        tracks.follow(lv._Frame(i, i / 15, truth, 0.0, 0.0, lv._gray(synth._noise(rng, m.render(sign * yaw), 3.0))))
    eye = lv.eye_distance(start)
    lag = -sign * float(np.mean(tracks.landmarks()[list(lv.TIP), 0] - truth[list(lv.TIP), 0])) / eye
    assert abs(lag) < 0.025, lag
    # and the relief the check reads from those tracks is a head's
    assert lv.relief(start, tracks.landmarks(), sign * 25.0, tracks.chords, sign) > 1.5 * Config().liveness.relief_min


# the left turns of the unseen split that were refused as `flat` (relief -0.06 to 0.015 before the fix)
GRACE_LEFT = [(30.0, 2.0, False, None), (25.0, 0.5, True, (60, 0.75)), (20.0, 1.0, False, (70, 1.25))]


def grace_left(pipeline, models, peak, seconds, uneven, copy):
    seq = synth.genuine(models["grace"], "left", peak, seconds, uneven=uneven, fps=15.0, seed=3, back=False)
    if copy:
        seq = synth.reencoded(seq, *copy)
    return present(pipeline, seq.frames, "left")


@pytest.mark.parametrize("peak, seconds, uneven, copy", GRACE_LEFT)
def test_grace_hoppers_left_turns_show_relief(pipeline, models, peak, seconds, uneven, copy):
    """The cause is fixed: her left turns read a head's relief, not a sheet's (0.09-0.12 against -0.06 to 0.015
    before; a ridge fold on the tuning split reads at most 0.058)."""
    result, _ = grace_left(pipeline, models, peak, seconds, uneven, copy)
    assert result.reason in ("live", "flat") and result.relief > 0.08, result


# Of the three, the 25-degree re-saved copy clears relief_min well and must pass.  The other two read
# 0.093-0.098, at relief_min 0.097 (set on the tuning split): whether they pass moves with the last digit of
# the renderer and the platform's floating point, so they are not asserted either way here; their relief is
# (test_grace_hoppers_left_turns_show_relief) and their outcome counts in the BPCER of docs/privacy.md.
@pytest.mark.parametrize("peak, seconds, uneven, copy", [GRACE_LEFT[1]])
def test_grace_hoppers_left_turns_are_live(pipeline, models, peak, seconds, uneven, copy):
    result, probe = grace_left(pipeline, models, peak, seconds, uneven, copy)
    assert result.live and result.reason == "live" and probe is not None, result


def test_a_bent_print_of_grace_hopper_is_still_refused(pipeline, models):
    """The same photo printed and bent outward (the issue's attack), turned the asked way: not live."""
    bent = synth.bent_print(models["grace"], "left", synth.Bend("cylinder", radius=1.0), 30.0, 1.0, fps=15.0, seed=3)
    result, probe = present(pipeline, bent.frames, "left")
    assert not result.live and probe is None, result


def test_a_screen_turned_the_asked_way_is_refused(pipeline, models):
    """A phone screen's pixel grid once lost the track of a ridge point of the tip (3 eye distances off in one
    frame; the tip was then points 4 and 5): read as relief 2.9, this screen turned 35 degrees the asked way
    was accepted."""
    screen = synth.print_turned(models["grace"].frontal(), "left", 35.0, 1.0, screen=True, fps=15.0, seed=2)
    result, probe = present(pipeline, screen.frames, "left")
    assert not result.live and probe is None, result


def test_a_tip_that_loses_its_track_breaks_continuity(models):
    """The relief rests on the tip's one tracked point: when the tracker loses it (here the tip painted over
    with a flat patch, no texture to follow), the continuity error says so even though every other point
    tracks well, and the check starts over instead of reading depth from a lost track."""
    m = models["tuning"]
    rng = np.random.default_rng(1)
    start = true_landmarks(m, 0.0)
    tracks = lv._Tracks(lv._Frame(0, 0.0, start, 0.0, 0.0, lv._gray(synth._noise(rng, m.render(0.0), 3.0))),
                        lv.chords(start))
    nxt = true_landmarks(m, 2.0)
    img = synth._noise(rng, m.render(2.0), 3.0)
    x, y = np.round(nxt[lv.TIP[0], :2]).astype(int)
    r = int(0.2 * lv.eye_distance(start))
    img[y - r:y + r, x - r:x + r] = img[y - r:y + r, x - r:x + r].mean(axis=(0, 1))
    err = tracks.follow(lv._Frame(1, 1 / 15, nxt, 0.0, 0.0, lv._gray(img)))
    assert err > Config().liveness.flow_max, err
