"""The checkout state machine: pure Python, no Kivy, no hardware, no threads, no randomness, no clock.

The UI and the CLI both drive it.  Hardware and processor results arrive as events; ``handle(event)``
returns the effects to perform (open the camera, close it, charge an amount, record a consent event,
light LEDs); ``view()`` is what a screen may read.  An event that makes no sense in the current state
raises :class:`Rejected` with the reason and changes nothing.

The package, top-down: ``machine`` composes the flows (``payment``, ``enrolment``, ``mydata``) and the
side machines (``availability``, ``scan``); ``context`` holds the frozen context and the transitions they
share; ``messages`` the events and effects; ``policy`` the configured numbers and the :class:`Mode`;
``states`` the states.  Every public name is importable from here.
"""

from ..face.decisions import CHALLENGES, TOO_CLOSE, false_match_in_gallery, pick_challenge
from .machine import ANY_STATE, TABLE, CheckoutMachine, View
from .messages import (
    EFFECTS,
    EVENTS,
    OUTCOMES,
    RANDOM_UID_SENTENCE,
    UNKNOWN_MESSAGE,
    AgreeConsent,
    AlreadyEnrolled,
    BuildReport,
    CameraFault,
    CameraRestored,
    Cancel,
    CaptureAccepted,
    CardTapped,
    Charge,
    ChargeResult,
    CheckPin,
    ChooseFace,
    CloseCamera,
    CloseStaff,
    Confirm,
    CooldownOver,
    DeleteMyData,
    Done,
    DropCaptures,
    DropGallery,
    Effect,
    EnrolDetails,
    EnrolFailed,
    EnrolStored,
    Event,
    FaceGuidance,
    FaceMatched,
    FaceNoMatch,
    FleetStatus,
    Leds,
    LivenessFailed,
    LivenessPassed,
    LoadGallery,
    LockStaff,
    LookupCard,
    LookupResult,
    MoreTime,
    OpenCamera,
    OpenStaff,
    PersistMode,
    PhoneChecked,
    PhoneDigits,
    PinChecked,
    ReaderStatus,
    Record,
    Refusal,
    Rejected,
    ReportReady,
    ResolveCharge,
    RetryEnrolment,
    Reverse,
    Reversed,
    ReverseFailed,
    Revoked,
    RevokeShopper,
    RunDoctor,
    Sale,
    SetMode,
    ShopperView,
    ShowDoctor,
    ShowReport,
    StaffAmount,
    StaffNewSale,
    StaffPin,
    StaffReverse,
    StaffSetMode,
    StartCooldown,
    StartEnrolment,
    StartMyData,
    StartSale,
    StartTimer,
    StoreEnrolment,
    Timeout,
    UnlockChecked,
    UnlockFacePay,
    VerifyPhone,
    VerifyUnlock,
)
from .payment import MAX_PHONE_TRIES
from .policy import FACE_OFF_MODES, MODES, Mode, Policy
from .scan import CHALLENGE_MORE_MAX, LIVENESS_STRIKES
from .staff import NOTES, REVERSALS, SCREENS, StaffNote
from .states import CAMERA_STATES, PAYING_STATES, RESULT_STATES, State

__all__ = [
    "NOTES", "REVERSALS", "SCREENS", "StaffNote", "PersistMode", "Refusal",
    "OpenStaff", "CloseStaff", "LockStaff", "StaffPin", "PinChecked", "StaffNewSale", "StaffAmount",
    "StaffSetMode", "StaffReverse", "Reversed", "ReverseFailed", "ShowReport", "ShowDoctor", "ReportReady",
    "CheckPin", "Reverse", "BuildReport", "RunDoctor",
    "CHALLENGES", "TOO_CLOSE", "false_match_in_gallery", "pick_challenge",
    "ANY_STATE", "TABLE", "CheckoutMachine", "View", "EFFECTS", "EVENTS", "OUTCOMES", "RANDOM_UID_SENTENCE",
    "UNKNOWN_MESSAGE", "Effect", "Event", "Rejected", "MAX_PHONE_TRIES", "FACE_OFF_MODES", "MODES", "Mode", "Policy",
    "CHALLENGE_MORE_MAX", "LIVENESS_STRIKES", "CAMERA_STATES", "PAYING_STATES", "RESULT_STATES", "State",
    "Rejected", "ShopperView", "Sale", "StartSale", "ChooseFace", "CardTapped", "MoreTime", "FaceGuidance",
    "FaceMatched", "FaceNoMatch", "LivenessPassed", "LivenessFailed", "CooldownOver", "PhoneDigits", "PhoneChecked",
    "UnlockFacePay", "UnlockChecked", "Confirm", "Cancel", "Timeout", "ChargeResult", "Done", "StartEnrolment",
    "AgreeConsent", "EnrolDetails", "CaptureAccepted", "EnrolStored", "EnrolFailed", "AlreadyEnrolled",
    "RetryEnrolment", "StartMyData", "LookupResult", "DeleteMyData", "Revoked", "SetMode", "ReaderStatus",
    "FleetStatus", "CameraFault", "CameraRestored", "OpenCamera", "StartCooldown", "CloseCamera", "StartTimer",
    "Charge", "ResolveCharge", "Record", "VerifyPhone", "VerifyUnlock", "StoreEnrolment", "DropCaptures",
    "LookupCard", "RevokeShopper", "LoadGallery", "DropGallery", "Leds",
]
