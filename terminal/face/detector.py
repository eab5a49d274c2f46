"""Face detection with the MediaPipe Tasks API (``vision.FaceDetector``, mediapipe 1.x).

The model files are vendored in terminal/models/ (from the mediapipe 0.10.18 wheel) and checked by SHA-256.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
import weakref
from dataclasses import dataclass

import numpy as np

from ..native_stderr import quiet_native_stderr
from .models import read_verified

_log = logging.getLogger(__name__)

KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear", "left_ear")
EDGE_MIN_CONFIDENCE = 0.3
MODEL_FILES = {"short": "face_detection_short_range.tflite", "full": "face_detection_full_range_sparse.tflite"}


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


# LiteRT logs this once per process, at the first inference whose input tensor happens to be unaligned
# (it depends on where malloc put the tensor, so not always at the first call).
ALIGNMENT_WARNING = b"memory is not aligned"
WARM_UP_CALLS = 8
_alignment_warned = False


def _warm_up(detections, task) -> None:
    """Run a task a few times with fd 2 quiet, until LiteRT's one-time warning has gone by.

    A CLI promises one line on stderr; a native warning at the first real frame would break that.
    """
    global _alignment_warned
    heard: list[bytes] = []
    for _ in range(1 if _alignment_warned else WARM_UP_CALLS):
        with quiet_native_stderr(heard):
            detections(task, np.zeros((64, 64, 3), np.uint8))
        if any(ALIGNMENT_WARNING in h for h in heard):
            _alignment_warned = True
            return


# Parts of mediapipe's package that its __init__ files import but detection never uses: the drawing
# helpers pull in matplotlib.pyplot (about 45 MB resident, benchmarks/README.md "Memory"), the audio
# tasks sounddevice.  They are loaded lazily: the module exists and loads on first attribute access.
LAZY_MEDIAPIPE_MODULES = frozenset({
    "mediapipe.tasks.python.vision.drawing_utils",
    "mediapipe.tasks.python.vision.drawing_styles",
    "mediapipe.tasks.python.audio",
})


class _LazyFinder(importlib.abc.MetaPathFinder):
    """Finds the modules in ``names`` as the path finder does, with a ``LazyLoader`` around their loader."""

    def __init__(self, names: frozenset[str]):
        self.names = names

    def find_spec(self, name, path, target=None):
        if name not in self.names:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = importlib.util.LazyLoader(spec.loader)
        return spec


def _import_mediapipe():
    """``mediapipe`` and its Tasks ``vision`` module, without loading what detection does not use."""
    if "mediapipe" not in sys.modules:
        finder = _LazyFinder(LAZY_MEDIAPIPE_MODULES)
        sys.meta_path.insert(0, finder)
        try:
            import mediapipe  # noqa: F401
        finally:
            sys.meta_path.remove(finder)
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    return mp, BaseOptions, vision


def _shifted(d: Detection, dx: int, dy: int) -> Detection:
    x, y, w, h = d.box
    kps = {k: (px + dx, py + dy) for k, (px, py) in d.keypoints.items()}
    return Detection((x + dx, y + dy, w, h), d.score, kps)


def _close_task(task) -> None:
    direct = _DirectDetect._by_task.get(task)
    with direct.lock if direct is not None else contextlib.nullcontext(), quiet_native_stderr():
        try:
            task.close()
        except RuntimeError:
            # At interpreter exit mediapipe's dispatcher thread is already gone; the native task goes
            # with the process.  Drop the handle so mediapipe's __del__ does not try again.
            task._handle = None


def _public_detect(task, image) -> list[tuple[tuple[int, int, int, int], float, list[tuple[float, float]]]]:
    """Boxes, scores and normalised keypoints through mediapipe's public ``FaceDetector.detect``."""
    out = []
    for d in task.detect(image).detections:
        bb = d.bounding_box
        points = [(kp.x, kp.y) for kp in d.keypoints]
        out.append(((bb.origin_x, bb.origin_y, bb.width, bb.height), d.categories[0].score, points))
    return out


class _DirectDetect:
    """The same C call as ``FaceDetector.detect``, made on the caller's thread.

    mediapipe 1.x's Python wrapper hands every C call (detect, then free the result) to a one-thread
    executor and waits for it: two thread hand-offs per frame, about a tenth of the detect stage on
    this machine (benchmarks/README.md).  The executor is there to serialise calls into one task; a
    lock per task does the same here.  The C functions, their argument types and the status handling are mediapipe's own
    (``MpFaceDetectorDetectImage`` / ``MpFaceDetectorCloseResult`` of its C API); if a mediapipe
    release no longer has them, detection goes through the public method (``_public_detect``), and
    ``tests/test_face_models.py`` checks that both give identical results.

    Kept per task in a weak map; it holds no reference to the task, only the task's lock.
    """

    _by_task: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    def __init__(self, task):
        from mediapipe.tasks.python.components.containers import detections_c
        from mediapipe.tasks.python.core import mediapipe_c_utils

        cdll = task._lib._lib
        self._result_type = detections_c.MpDetectionResultC
        self._handle_status = mediapipe_c_utils.handle_status
        self._error_free = cdll.MpErrorFree
        self._detect = cdll.MpFaceDetectorDetectImage
        self._close_result = cdll.MpFaceDetectorCloseResult
        if self._detect.argtypes is None or self._close_result.argtypes is None:
            raise AttributeError("mediapipe did not register the face detector's C signatures")
        self.lock = threading.Lock()

    @classmethod
    def of(cls, task) -> "_DirectDetect | None":
        try:
            return cls._by_task[task]
        except KeyError:
            pass
        try:
            direct = cls(task)
        except (AttributeError, ImportError) as e:
            _log.warning("mediapipe's C detect call is not reachable (%s); using its Python wrapper", e)
            direct = None
        cls._by_task[task] = direct
        return direct

    def _checked(self, func, *args) -> None:
        error = ctypes.c_char_p()
        status = func(*args, ctypes.byref(error))
        try:
            self._handle_status(status, error)
        finally:
            if error.value is not None:
                self._error_free(error)

    def __call__(self, task, image) -> list[tuple[tuple[int, int, int, int], float, list[tuple[float, float]]]]:
        result = self._result_type()
        with self.lock:
            if not task._handle:
                raise RuntimeError("the face detector is closed")
            self._checked(self._detect, task._handle, image._image_ptr, None, ctypes.byref(result))
            try:
                out = []
                for i in range(result.detections_count):
                    d = result.detections[i]
                    r = d.bounding_box
                    kp = d.keypoints
                    out.append(
                        (
                            (r.left, r.top, r.right - r.left, r.bottom - r.top),
                            d.categories[0].score,
                            [(kp[j].x, kp[j].y) for j in range(d.keypoints_count)],
                        )
                    )
                return out
            finally:
                self._close_result(ctypes.byref(result))


