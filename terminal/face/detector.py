"""Face detection with MediaPipe (the model ships inside the mediapipe 0.10.18 wheel)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass

import numpy as np

_log = logging.getLogger(__name__)

KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")


@dataclass(frozen=True)
class Detection:
    """One face: a pixel box (x, y, w, h), a score, and six keypoints in pixels."""

    box: tuple[int, int, int, int]
    score: float
    keypoints: dict[str, tuple[float, float]]

    @property
    def eye_distance(self) -> float:
        (rx, ry), (lx, ly) = self.keypoints["right_eye"], self.keypoints["left_eye"]
        return float(np.hypot(lx - rx, ly - ry))


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence native libraries' start-up banners on fd 2 (set FACEPAY_DEBUG=1 to see them)."""
    if os.environ.get("FACEPAY_DEBUG"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class FaceDetector:
    """MediaPipe face detection.  ``model``: "short" (within ~2 m, a kiosk) or "full" (up to ~5 m)."""

    def __init__(self, model: str = "short", min_confidence: float = 0.6):
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import mediapipe as mp

        self.model = model
        self.min_confidence = min_confidence
        with quiet_native_stderr():
            self._mp = mp.solutions.face_detection.FaceDetection(
                model_selection=0 if model == "short" else 1, min_detection_confidence=min_confidence
            )
            # The first call builds the graph and logs TFLite/absl banners to fd 2: do it here, quietly.
            self._mp.process(np.zeros((64, 64, 3), np.uint8))

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        h, w = rgb.shape[:2]
        result = self._mp.process(rgb)
        out = []
        for d in result.detections or []:
            if d.score[0] < self.min_confidence:  # mediapipe's own threshold lets weaker ones through
                continue
            rb = d.location_data.relative_bounding_box
            x0 = int(round(rb.xmin * w))
            y0 = int(round(rb.ymin * h))
            bw = int(round(rb.width * w))
            bh = int(round(rb.height * h))
            kps = {name: (kp.x * w, kp.y * h) for name, kp in zip(KEYPOINTS, d.location_data.relative_keypoints)}
            out.append(Detection((x0, y0, bw, bh), float(d.score[0]), kps))
        return out

    def close(self) -> None:
        self._mp.close()
