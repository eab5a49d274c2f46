"""The replay camera: images from a folder (sorted by name) or a video file, as frames.

It paces frames at ``fps`` like a real camera (``paced=False`` returns them as
fast as asked, for the CLI and benchmarks) and loops or ends.  Images are
decoded at open time and held in memory; nothing is written.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import HardwareError, InputError
from ..face.images import load_rgb, scale_to
from . import Camera, Frame

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".h264"}


class ReplayCamera(Camera):
    def __init__(self, files: list[Path] | None = None, video: Path | None = None,
                 fps: float = 10.0, loop: bool = True, paced: bool = True):
        super().__init__()
        self.files = list(files or [])
        self.video = video
        self.fps = fps
        self.loop = loop
        self.paced = paced
        self._frames: list[np.ndarray] = []
        self._cap = None
        self._i = 0
        self._next_t = 0.0

    @classmethod
    def from_path(cls, path: str | Path, **kw) -> "ReplayCamera":
        p = Path(path)
        if not str(path) or not p.exists():
            raise HardwareError("replay source not found", str(p), "set [camera] replay_path to a folder of images or a video")
        if p.is_dir():
            files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise HardwareError("replay folder holds no images", str(p))
            return cls(files=files, **kw)
        if p.suffix.lower() in VIDEO_SUFFIXES:
            return cls(video=p, **kw)
        return cls(files=[p], **kw)

    def describe(self) -> dict:
        src = str(self.video) if self.video else f"{len(self.files)} images"
        return {"backend": "replay", "source": src, "fps": self.fps, "loop": self.loop}

    def _open_device(self) -> None:
        self._i = 0
        self._next_t = time.monotonic()
        if self.video is not None:
            import cv2

            self._cap = cv2.VideoCapture(str(self.video))
            if not self._cap.isOpened():
                raise HardwareError("video cannot be opened", str(self.video))
        elif not self._frames:
            self._frames = [load_rgb(f) for f in self.files]

    def _read(self) -> Frame | None:
        if self.paced:
            now = time.monotonic()
            if now < self._next_t:
                time.sleep(self._next_t - now)
                now = self._next_t
            self._next_t = now + 1.0 / self.fps  # the next frame is due one period after this one
        if self._cap is not None:
            ok, bgr = self._cap.read()
            if not ok and self.loop:
                self._cap.set(1, 0)  # CAP_PROP_POS_FRAMES
                ok, bgr = self._cap.read()
            if not ok:
                return None
            return Frame(scale_to(np.ascontiguousarray(bgr[:, :, ::-1])), time.monotonic())
        if self._i >= len(self._frames):
            if not self.loop:
                return None
            self._i = 0
        frame = self._frames[self._i]
        self._i += 1
        return Frame(frame, time.monotonic())

    def _close_device(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def single_image(path: str | Path) -> ReplayCamera:
    """A camera that shows one photo once (``facepay sale --face IMAGE``); errors name the photo."""
    p = Path(path)
    cam = ReplayCamera(files=[p], loop=False, paced=False)
    cam._frames = [load_rgb(p)]  # decode now so a bad photo fails before any state changes
    return cam


__all__ = ["ReplayCamera", "single_image", "InputError"]
