"""The vendored model files in ``terminal/models/`` (package data), each checked by SHA-256 at load.

Nothing is downloaded at run time.  Where each file comes from and its licence: terminal/models/README.md.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

from ..errors import HardwareError

SHA256 = {
    # mediapipe 0.10.18 wheel, mediapipe/modules/... (Apache-2.0)
    "face_detection_short_range.tflite": "bbff11cebd1eb27a1e004cae0b0e63ec8c551cbf34a4451148b4908b8db3eca8",
    "face_detection_full_range_sparse.tflite": "2c3728e6da56f21e21a320433396fb06d40d9088f2247c05e5635a688d45dfe1",
    "face_landmark.tflite": "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
    # face_recognition_models 0.3.0 sdist, face_recognition_models/models/ (dlib models, CC0)
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}

_REINSTALL = "reinstall facepay-terminal (pip install --force-reinstall)"


def _resource(name: str):
    if name not in SHA256:
        raise KeyError(f"not a vendored model: {name}")
    return resources.files("terminal") / "models" / name


def read_verified(name: str) -> bytes:
    """The file's bytes after checking its SHA-256 (load a model from these bytes, not from the path again)."""
    ref = _resource(name)
    try:
        data = ref.read_bytes()
    except FileNotFoundError:
        raise HardwareError(f"model file {name} is missing", f"terminal/models/{name}", _REINSTALL) from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise HardwareError(
            f"model file {name} is damaged or replaced (SHA-256 {digest[:16]}..., expected {SHA256[name][:16]}...)",
            f"terminal/models/{name}", _REINSTALL,
        )
    return data


@contextlib.contextmanager
def verified_path(name: str) -> Iterator[Path]:
    """A file path for loaders that only take paths (dlib); checked by SHA-256 before it is handed out."""
    read_verified(name)
    with resources.as_file(_resource(name)) as path:
        yield Path(path)
