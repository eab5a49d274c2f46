"""The kiosk under a real X server (Xvfb): scenarios through the real widgets.

Every scenario runs at 800x480, the Pi's 7" touchscreen. At 1280x720 (an HD display) run the four
scenarios that between them wait on every screen any scenario waits on (checked below), so each screen's
layout is seen at both sizes; ``FACEPAY_UI_ALL_SIZES=1`` runs every scenario at both (about 4 minutes
more on 2 cores).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT
from PIL import Image, ImageStat

SCENARIOS = sorted((ROOT / "tests" / "scenarios").glob("*.toml"))
SMALL, LARGE = "800x480", "1280x720"
AT_BOTH_SIZES = {"card_payment", "enrol_already_enrolled", "face_pay_off", "optout_then_face"}
RUNS = [pytest.param(s, SMALL, id=f"{s.stem}-{SMALL}") for s in SCENARIOS] + [
    pytest.param(s, LARGE, id=f"{s.stem}-{LARGE}") for s in SCENARIOS
    if s.stem in AT_BOTH_SIZES or os.environ.get("FACEPAY_UI_ALL_SIZES") == "1"]

pytestmark = pytest.mark.ui


def kiosk_cmd(*args):
    cmd = [sys.executable, "-m", "terminal", *map(str, args)]
    if not os.environ.get("DISPLAY"):
        if shutil.which("xvfb-run") is None:
            pytest.fail("no display and no xvfb-run: install xvfb (the README's apt line)")
        cmd = ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *cmd]
    return cmd


def env():
    e = {k: v for k, v in os.environ.items() if not k.startswith("FACEPAY_")}
    e["KIVY_NO_ARGS"] = "1"
    return e


def assert_not_blank(png: Path, size: tuple[int, int]):
    im = Image.open(png).convert("RGB")
    assert im.size == size, (png, im.size)
    colours = im.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 20, f"{png.name} looks blank"
    assert max(ImageStat.Stat(im).stddev) > 15, f"{png.name} has almost no contrast"


def screens_waited_on(scenario: Path) -> set[str]:
    return {step["screen"] for step in tomllib.loads(scenario.read_text())["steps"] if "screen" in step}


def test_the_scenarios_at_both_sizes_wait_on_every_screen_the_others_do():
    every = set().union(*map(screens_waited_on, SCENARIOS))
    at_both = set().union(*(screens_waited_on(s) for s in SCENARIOS if s.stem in AT_BOTH_SIZES))
    assert {s.stem for s in SCENARIOS} >= AT_BOTH_SIZES
    assert every - at_both == set(), f"add a scenario that shows {sorted(every - at_both)} to AT_BOTH_SIZES"


@pytest.mark.parametrize(("scenario", "size"), RUNS)
def test_scenario(tmp_path, scenario, size):
    shots = tmp_path / "shots"
    r = subprocess.run(kiosk_cmd("--data-dir", tmp_path / "data", "run", "--demo", "--size", size,
                                 "--script", scenario, "--screenshots", shots),
                       capture_output=True, text=True, timeout=240, env=env(), cwd=ROOT)
    result = json.loads((shots / "result.json").read_text()) if (shots / "result.json").exists() else None
    assert r.returncode == 0 and result and result["passed"], ((result or {}).get("failures"), r.stdout[-3000:], r.stderr[-3000:])
    assert result["window"] == [int(v) for v in size.split("x")]
    w, h = (int(v) for v in size.split("x"))
    pngs = sorted(shots.glob("*.png"))
    assert len(pngs) >= 3 and [Path(p).name for p in result["screenshots"]] == [p.name for p in pngs]
    for png in pngs:
        assert_not_blank(png, (w, h))
    # the face preview is shown only from the replay camera's public demo photos; no other image is written
    data = tmp_path / "data"
    assert not [p for p in data.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp")]


def test_kiosk_opens_and_stops_on_sigterm(tmp_path):
    """What `make demo` runs: the window comes up on the idle screen; SIGTERM (systemd stop) ends it cleanly."""
    shots = tmp_path / "shots"
    p = subprocess.Popen(kiosk_cmd("--data-dir", tmp_path / "data", "run", "--demo", "--screenshots", shots),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(), cwd=ROOT,
                         start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not list(shots.glob("01-attract.png")):
            assert p.poll() is None, p.communicate()[1][-3000:]
            time.sleep(0.2)
        png = shots / "01-attract.png"
        assert png.exists(), "the kiosk did not show its idle screen"
        time.sleep(0.5)
        assert_not_blank(png, (800, 480))
        os.killpg(p.pid, signal.SIGTERM)
        assert p.wait(20) in (0, -signal.SIGTERM, 143)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    # the simulator's link is gone with it
    assert not (tmp_path / "data" / "pn532").exists()


def test_run_without_a_display_says_so(tmp_path):
    e = env()
    e.pop("DISPLAY", None)
    e.pop("WAYLAND_DISPLAY", None)
    e.pop("SDL_VIDEODRIVER", None)
    if any(Path("/dev/dri").glob("card*")):
        pytest.skip("this machine has a KMS display device")
    r = subprocess.run([sys.executable, "-m", "terminal", "--data-dir", str(tmp_path / "d"), "run", "--demo"],
                       capture_output=True, text=True, timeout=60, env=e, cwd=ROOT)
    assert r.returncode == 2
    assert "display" in r.stderr and "xvfb-run" in r.stderr
    assert len([line for line in r.stderr.splitlines() if "error" in line]) == 1
