"""Where the kiosk's memory goes, in a face-payment scenario under Xvfb.

    .venv/bin/python benchmarks/memory.py --repeat 3            # figures in benchmarks/README.md
    .venv/bin/python benchmarks/memory.py --repeat 1 --tracemalloc   # plus Python/numpy allocations (slower)

Two parts, in the same run:

1. **The kiosk.**  ``facepay run --demo --script benchmarks/memory_face_payment.toml`` (the face payment of
   tests/scenarios/face_confirmed.toml with the kiosk idle on the attract screen for a few seconds before
   and after) runs in a child process with a sampler thread.  Every 0.25 s it reads
   /proc/self/smaps_rollup (RSS, PSS, anonymous) and the screen shown; every two seconds it also reads
   /proc/self/smaps grouped by mapping (each library's file, ``[heap]``, anonymous mappings), the
   Kivy textures alive (width x height x bytes per pixel) and the numpy arrays that Python containers
   hold (owning their data; the rendered head turns of the simulated shopper counted apart, JPEG-compressed).  Phases:
   **idle** (the attract screen before the sale), **scanning** (the scan screen), **after** (the
   attract screen after the payment), and **peak** (``VmHWM``, the kernel's high-water mark of RSS).
   ``--tracemalloc`` starts tracemalloc in the kiosk (it slows it and adds its own memory: those runs
   are reported apart, not in the medians) and adds the Python allocations and numpy's (domain 389047)
   per phase with the top source files.
2. **Each piece alone.**  A fresh interpreter per piece imports or loads just that (numpy, mediapipe,
   the face detector, OpenCV, the landmark model, dlib and each of its two models, the whole pipeline
   after one frame, Kivy's window, the terminal's service layer) and reports RSS/PSS above an
   interpreter with numpy imported.

Medians over ``--repeat`` runs; memory does not depend on machine load, so run it under ``nice -n 19``.
``--json FILE`` writes every sample.  Exit status 1 if a scenario run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = Path(__file__).resolve().parent / "memory_face_payment.toml"
NUMPY_DOMAIN = 389047   # numpy's tracemalloc domain (np.lib.tracemalloc_domain)
MAPPING = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


# -- /proc readers --------------------------------------------------------------------------------------

def rollup(pid: str = "self") -> dict[str, int]:
    """RSS, PSS and anonymous memory in kB."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            p = line.split()
            if p[0] in ("Rss:", "Pss:", "Anonymous:"):
                out[p[0][:-1].lower()] = int(p[1])
    return out


