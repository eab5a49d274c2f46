"""What the kiosk does to keep its memory down (benchmarks/memory.py measures how much)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FACES, ROOT

MALLOC_ENV = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def _python(code: str, env: dict | None = None) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in MALLOC_ENV}
    e.update(env or {})
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=e, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_the_detector_loads_no_drawing_or_audio_code_and_mediapipe_still_offers_it():
    out = _python(f"""
import json, sys
from terminal.face.detector import FaceDetector
from terminal.face.images import load_rgb
found = FaceDetector().detect(load_rgb({str(FACES / "obama.jpg")!r}))
before = sorted(m for m in sys.modules if m.split(".")[0] in ("matplotlib", "sounddevice", "_sounddevice"))
from mediapipe.tasks.python.vision import drawing_utils
ok = callable(drawing_utils.draw_landmarks)   # first use loads it, matplotlib with it
print(json.dumps({{"faces": len(found), "before": before, "ok": ok, "after": "matplotlib.pyplot" in sys.modules,
                   "finders": [type(f).__name__ for f in sys.meta_path]}}))
""")
    assert out["faces"] == 1
    assert out["before"] == []
    assert out["ok"] and out["after"]
    assert "_LazyFinder" not in out["finders"]   # only in place while mediapipe imports


def test_the_malloc_settings_are_applied_unless_the_environment_sets_them():
    code = "import json; from terminal.memory import limit_malloc_arenas; print(json.dumps(limit_malloc_arenas()))"
    assert _python(code) is True                                   # glibc's mallopt accepted M_ARENA_MAX
    assert _python(code, {"MALLOC_ARENA_MAX": "4"}) is True        # already set at start-up: left alone
    code = "import json; from terminal.memory import tune_malloc; print(json.dumps(tune_malloc()))"
    assert _python(code) is True                                   # mallopt accepted the arenas and both thresholds
    assert _python(code, {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "1"}) is True


def test_the_kiosk_unit_sets_the_same_malloc_settings():
    from terminal.memory import ARENA_MAX, MMAP_THRESHOLD, TRIM_THRESHOLD

    text = (ROOT / "systemd" / "facepay-kiosk.service").read_text()
    assert f"Environment=MALLOC_ARENA_MAX={ARENA_MAX}" in text
    assert f"Environment=MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}" in text
    assert f"Environment=MALLOC_TRIM_THRESHOLD_={TRIM_THRESHOLD}" in text


MAPPED_ON_THEIR_OWN = """
import json, sys
from terminal.memory import fix_mmap_threshold, malloc_stats
from terminal.face.models import read_verified
if malloc_stats() is None:
    print(json.dumps(None)); sys.exit()
fixed = fix_mmap_threshold() if sys.argv[1] == "fixed" else False
read_verified("dlib_face_recognition_resnet_model_v1.dat")   # 22 MB read and freed, as the kiosk's start does
def mapped(n):
    before = malloc_stats()["mmapped"]
    block = bytearray(n)
    return malloc_stats()["mmapped"] - before >= n