class FaceDetector:
    """MediaPipe face detection.  ``model``: "short" (within ~2 m, a kiosk) or "full" (up to ~5 m)."""

    def __init__(self, model: str = "short", min_confidence: float = 0.6):
        os.environ.setdefault("GLOG_minloglevel", "2")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        mp, BaseOptions, vision = _import_mediapipe()

        if model not in MODEL_FILES:
            raise ValueError(f"detector model must be one of {', '.join(MODEL_FILES)}, not {model!r}")
        self.model = model
        self.min_confidence = min_confidence
        self._image = mp.Image
        self._srgb = mp.ImageFormat.SRGB
        self._options = (vision, BaseOptions(model_asset_buffer=read_verified(MODEL_FILES[model])))
        self._edge = None  # a second, permissive detector for faces past the left/top edge (made when needed)
        with quiet_native_stderr():
            self._mp = self._create(min_confidence)
        # The first calls set up the interpreter and log LiteRT/absl banners to fd 2: make them here, quietly.
        _warm_up(self._detections, self._mp)

    def _create(self, min_confidence: float):
        vision, base = self._options
        options = vision.FaceDetectorOptions(
            base_options=base, running_mode=vision.RunningMode.IMAGE, min_detection_confidence=min_confidence
        )
        task = vision.FaceDetector.create_from_options(options)
        # Closed by close(), or when this object goes, or at interpreter exit (mediapipe's own __del__
        # fails once the interpreter has torn its bindings down).
        weakref.finalize(self, _close_task, task)
        return task

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB image (h, w, 3) of uint8, got {rgb.shape} {rgb.dtype}")
        found = self._detections(self._mp, rgb)
        if any(d.box[0] <= 0 or d.box[1] <= 0 for d in found):
            found = self._unclamped(rgb, found)
        return found

    def _unclamped(self, rgb: np.ndarray, found: list[Detection]) -> list[Detection]:
        """Boxes past the left or top edge, as 0.10.18 gave them (the Tasks API clamps the origin at 0).

        The frame is padded with black on the clamped side (the model letterboxes with black anyway) and
        detected again, permissively; each clamped face takes its box and keypoints from the padded run
        (nearest nose tip) and keeps its own score, so the padding never adds or drops a face.
        """
        import cv2

        if self._edge is None:
            with quiet_native_stderr():
                self._edge = self._create(EDGE_MIN_CONFIDENCE)
            _warm_up(self._detections, self._edge)
        side = max(max(d.box[2], d.box[3]) for d in found)
        left = side // 2 if any(d.box[0] <= 0 for d in found) else 0
        top = side // 2 if any(d.box[1] <= 0 for d in found) else 0
        padded = cv2.copyMakeBorder(rgb, top, 0, left, 0, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        again = [_shifted(d, -left, -top) for d in self._detections(self._edge, padded, 0.0)]
        out = []
        for d in found:
            if (d.box[0] <= 0 or d.box[1] <= 0) and again:
                nose = np.asarray(d.keypoints["nose_tip"])
                best = min(again, key=lambda a: float(np.hypot(*(np.asarray(a.keypoints["nose_tip"]) - nose))))
                if np.hypot(*(np.asarray(best.keypoints["nose_tip"]) - nose)) < 0.25 * d.box[2]:
                    d = Detection(best.box, d.score, best.keypoints)
            out.append(d)
        return out

    def _detections(self, task, rgb: np.ndarray, min_confidence: float | None = None) -> list[Detection]:
        h, w = rgb.shape[:2]
        floor = self.min_confidence if min_confidence is None else min_confidence
        image = self._image(image_format=self._srgb, data=np.ascontiguousarray(rgb))
        direct = _DirectDetect.of(task)
        raw = direct(task, image) if direct is not None else _public_detect(task, image)
        out = []
        for (left, top, width, height), score, points in raw:
            if score < floor:
                continue
            kps = {name: (x * w, y * h) for name, (x, y) in zip(KEYPOINTS, points)}
            out.append(Detection((left, top, width, height), float(score), kps))
        return out

    def close(self) -> None:
        for task in (self._mp, self._edge):
            if task is not None:
                _close_task(task)
