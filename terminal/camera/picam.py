"""The Raspberry Pi camera through picamera2 (Raspberry Pi OS package ``python3-picamera2``).

The ``main`` stream is configured at the detection size (``[camera] width`` x
``height``, 640x480 by default, RGB) and serves both the on-screen preview and
detection: the pipeline's thresholds were calibrated on 640-pixel frames, and
the dlib descriptor needs more pixels of the face than a 320x240 ``lores``
stream would give.  Frames are read into memory only.
"""

from __future__ import annotations

import time

from ..errors import HardwareError
from ..face.images import scale_to
from . import Camera, Frame


class PiCamera(Camera):
    def __init__(self, width: int = 640, height: int = 480):
        super().__init__()
        self.width, self.height = width, height
        self._cam = None

    def describe(self) -> dict:
        return {"backend": "picamera2", "size": [self.width, self.height]}

    def _open_device(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError:
            raise HardwareError(
                "picamera2 is not installed", "camera",
                "apt-get install python3-picamera2 and create the venv with --system-site-packages",
            ) from None
        try:
            cam = Picamera2()
            config = cam.create_preview_configuration(main={"size": (self.width, self.height), "format": "RGB888"})
            cam.configure(config)
            cam.start()
        except (RuntimeError, IndexError) as exc:
            raise HardwareError(f"the Pi camera cannot be started: {exc}", "camera",
                                "check the ribbon cable and run `rpicam-hello --list-cameras`") from None
        self._cam = cam

    def _read(self) -> Frame:
        # picamera2's "RGB888" is BGR in memory order; flip to RGB.
        arr = self._cam.capture_array("main")
        return Frame(scale_to(arr[:, :, 2::-1].copy()), time.monotonic())

    def _close_device(self) -> None:
        if self._cam is not None:
            self._cam.stop()
            self._cam.close()
            self._cam = None
