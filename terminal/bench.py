"""``facepay bench --frames DIR``: time the whole pipeline per decision and 1:N matching.

Per frame: detect -> gates -> embed -> match (against a synthetic gallery of 1,000 templates), and the
468-point landmarks the liveness check runs on every scan frame (``landmarks``, counted in per decision).
A frame that fails a gate ends after the gates and is counted apart; the per-decision figures
are over frames that were embedded and matched.  Then 1:N match time against 1k, 10k and 100k
synthetic templates.  Medians and p95 in milliseconds; which dlib ran (``dlib.DLIB_USE_BLAS``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .errors import InputError, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def synthetic_gallery(n: int, seed: int = 0):
    from .face.matcher import Gallery

    rng = np.random.default_rng(seed)
    # dlib descriptors have entries of roughly this spread (norms near 1)
    m = rng.normal(0.0, 0.09, size=(n, 128)).astype(np.float32)
    return Gallery([f"syn_{i}" for i in range(n)], m)


def _stats(values: list[float]) -> dict:
    if not values:
        return {"median": None, "p95": None}
    a = np.asarray(values)
    return {"median": round(float(np.median(a)), 3), "p95": round(float(np.percentile(a, 95)), 3)}


def time_matching(sizes: list[int], queries: int = 60, threshold: float = 0.55, margin: float = 0.06) -> dict:
    out = {}
    rng = np.random.default_rng(1)
    for n in sizes:
        g = synthetic_gallery(n)
        probes = rng.normal(0.0, 0.09, size=(queries, 128)).astype(np.float32)
        g.match(probes[0], threshold, margin)  # warm the caches
        times = []
        for p in probes:
            t0 = time.perf_counter()
            g.match(p, threshold, margin)
            times.append((time.perf_counter() - t0) * 1000)
        out[str(n)] = round(float(np.median(times)), 3)
    return out


def bench_frames(files: list[Path], pipeline, threshold: float, margin: float, repeat: int = 3) -> dict:
    from .face.images import load_rgb

    frames = [load_rgb(f) for f in files]
    gallery = synthetic_gallery(1000)
    pipeline.warm_up()
    first = pipeline.analyse(frames[0])  # first calls pay one-time set-up costs
    if first.gate.ok:
        pipeline.landmarks(frames[0], first)
    stages: dict[str, list[float]] = {"detect": [], "gates": [], "landmarks": [], "embed": [], "match": []}
    per_decision, embedded, rejected = [], 0, {}
    for _ in range(repeat):
        for rgb in frames:
            t0 = time.perf_counter()
            a = pipeline.analyse(rgb)
            if a.embedding is None:
                rejected[a.gate.reason] = rejected.get(a.gate.reason, 0) + 1
                continue
            t1 = time.perf_counter()
            gallery.match(a.embedding, threshold, margin)
            t2 = time.perf_counter()
            pipeline.landmarks(rgb, a)   # times itself into a.timings_ms
            t3 = time.perf_counter()
            for k, v in a.timings_ms.items():
                stages[k].append(v)
            stages["match"].append((t2 - t1) * 1000)
            per_decision.append((t3 - t0) * 1000)
            embedded += 1
    return {"frames": len(frames) * repeat, "embedded": embedded, "rejected_by_gates": rejected,
            "per_decision_ms": _stats(per_decision), "stages_ms": {k: _stats(v) for k, v in stages.items()}}


def bench_liveness(files: list[Path], pipeline, cfg, threshold: float, repeat: int = 3) -> dict:
    """The liveness stage on a head turn rendered from the first frontal photo (terminal/testing/synth.py).

    Per scan frame, detection to decision: detect -> gates -> landmarks -> the check (``liveness``: yaw,
    continuity, and the planarity fit on the frame that decides).  Then what two frames add: the one
    where the turn gets under way computes the start frame's descriptor, and the deciding frame the end
    frame's descriptor and the 1:N match against 1,000 templates (as ``scan.run_challenge`` does).
    """
    from .camera.replay import ReplayCamera
    from .face.images import load_rgb
    from .face.liveness import LivenessCheck, LivenessParams, mesh_box
    from .testing import synth

    model = None
    for f in files:
        model = synth.prepare(load_rgb(f), pipeline)
        if model is not None and abs(model.own_yaw) <= 12:
            break
        model = None
    if model is None:
        return {"skipped": "no photo of a frontal face to render a head turn from"}
    seq = synth.genuine(model, "left", 25.0, 1.0, fps=30.0, back=False)
    gallery = synthetic_gallery(1000)
    params = LivenessParams.from_config(cfg)
    stages: dict[str, list[float]] = {"detect": [], "gates": [], "landmarks": [], "liveness": []}
    per_frame, decision, decided = [], [], 0
    for _ in range(repeat):
        cam = ReplayCamera(frames=seq.frames, fps=seq.fps, loop=False, paced=False)
        cam.open()
        check = LivenessCheck("left", params)
        frames = {}
        while (frame := cam.read()) is not None:
            t0 = time.perf_counter()
            a = pipeline.analyse(frame.image, embed=False)
            lm = pipeline.landmarks(frame.image, a)
            t1 = time.perf_counter()
            result = check.add(frame.timestamp, lm, mesh_box(lm) if lm is not None else None,
                               (frame.image.shape[1], frame.image.shape[0]), frame.image)
            t2 = time.perf_counter()
            frames[check.frames - 1] = (frame.image, a.gate.face)
            for k in ("detect", "gates", "landmarks"):
                stages[k].append(a.timings_ms.get(k, 0.0))
            stages["liveness"].append((t2 - t1) * 1000)
            per_frame.append((t2 - t0) * 1000)
            if result is not None:
                if result.live:
                    start = pipeline.embedder.embed(*frames[result.start_frame])
                    t3 = time.perf_counter()
                    pipeline.embedder.embed(*frames[result.end_frame])
                    gallery.match(start, threshold, 0.06)
                    decision.append((time.perf_counter() - t3) * 1000)
                    decided += 1
                break
        cam.close()
    return {"sequence_frames": len(seq.frames), "passes": repeat, "live": decided,
            "scan_frame_ms": _stats(per_frame), "stages_ms": {k: _stats(v) for k, v in stages.items()},
            "deciding_frame_adds_ms": _stats(decision)}


def run_bench(ctx) -> int:
    from .face.embedder import dlib_build

    a = ctx.args
    folder = Path(a.frames)
    if not folder.is_dir():
        raise InputError("not a folder of images", str(folder))
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError("the folder holds no images", str(folder))
    try:
        sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
        if not sizes or min(sizes) <= 0:
            raise ValueError
    except ValueError:
        raise UsageError(f"--sizes {a.sizes!r} must be positive whole numbers separated by commas", "bench") from None
    if a.repeat < 1:
        raise UsageError("--repeat must be at least 1", "bench")
    from .face.pipeline import FacePipeline

    cfg = ctx.cfg
    pipeline = FacePipeline(cfg.detector)   # one set of models for both stages
    result = bench_frames(files, pipeline, cfg.match.threshold, cfg.match.margin, a.repeat)
    result["match_ms"] = time_matching(sizes)
    result["liveness"] = bench_liveness(files, pipeline, cfg.liveness, cfg.match.threshold, a.repeat)
    result["dlib"] = dlib_build()
    if a.json:
        print(json.dumps(result))
    else:
        d = result["per_decision_ms"]
        print(f"{result['frames']} frames, {result['embedded']} embedded and matched "
              f"(rejected by the gates: {result['rejected_by_gates'] or 'none'})")
        print(f"dlib {result['dlib']['version']} {'with' if result['dlib']['blas'] else 'without'} BLAS")
        print(f"per decision: median {d['median']} ms, p95 {d['p95']} ms")
        for k, v in result["stages_ms"].items():
            print(f"  {k:<9} median {v['median']} ms, p95 {v['p95']} ms")
        for n, ms in result["match_ms"].items():
            print(f"1:N match against {int(n):>7,} templates: median {ms} ms")
        lv = result["liveness"]
        if "skipped" in lv:
            print(f"liveness: skipped ({lv['skipped']})")
        else:
            f = lv["scan_frame_ms"]
            print(f"liveness, a rendered head turn ({lv['sequence_frames']} frames at 30 fps, {lv['live']} of "
                  f"{lv['passes']} passes live): per scan frame, detection to decision, median {f['median']} ms, "
                  f"p95 {f['p95']} ms")
            for k, v in lv["stages_ms"].items():
                print(f"  {k:<9} median {v['median']} ms, p95 {v['p95']} ms")
            d = lv["deciding_frame_adds_ms"]
            print(f"  the deciding frame adds one descriptor and the match: median {d['median']} ms "
                  "(the frame where the turn gets under way adds the other descriptor)")
    return 0
