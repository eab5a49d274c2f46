"""Our pipeline against face_recognition's default pipeline: same frames, same run, same dlib.

Run:  make bench                      (installs face_recognition 1.3.0 without its dependencies)
  or  .venv/bin/python benchmarks/compare.py [--frames DIR ...] [--repeat 3] [--json]

Per decision: ours = MediaPipe detection + quality gates + dlib descriptor + 1:N match;
face_recognition = face_locations (HOG, 1 upsample) + face_encodings (5-point, 1 jitter)
+ face_distance against the same gallery.  Frames where either pipeline finds no single face are
left out of both.  Accuracy: all pairs of the labelled photos (fixtures, plus ../shared/faces when
present), false matches and misses at each pipeline's threshold (ours 0.55, face_recognition 0.6).
Medians over all passes; the machine is shared, so both run interleaved in one process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from calibrate import collect, identity  # noqa: E402

from terminal.bench import synthetic_gallery  # noqa: E402
from terminal.config import DetectorConfig  # noqa: E402
from terminal.face.embedder import dlib_build  # noqa: E402
from terminal.face.images import load_rgb  # noqa: E402
from terminal.face.pipeline import FacePipeline  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", nargs="*", default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import face_recognition as fr
        except ImportError:
            print("face_recognition is not installed: .venv/bin/pip install --no-deps face_recognition==1.3.0",
                  file=sys.stderr)
            return 2
    dirs = [Path(d) for d in a.frames] if a.frames else [ROOT / "tests" / "fixtures" / "faces",
                                                         ROOT.parent / "shared" / "faces"]
    files = [f for f in collect([d for d in dirs if d.is_dir()])]
    frames = {f: load_rgb(f) for f in files}
    ours = FacePipeline(DetectorConfig())
    ours.warm_up()
    gallery = synthetic_gallery(1000)
    gal_m = gallery.matrix

    # -- who is usable by both (one face each) --------------------------------------------
    usable, emb_ours, emb_fr = [], {}, {}
    for f, rgb in frames.items():
        an = ours.analyse(rgb)
        locs = fr.face_locations(rgb)
        if an.embedding is None or len(locs) != 1:
            continue
        usable.append(f)
        emb_ours[f] = an.embedding
        emb_fr[f] = fr.face_encodings(rgb, locs)[0]

    # -- timing, interleaved ---------------------------------------------------------------
    t_ours, t_fr = [], []
    for _ in range(a.repeat):
        for f in usable:
            rgb = frames[f]
            t0 = time.perf_counter()
            an = ours.analyse(rgb)
            gallery.match(an.embedding, 0.55, 0.06)
            t1 = time.perf_counter()
            locs = fr.face_locations(rgb)
            enc = fr.face_encodings(rgb, locs)[0]
            d = fr.face_distance(gal_m, enc)
            int(np.argmin(d))
            t2 = time.perf_counter()
            t_ours.append((t1 - t0) * 1000)
            t_fr.append((t2 - t1) * 1000)

    # -- accuracy on labelled pairs ------------------------------------------------------------
    def rates(emb, threshold):
        labelled = [f for f in usable if identity(f)]
        fm = fnm = gen = imp = 0
        for x, y in itertools.combinations(labelled, 2):
            d = float(np.linalg.norm(emb[x] - emb[y]))
            if d < 0.15 and identity(x) == identity(y):
                continue  # the same photo at another size
            if identity(x) == identity(y):
                gen += 1
                fnm += d >= threshold
            else:
                imp += 1
                fm += d < threshold
        return {"threshold": threshold, "false_matches": fm, "impostor_pairs": imp,
                "misses": fnm, "genuine_pairs": gen}

    mo, mf = float(np.median(t_ours)), float(np.median(t_fr))
    result = {
        "dlib": dlib_build(), "frames": len(usable), "passes": a.repeat,
        "ours_ms": {"median": round(mo, 1), "p95": round(float(np.percentile(t_ours, 95)), 1)},
        "face_recognition_ms": {"median": round(mf, 1), "p95": round(float(np.percentile(t_fr, 95)), 1)},
        "speedup_median": round(mf / mo, 2),
        "accuracy": {"ours": rates(emb_ours, 0.55), "face_recognition": rates(emb_fr, 0.6)},
    }
    if a.json:
        print(json.dumps(result))
        return 0
    print(f"dlib {result['dlib']['version']} {'with' if result['dlib']['blas'] else 'without'} BLAS; "
          f"{len(usable)} frames x {a.repeat} passes")
    print(f"ours:             median {result['ours_ms']['median']} ms, p95 {result['ours_ms']['p95']} ms per decision")
    print(f"face_recognition: median {result['face_recognition_ms']['median']} ms, "
          f"p95 {result['face_recognition_ms']['p95']} ms per decision")
    print(f"speed-up (median): {result['speedup_median']}x")
    for name, r in result["accuracy"].items():
        print(f"accuracy {name:<16} at {r['threshold']}: {r['false_matches']}/{r['impostor_pairs']} false matches, "
              f"{r['misses']}/{r['genuine_pairs']} misses")
    return 0


if __name__ == "__main__":
    sys.exit(main())
