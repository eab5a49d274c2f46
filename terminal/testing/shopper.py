"""The demo's simulated shopper: a double for the person in front of the camera in ``facepay run --demo``."""

from __future__ import annotations

import threading

from .clips import JpegClip
from .synth import genuine, prepare


class DemoShopper:
    """The demo's simulated shopper: reads the challenge off the screen and turns that way before the replay camera.

    ``facepay run --demo`` has no one in front of its camera, only the demo photos; this stands in for
    the shopper, with head turns rendered (on a thread, at start) from the demo shopper's photo and
    held JPEG-compressed (:class:`~terminal.testing.clips.JpegClip`).  It never runs outside the demo,
    and scenarios drive the camera themselves.
    """

    def __init__(self, photo, fps: float):
        self.photo, self.fps = photo, fps
        self.frames: dict[str, JpegClip] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._render, name="demo-shopper", daemon=True).start()

    def _render(self) -> None:
        from ..config import DetectorConfig
        from ..face.images import load_rgb
        from ..face.pipeline import FacePipeline

        try:
            model = prepare(load_rgb(self.photo), FacePipeline(DetectorConfig()))
            if model is not None:
                hold = [model.render(0.0)] * int(self.fps)   # a second looking at the screen first
                self.frames = {side: JpegClip(hold + genuine(model, side, 25.0, 1.2, fps=self.fps, seed=7).frames)
                               for side in ("left", "right")}
        finally:
            self.ready.set()

    def follow(self, camera, challenge: str) -> None:
        """Show the turn the screen asks for (as soon as it is rendered) on the replay camera."""
        self.ready.wait(30)
        if challenge in self.frames:
            camera.show(self.frames[challenge])
