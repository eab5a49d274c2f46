"""Vendored models (SHA-256, licences), the Tasks detector, and the 468-point landmark model."""

import hashlib

import numpy as np
import pytest
from conftest import FACES, ROOT

from terminal.errors import HardwareError
from terminal.face import models
from terminal.face.detector import Detection
from terminal.face.images import load_rgb

# make test: on one worker, one set of servers for the module
pytestmark = pytest.mark.xdist_group("face_models")

MODELS_DIR = ROOT / "terminal" / "models"
PHOTOS = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg", "32bit.png"]
# face-mesh indices: nose tip, the two corners of each eye, the face's outline at the cheeks
NOSE_TIP, RIGHT_EYE, LEFT_EYE, CHEEKS = 1, (33, 133), (362, 263), (234, 454)


@pytest.fixture(scope="module")
def landmarker():
    from terminal.face.landmarks import FaceLandmarker

    return FaceLandmarker()


def test_vendored_files_match_their_sha256_and_carry_licences():
    on_disk = {p.name for p in MODELS_DIR.iterdir() if p.suffix in {".tflite", ".dat"}}
    assert on_disk == set(models.SHA256)
    for name, digest in models.SHA256.items():
        assert hashlib.sha256((MODELS_DIR / name).read_bytes()).hexdigest() == digest
        assert models.read_verified(name)[:4] == (MODELS_DIR / name).read_bytes()[:4]
    assert "Apache License" in (MODELS_DIR / "LICENSE-mediapipe.txt").read_text()
    assert "CC0 1.0 Universal" in (MODELS_DIR / "LICENSE-dlib-models.txt").read_text()
    # the 68-point model (training data not for commercial use) is not shipped
    assert not any("68" in n for n in on_disk)


def test_a_damaged_model_is_refused(monkeypatch):
    monkeypatch.setitem(models.SHA256, "face_landmark.tflite", "0" * 64)
    with pytest.raises(HardwareError, match="damaged or replaced"):
        models.read_verified("face_landmark.tflite")
    from terminal.face.landmarks import FaceLandmarker

    with pytest.raises(HardwareError):
        FaceLandmarker()


def test_no_face_recognition_models_or_pkg_resources_in_the_package():
    """Neither is imported nor looked up (by name in a string) anywhere in terminal/."""
    import ast

    banned = {"face_recognition_models", "pkg_resources"}
    for path in (ROOT / "terminal").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = {node.value}
            else:
                continue
            assert not names & banned, (path, node.lineno)


@pytest.mark.parametrize("name", PHOTOS)
def test_landmarks_on_committed_photos(pipeline, landmarker, name):
    rgb = load_rgb(FACES / name)
    (face,) = pipeline.detector.detect(rgb)
    pts = landmarker.landmarks(rgb, face)
    assert pts is not None and pts.shape == (468, 3) and pts.dtype == np.float32
    eye = face.eye_distance
    # the mesh agrees with the detector's own keypoints (a different, coarser model) to a fraction of the
    # eye distance (benchmarks/landmarks_vs_legacy.py compares it with the 0.10.18 face mesh itself)
    assert np.hypot(*(pts[NOSE_TIP, :2] - face.keypoints["nose_tip"])) < 0.25 * eye
    assert np.hypot(*(pts[list(RIGHT_EYE), :2].mean(0) - face.keypoints["right_eye"])) < 0.2 * eye
    assert np.hypot(*(pts[list(LEFT_EYE), :2].mean(0) - face.keypoints["left_eye"])) < 0.2 * eye
    # z: the nose tip is nearer the camera (smaller z) than the outline of the cheeks, in pixel scale
    assert pts[NOSE_TIP, 2] < pts[list(CHEEKS), 2].min() - 0.3 * eye


