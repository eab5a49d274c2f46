"""Cameras: one small interface, backends chosen by ``[camera] backend``.

- ``replay``: a folder of images or a video file played as frames (demo, tests)
- ``opencv``: a USB webcam through OpenCV ``VideoCapture`` (a developer's machine)
- ``picamera2``: the Pi camera (imported only when chosen)

Opening and closing is explicit, and the terminal keeps the camera closed
except while a shopper is scanning a face for a payment or an enrolment.
Frames are RGB uint8 arrays with a monotonic timestamp; they are never written
to disk.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

import numpy as np

from ..config import CameraConfig


@dataclass(frozen=True)
class Frame:
    image: np.ndarray
    timestamp: float


class Camera(abc.ABC):
    """Open, read frames, close.  ``read`` on a closed camera is an error, never a silent frame."""

    def __init__(self):
        self._open = False
        self.opened_count = 0

    @property
    def is_open(self) -> bool:
        return self._open

    def open(self) -> None:
        if not self._open:
            self._open_device()
            self._open = True
            self.opened_count += 1

    def close(self) -> None:
        if self._open:
            self._open = False
            self._close_device()

    def read(self) -> Frame | None:
        """The next frame, or None when a non-looping source has ended."""
        if not self._open:
            raise RuntimeError("camera read while closed")
        return self._read()

    def describe(self) -> dict:
        return {"backend": type(self).__name__}

    @abc.abstractmethod
    def _open_device(self) -> None: ...

    @abc.abstractmethod
    def _read(self) -> Frame | None: ...

    @abc.abstractmethod
    def _close_device(self) -> None: ...

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()


def make_camera(cfg: CameraConfig, replay_default: str | None = None) -> Camera:
    """Build the configured backend (not yet open)."""
    if cfg.backend == "replay":
        from .replay import ReplayCamera

        return ReplayCamera.from_path(cfg.replay_path or replay_default or "", fps=cfg.fps, loop=cfg.loop,
                                       speed=cfg.replay_speed)
    if cfg.backend == "opencv":
        from .opencv import OpenCVCamera

        return OpenCVCamera(cfg.device, cfg.width, cfg.height)
    if cfg.backend == "picamera2":
        from .picam import PiCamera

        return PiCamera(cfg.width, cfg.height)
    raise ValueError(f"unknown camera backend {cfg.backend!r}")
