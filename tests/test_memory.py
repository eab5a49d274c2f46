"""What the kiosk does to keep its memory down (benchmarks/memory.py measures how much)."""

import json
import os
import subprocess
import sys

from conftest import FACES, ROOT


def _python(code: str, env: dict | None = None) -> dict:
    e = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
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


def test_malloc_arenas_are_limited_unless_the_environment_says():
    code = "import json; from terminal.memory import limit_malloc_arenas; print(json.dumps(limit_malloc_arenas()))"
    assert _python(code) is True                                   # glibc's mallopt accepted M_ARENA_MAX
    assert _python(code, {"MALLOC_ARENA_MAX": "4"}) is True        # already set at start-up: left alone


def test_the_kiosk_unit_sets_two_malloc_arenas():
    text = (ROOT / "systemd" / "facepay-kiosk.service").read_text()
    assert "Environment=MALLOC_ARENA_MAX=2" in text
