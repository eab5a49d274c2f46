"""Renders the simulated shopper's head turns and prints in a child process, handed back JPEG-compressed.

The kiosk under test (``facepay run --demo``, a ``--script`` scenario) shows rendered material on its
replay camera.  Rendering it needs face models of its own and about 70 MB of frames and temporaries at
once; in the kiosk's process that memory stays resident (freed heap is not given back) and would be
counted as the kiosk's.  So the material is made in another interpreter (``python -m
terminal.testing.render``), as the person in front of a real camera is not part of the terminal, and
comes back over a pipe as JPEG bytes (:class:`~terminal.testing.clips.JpegClip`).  Nothing is written to
disk.

Recipes (each for both sides, "left" and "right"):

- ``turn``: a genuine head turn, 25 degrees in 1 s (the scenario player's ``source = "turn"``);
- ``print``: the frontal picture as a print turned 35 degrees;
- ``bent_print``: the print bent outward on a cylinder and turned 30 degrees;
- ``demo_shopper``: one second looking at the screen, then a 25-degree turn in 1.2 s (``DemoShopper``).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

from .clips import JpegClip

RECIPES = ("turn", "print", "bent_print", "demo_shopper")
SIDES = ("left", "right")


def _frames(synth, model, recipe: str, side: str, fps: float) -> list:
    if recipe == "turn":
        return synth.genuine(model, side, 25.0, 1.0, fps=fps, seed=1).frames
    if recipe == "bent_print":
        return synth.bent_print(model, side, synth.Bend("cylinder", radius=1.0), 30.0, 1.0, fps=fps, seed=1).frames
    if recipe == "print":
        return synth.print_turned(model.frontal(), side, 35.0, 1.0, fps=fps, seed=1).frames
    if recipe == "demo_shopper":
        hold = [model.render(0.0)] * int(fps)   # a second looking at the screen first
        return hold + synth.genuine(model, side, 25.0, 1.2, fps=fps, seed=7).frames
    raise ValueError(f"unknown recipe {recipe!r}: one of {', '.join(RECIPES)}")


def render_here(jobs: list[dict], fps: float) -> list[dict[str, list[bytes]] | str]:
    """Each job ``{"recipe", "photo"}`` rendered in this process: JPEG bytes per side, or why it cannot be."""
    from ..config import DetectorConfig
    from ..face.images import load_rgb
    from ..face.pipeline import FacePipeline
    from . import synth

    pipeline = FacePipeline(DetectorConfig())
    out: list = []
    for job in jobs:
        model = synth.prepare(load_rgb(Path(job["photo"])), pipeline)
        if model is None:
            out.append(f"no usable face in the photo {job['photo']}")
            continue
        # one side at a time, compressed before the next is rendered
        out.append({side: JpegClip(_frames(synth, model, job["recipe"], side, fps)).jpegs for side in SIDES})
    return out


def render(jobs: list[dict], fps: float, timeout: float = 300.0) -> list[dict[str, JpegClip] | Exception]:
    """Each job rendered in a child interpreter: both sides as JpegClips, or the error that job met.

    A child that fails as a whole (it could not start, crashed, timed out) raises RuntimeError with its
    own last words."""
    for job in jobs:
        if job.get("recipe") not in RECIPES:
            raise ValueError(f"unknown recipe {job.get('recipe')!r}: one of {', '.join(RECIPES)}")
    request = json.dumps({"jobs": [{"recipe": j["recipe"], "photo": str(j["photo"])} for j in jobs], "fps": fps})
    r = subprocess.run([sys.executable, "-m", "terminal.testing.render"], input=request.encode(),
                       capture_output=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"rendering the simulated shopper failed (exit {r.returncode}): "
                           f"{r.stderr.decode(errors='replace').strip()[-1500:]}")
    results = pickle.loads(r.stdout)   # our own child's answer: a list of {side: [bytes]} or str
    return [ValueError(res) if isinstance(res, str) else {side: JpegClip.from_jpegs(b) for side, b in res.items()}
            for res in results]


def main() -> int:
    answer = os.fdopen(os.dup(1), "wb")   # the pipe back; anything a native library prints goes to stderr
    os.dup2(2, 1)
    request = json.loads(sys.stdin.read())
    results = render_here(request["jobs"], float(request["fps"]))
    answer.write(pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL))
    answer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
