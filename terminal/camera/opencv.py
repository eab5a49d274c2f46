"""A USB webcam through OpenCV ``VideoCapture`` (for a developer's machine)."""

from __future__ import annotations

import time

from ..errors import HardwareError
from ..face.images import scale_to
from . import Camera, Frame


class OpenCVCamera(Camera):
    def __init__(self, device: int = 0, width: int = 640, height: int = 480):
        super().__init__()
        self.device, self.width, self.height = device, width, height
        self._cap = None

    def describe(self) -> dict:
        return {"backend": "opencv", "device": self.device, "size": [self.width, self.height]}

    def _open_device(self) -> None:
        import cv2

        cap = cv2.VideoCapture(self.device)
        if not cap.isOpened():
            raise HardwareError(f"webcam {self.device} cannot be opened", "camera", "check it is plugged in and not in use")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        self._cap = cap

    def _read(self) -> Frame | None:
        ok, bgr = self._cap.read()
        if not ok:
            raise HardwareError("webcam stopped sending frames", f"camera {self.device}")
        return Frame(scale_to(bgr[:, :, ::-1].copy()), time.monotonic())

    def _close_device(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
