"""Face descriptors: dlib's ResNet model on the 5-point aligned face.

Both dlib model files are vendored in terminal/models/ (from face_recognition_models 0.3.0, CC0) and
checked by SHA-256 before dlib loads them.
"""

from __future__ import annotations

import numpy as np

from .detector import Detection
from .models import verified_path

PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
DIM = 128


def dlib_build() -> dict:
    import dlib

    return {"version": dlib.__version__, "blas": bool(getattr(dlib, "DLIB_USE_BLAS", False))}


class FaceEmbedder:
    def __init__(self):
        import dlib

        self._dlib = dlib
        with verified_path(PREDICTOR) as path:
            self._shape = dlib.shape_predictor(str(path))
        with verified_path(DESCRIPTOR) as path:
            self._net = dlib.face_recognition_model_v1(str(path))

    def embed(self, rgb: np.ndarray, det: Detection) -> np.ndarray:
        h, w = rgb.shape[:2]
        x, y, bw, bh = det.box
        rect = self._dlib.rectangle(max(0, x), max(0, y), min(w - 1, x + bw), min(h - 1, y + bh))
        shape = self._shape(rgb, rect)
        vec = self._net.compute_face_descriptor(rgb, shape)
        return np.asarray(vec, dtype=np.float32)