def hwm_kb(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def mapping_group(path: str) -> str:
    """A readable name for a mapping: the package of a site-packages file, a system library's name, or
    ``[heap]`` / ``[anon]`` / ``[stack]``."""
    if not path:
        return "[anon]"
    if "/site-packages/" in path:
        part = path.split("/site-packages/", 1)[1].split("/")[0]
        part = re.sub(r"\.cpython-.*|\.libs$|\.so.*$", "", part)
        return {"opencv_contrib_python": "cv2", "_dlib_pybind11": "dlib", "numpy": "numpy", "pillow": "PIL",
                "Kivy": "kivy"}.get(part, part)
    if path.startswith("[stack"):
        return "[stack]"
    if path.startswith("["):
        return path
    name = path.rsplit("/", 1)[-1]
    if "libpython" in name or "/bin/python" in path:
        return "python"
    if re.match(r"(libLLVM|swrast_dri|libgallium|libGL|libEGL|libgbm|libglapi|libdrm)", name):
        return "GL (Mesa)"
    return "other system libraries"


def smaps_groups(pid: str = "self") -> dict[str, int]:
    """PSS in kB per mapping group."""
    groups: Counter = Counter()
    cur = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            if MAPPING.match(line):
                p = line.split(None, 5)
                cur = mapping_group(p[5].strip() if len(p) > 5 else "")
            elif line.startswith("Pss:"):
                groups[cur] += int(line.split()[1])
    return dict(groups)


def malloc_kb() -> dict[str, float] | None:
    """glibc's allocator, kB: allocated, freed but kept inside the arenas, mapped on its own (terminal.memory)."""
    from terminal.memory import malloc_stats

    stats = malloc_stats()
    return None if stats is None else {k: v / 1024 for k, v in stats.items()}


# -- the kiosk child -------------------------------------------------------------------------------------

def _textures_kb() -> float | None:
    """Kivy textures alive in the process: width x height x bytes per pixel (what Mesa holds for them)."""
    mod = sys.modules.get("kivy.graphics.texture")
    if mod is None:
        return None
    import gc

    total = 0
    for o in gc.get_objects():
        if issubclass(type(o), mod.Texture):   # not isinstance: it would load a lazily imported module
            try:
                bpp = 4 if o.colorfmt in ("rgba", "bgra") else 3 if o.colorfmt in ("rgb", "bgr") else 1
                total += o.width * o.height * bpp
            except Exception:  # a texture being torn down
                pass
    return total / 1024


def _numpy_kb(exclude_ids: set[int]) -> float | None:
    """numpy arrays owning their data (or a non-array buffer's) that Python containers hold (each array once)."""
    np = sys.modules.get("numpy")
    if np is None:
        return None
    import gc

    seen: set[int] = set()
    total = 0
    for o in gc.get_objects():
        for r in gc.get_referents(o):
            if (type(r) is np.ndarray and (r.base is None or type(r.base) is not np.ndarray)   # owns its data
                    and id(r) not in seen and id(r) not in exclude_ids):
                seen.add(id(r))
                total += r.nbytes
    return total / 1024


def _scenario_material(app) -> tuple[float, set[int]]:
    """kB of the frames rendered for the simulated shopper (test material: the scenario player's presentations,
    the demo shopper's turns, what the replay camera is showing of them), and the ids of any held as numpy arrays
    (left out of the numpy count).  Clips held JPEG-compressed (terminal/testing/clips.py) count their bytes."""
    kb, ids = 0.0, set()
    clips_module = sys.modules.get("terminal.testing.clips")   # never imported from this thread (the kiosk imports)
    if app is None or clips_module is None:
        return kb, ids
    JpegClip = clips_module.JpegClip
    player, hw = getattr(app, "player", None), getattr(app, "hw", None)
    clips = []
    presentations = getattr(player, "_presentations", None)
    if presentations is not None:
        clips += presentations.held()
    shopper = getattr(hw, "shopper", None)
    clips += list(getattr(shopper, "frames", {}).values())
    shown = getattr(getattr(hw, "camera", None), "_frames", None)
    if isinstance(shown, JpegClip):
        clips.append(shown)
    for clip in clips:
        if id(clip) in ids:
            continue
        ids.add(id(clip))
        if isinstance(clip, JpegClip):
            kb += clip.nbytes / 1024
        else:
            for fr in clip:
                if id(fr) not in ids:
                    ids.add(id(fr))
                    kb += fr.nbytes / 1024
    return kb, ids


class Sampler(threading.Thread):
    def __init__(self, trace: bool):
        super().__init__(name="memory-sampler", daemon=True)
        self.trace = trace
        self.samples: list[dict] = []
        self.full: list[dict] = []
        self.traced: dict[str, dict] = {}
        self.errors: list[str] = []      # detailed samples that could not be taken (the short ones still are)
        self.stop = threading.Event()

    def _screen(self):
        app_class = getattr(sys.modules.get("kivy.app"), "App", None)   # None while kivy.app is still importing
        app = app_class.get_running_app() if app_class is not None else None
        ctl = getattr(app, "ctl", None)
        return app, (getattr(ctl, "screen", None) or "starting")

    def run(self) -> None:
        t0 = time.monotonic()
        last_full = 0.0
        while not self.stop.is_set():
            t = time.monotonic() - t0
            app, screen = self._screen()
            s = {"t": round(t, 2), "screen": screen, **rollup(), "hwm": hwm_kb()}
            self.samples.append(s)
            if t - last_full >= 2.0:
                last_full = t
                try:
                    material, ids = _scenario_material(app)
                    self.full.append({**s, "groups": smaps_groups(), "textures_kb": _textures_kb(),
                                      "numpy_kb": _numpy_kb(ids), "scenario_material_kb": material,
                                      "malloc_kb": malloc_kb()})
                    if self.trace:
                        self._trace(screen)
                except Exception as exc:   # the kiosk changed under the look (imports, teardown): the next one
                    self.errors.append(f"t={t:.1f}: {type(exc).__name__}: {exc}")
            self.stop.wait(0.25)

    def _trace(self, screen: str) -> None:
        """One tracemalloc snapshot per phase: late in the first idle, in the scan, late after the sale."""
        import tracemalloc

        if not tracemalloc.is_tracing():
            return
        idle = [s for s in self.samples if s["screen"] == "attract"]
        left = any(s["screen"] not in ("attract", "starting") for s in self.samples)
        phase = None
        if screen == "attract" and not left and len(idle) >= 12 and "idle" not in self.traced:
            phase = "idle"
        elif screen == "scan" and sum(s["screen"] == "scan" for s in self.samples) >= 4 and "scanning" not in self.traced:
            phase = "scanning"
        elif screen == "attract" and left and "result" in {s["screen"] for s in self.samples}:
            after = [s for s in self.samples if s["screen"] == "attract" and s["t"] > self._result_t()]
            if len(after) >= 16:
                phase = "after"   # overwritten each second: the last one stands
        if phase is None:
            return
        snap = tracemalloc.take_snapshot()
        py = snap.filter_traces([tracemalloc.DomainFilter(True, 0)])
        npy = snap.filter_traces([tracemalloc.DomainFilter(True, NUMPY_DOMAIN)])
        top = [(str(st.traceback[0].filename).replace(str(ROOT) + "/", "").split("site-packages/")[-1],
                round(st.size / 1024)) for st in py.statistics("filename")[:8]]
        self.traced[phase] = {"python_kb": sum(t.size for t in py.traces) / 1024,
                              "numpy_kb": sum(t.size for t in npy.traces) / 1024,
                              "top_python_files_kb": top}

    def _result_t(self) -> float:
        return min((s["t"] for s in self.samples if s["screen"] == "result"), default=1e9)


def child(args) -> int:
    os.environ["KIVY_NO_ARGS"] = "1"
    sys.path.insert(0, str(ROOT))
    import terminal.memory  # noqa: F401 - the sampler thread reads malloc's figures through it: imported here
    sampler = Sampler(trace=args.trace)
    sampler.start()
    from terminal.cli import main

    rc = main(["--data-dir", args.data_dir, "run", "--demo", "--script", str(args.script)])
    sampler.stop.set()
    sampler.join()
    Path(args.out).write_text(json.dumps({"rc": rc, "hwm_kb": hwm_kb(), "samples": sampler.samples,
                                          "full": sampler.full, "traced": sampler.traced,
                                          "sampler_errors": sampler.errors}))
    return rc


def phases(run: dict) -> dict[str, dict]:
    """The figures per phase (kB): idle and after are medians of their screen's samples, scanning the maximum."""
    samples, full = run["samples"], run["full"]
    first_off = next((s["t"] for s in samples if s["screen"] not in ("attract", "starting")), None)
    # the last screen of the sale before the attract screen came back (result is short: a loaded machine
    # may sample past it)
    result_t = max((s["t"] for s in samples if s["screen"] not in ("attract", "starting")), default=None)
    if first_off is None or result_t is None or not any(s["screen"] == "scan" for s in samples):
        return {}
    sel = {
        "idle": lambda s: s["screen"] == "attract" and first_off - 4.0 <= s["t"] < first_off,
        "scanning": lambda s: s["screen"] == "scan",
        "after": lambda s: s["screen"] == "attract" and s["t"] > result_t + 2.0,
    }
    out = {}
    for name, pick in sel.items():
        rows = [s for s in samples if pick(s)]
        fulls = [s for s in full if pick(s)]
        if not rows:
            continue
        agg = max if name == "scanning" else statistics.median
        one = max(fulls, key=lambda s: s["pss"]) if name == "scanning" and fulls else (fulls[-1] if fulls else None)
        out[name] = {"rss": agg(r["rss"] for r in rows), "pss": agg(r["pss"] for r in rows),
                     "anonymous": agg(r["anonymous"] for r in rows), "detail": one}
    # the screen on which the high-water mark was reached (the first sample that saw it)
    at = next((s["screen"] for s in samples if s.get("hwm", 0) >= run["hwm_kb"]), "the end")
    out["peak"] = {"rss": run["hwm_kb"], "screen": at}
    return out


# -- each piece alone ------------------------------------------------------------------------------------

PIECES = {
    "PIL": "import PIL.Image",
    "mediapipe (import)": "import mediapipe.tasks.python.vision",
    "face detector (mediapipe, short range)": "from terminal.face.detector import FaceDetector; x = FaceDetector()",
    "OpenCV (import)": "import cv2",
    "landmark model (face_landmark.tflite via OpenCV)": ("from terminal.face.landmarks import FaceLandmarker\n"
                                                         "x = FaceLandmarker()"),
    "dlib (import)": "import dlib",
    "dlib 5-point predictor": ("import dlib; from terminal.face.models import verified_path\n"
                               "with verified_path('shape_predictor_5_face_landmarks.dat') as p: "
                               "x = dlib.shape_predictor(str(p))"),
    "dlib ResNet descriptor": ("import dlib; from terminal.face.models import verified_path\n"
                               "with verified_path('dlib_face_recognition_resnet_model_v1.dat') as p: "
                               "x = dlib.face_recognition_model_v1(str(p))"),
    "whole pipeline, one frame + landmarks": (
        "from terminal.config import DetectorConfig; from terminal.face.pipeline import FacePipeline\n"
        "from terminal.face.images import load_rgb; from terminal.hardware import DEMO_SHOPPER\n"
        "p = FacePipeline(DetectorConfig()); img = load_rgb(sorted(DEMO_SHOPPER.glob('*.jpg'))[0])\n"
        "a = p.analyse(img); p.landmarks(img, a)"),
    "service layer (terminal.service, runner, checkout; no models)": "import terminal.service, terminal.runner",
    "Kivy window (Xvfb, 800x480)": (
        "import os; os.environ['KIVY_NO_ARGS'] = '1'; os.environ['KIVY_LOG_MODE'] = 'PYTHON'\n"
        "from kivy.config import Config; Config.set('graphics', 'width', '800'); Config.set('graphics', 'height', '480')\n"
        "from kivy.core.window import Window; from kivy.base import EventLoop; EventLoop.idle()"),
}


def piece(code: str) -> int:
    sys.path.insert(0, str(ROOT))
    import gc

    import numpy  # noqa: F401 - every piece needs it: the base line

    gc.collect()
    before, hwm0 = rollup(), hwm_kb()
    exec(compile(code, "<piece>", "exec"), {})
    gc.collect()
    after = rollup()
    print(json.dumps({"base": before, "rss": after["rss"] - before["rss"], "pss": after["pss"] - before["pss"],
                      "anonymous": after["anonymous"] - before["anonymous"], "hwm_growth": hwm_kb() - hwm0}))
    return 0


# -- the parent -------------------------------------------------------------------------------------------

def _display_prefix() -> list[str]:
    if os.environ.get("DISPLAY"):
        return []
    if shutil.which("xvfb-run") is None:
        sys.exit("benchmarks/memory.py: error: no display and no xvfb-run: install xvfb (the README's apt line)")
    return ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24"]


def run_kiosk(script: Path, trace: bool, tmp: Path) -> dict:
    out = tmp / "kiosk.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPAY_")}
    env["KIVY_NO_ARGS"] = "1"
    if trace:
        env["PYTHONTRACEMALLOC"] = "1"
    cmd = [*_display_prefix(), sys.executable, __file__, "--child", "--data-dir", str(tmp / "data"),
           "--script", str(script), "--out", str(out)] + (["--trace"] if trace else [])
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    if not out.exists():
        raise RuntimeError(f"the kiosk run wrote no samples (exit {r.returncode}): {r.stderr[-2000:]}")
    run = json.loads(out.read_text())
    run["passed"] = r.returncode == 0
    if not run["passed"]:
        run["stderr"] = r.stderr[-3000:]
    return run