def test_landmarks_follow_a_rotated_face(pipeline, landmarker):
    """The crop is turned by the eye line: a face rolled by 30 degrees gets the same mesh, rolled."""
    import cv2

    rgb = load_rgb(FACES / "obama.jpg")
    (face,) = pipeline.detector.detect(rgb)
    upright = landmarker.landmarks(rgb, face)
    h, w = rgb.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 30, 1.0)
    turned = cv2.warpAffine(rgb, rot, (w, h), borderMode=cv2.BORDER_REPLICATE)
    (face2,) = pipeline.detector.detect(turned)
    pts = landmarker.landmarks(turned, face2)
    expected = upright[:, :2] @ rot[:, :2].T + rot[:, 2]
    err = np.hypot(*(pts[:, :2] - expected).T)
    assert np.median(err) < 0.05 * face.eye_distance, np.median(err)
    assert abs(np.median(pts[:, 2] - upright[:, 2])) < 0.05 * face.eye_distance


def test_no_landmarks_where_there_is_no_face(landmarker):
    rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    fake = Detection((200, 150, 160, 160), 0.9, {"right_eye": (240.0, 200.0), "left_eye": (320.0, 200.0)})
    assert landmarker.landmarks(rgb, fake) is None
    assert landmarker.landmarks(np.zeros((480, 640, 3), np.uint8), fake) is None


def test_detector_refuses_what_is_not_rgb(pipeline):
    with pytest.raises(ValueError, match="RGB"):
        pipeline.detector.detect(np.zeros((48, 64), np.uint8))


def test_full_range_detector_finds_the_face():
    from terminal.face.detector import FaceDetector

    det = FaceDetector("full", 0.6)
    try:
        (face,) = det.detect(load_rgb(FACES / "obama.jpg"))
        assert face.score > 0.6 and 40 < face.eye_distance < 120
    finally:
        det.close()


def test_a_face_past_the_left_edge_keeps_its_negative_box(pipeline):
    """Tasks clamps the origin at 0; the detector recovers the box 0.10.18 gave (x = -29.7 there)."""
    (face,) = pipeline.detector.detect(load_rgb(FACES / "obama_partial_face.jpg"))
    assert -40 < face.box[0] < -20 and abs(face.box[2] - 148) < 8


def test_direct_detect_call_equals_mediapipes_public_detect():
    """The detector calls mediapipe's C detect on the caller's thread (no executor hand-over); the
    result must be exactly what mediapipe's public ``FaceDetector.detect`` gives, on every photo."""
    import mediapipe as mp

    from terminal.bench import IMAGE_SUFFIXES
    from terminal.face.detector import FaceDetector, _DirectDetect, _public_detect

    det = FaceDetector("short", 0.3)
    try:
        direct = _DirectDetect.of(det._mp)
        assert direct is not None, "mediapipe's C detect call is not reachable: the fast path is off"
        photos = sorted(p for p in FACES.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        faces = 0
        for photo in photos:
            image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(load_rgb(photo)))
            ours, theirs = direct(det._mp, image), _public_detect(det._mp, image)
            assert ours == theirs, photo.name
            faces += len(ours)
        assert faces >= len(photos)  # it found faces, so the comparison compared something
    finally:
        det.close()
    assert _DirectDetect._by_task.get(det._mp) is direct
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(load_rgb(FACES / "obama.jpg"))


def test_detection_writes_nothing_to_stderr_after_start():
    """LiteRT logs a one-time warning at the first inference whose tensor is unaligned (by chance, not
    always the first): the warm-up must take it, or a CLI's one-line error becomes three lines."""
    import os
    import subprocess
    import sys

    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from pathlib import Path\n"
        "from terminal.face.detector import FaceDetector\n"
        "from terminal.face.images import load_rgb\n"
        "d = FaceDetector()\n"
        f"for p in sorted(Path({str(FACES)!r}).rglob('*.jpg')):\n"
        "    d.detect(load_rgb(p))\n"
        "print('ok', flush=True)\n"
    )
    for _ in range(3):
        r = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={k: v for k, v in os.environ.items() if k != "FACEPAY_DEBUG"},
        )
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
        assert r.stderr == "", r.stderr
