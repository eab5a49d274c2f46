"""The terminal's modes: the one list of their names.

A foundation module (it imports nothing of the terminal), so the core, the config, the fleet contract and
through it the back office all read the same names.
"""

from __future__ import annotations

from enum import StrEnum


class Mode(StrEnum):
    NORMAL = "normal"
    CARD_ONLY = "card_only"
    ENROLMENT = "enrolment"
    TRAINING = "training"
    OUT_OF_SERVICE = "out_of_service"


MODES: tuple[str, ...] = tuple(m.value for m in Mode)
