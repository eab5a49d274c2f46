"""Face descriptors: dlib's ResNet model on the 5-point aligned face.

The model files come from the ``face_recognition_models`` package; they are
located through importlib (importing that package needs ``pkg_resources``,
which setuptools 81+ no longer ships).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..errors import HardwareError
from .detector import Detection

PREDICTOR = "shape_predictor_5_face_landmarks.dat"
DESCRIPTOR = "dlib_face_recognition_resnet_model_v1.dat"
DIM = 128


def models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise HardwareError(
            "the face model files are not installed", "face_recognition_models",
            "pip install face_recognition_models (make test/make demo do this)",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "models"
    for name in (PREDICTOR, DESCRIPTOR):
        if not (path / name).is_file():
            raise HardwareError(f"model file {name} is missing", str(path), "reinstall face_recognition_models")
    return path


def dlib_build() -> dict:
    import dlib

    return {"version": dlib.__version__, "blas": bool(getattr(dlib, "DLIB_USE_BLAS", False))}


class FaceEmbedder:
    def __init__(self):
        import dlib

        path = models_dir()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(path / PREDICTOR))
        self._net = dlib.face_recognition_model_v1(str(path / DESCRIPTOR))

    def embed(self, rgb: np.ndarray, det: Detection) -> np.ndarray:
        h, w = rgb.shape[:2]
        x, y, bw, bh = det.box
        rect = self._dlib.rectangle(max(0, x), max(0, y), min(w - 1, x + bw), min(h - 1, y + bh))
        shape = self._shape(rgb, rect)
        vec = self._net.compute_face_descriptor(rgb, shape)
        return np.asarray(vec, dtype=np.float32)
