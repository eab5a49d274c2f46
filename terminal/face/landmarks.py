"""468 face-mesh landmarks: MediaPipe's ``face_landmark.tflite`` run by OpenCV's TFLite importer.

mediapipe 1.x ships no face-mesh solution that works with the legacy model, so the model (vendored in
terminal/models/, from the mediapipe 0.10.18 wheel) runs through ``cv2.dnn.readNetFromTFLite`` with the
region of interest the legacy graph (``face_landmark_front_cpu``) builds from a detection:

- the detector's box, made square on its long side and scaled by 1.5 (a 25% margin on every side),
  rotated so that the line from the right eye to the left eye is horizontal;
- that rotated square warped to 192x192 RGB in [0, 1] (replicated border), NCHW for OpenCV;
- the outputs: 1404 values (x, y, z of 468 points in crop pixels) and a face-presence logit
  (sigmoid >= 0.5 means a face);
- points mapped back to the full image; z is scaled like x and y (pixels; smaller z = closer to the camera).

benchmarks/landmarks_vs_legacy.py compares the result with the 0.10.18 face mesh (figures in benchmarks/README.md).
"""

from __future__ import annotations

import numpy as np

from .detector import Detection
from .models import read_verified

MODEL = "face_landmark.tflite"
INPUT = 192
NUM_LANDMARKS = 468
ROI_SCALE = 1.5
PRESENCE_THRESHOLD = 0.5


def roi_corners(face: Detection) -> np.ndarray:
    """Bottom-left, top-left, top-right corners (pixels, float32) of the rotated square the model sees."""
    x, y, w, h = face.box
    cx, cy = x + w / 2.0, y + h / 2.0
    (rx, ry), (lx, ly) = face.keypoints["right_eye"], face.keypoints["left_eye"]
    angle = float(np.arctan2(ly - ry, lx - rx))  # clockwise on screen (y points down)
    half = ROI_SCALE * max(w, h) / 2.0
    c, s = np.cos(angle), np.sin(angle)
    ux, uy = np.array([c, s]) * half, np.array([-s, c]) * half  # the square's right and down half-sides
    centre = np.array([cx, cy])
    return np.float32([centre - ux + uy, centre - ux - uy, centre + ux - uy])


CROP_CORNERS = np.float32([[0, INPUT], [0, 0], [INPUT, 0]])


class FaceLandmarker:
    """``landmarks(rgb, face)`` -> float32 (468, 3) in image pixels, or None when the model sees no face."""

    def __init__(self):
        import cv2

        self._cv2 = cv2
        data = read_verified(MODEL)
        self._net = cv2.dnn.readNetFromTFLite(np.frombuffer(data, np.uint8))
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        if len(self._outputs) != 2:
            raise RuntimeError(f"{MODEL}: expected 2 outputs (landmarks, presence), got {self._outputs}")

    def crop(self, rgb: np.ndarray, face: Detection) -> tuple[np.ndarray, np.ndarray]:
        """The model's input (1, 3, 192, 192) float32 and the 2x3 matrix taking crop pixels to image pixels."""
        cv2 = self._cv2
        corners = roi_corners(face)
        to_crop = cv2.getAffineTransform(corners, CROP_CORNERS)
        patch = cv2.warpAffine(rgb, to_crop, (INPUT, INPUT), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        blob = (patch.astype(np.float32) * (1.0 / 255.0)).transpose(2, 0, 1)[None]
        return np.ascontiguousarray(blob), cv2.getAffineTransform(CROP_CORNERS, corners)

    def landmarks(self, rgb: np.ndarray, face: Detection) -> np.ndarray | None:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB image (h, w, 3) of uint8, got {rgb.shape} {rgb.dtype}")
        blob, to_image = self.crop(rgb, face)
        self._net.setInput(blob)
        raw, flag = self._net.forward(self._outputs)
        presence = 1.0 / (1.0 + np.exp(-float(np.ravel(flag)[0])))
        if presence < PRESENCE_THRESHOLD:
            return None
        pts = np.asarray(raw, np.float64).reshape(NUM_LANDMARKS, 3)
        out = np.empty((NUM_LANDMARKS, 3), np.float32)
        out[:, :2] = pts[:, :2] @ to_image[:, :2].T + to_image[:, 2]
        # the crop is a rotated square: one scale for x, y and z (crop pixels -> image pixels)
        out[:, 2] = pts[:, 2] * float(np.hypot(*to_image[:, 0]))
        return out
