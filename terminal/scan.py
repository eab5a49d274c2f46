"""Face scans on an open camera: the payment scan, the enrolment capture, the head-turn challenge.

The checkout machine decides when the camera is open; this module reads its frames while the scan is
wanted (:class:`ScanGate`) and turns them into the machine's events (guidance, ``LivenessPassed`` /
``LivenessFailed``, ``FaceMatched`` / ``FaceNoMatch``, ``CaptureAccepted``).  It runs on the kiosk's
worker thread and inline in ``facepay sale``; each scan also returns what it found (the liveness
result, the last match), so a driver reads that, not a side channel.

Opening and stopping the camera is one ordered protocol, :class:`ScanGate`: the machine gives every
opening a scan token, and the runner (on the thread that drives the machine, in the machine's order)
marks that token wanted when ``OpenCamera`` comes out and unwanted when its ``CloseCamera`` does,
whether the effect is then performed at once (CLI) or later on the kiosk's worker.  The worker opens
the device only while its token is still wanted, so a Cancel or timeout that comes before the worker
starts leaves the camera closed, and a scan stops at the first frame after its token is dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import checkout as co
from .camera import Camera
from .face.matcher import Gallery

NO_MATCH_FRAMES = 2      # embedded frames without a match before "no match"
MAX_FRAMES = 200         # frames per scan before giving up (the timer usually ends it first)
# Gate failures worth telling the shopper during the head-turn challenge ("not frontal" is the point of it).
CHALLENGE_GUIDANCE = ("no_face", "multiple_faces", "too_small", "partly_outside", "too_dark", "too_bright")


class ScanGate:
    """Which scan, if any, the camera may be open for; written in the machine's order, read by the worker."""

    def __init__(self):
        self._lock = threading.Lock()
        self._wanted: int | None = None

    def want(self, token: int) -> None:
        with self._lock:
            self._wanted = token

    def drop(self, token: int | None = None) -> None:
        """End scan ``token`` (a later scan stays wanted), or any scan when ``token`` is None."""
        with self._lock:
            if token is None or self._wanted == token:
                self._wanted = None

    def live(self, token: int | None) -> bool:
        with self._lock:
            return token is not None and self._wanted == token

    @property
    def wanted(self) -> int | None:
        with self._lock:
            return self._wanted


def consistent_captures(embeddings: list[np.ndarray], threshold: float) -> int | None:
    """Index of the first capture that is not the same person as the first one, or None."""
    for i, e in enumerate(embeddings[1:], start=1):
        if float(np.linalg.norm(e - embeddings[0])) >= threshold:
            return i
    return None


def capture_rejection(emb: np.ndarray | None, kept: list[np.ndarray], anchor: np.ndarray | None,
                      threshold: float) -> str | None:
    """Why a frame is not a new enrolment capture, or None when it is one (the kiosk's rule, and
    ``facepay enroll --video``'s).

    "no_face": no descriptor; "duplicate": within 1e-4 of a capture in ``kept`` (the very same frame
    again); "multiple_faces": not within ``threshold`` of ``anchor`` (a different person; no anchor: anyone).
    """
    if emb is None:
        return "no_face"
    if any(float(np.linalg.norm(emb - e)) < 1e-4 for e in kept):
        return "duplicate"
    if anchor is not None and float(np.linalg.norm(emb - anchor)) >= threshold:
        return "multiple_faces"
    return None


@dataclass
class PaymentScan:
    """What one payment scan found: the head-turn check's result (None: not asked, or stopped first), the last
    match tried (None: no face was ever good enough to match), the guidance shown, in order."""

    liveness: object | None = None
    match: object | None = None
    guidance: list[str] = field(default_factory=list)


