"""The demo's simulated shopper: a double for the person in front of the camera in ``facepay run --demo``."""

from __future__ import annotations

import logging
import threading

from .clips import JpegClip

_log = logging.getLogger(__name__)


class DemoShopper:
    """The demo's simulated shopper: reads the challenge off the screen and turns that way before the replay camera.

    ``facepay run --demo`` has no one in front of its camera, only the demo photos; this stands in for
    the shopper, with head turns rendered (on a thread, at start, in a child process:
    :mod:`terminal.testing.render`, recipe ``demo_shopper``) from the demo shopper's photo and held
    JPEG-compressed (:class:`~terminal.testing.clips.JpegClip`).  It never runs outside the demo, and
    scenarios drive the camera themselves.
    """

    def __init__(self, photo, fps: float):
        self.photo, self.fps = photo, fps
        self.frames: dict[str, JpegClip] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._render, name="demo-shopper", daemon=True).start()

    def _render(self) -> None:
        from .render import render

        try:
            (result,) = render([{"recipe": "demo_shopper", "photo": self.photo}], self.fps)
            if isinstance(result, Exception):
                raise result
            self.frames = result
        except Exception as exc:   # the demo goes on; the shopper just does not turn (the scan times out)
            _log.error("the demo shopper could not be rendered: %s", exc)
        finally:
            self.ready.set()

    def follow(self, camera, challenge: str) -> None:
        """Show the turn the screen asks for (as soon as it is rendered) on the replay camera."""
        self.ready.wait(30)
        if challenge in self.frames:
            camera.show(self.frames[challenge])
