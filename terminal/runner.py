"""Performing the state machine's effects: camera, LEDs, face scans, charges, the ledger.

:class:`Runner` is what the CLI's ``facepay sale`` drives synchronously and
what the kiosk controller drives from worker threads: the same code path for
both.  ``dispatch(event)`` hands the event to the machine, performs every
effect, and feeds the events those effects produce back in, until nothing is
left.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import numpy as np

from . import checkout as co
from .camera import Camera
from .face.matcher import Gallery
from .leds import LedBoard
from .service import Terminal

_log = logging.getLogger(__name__)

NO_MATCH_FRAMES = 2      # embedded frames without a match before "no match"
# Gate failures worth telling the shopper during the head-turn challenge ("not frontal" is the point of it).
CHALLENGE_GUIDANCE = ("no_face", "multiple_faces", "too_small", "partly_outside", "too_dark", "too_bright")
MAX_FRAMES = 200         # frames per scan before giving up (the timer usually ends it first)


def consistent_captures(embeddings: list[np.ndarray], threshold: float) -> int | None:
    """Index of the first capture that is not the same person as the first one, or None."""
    for i, e in enumerate(embeddings[1:], start=1):
        if float(np.linalg.norm(e - embeddings[0])) >= threshold:
            return i
    return None


class Runner:
    def __init__(self, term: Terminal, machine: co.CheckoutMachine, camera: Camera | None,
                 leds: LedBoard | None = None, on_timer: Callable[[co.StartTimer], None] | None = None):
        self.term = term
        self.machine = machine
        self.camera = camera
        self.leds = leds
        self.on_timer = on_timer
        self.last_timer: co.StartTimer | None = None
        self.last_charge = None
        self.enrol_embeddings: list[np.ndarray] = []
        self.scan_stop = threading.Event()
        self.lock = threading.RLock()
        self.last_match = None
        self.last_receipt = None
        self.last_liveness = None
        self.on_cooldown: Callable[[co.StartCooldown], None] | None = None

    # -- the loop -----------------------------------------------------------
    def dispatch(self, event, *, deferred: set[type] | None = None) -> list:
        """Handle ``event`` and its consequences; effects of a type in ``deferred`` are returned, not run."""
        queue = deque([event])
        left = []
        with self.lock:
            while queue:
                ev = queue.popleft()
                effects = self.machine.handle(ev)
                for eff in effects:
                    if deferred and type(eff) in deferred:
                        left.append(eff)
                        continue
                    queue.extend(self.perform(eff))
        return left

    def perform(self, eff) -> list:
        """Carry out one effect; return the events it produced."""
        t = self.term
        if isinstance(eff, co.OpenCamera):
            self.scan_stop.clear()
            self.camera.open()
            if self.leds:
                self.leds.privacy(True)
            if eff.purpose == "enrolment":
                self.enrol_embeddings = []
            return []
        if isinstance(eff, co.CloseCamera):
            self.scan_stop.set()
            if self.camera is not None:
                self.camera.close()
            if self.leds:
                self.leds.privacy(False)
            return []
        if isinstance(eff, co.Leds):
            if self.leds:
                self.leds.show(eff.pattern)
            return []
        if isinstance(eff, co.StartCooldown):
            if self.on_cooldown:
                self.on_cooldown(eff)
            return []
        if isinstance(eff, co.StartTimer):
            self.last_timer = eff
            if self.on_timer:
                self.on_timer(eff)
            return []
        if isinstance(eff, co.Record):
            t.ledger.append(eff.kind, eff.subject, terminal_id=t.cfg.terminal_id, **eff.details)
            return []
        if isinstance(eff, co.Charge):
            report = t.charge(eff.sale.sale_id, eff.sale.amount_minor, eff.sale.currency, eff.method,
                              eff.token, eff.shopper_id, eff.sale.training)
            self.last_charge = report
            approved = report.status == "approved"
            reason = report.reason or ("status unknown: staff will check; do not pay again"
                                       if report.status == "pending" else "")
            return [co.ChargeResult(eff.sale.sale_id, approved, reason)]
        if isinstance(eff, co.VerifyPhone):
            shopper = t.store.get(eff.shopper_id)
            return [co.PhoneChecked(shopper is not None and t.store.check_phone(shopper, eff.digits))]
        if isinstance(eff, co.StoreEnrolment):
            return [self._store_enrolment(eff)]
        if isinstance(eff, co.LookupCard):
            shopper = t.store.by_card_hash(eff.card_hash)
            return [co.LookupResult(t.view(shopper) if shopper else None)]
        if isinstance(eff, co.RevokeShopper):
            receipt = t.revoke(eff.shopper_id)
            self.last_receipt = receipt
            return [co.Revoked(eff.shopper_id, receipt.id)]
        if isinstance(eff, co.LoadGallery):
            t.gallery()
            return []
        if isinstance(eff, co.DropGallery):
            t.drop_gallery()
            return []
        raise TypeError(f"unknown effect {eff!r}")

    # -- enrolment -----------------------------------------------------------
    def _store_enrolment(self, eff: co.StoreEnrolment):
        from . import consent
        from .errors import FacepayError

        text = next((c for c in (consent.load(lang) for lang in consent.LANGUAGES)
                     if c.version == eff.consent_version and c.sha256 == eff.consent_text_hash), None)
        embeddings, self.enrol_embeddings = self.enrol_embeddings, []
        if text is None:
            return co.EnrolFailed("the consent text shown is not one this terminal knows")
        try:
            shopper = self.term.enrol_hashed(name=eff.name, card_hash=eff.card_hash, masked_card=eff.masked_card,
                                             token=eff.token, embeddings=embeddings, consent_text=text,
                                             phone_last4=eff.phone_last4)
        except FacepayError as exc:
            return co.EnrolFailed(exc.what)
        return co.EnrolStored(self.term.view(shopper))

    # -- face scans (on a worker thread in the kiosk, inline in the CLI) -------------
    def _analysed_frames(self, on_frame: Callable | None):
        """Frames from the open camera through the pipeline, until the scan is stopped or the source ends."""
        for _ in range(MAX_FRAMES):
            if self.scan_stop.is_set() or not self.camera.is_open:
                return
            frame = self.camera.read()
            if frame is None:
                return
            analysis = self.term.pipeline.analyse(frame.image)
            if on_frame:
                on_frame(frame, analysis)
            yield analysis

    def liveness_challenge(self, emit: Callable, challenge: str, on_frame: Callable | None = None):
        """Run the head-turn challenge on the open camera; the start frame's descriptor when it was passed.

        Emits guidance while it runs, then ``LivenessPassed`` or ``LivenessFailed(reason)``; returns None
        when the check failed or the scan was stopped.
        """
        t = self.term
        result, start = run_challenge(t.pipeline, self.camera, challenge, t.cfg.liveness, t.cfg.match.threshold,
                                      stop=self.scan_stop, on_frame=on_frame, emit=emit)
        if result is None:  # stopped: cancel or timeout closed the camera
            return None
        self.last_liveness = result
        if not result.live:
            emit(co.LivenessFailed(result.reason))
            return None
        emit(co.LivenessPassed())
        return start

    def scan_payment(self, emit: Callable, on_frame: Callable | None = None) -> None:
        """Read frames until a decision, passing guidance and then the decision to ``emit``.

        With liveness required, the head-turn challenge comes first and the descriptor matched is the
        one from the challenge's start frame.  Stops early when the camera is closed (cancel, timeout):
        ``scan_stop`` is set.
        """
        t = self.term
        gallery: Gallery = t.gallery()
        challenge = self.machine.ctx.challenge
        if challenge is not None:
            probe = self.liveness_challenge(emit, challenge, on_frame)
            if probe is None:
                return
            m = gallery.match(probe, t.cfg.match.threshold, t.cfg.match.margin)
            self.last_match = m
            shopper = t.store.get(m.shopper_id) if m.matched else None
            if shopper is not None:
                emit(co.FaceMatched(t.view(shopper), m.distance, m.margin, len(gallery)))
            else:
                emit(co.FaceNoMatch(m.reason or "no match"))
            return
        misses, last_reason = 0, None
        for analysis in self._analysed_frames(on_frame):
            if not analysis.gate.ok:
                if analysis.gate.reason != last_reason:
                    last_reason = analysis.gate.reason
                    emit(co.FaceGuidance(last_reason))
                continue
            m = gallery.match(analysis.embedding, t.cfg.match.threshold, t.cfg.match.margin)
            self.last_match = m
            shopper = t.store.get(m.shopper_id) if m.matched else None
            if shopper is not None:
                emit(co.FaceMatched(t.view(shopper), m.distance, m.margin, len(gallery)))
                return
            misses += 1
            if misses >= NO_MATCH_FRAMES:
                emit(co.FaceNoMatch(m.reason or "no match"))
                return
        if not self.scan_stop.is_set():
            emit(co.FaceNoMatch("no match" if misses else (last_reason or "no_face")))

    def capture_enrolment(self, emit: Callable, on_frame: Callable | None = None) -> None:
        """Collect passing captures of one person, emitting guidance and each accepted capture."""
        t = self.term
        needed = t.cfg.match.enrol_captures
        last_reason = None
        live = None
        challenge = self.machine.ctx.challenge
        if challenge is not None:
            # the challenge first: no capture is kept before it is passed, and every capture after it
            # must be the person who passed it
            live = self.liveness_challenge(emit, challenge, on_frame)
            if live is None:
                return
        for analysis in self._analysed_frames(on_frame):
            if len(self.enrol_embeddings) >= needed:
                break
            reason = analysis.gate.reason
            emb = analysis.embedding
            if emb is not None:
                if any(float(np.linalg.norm(emb - e)) < 1e-4 for e in self.enrol_embeddings):
                    continue  # the very same frame again: not a new capture
                first = self.enrol_embeddings[0] if self.enrol_embeddings else live
                if first is not None and float(np.linalg.norm(emb - first)) >= t.cfg.match.threshold:
                    reason = "multiple_faces"  # a different person stepped in
            if reason is not None:
                if reason != last_reason:
                    last_reason = reason
                    emit(co.FaceGuidance(reason))
                continue
            last_reason = None
            self.enrol_embeddings.append(emb)
            emit(co.CaptureAccepted(len(self.enrol_embeddings)))


def run_challenge(pipeline, camera: Camera, challenge: str, cfg, threshold: float, *,
                  stop: threading.Event | None = None, on_frame: Callable | None = None,
                  emit: Callable | None = None):
    """The liveness check the kiosk, ``facepay sale`` and ``facepay liveness`` all run on an open camera.

    Per frame: detect, gates (for guidance only: the turn is not frontal), landmarks, the check.  Only
    the two frames the decision rests on, the start and the end of the turn, are embedded, and they must
    be the same person (descriptor distance under ``threshold``).  Returns (result, start descriptor), the
    descriptor only when live; (None, None) when ``stop`` was set before a decision.
    """
    from dataclasses import replace

    from .face.liveness import LivenessCheck, LivenessParams, mesh_box

    check = LivenessCheck(challenge, LivenessParams(cfg.min_yaw_deg, cfg.planarity_min, cfg.timeout_s))
    kept: dict[int, tuple] = {}   # frame index -> (image, detection) of the check's current start and peak
    recent: list[tuple] = []
    descriptors: dict[int, np.ndarray] = {}
    last_reason, result = None, None
    for _ in range(MAX_FRAMES * 5):
        if (stop is not None and stop.is_set()) or not camera.is_open:
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
        result = check.add(frame.timestamp, landmarks, box, (rgb.shape[1], rgb.shape[0]))
        for want in (check.start_index, check.peak_index):
            if want is not None and want not in kept:
                kept.update({i: (img, det) for i, img, det in recent if i == want})
        kept = {i: v for i, v in kept.items() if i in (check.start_index, check.peak_index)}
        if result is not None:
            break
        if check.start_index is not None and check.progress >= cfg.min_yaw_deg / 2 \
                and check.start_index not in descriptors:
            # the turn is under way from this start: its descriptor now, so the deciding frame needs one only
            descriptors = {check.start_index: pipeline.embedder.embed(*kept[check.start_index])}
    if stop is not None and stop.is_set():
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
