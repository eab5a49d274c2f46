"""Calibrate the match threshold on real photos: false-match and false-non-match rates.

Run:  .venv/bin/python benchmarks/calibrate.py [--shared ../shared/faces] [--json]

Uses the committed fixtures (tests/fixtures/faces) and, when present, the
shared photo set.  Identities come from file names.  Photos that fail a
quality gate are left out (and listed).  Near-duplicate copies of one photo
(distance < 0.15, e.g. the same picture at another resolution) are counted
once so they do not inflate the genuine-pair figures.

It prints, per threshold: FMR (impostor pairs under the threshold) and FNMR
(genuine pairs at or over it), with the rule-of-three 95% upper bound when
no false match is seen; then the template question: does matching against
the mean of the enrolment captures beat matching against each capture?
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from terminal.config import DetectorConfig  # noqa: E402
from terminal.face.images import load_rgb  # noqa: E402
from terminal.face.pipeline import FacePipeline  # noqa: E402

SHARED_IDS = {
    "obama": "obama", "biden": "biden", "alex": "alex_lacamoire", "img1": None, "john": "kit_harington",
    "johnsnow": "kit_harington", "lin-manuel": "lin_manuel_miranda", "kit_with": None, "two_people": None,
}


def identity(path: Path) -> str | None:
    parts = path.parts
    if "train" in parts:  # shared/faces/knn_examples/train/<identity>/img.jpg
        return path.parent.name
    name = path.stem.lower()
    if name.startswith(("two_people", "kit_with", "obama_and", "32bit")):
        return None  # several faces, or a second copy of obama2.jpg
    name = re.sub(r"[-_]?(\d+p?|small|partial_face\d?|test\d*)$", "", name)
    name = name.replace("-", "_")
    for prefix, ident in (("obama", "obama"), ("biden", "biden"), ("alex", "alex_lacamoire"),
                          ("john", "kit_harington"), ("kit_harington", "kit_harington"),
                          ("rose", "rose_leslie"), ("lin_manuel", "lin_manuel_miranda")):
        if name.startswith(prefix):
            return ident
    return None


def collect(dirs: list[Path]) -> list[Path]:
    files = []
    for d in dirs:
        files += [p for p in sorted(d.rglob("*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return files


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=str(ROOT.parent / "shared" / "faces"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    dirs = [ROOT / "tests" / "fixtures" / "faces"]
    if Path(a.shared).is_dir():
        dirs.append(Path(a.shared))
    pipe = FacePipeline(DetectorConfig())
    embs, ids, names, rejected = [], [], [], []
    for f in collect(dirs):
        ident = identity(f)
        if ident is None:
            continue
        an = pipe.analyse(load_rgb(f))
        if not an.gate.ok:
            rejected.append((str(f.relative_to(f.parents[2])), an.gate.reason))
            continue
        # count near-duplicates of the same photo once
        if any(ids[i] == ident and np.linalg.norm(an.embedding - embs[i]) < 0.15 for i in range(len(embs))):
            continue
        embs.append(an.embedding)
        ids.append(ident)
        names.append(f.name)
    E = np.vstack(embs)
    gen, imp = [], []
    for i, j in itertools.combinations(range(len(E)), 2):
        d = float(np.linalg.norm(E[i] - E[j]))
        (gen if ids[i] == ids[j] else imp).append(d)
    gen, imp = np.array(gen), np.array(imp)
    rows = []
    for t in (0.45, 0.50, 0.55, 0.60):
        fm = int((imp < t).sum())
        fnm = int((gen >= t).sum())
        fmr = fm / len(imp)
        rows.append({"threshold": t, "false_matches": fm, "impostor_pairs": len(imp),
                     "fmr": fmr, "fmr_95_upper": (3 / len(imp)) if fm == 0 else None,
                     "false_non_matches": fnm, "genuine_pairs": len(gen), "fnmr": fnm / len(gen)})
    # mean template vs all captures: leave-one-out over identities with >= 4 distinct photos
    mean_d, min_d = [], []
    for ident in sorted(set(ids)):
        idx = [i for i, x in enumerate(ids) if x == ident]
        if len(idx) < 4:
            continue
        for probe in idx:
            enrol = [i for i in idx if i != probe][:3]
            mean_d.append(float(np.linalg.norm(E[probe] - E[enrol].mean(axis=0))))
            min_d.append(float(min(np.linalg.norm(E[probe] - E[i]) for i in enrol)))
    report = {"photos": len(E), "identities": sorted(set(ids)), "rejected_by_gates": rejected,
              "genuine": {"n": len(gen), "max": float(gen.max()), "median": float(np.median(gen))},
              "impostor": {"n": len(imp), "min": float(imp.min()), "median": float(np.median(imp))},
              "thresholds": rows,
              "template": {"probes": len(mean_d), "mean_template_median": float(np.median(mean_d)) if mean_d else None,
                           "nearest_capture_median": float(np.median(min_d)) if min_d else None}}
    if a.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"{len(E)} distinct photos of {len(set(ids))} identities ({len(rejected)} rejected by the gates: "
          + ", ".join(f"{n} {r}" for n, r in rejected) + ")")
    print(f"genuine pairs {len(gen)}: max {gen.max():.3f}, median {np.median(gen):.3f}")
    print(f"impostor pairs {len(imp)}: min {imp.min():.3f}, median {np.median(imp):.3f}")
    print("threshold  FMR (false/impostor pairs)   FNMR (misses/genuine pairs)")
    for r in rows:
        up = f" (95% upper bound {r['fmr_95_upper']:.4f})" if r["fmr_95_upper"] else ""
        print(f"  {r['threshold']:.2f}     {r['fmr']:.4f} ({r['false_matches']}/{r['impostor_pairs']}){up}"
              f"   {r['fnmr']:.3f} ({r['false_non_matches']}/{r['genuine_pairs']})")
    t = report["template"]
    if t["probes"]:
        print(f"template: median distance of a held-out photo to the mean of 3 captures {t['mean_template_median']:.3f}"
              f" vs to the nearest single capture {t['nearest_capture_median']:.3f} ({t['probes']} probes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
