"""Ours (mediapipe 1.x Tasks + OpenCV landmarks) against mediapipe 0.10.18, same photos, same run.

mediapipe 0.10.18 cannot live in the project's venv (numpy<2, protobuf<5), so it runs in a throwaway
venv as a worker process this script starts and drives over a pipe:

    python3.11 -m venv /tmp/mp018 && /tmp/mp018/bin/pip install mediapipe==0.10.18 pillow
    .venv/bin/python benchmarks/legacy_mediapipe.py --legacy-python /tmp/mp018/bin/python [--repeat 5] [--json]

Two measurements:
1. Landmarks: per photo with exactly one face, our ``FaceLandmarker`` (on our detector's detection) against
   0.10.18's ``mp.solutions.face_mesh`` (static_image_mode, one face): per-landmark pixel error in x, y
   (mean, median, max), also relative to the inter-ocular distance, and the mean z difference.
2. Detection time: the detect stage of ``facepay bench`` (``FaceDetector.detect`` per frame, the
   configured model and threshold) against 0.10.18's ``mp.solutions.face_detection`` with the same
   model and threshold.  Frame by frame the two processes alternate (legacy frame 1, ours frame 1,
   legacy frame 2, ...) so both see the same machine load; wall-clock medians and p95 over every frame
   of every pass, the mean process CPU time (all threads), and the ratio ours / legacy per frame.

Frames: every photo under tests/fixtures/faces (recursively), scaled by ``load_rgb`` exactly as the
terminal scales them; the worker uses the same function.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from terminal.bench import IMAGE_SUFFIXES, _stats  # noqa: E402
from terminal.face.images import load_rgb  # noqa: E402
from terminal.face.liveness import eye_distance  # noqa: E402


def photos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def worker(files: list[str], model: str, min_confidence: float) -> int:
    """Runs under mediapipe 0.10.18: answers 'landmarks' and 'detect' requests, one JSON line each."""
    import mediapipe as mp

    frames = [load_rgb(f) for f in files]
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False)
    det = mp.solutions.face_detection.FaceDetection(model_selection=0 if model == "short" else 1,
                                                    min_detection_confidence=min_confidence)
    det.process(frames[0])
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "landmarks":
            out = []
            for rgb in frames:
                h, w = rgb.shape[:2]
                r = mesh.process(rgb)
                if not r.multi_face_landmarks:
                    out.append(None)
                    continue
                out.append([[p.x * w, p.y * h, p.z * w] for p in r.multi_face_landmarks[0].landmark])
            print(json.dumps(out), flush=True)
        elif cmd.startswith("detect "):
            i = int(cmd.split()[1])
            print(json.dumps(timed(det.process, frames[i])), flush=True)
        else:
            break
    return 0


def timed(detect, rgb) -> tuple[float, float]:
    """Wall-clock and process CPU time (all threads) of one detection, in milliseconds."""
    c0, t0 = time.process_time(), time.perf_counter()
    detect(rgb)
    return (time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--legacy-python", help="python of a venv with mediapipe==0.10.18 and pillow")
    ap.add_argument("--frames", default=str(ROOT / "tests" / "fixtures" / "faces"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="short", help=argparse.SUPPRESS)
    ap.add_argument("--min-confidence", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.model, a.min_confidence)
    if not a.legacy_python:
        ap.error("--legacy-python is required (see the module docstring for the throwaway venv)")

    from terminal.config import DetectorConfig
    from terminal.face.pipeline import FacePipeline

    cfg = DetectorConfig()
    files = photos(Path(a.frames))
    frames = [load_rgb(f) for f in files]
    proc = subprocess.Popen(
        [a.legacy_python, __file__, "--worker", *map(str, files), "--model", cfg.model,
         "--min-confidence", str(cfg.min_confidence)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, stderr=subprocess.DEVNULL,
    )

    def ask(cmd: str):
        proc.stdin.write(cmd + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"the 0.10.18 worker stopped (run it by hand: {a.legacy_python} -c 'import mediapipe')")
        return json.loads(line)

    try:
        ours = FacePipeline(cfg)
        ours.detector.detect(frames[0])
        legacy = ask("landmarks")
        per_photo = []
        for f, rgb, ref in zip(files, frames, legacy):
            dets = ours.detector.detect(rgb)
            name = str(f.relative_to(a.frames))
            if len(dets) != 1 or ref is None:
                per_photo.append({"photo": name, "skipped": f"{len(dets)} faces here, legacy mesh "
                                  + ("none" if ref is None else "found one")})
                continue
            pts = ours.landmarker.landmarks(rgb, dets[0])
            if pts is None:
                per_photo.append({"photo": name, "skipped": "our landmark model saw no face"})
                continue
            ref = np.asarray(ref)
            err = np.hypot(*(pts[:, :2] - ref[:, :2]).T)
            iod = eye_distance(ref)
            per_photo.append({
                "photo": name, "inter_ocular_px": round(iod, 1),
                "mean_px": round(float(err.mean()), 2), "median_px": round(float(np.median(err)), 2),
                "max_px": round(float(err.max()), 2), "mean_rel_iod": round(float(err.mean()) / iod, 4),
                "z_mean_abs_px": round(float(np.abs(pts[:, 2] - ref[:, 2]).mean()), 2),
            })
        names = ("mediapipe 0.10.18 (solutions)", "mediapipe 1.2.3 (Tasks)")
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(a.repeat):
            for i, rgb in enumerate(frames):  # frame by frame, alternating: both see the same load
                for k, (w, c) in zip(names, (ask(f"detect {i}"), timed(ours.detector.detect, rgb))):
                    wall[k].append(w)
                    cpu[k].append(c)
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)

    compared = [p for p in per_photo if "skipped" not in p]
    result = {
        "photos": len(files), "compared": len(compared),
        "landmarks": per_photo,
        "landmarks_overall": {
            "mean_px": round(float(np.mean([p["mean_px"] for p in compared])), 2),
            "worst_max_px": max(p["max_px"] for p in compared),
            "mean_rel_iod": round(float(np.mean([p["mean_rel_iod"] for p in compared])), 4),
        },
        "detect_ms": {k: {**_stats(wall[k]), "cpu_mean": round(float(np.mean(cpu[k])), 3)} for k in names},
        "detect_ms_per_photo": {str(f.relative_to(a.frames)): {k: round(float(np.median(wall[k][i::len(files)])), 3)
                                                              for k in names} for i, f in enumerate(files)},
        # ours / legacy, frame by frame (the same frame, one right after the other): median and quartiles
        "detect_ratio": dict(zip(("q25", "median", "q75"), np.round(np.percentile(
            np.asarray(wall[names[1]]) / np.asarray(wall[names[0]]), [25, 50, 75]), 3).tolist())),
        "frames_per_pass": len(frames), "passes": a.repeat,
        "detector": {"model": cfg.model, "min_confidence": cfg.min_confidence},
    }
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"landmarks against the 0.10.18 face mesh, {len(compared)} of {len(files)} photos (pixels):")
    print(f"  {'photo':<36} {'eyes px':>7} {'mean':>6} {'median':>6} {'max':>6} {'mean/eyes':>9} {'|dz|':>6}")
    for p in per_photo:
        if "skipped" in p:
            print(f"  {p['photo']:<36} skipped: {p['skipped']}")
        else:
            print(f"  {p['photo']:<36} {p['inter_ocular_px']:>7} {p['mean_px']:>6} {p['median_px']:>6} {p['max_px']:>6} "
                  f"{p['mean_rel_iod']:>9.3f} {p['z_mean_abs_px']:>6}")
    o = result["landmarks_overall"]
    print(f"  overall: mean {o['mean_px']} px ({o['mean_rel_iod']:.3f} of the eye distance), worst point {o['worst_max_px']} px")
    print(f"detection, {len(frames)} frames x {a.repeat} passes, alternating, model {cfg.model}, threshold {cfg.min_confidence}:")
    for k, v in result["detect_ms"].items():
        print(f"  {k:<30} median {v['median']} ms, p95 {v['p95']} ms; CPU time {v['cpu_mean']} ms per frame (mean)")
    q = result["detect_ratio"]
    print(f"  Tasks / 0.10.18 on the same frame: median {q['median']} (quartiles {q['q25']}-{q['q75']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
