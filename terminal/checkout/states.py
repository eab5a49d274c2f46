"""The checkout's states: one flat enum the screens are keyed by, and the sets the machine checks."""

from __future__ import annotations

import enum


class State(enum.StrEnum):
    IDLE = "idle"
    AMOUNT_DUE = "amount_due"
    FACE_SCAN = "face_scan"
    CONSENT = "consent"
    CHARGING = "charging"
    APPROVED = "approved"
    DECLINED = "declined"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    ENROL_CONSENT = "enrol_consent"
    ENROL_DETAILS = "enrol_details"
    ENROL_CAPTURE = "enrol_capture"
    ENROL_CARD = "enrol_card"
    ENROL_SAVING = "enrol_saving"
    ENROL_DONE = "enrol_done"
    ENROL_DUPLICATE = "enrol_duplicate"   # this face is enrolled already: keep that enrolment, or move it here
    ENROL_FAILED = "enrol_failed"         # nothing was stored: what failed, what to do, "Try again"
    MYDATA_TAP = "mydata_tap"
    MYDATA_LOOKUP = "mydata_lookup"
    MYDATA_SHOW = "mydata_show"
    MYDATA_DELETING = "mydata_deleting"
    MYDATA_DELETED = "mydata_deleted"
    OUT_OF_SERVICE = "out_of_service"


# The camera is open in these states and only in these (machine.py checks it after every event).
CAMERA_STATES = frozenset({State.FACE_SCAN, State.ENROL_CAPTURE})
RESULT_STATES = frozenset({State.APPROVED, State.DECLINED, State.UNKNOWN, State.CANCELLED, State.ENROL_DONE,
                           State.ENROL_FAILED, State.MYDATA_DELETED})
# The payment states in which the matched shopper is still the one the sale is about.
PAYING_STATES = frozenset({State.CONSENT, State.CHARGING, State.APPROVED, State.DECLINED, State.UNKNOWN})
