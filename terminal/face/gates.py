"""Quality gates: a frame must pass every one before a face is embedded.

Each failure has a code and plain words a shopper can act on; the UI shows
the words, tests and the CLI read the code.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..config import DetectorConfig
from .detector import Detection

GUIDANCE = {
    "no_face": "Look at the camera",
    "multiple_faces": "One person at a time",
    "too_small": "Move closer",
    "not_frontal": "Face the camera straight on",
    "blurry": "Hold still",
    "too_dark": "Too dark: step into the light",
    "too_bright": "Too bright: step out of direct light",
    "partly_outside": "Move to the centre of the screen",
}


@dataclass(frozen=True)
class GateResult:
    ok: bool
    reason: str | None
    face: Detection | None
    measures: dict

    @property
    def guidance(self) -> str | None:
        return GUIDANCE.get(self.reason) if self.reason else None


def _face_crop_gray(rgb: np.ndarray, det: Detection) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    x, y, bw, bh = det.box
    x0, y0, x1, y1 = max(0, x), max(0, y), min(w, x + bw), min(h, y + bh)
    crop = rgb[y0:y1, x0:x1]
    if crop.size == 0:
        return np.zeros((1, 1), np.uint8)
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    # Compare sharpness at one scale, whatever the face size.
    return cv2.resize(gray, (128, 128), interpolation=cv2.INTER_AREA)


def pose(det: Detection) -> tuple[float, float]:
    """(yaw, roll_deg): yaw as the nose's sideways offset from the eyes' midpoint over the eye distance."""
    (rx, ry), (lx, ly) = det.keypoints["right_eye"], det.keypoints["left_eye"]
    nx, _ = det.keypoints["nose_tip"]
    eye = max(det.eye_distance, 1e-6)
    yaw = (nx - (rx + lx) / 2) / eye
    roll = math.degrees(math.atan2(ly - ry, lx - rx))
    if roll > 90:
        roll -= 180
    elif roll < -90:
        roll += 180
    return yaw, roll


def check(rgb: np.ndarray, detections: list[Detection], cfg: DetectorConfig) -> GateResult:
    import cv2

    if not detections:
        return GateResult(False, "no_face", None, {"faces": 0})
    if len(detections) > 1:
        return GateResult(False, "multiple_faces", None, {"faces": len(detections)})
    det = detections[0]
    h, w = rgb.shape[:2]
    measures: dict = {"faces": 1, "score": round(det.score, 3), "eye_distance_px": round(det.eye_distance, 1)}
    x, y, bw, bh = det.box
    if x < -0.15 * bw or y < -0.15 * bh or x + bw > w + 0.15 * bw or y + bh > h + 0.15 * bh:
        return GateResult(False, "partly_outside", det, measures)
    if det.eye_distance < cfg.min_eye_distance_px:
        return GateResult(False, "too_small", det, measures)
    yaw, roll = pose(det)
    measures.update(yaw=round(yaw, 3), roll_deg=round(roll, 1))
    if abs(yaw) > cfg.max_yaw or abs(roll) > cfg.max_roll_deg:
        return GateResult(False, "not_frontal", det, measures)
    gray = _face_crop_gray(rgb, det)
    brightness = float(gray.mean())
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    measures.update(brightness=round(brightness, 1), sharpness=round(sharpness, 1))
    if brightness < cfg.min_brightness:
        return GateResult(False, "too_dark", det, measures)
    if brightness > cfg.max_brightness:
        return GateResult(False, "too_bright", det, measures)
    if sharpness < cfg.min_sharpness:
        return GateResult(False, "blurry", det, measures)
    return GateResult(True, None, det, measures)
