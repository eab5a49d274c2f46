"""One frame through the pipeline: detect -> gates -> embed, with per-stage timings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from ..config import DetectorConfig
from . import gates
from .detector import FaceDetector
from .embedder import FaceEmbedder
from .landmarks import FaceLandmarker


@dataclass
class Analysis:
    gate: gates.GateResult
    embedding: np.ndarray | None
    timings_ms: dict[str, float] = field(default_factory=dict)


class FacePipeline:
    """Owns the detector, the embedder and the landmark model; each loads lazily on first use (about a second)."""

    def __init__(self, cfg: DetectorConfig):
        self.cfg = cfg
        self._detector: FaceDetector | None = None
        self._embedder: FaceEmbedder | None = None
        self._landmarker: FaceLandmarker | None = None

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector(self.cfg.model, self.cfg.min_confidence)
        return self._detector

    @property
    def embedder(self) -> FaceEmbedder:
        if self._embedder is None:
            self._embedder = FaceEmbedder()
        return self._embedder

    @property
    def landmarker(self) -> FaceLandmarker:
        """The 468-point face mesh (for the liveness check); loaded only when first asked for, and run
        only on the frames of an open scan."""
        if self._landmarker is None:
            self._landmarker = FaceLandmarker()
        return self._landmarker

    def landmarks(self, rgb: np.ndarray, analysis: Analysis) -> np.ndarray | None:
        """The face mesh of the one face ``analysis`` found (None without exactly one face), timed."""
        gate = analysis.gate
        if gate.face is None or gate.reason == "partly_outside":   # no face and several faces come without one
            return None
        t0 = time.perf_counter()
        lm = self.landmarker.landmarks(rgb, gate.face)
        analysis.timings_ms["landmarks"] = (time.perf_counter() - t0) * 1000
        return lm

    def warm_up(self) -> None:
        self.detector, self.embedder  # noqa: B018 - loads the models

    def analyse(self, rgb: np.ndarray, embed: bool = True) -> Analysis:
        t0 = time.perf_counter()
        dets = self.detector.detect(rgb)
        t1 = time.perf_counter()
        result = gates.check(rgb, dets, self.cfg)
        t2 = time.perf_counter()
        timings = {"detect": (t1 - t0) * 1000, "gates": (t2 - t1) * 1000}
        vec = None
        if result.ok and embed:
            vec = self.embedder.embed(rgb, result.face)
            timings["embed"] = (time.perf_counter() - t2) * 1000
        return Analysis(result, vec, timings)