class FaceScanner:
    """Reads the open camera for the scan the machine asked for; ``view`` is the machine's view (the challenge
    side and the "More time" windows are read from it)."""

    def __init__(self, term, camera: Camera | None, gate: ScanGate, view: Callable[[], co.View]):
        self.term = term
        self.camera = camera
        self.gate = gate
        self.view = view
        self.captures: list[np.ndarray] = []   # the enrolment's captures, held until stored or dropped

    def _analysed_frames(self, on_frame: Callable | None, scan: int | None):
        """Frames from the open camera through the pipeline, until scan ``scan`` is stopped or the source ends."""
        for _ in range(MAX_FRAMES):
            if not self.gate.live(scan) or not self.camera.is_open:
                return
            frame = self.camera.read()
            if frame is None:
                return
            analysis = self.term.pipeline.analyse(frame.image)
            if on_frame:
                on_frame(frame, analysis)
            yield analysis

    def liveness_challenge(self, emit: Callable, challenge: str, on_frame: Callable | None = None,
                           scan: int | None = None):
        """Run the head-turn challenge on the open camera: (result, the start frame's descriptor when passed).

        Emits guidance while it runs, then ``LivenessPassed`` or ``LivenessFailed(reason)``; the result is
        None when scan ``scan`` was stopped before a decision.
        """
        t = self.term
        result, start = run_challenge(t.pipeline, self.camera, challenge, t.cfg.liveness, t.cfg.match.threshold,
                                      stopped=lambda: not self.gate.live(scan), on_frame=on_frame, emit=emit,
                                      window=lambda: t.cfg.liveness.timeout_s * (1 + self.view().challenge_more))
        if result is None:  # stopped: cancel or timeout closed the camera
            return None, None
        if not result.live:
            emit(co.LivenessFailed(result.reason, result.words))
            return result, None
        emit(co.LivenessPassed())
        return result, start

    def scan_payment(self, emit: Callable, on_frame: Callable | None = None, scan: int | None = None) -> PaymentScan:
        """Read frames until a decision, passing guidance and then the decision to ``emit``; return what it found.

        With liveness required, the head-turn challenge comes first and the descriptor matched is the
        one from the challenge's start frame.  ``scan`` is the opening's token (default: the scan wanted
        now); the scan stops early when that token is dropped (cancel, timeout).
        """
        found = PaymentScan()

        def tell(ev) -> None:
            if isinstance(ev, co.FaceGuidance):
                found.guidance.append(ev.reason)
            emit(ev)

        scan = self.gate.wanted if scan is None else scan
        gallery: Gallery = self.term.gallery()
        challenge = self.view().challenge
        if challenge is not None:
            found.liveness, probe = self.liveness_challenge(tell, challenge, on_frame, scan)
            if probe is None:
                return found
            found.match, paid = self._match(gallery, probe, tell)
            if not paid:
                tell(co.FaceNoMatch(found.match.reason or "no match"))
            return found
        misses, last_reason = 0, None
        for analysis in self._analysed_frames(on_frame, scan):
            if not analysis.gate.ok:
                if analysis.gate.reason != last_reason:
                    last_reason = analysis.gate.reason
                    tell(co.FaceGuidance(last_reason))
                continue
            found.match, paid = self._match(gallery, analysis.embedding, tell)
            if paid:
                return found
            misses += 1
            if misses >= NO_MATCH_FRAMES:
                tell(co.FaceNoMatch(found.match.reason or "no match"))
                return found
        if self.gate.live(scan):
            tell(co.FaceNoMatch("no match" if misses else (last_reason or "no_face")))
        return found

    def _match(self, gallery: Gallery, probe: np.ndarray, emit: Callable):
        """Match ``probe``: (the match, whether it named an enrolled shopper, ``FaceMatched`` emitted then)."""
        t = self.term
        m = gallery.match(probe, t.cfg.match.threshold, t.cfg.match.margin)
        shopper = t.store.get(m.shopper_id) if m.matched else None
        if shopper is not None:
            emit(co.FaceMatched(t.view(shopper), m.distance, m.margin, len(gallery)))
        return m, shopper is not None

    def capture_enrolment(self, emit: Callable, on_frame: Callable | None = None, scan: int | None = None):
        """Collect passing captures of one person, emitting guidance and each accepted capture; return the
        head-turn check's result (None: not asked, or stopped first)."""
        scan = self.gate.wanted if scan is None else scan
        t = self.term
        needed = t.cfg.match.enrol_captures
        last_reason = None
        live, result = None, None
        challenge = self.view().challenge
        if challenge is not None:
            # the challenge first: no capture is kept before it is passed, and every capture after it
            # must be the person who passed it
            result, live = self.liveness_challenge(emit, challenge, on_frame, scan)
            if live is None:
                return result
        for analysis in self._analysed_frames(on_frame, scan):
            if len(self.captures) >= needed:
                break
            reason = analysis.gate.reason
            emb = analysis.embedding
            if emb is not None:
                first = self.captures[0] if self.captures else live
                why = capture_rejection(emb, self.captures, first, t.cfg.match.threshold)
                if why == "duplicate":
                    continue  # the very same frame again: not a new capture
                if why is not None:
                    reason = why  # "multiple_faces": a different person stepped in
            if reason is not None:
                if reason != last_reason:
                    last_reason = reason
                    emit(co.FaceGuidance(reason))
                continue
            last_reason = None
            self.captures.append(emb)
            emit(co.CaptureAccepted(len(self.captures)))
        return result