print(json.dumps({"fixed": fixed, "2 MB": mapped(2 << 20), "frame": mapped(640 * 480 * 3)}))
"""


def test_with_the_threshold_fixed_a_freed_model_file_leaves_large_blocks_mapped_on_their_own():
    default, fixed = (_python(MAPPED_ON_THEIR_OWN.replace("sys.argv[1]", repr(mode))) for mode in ("default", "fixed"))
    if default is None:
        pytest.skip("not glibc 2.33 or later (no mallinfo2)")
    # glibc's dynamic threshold: after the 22 MB block went, a 2 MB block comes from the heap
    assert default == {"fixed": False, "2 MB": False, "frame": False}
    # fixed at 1 MiB: the 2 MB block is mapped on its own (back to the system when freed), a frame is not
    assert fixed == {"fixed": True, "2 MB": True, "frame": False}


# -- the simulated shopper's material (terminal/testing/): rendered in a child, held compressed ---------------

def test_a_jpeg_clip_gives_back_the_frames_it_holds_at_a_tenth_of_their_size():
    import numpy as np

    from terminal.camera.replay import ReplayCamera
    from terminal.face.images import load_rgb
    from terminal.hardware import DEMO_SHOPPER
    from terminal.testing.clips import JpegClip

    photo = load_rgb(DEMO_SHOPPER / "1.jpg")
    frames = [np.ascontiguousarray(np.roll(photo, 8 * i, axis=1)) for i in range(6)]
    clip = JpegClip(frames)
    assert len(clip) == 6 and clip.nbytes < sum(f.nbytes for f in frames) / 5
    for orig, back in zip(frames, clip):
        assert back.shape == orig.shape and back.dtype == np.uint8
        mse = np.mean((back.astype(float) - orig.astype(float)) ** 2)
        assert 10 * np.log10(255.0 ** 2 / mse) > 35          # PSNR in dB: the same picture
    assert np.array_equal(JpegClip.from_jpegs(clip.jpegs)[3], clip[3]) and len(clip[1:4]) == 3

    cam = ReplayCamera(fps=30.0, paced=False, loop=False)
    cam.open()
    try:
        cam.show(clip)
        assert cam._frames is clip                            # held as given: decoded a frame at a time
        got = [cam.read() for _ in range(7)]
        assert [g is None for g in got] == [False] * 6 + [True]
        assert np.array_equal(got[2].image, clip[2])
    finally:
        cam.close()


def test_the_child_renders_the_same_turn_as_this_process_and_says_what_it_cannot_render():
    import numpy as np

    from terminal.config import DetectorConfig
    from terminal.face.images import load_rgb
    from terminal.face.pipeline import FacePipeline
    from terminal.hardware import DEMO_CAMERA, DEMO_SHOPPER
    from terminal.testing import synth
    from terminal.testing.render import render

    empty = sorted(DEMO_CAMERA.glob("0-empty-*.jpg"))[0]      # the empty shop: no face in it
    turn, no_face = render([{"recipe": "turn", "photo": DEMO_SHOPPER / "1.jpg"},
                            {"recipe": "print", "photo": empty}], fps=15.0)
    assert isinstance(no_face, ValueError) and "no usable face" in str(no_face)
    model = synth.prepare(load_rgb(DEMO_SHOPPER / "1.jpg"), FacePipeline(DetectorConfig()))
    here = synth.genuine(model, "right", 25.0, 1.0, fps=15.0, seed=1).frames
    assert set(turn) == {"left", "right"} and len(turn["right"]) == len(here) > 10
    for k in (0, len(here) // 2, len(here) - 1):
        diff = np.abs(turn["right"][k].astype(int) - here[k].astype(int))
        assert diff.mean() < 3.0, k                           # JPEG's error only
    with pytest.raises(ValueError, match="unknown recipe"):
        render([{"recipe": "hologram", "photo": empty}], fps=15.0)
    with pytest.raises(RuntimeError, match="rendering the simulated shopper failed"):
        render([{"recipe": "turn", "photo": Path("/nonexistent/face.jpg")}], fps=15.0)


def test_a_scenario_renders_its_presentations_outside_the_kiosk_process_and_lets_them_go():
    out = _python("""
import json, sys
from pathlib import Path
from terminal.testing.scenario import Presentations
steps = [{"do": "wait", "screen": "pay"}, {"do": "camera", "source": "turn", "photo": "shopper"},
         {"do": "camera", "source": "print", "photo": "shopper"}, {"do": "camera", "source": "turn", "photo": "shopper"}]
p = Presentations(steps, Path("."), 10.0)
p.render()
held = [len(p.held())]
sides = p.get(steps[1])
p.release(1); held.append(len(p.held()))      # step 3 shows the turn again: kept
p.release(2); held.append(len(p.held()))      # nothing later shows the print: let go
p.release(3); held.append(len(p.held()))
print(json.dumps({"held": held, "sides": sorted(sides), "frames": len(sides["left"]),
                  "models_here": [m for m in ("terminal.testing.synth", "terminal.face.pipeline", "mediapipe")
                                  if m in sys.modules]}))
""")
    assert out["held"] == [4, 4, 2, 0] and out["sides"] == ["left", "right"] and out["frames"] > 5
    assert out["models_here"] == []    # no face models, no rendering in the kiosk's own process