def run_piece(name: str) -> dict:
    cmd = [*_display_prefix(), sys.executable, __file__, "--piece", name]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "KIVY_NO_ARGS": "1"})
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise RuntimeError(f"piece {name!r} failed (exit {r.returncode}): {r.stderr[-2000:]}")
    return json.loads(lines[-1])


def mb(kb) -> str:
    return "-" if kb is None else f"{kb / 1024:.0f}"


def report(runs: list[dict], traced: list[dict], pieces: dict[str, list[dict]]) -> None:
    per = [phases(r) for r in runs if r["passed"]]
    print(f"\n== the kiosk, {len(per)} passing run(s) of {SCENARIO.name}: medians, MB ==")
    print(f"{'phase':<10} {'RSS':>6} {'PSS':>6} {'anon':>6}")
    for ph in ("idle", "scanning", "after", "peak"):
        vals = [p[ph] for p in per if ph in p]
        if not vals:
            continue
        row = [statistics.median(v.get(k) for v in vals) if all(k in v for v in vals) else None
               for k in ("rss", "pss", "anonymous")]
        print(f"{ph:<10} {mb(row[0]):>6} {mb(row[1]):>6} {mb(row[2]):>6}"
              + (f"   (VmHWM: the highest RSS of the run; reached on {', '.join(v['screen'] for v in vals)})"
                 if ph == "peak" else ""))
    print("\nPSS by mapping (MB, median over runs; the sample nearest each phase):")
    names: Counter = Counter()
    for p in per:
        for ph in ("idle", "scanning", "after"):
            d = (p.get(ph) or {}).get("detail")
            if d:
                names.update(d["groups"])
    print(f"{'mapping':<32} {'idle':>6} {'scan':>6} {'after':>6}")
    for g, _ in names.most_common():
        cells = []
        for ph in ("idle", "scanning", "after"):
            vals = [p[ph]["detail"]["groups"].get(g, 0) for p in per if (p.get(ph) or {}).get("detail")]
            cells.append(statistics.median(vals) if vals else None)
        if max(c or 0 for c in cells) >= 1024:
            print(f"{g:<32} {mb(cells[0]):>6} {mb(cells[1]):>6} {mb(cells[2]):>6}")
    print("\nInside the anonymous memory (MB):")
    for key, label in (("textures_kb", "Kivy textures (w x h x bytes per pixel)"),
                       ("numpy_kb", "numpy arrays held by Python containers"),
                       ("scenario_material_kb", "the scenario's rendered head turns (JPEG, not in the numpy line)")):
        cells = []
        for ph in ("idle", "scanning", "after"):
            vals = [p[ph]["detail"][key] for p in per if (p.get(ph) or {}).get("detail")
                    and p[ph]["detail"].get(key) is not None]
            cells.append(statistics.median(vals) if vals else None)
        print(f"{label:<58} {mb(cells[0]):>6} {mb(cells[1]):>6} {mb(cells[2]):>6}")
    for key, label in (("in_use", "malloc: allocated (mallinfo2, all arenas)"),
                       ("free", "malloc: freed, kept inside the arenas"),
                       ("mmapped", "malloc: chunks mapped on their own")):
        cells = []
        for ph in ("idle", "scanning", "after"):
            vals = [p[ph]["detail"]["malloc_kb"][key] for p in per if (p.get(ph) or {}).get("detail")
                    and p[ph]["detail"].get("malloc_kb")]
            cells.append(statistics.median(vals) if vals else None)
        print(f"{label:<58} {mb(cells[0]):>6} {mb(cells[1]):>6} {mb(cells[2]):>6}")
    for r in traced:
        print("\ntracemalloc run (slower, its own overhead included; not in the medians above):")
        p = phases(r)
        for ph in ("idle", "scanning", "after", "peak"):
            if ph in p:
                print(f"  {ph:<9} RSS {mb(p[ph]['rss'])} MB")
        for ph, t in r["traced"].items():
            print(f"  {ph:<9} Python allocations {mb(t['python_kb'])} MB, numpy buffers {mb(t['numpy_kb'])} MB; "
                  f"top files: {', '.join(f'{f} {k / 1024:.1f}' for f, k in t['top_python_files_kb'][:5])}")
    if pieces:
        base = statistics.median(x["base"]["rss"] for v in pieces.values() for x in v)
        print(f"\n== each piece alone, in a fresh interpreter, above python + numpy (RSS {mb(base)} MB): medians, MB ==")
        print(f"{'piece':<66} {'RSS':>6} {'PSS':>6} {'anon':>6}")
        for name, vals in pieces.items():
            print(f"{name:<66} {mb(statistics.median(v['rss'] for v in vals)):>6} "
                  f"{mb(statistics.median(v['pss'] for v in vals)):>6} "
                  f"{mb(statistics.median(v['anonymous'] for v in vals)):>6}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="kiosk runs and runs per piece (default 3)")
    ap.add_argument("--script", type=Path, default=SCENARIO, help="the scenario (default: %(default)s)")
    ap.add_argument("--tracemalloc", action="store_true", help="one more kiosk run with tracemalloc on")
    ap.add_argument("--no-pieces", action="store_true", help="skip measuring each piece alone")
    ap.add_argument("--json", type=Path, help="write every sample to this file")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--piece", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    if args.piece:
        return piece(PIECES[args.piece])
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    if not args.script.is_file():
        ap.error(f"scenario file not found: {args.script}")
    runs, traced, pieces = [], [], {}
    with tempfile.TemporaryDirectory(prefix="facepay-memory-") as tmp:
        for i in range(args.repeat):
            runs.append(run_kiosk(args.script, False, Path(tmp) / f"run{i}"))
            print(f"kiosk run {i + 1}: {'passed' if runs[-1]['passed'] else 'FAILED'}, "
                  f"peak RSS {mb(runs[-1]['hwm_kb'])} MB", flush=True)
            for err in runs[-1].get("sampler_errors", []):
                print(f"  a detailed sample was skipped at {err}", flush=True)
        if args.tracemalloc:
            traced.append(run_kiosk(args.script, True, Path(tmp) / "traced"))
        if not args.no_pieces:
            for name in PIECES:
                pieces[name] = [run_piece(name) for _ in range(args.repeat)]
    report(runs, traced, pieces)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "traced": traced, "pieces": pieces}))
    failed = [r for r in runs + traced if not r["passed"]]
    for r in failed:
        print(f"a kiosk run failed: {r.get('stderr', '')[-1500:]}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
