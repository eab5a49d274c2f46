"""Performing the state machine's effects: camera, LEDs, face scans, charges, the ledger.

:class:`Runner` is what the CLI's ``facepay sale`` drives synchronously and
what the kiosk controller drives from worker threads: the same code path for
both.  ``dispatch(event)`` hands the event to the machine, performs every
effect, and feeds the events those effects produce back in, until nothing is
left.

Opening and stopping the camera is one ordered protocol, :class:`ScanGate`:
the machine gives every opening a scan token, and ``dispatch`` (on the thread
that drives the machine, in the machine's order) marks that token wanted when
``OpenCamera`` comes out and unwanted when its ``CloseCamera`` does, whether
the effect is then performed at once (CLI) or later on the kiosk's worker.
The worker opens the device only while its token is still wanted, so a Cancel
or timeout that comes before the worker starts leaves the camera closed, and a
scan stops at the first frame after its token is dropped.
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
from .payments.journal import SaleNotRecorded
from .payments.processor import IdempotencyKeyReused
from .service import Terminal

_log = logging.getLogger(__name__)

# ChargeReport.status -> the machine's outcome; anything else is "unknown"
_OUTCOME = {"approved": "approved", "declined": "declined", "cancelled": "not_charged"}


def _result(report) -> co.ChargeResult:
    outcome = _OUTCOME.get(report.status, "unknown")
    # a key closed at the processor (`facepay recover` ran meanwhile): the shopper sees "not sent"
    return co.ChargeResult(report.sale_id, outcome, "not_sent" if outcome == "not_charged" else report.reason)


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
        self.charge_error: Exception | None = None   # why the last charge ended unknown or not charged
        self.enrol_embeddings: list[np.ndarray] = []
        self.scans = ScanGate()
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
                    if isinstance(eff, co.OpenCamera):
                        self.scans.want(eff.scan)
                    elif isinstance(eff, co.CloseCamera):
                        self.scans.drop(eff.scan)
                    if deferred and type(eff) in deferred:
                        left.append(eff)
                        continue
                    queue.extend(self.perform(eff))
        return left

    def perform(self, eff) -> list:
        """Carry out one effect; return the events it produced."""
        t = self.term
        if isinstance(eff, co.OpenCamera):
            if not self.scans.live(eff.scan):
                return []  # stopped (Cancel, timeout) before it could start: the camera stays closed
            if eff.purpose == "enrolment":
                self.enrol_embeddings = []
            if self.leds:
                self.leds.privacy(True)  # lit before the first frame can be taken
            try:
                self.camera.open()
            except BaseException:
                self._close_camera()  # no camera, no light
                raise
            if not self.scans.live(eff.scan):
                self._close_camera()  # stopped while the device was opening
            # it opened: after a CameraFault, the machine learns the camera works again
            return [] if self.machine.view().camera_ok else [co.CameraRestored()]
        if isinstance(eff, co.CloseCamera):
            self._close_camera()
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
            return [self._charge(eff)]
        if isinstance(eff, co.ResolveCharge):
            try:
                report = t.resolve(eff.sale_id)
            except Exception as exc:  # the processor cannot be asked yet: still unknown, asked again later
                _log.warning("sale %s: the processor cannot be asked yet: %s", eff.sale_id, exc)
                return []
            if report is None or report.status not in _OUTCOME:
                return []
            self.last_charge = report
            return [_result(report)]
        if isinstance(eff, co.VerifyPhone):
            sale = self.machine.view().sale
            ok, suspended = t.check_phone(eff.shopper_id, eff.digits, sale.sale_id if sale else None)
            return [co.PhoneChecked(ok, suspended)]
        if isinstance(eff, co.VerifyUnlock):
            return [co.UnlockChecked(t.unlock_face_pay(eff.shopper_id, eff.digits))]
        if isinstance(eff, co.StoreEnrolment):
            return [self._store_enrolment(eff)]
        if isinstance(eff, co.DropCaptures):
            self.enrol_embeddings = []
            return []
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

    def _charge(self, eff: co.Charge) -> co.ChargeResult:
        """Perform a charge; anything but the processor's clear answer is "unknown", never "declined"."""
        sale_id = eff.sale.sale_id
        self.charge_error = None
        try:
            report = self.term.charge(sale_id, eff.sale.amount_minor, eff.sale.currency, eff.method,
                                      eff.token, eff.shopper_id, eff.sale.training, masked_card=eff.masked_card)
        except SaleNotRecorded as exc:
            self.charge_error = exc
            return co.ChargeResult(sale_id, "not_charged", "not_recorded")
        except IdempotencyKeyReused as exc:
            self.charge_error = exc
            _log.error("sale %s was refused: %s", sale_id, exc)
            return co.ChargeResult(sale_id, "not_charged", "key_reused")
        except Exception as exc:  # the journal, the shopper store or the gateway failed mid-charge
            self.charge_error = exc
            _log.exception("sale %s: the outcome is unknown", sale_id)
            return co.ChargeResult(sale_id, "unknown", f"{type(exc).__name__}: {exc}")
        self.last_charge = report
        return _result(report)

    def _close_camera(self) -> None:
        if self.camera is not None:
            self.camera.close()
        if self.leds:
            self.leds.privacy(False)

    def work(self, eff, post: Callable, on_frame: Callable | None = None) -> None:
        """The kiosk worker's part: perform one effect, ``post`` its events; an opening runs its scan."""
        for ev in self.perform(eff):
            post(ev)
        if isinstance(eff, co.OpenCamera) and self.scans.live(eff.scan):
            if eff.purpose == "payment":
                self.scan_payment(post, on_frame, scan=eff.scan)
            else:
                self.capture_enrolment(post, on_frame, scan=eff.scan)

    # -- enrolment -----------------------------------------------------------
    def _store_enrolment(self, eff: co.StoreEnrolment):
        from . import consent
        from .errors import FacepayError
        from .service import AlreadyEnrolled, CardAlreadyLinked

        text = next((c for c in (consent.load(lang) for lang in consent.LANGUAGES)
                     if c.version == eff.consent_version and c.sha256 == eff.consent_text_hash), None)
        embeddings, self.enrol_embeddings = self.enrol_embeddings, []
        if text is None:
            return co.EnrolFailed("the consent text shown is not one this terminal knows")
        try:
            shopper = self.term.enrol_hashed(name=eff.name, card_hash=eff.card_hash, masked_card=eff.masked_card,
                                             token=eff.token, embeddings=embeddings, consent_text=text,
                                             phone_last4=eff.phone_last4, replace=eff.replace)
        except AlreadyEnrolled as exc:
            self.enrol_embeddings = embeddings  # kept while the shopper decides: replacing stores these
            return co.AlreadyEnrolled(self.term.view(exc.shopper), exc.same_card)
        except CardAlreadyLinked:
            return co.EnrolFailed("card_linked")
        except FacepayError as exc:
            return co.EnrolFailed(exc.what)
        receipt = self.term.replaced.pop(shopper.id, None)
        if receipt is not None:
            self.last_receipt = receipt
        return co.EnrolStored(self.term.view(shopper), receipt.id if receipt else None)

    # -- face scans (on a worker thread in the kiosk, inline in the CLI) -------------
    def _analysed_frames(self, on_frame: Callable | None, scan: int | None):
        """Frames from the open camera through the pipeline, until scan ``scan`` is stopped or the source ends."""
        for _ in range(MAX_FRAMES):
            if not self.scans.live(scan) or not self.camera.is_open:
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
        """Run the head-turn challenge on the open camera; the start frame's descriptor when it was passed.

        Emits guidance while it runs, then ``LivenessPassed`` or ``LivenessFailed(reason)``; returns None
        when the check failed or scan ``scan`` was stopped.
        """
        t = self.term
        result, start = run_challenge(t.pipeline, self.camera, challenge, t.cfg.liveness, t.cfg.match.threshold,
                                      stopped=lambda: not self.scans.live(scan), on_frame=on_frame, emit=emit,
                                      window=lambda: t.cfg.liveness.timeout_s * (1 + self.machine.view().challenge_more))
        if result is None:  # stopped: cancel or timeout closed the camera
            return None
        self.last_liveness = result
        if not result.live:
            emit(co.LivenessFailed(result.reason))
            return None
        emit(co.LivenessPassed())
        return start

    def scan_payment(self, emit: Callable, on_frame: Callable | None = None, scan: int | None = None) -> None:
        """Read frames until a decision, passing guidance and then the decision to ``emit``.

        With liveness required, the head-turn challenge comes first and the descriptor matched is the
        one from the challenge's start frame.  ``scan`` is the opening's token (default: the scan wanted
        now); the scan stops early when that token is dropped (cancel, timeout).
        """
        scan = self.scans.wanted if scan is None else scan
        t = self.term
        gallery: Gallery = t.gallery()
        challenge = self.machine.view().challenge
        if challenge is not None:
            probe = self.liveness_challenge(emit, challenge, on_frame, scan)
            if probe is None:
                return
            m = self._match(gallery, probe, emit)
            if m is not None:
                emit(co.FaceNoMatch(m.reason or "no match"))
            return
        misses, last_reason = 0, None
        for analysis in self._analysed_frames(on_frame, scan):
            if not analysis.gate.ok:
                if analysis.gate.reason != last_reason:
                    last_reason = analysis.gate.reason
                    emit(co.FaceGuidance(last_reason))
                continue
            m = self._match(gallery, analysis.embedding, emit)
            if m is None:
                return
            misses += 1
            if misses >= NO_MATCH_FRAMES:
                emit(co.FaceNoMatch(m.reason or "no match"))
                return
        if self.scans.live(scan):
            emit(co.FaceNoMatch("no match" if misses else (last_reason or "no_face")))

    def _match(self, gallery: Gallery, probe: np.ndarray, emit: Callable):
        """Match ``probe``; emit ``FaceMatched`` and return None for an enrolled shopper, else return the miss."""
        t = self.term
        m = gallery.match(probe, t.cfg.match.threshold, t.cfg.match.margin)
        self.last_match = m
        shopper = t.store.get(m.shopper_id) if m.matched else None
        if shopper is not None:
            emit(co.FaceMatched(t.view(shopper), m.distance, m.margin, len(gallery)))
            return None
        return m

    def capture_enrolment(self, emit: Callable, on_frame: Callable | None = None, scan: int | None = None) -> None:
        """Collect passing captures of one person, emitting guidance and each accepted capture."""
        scan = self.scans.wanted if scan is None else scan
        t = self.term
        needed = t.cfg.match.enrol_captures
        last_reason = None
        live = None
        challenge = self.machine.view().challenge
        if challenge is not None:
            # the challenge first: no capture is kept before it is passed, and every capture after it
            # must be the person who passed it
            live = self.liveness_challenge(emit, challenge, on_frame, scan)
            if live is None:
                return
        for analysis in self._analysed_frames(on_frame, scan):
            if len(self.enrol_embeddings) >= needed:
                break
            reason = analysis.gate.reason
            emb = analysis.embedding
            if emb is not None:
                first = self.enrol_embeddings[0] if self.enrol_embeddings else live
                why = capture_rejection(emb, self.enrol_embeddings, first, t.cfg.match.threshold)
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
            self.enrol_embeddings.append(emb)
            emit(co.CaptureAccepted(len(self.enrol_embeddings)))


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
        if check.start_index is not None and check.progress >= cfg.min_yaw_deg / 2 \
                and check.start_index not in descriptors:
            # the turn is under way from this start: its descriptor now, so the deciding frame needs one only
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
