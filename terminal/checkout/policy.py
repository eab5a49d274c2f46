"""What the checkout machine is told by configuration: the :class:`Policy` numbers and the terminal's :class:`Mode`."""

from __future__ import annotations

from dataclasses import dataclass

from ..face.decisions import false_match_in_gallery
from ..modes import MODES, Mode

__all__ = ["FACE_OFF_MODES", "MODES", "Mode", "Policy"]  # the mode names are terminal.modes', once


FACE_OFF_MODES = frozenset({Mode.CARD_ONLY, Mode.OUT_OF_SERVICE})   # no face step in these


@dataclass(frozen=True)
class Policy:
    threshold: float = 0.55
    stepup_margin: float = 0.15
    stepup_false_match_bound: float = 0.001
    false_match_rate: float = 0.033
    enrol_captures: int = 3
    scan_timeout_s: float = 15.0
    consent_timeout_s: float = 20.0
    result_timeout_s: float = 6.0
    liveness_required: bool = True
    cooldown_s: float = 60.0
    resolve_interval_s: float = 5.0   # how often an unknown outcome is asked about again

    def needs_stepup(self, margin: float | None, gallery_size: int) -> bool:
        """Ask for the phone digits: the margin is small, or 1-(1-f)^N for this gallery passes the bound."""
        if margin is not None and margin < self.stepup_margin:
            return True
        return false_match_in_gallery(self.false_match_rate, gallery_size) > self.stepup_false_match_bound

    @classmethod
    def from_config(cls, cfg) -> Policy:
        """The policy a loaded :class:`terminal.config.Config` asks for (``[match]``, ``[payment]``, ``[liveness]``)."""
        m = cfg.match
        return cls(threshold=m.threshold, stepup_margin=m.stepup_margin,
                   stepup_false_match_bound=m.stepup_false_match_bound, false_match_rate=m.false_match_rate,
                   enrol_captures=m.enrol_captures, scan_timeout_s=m.scan_timeout_s,
                   consent_timeout_s=cfg.payment.consent_timeout_s, liveness_required=cfg.liveness.required)

    @property
    def phone_required(self) -> bool:
        """Even a one-shopper gallery needs the step-up: enrolment must then take phone digits."""
        return self.needs_stepup(None, 1)