def run_challenge(pipeline, camera: Camera, challenge: str, cfg, threshold: float, *,
                  stopped: Callable[[], bool] | None = None, on_frame: Callable | None = None,
                  emit: Callable | None = None, window: Callable[[], float] | None = None):
    """The liveness check the kiosk, ``facepay sale`` and ``facepay liveness`` all run on an open camera.

    Per frame: detect, gates (for guidance only: the turn is not frontal), landmarks, the check.  Only
    the two frames the decision rests on, the start and the end of the turn, are embedded, and they must
    be the same person (descriptor distance under ``threshold``).  ``window()``, read every frame, is the turn's
    time limit when given (the kiosk's "More time" lengthens it, checkout.MoreTime); else ``cfg.timeout_s``.
    Returns (result, start descriptor), the
    descriptor only when live; (None, None) when ``stopped()`` said so before a decision.
    """
    from dataclasses import replace

    from .face.liveness import LivenessCheck, LivenessParams, mesh_box

    check = LivenessCheck(challenge, LivenessParams.from_config(cfg))
    kept: dict[int, tuple] = {}   # frame index -> (image, detection) of the check's current start and peak
    recent: list[tuple] = []
    descriptors: dict[int, np.ndarray] = {}
    last_reason, result = None, None
    for _ in range(MAX_FRAMES * 5):
        if (stopped is not None and stopped()) or not camera.is_open:
            return None, None
        frame = camera.read()
        if frame is None:
            break
        rgb = frame.image
        analysis = pipeline.analyse(rgb, embed=False)
        landmarks = pipeline.landmarks(rgb, analysis)
        if on_frame:
            on_frame(frame, analysis)
        reason = analysis.gate.reason if analysis.gate.reason in CHALLENGE_GUIDANCE else None
        if reason != last_reason:
            last_reason = reason
            if emit:
                emit(co.FaceGuidance(reason or ""))   # "" clears it: the face is back, the arrow shows
        box = mesh_box(landmarks) if landmarks is not None else None
        recent = (recent + [(check.frames, rgb, analysis.gate.face)])[-4:]
        if window is not None and window() != check.params.timeout_s:
            check.params = replace(check.params, timeout_s=window())
        result = check.add(frame.timestamp, landmarks, box, (rgb.shape[1], rgb.shape[0]), rgb)
        for want in (check.start_index, check.peak_index):
            if want is not None and want not in kept:
                kept.update({i: (img, det) for i, img, det in recent if i == want})
        kept = {i: v for i, v in kept.items() if i in (check.start_index, check.peak_index)}
        if result is not None:
            break
        if check.start_index is not None and check.peak_index is not None \
                and check.start_index not in descriptors:
            # the turn has passed the threshold from this start: its descriptor now, so the deciding frame
            # needs one only.  Not earlier: an embedding holds the interpreter for tens of milliseconds (more
            # on a loaded machine), and mid-turn, where the head moves fastest, the frames it delays are the
            # ones the continuity checks need; near the peak the head is slowest.
            descriptors = {check.start_index: pipeline.embedder.embed(*kept[check.start_index])}
    if stopped is not None and stopped():
        return None, None
    if result is None:
        result = check.finish()
    if not result.live:
        return result, None
    start = descriptors.get(result.start_frame)
    if start is None:
        start = pipeline.embedder.embed(*kept[result.start_frame])
    end = pipeline.embedder.embed(*kept[result.end_frame])
    if float(np.linalg.norm(start - end)) >= threshold:
        return replace(result, live=False, reason="different_person"), None
    return result, start
