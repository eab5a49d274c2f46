"""What goes in and out of the checkout machine: the data it holds, the events it is sent and the effects
it returns, all frozen dataclasses, and the :data:`Event` / :data:`Effect` unions.

Randomness is handed in: an event that needs a head-turn side (``ChooseFace``, ``EnrolDetails``,
``RetryEnrolment``) draws it when the driver builds the event (``field(default_factory=pick_challenge)``),
so the machine itself never calls ``secrets`` and replaying the same events gives the same result.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..face.decisions import pick_challenge

# What the shopper reads when a random UID is tapped where the card must name them.
RANDOM_UID_SENTENCE = "This card or phone shows a different number each time. Please use a physical card."

# What a Charge can come to.  "not_charged": the request was certainly never made (the journal could
# not record the sale, or the processor refused a reused idempotency key), so the sale ends cancelled.
OUTCOMES = ("approved", "declined", "unknown", "not_charged")
UNKNOWN_MESSAGE = "Payment not confirmed - do not pay again; staff will check sale {sale_id}"


class Rejected(Exception):
    """An event that is not valid in the current state; nothing changed.  ``reason`` is the words."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Refusal:
    """A refused event, as a driver keeps it: the event's type name and the machine's reason."""

    event: str    # the type name of the event the driver sent ("StaffSetMode")
    reason: str   # Rejected.reason ("finish or cancel the current sale before changing mode")

    def __str__(self) -> str:
        return f"{self.event}: {self.reason}"


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class ShopperView:
    """What the machine may know of a matched or looked-up shopper: no biometrics."""

    shopper_id: str
    masked_name: str
    masked_card: str
    token: str
    has_phone: bool = False
    enrolled_at: str = ""
    suspended: bool = False   # face pay suspended after too many wrong phone digits (unlock at "my data")


@dataclass(frozen=True)
class Sale:
    sale_id: str
    amount_minor: int
    currency: str
    training: bool = False


# --------------------------------------------------------------------------- events
@dataclass(frozen=True)
class StartSale:
    sale_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class ChooseFace:
    # the head turn to ask; drawn (left or right, the OS's CSPRNG) when the driver builds the event.
    # None: no challenge (only valid with liveness not required)
    challenge: str | None = field(default_factory=pick_challenge)


@dataclass(frozen=True)
class CardTapped:
    card_hash: str
    masked_card: str
    token: str
    random_uid: bool = False   # ISO/IEC 14443-3 random ID (08xxxxxx): a new number at every tap


@dataclass(frozen=True)
class MoreTime:
    """"More time" while the head turn is asked: one more ``[liveness] timeout_s`` window for it (the
    runner's check reads the window from ``Context.challenge_more``), at most CHALLENGE_MORE_MAX times."""


@dataclass(frozen=True)
class FaceGuidance:
    reason: str


@dataclass(frozen=True)
class FaceMatched:
    shopper: ShopperView
    distance: float
    margin: float | None
    gallery_size: int


@dataclass(frozen=True)
class FaceNoMatch:
    reason: str


@dataclass(frozen=True)
class LivenessPassed:
    pass


@dataclass(frozen=True)
class LivenessFailed:
    reason: str
    words: str = ""   # the check's own sentence for the reason (what ``facepay sale`` prints)


@dataclass(frozen=True)
class CooldownOver:
    token: int


@dataclass(frozen=True)
class PhoneDigits:
    digits: str


@dataclass(frozen=True)
class PhoneChecked:
    ok: bool
    suspended: bool = False   # this wrong entry reached the per-shopper limit: face pay suspended


@dataclass(frozen=True)
class UnlockFacePay:
    """At "my data": the digits a shopper whose face pay is suspended typed to switch it back on."""

    digits: str


@dataclass(frozen=True)
class UnlockChecked:
    ok: bool


@dataclass(frozen=True)
class Confirm:
    amount_minor: int
    shopper_id: str


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class Timeout:
    token: int


@dataclass(frozen=True)
class ChargeResult:
    sale_id: str
    outcome: str      # one of OUTCOMES
    reason: str = ""
    reference: str = ""   # the processor's reference of an approved charge (the receipt shows it)


@dataclass(frozen=True)
class Done:
    pass


@dataclass(frozen=True)
class StartEnrolment:
    pass


@dataclass(frozen=True)
class AgreeConsent:
    version: str
    text_hash: str


@dataclass(frozen=True)
class EnrolDetails:
    name: str
    phone_last4: str | None = None
    challenge: str | None = field(default_factory=pick_challenge)   # drawn when the event is built


@dataclass(frozen=True)
class CaptureAccepted:
    count: int


@dataclass(frozen=True)
class EnrolStored:
    shopper: ShopperView
    replaced_receipt: str | None = None   # the deletion receipt of the earlier enrolment it replaced


@dataclass(frozen=True)
class EnrolFailed:
    reason: str   # a code the kiosk explains ("card_linked", "camera_fault", ...) or the error's own words


@dataclass(frozen=True)
class AlreadyEnrolled:
    """The 1:N search before storing found this face enrolled already: nothing was stored."""

    shopper: ShopperView
    same_card: bool   # enrolled with the very card just tapped


@dataclass(frozen=True)
class RetryEnrolment:
    """"Try again" after a failed enrolment: the same consent and details, a new capture (a new head turn)."""

    challenge: str | None = field(default_factory=pick_challenge)


@dataclass(frozen=True)
class StartMyData:
    pass


@dataclass(frozen=True)
class LookupResult:
    shopper: ShopperView | None


@dataclass(frozen=True)
class DeleteMyData:
    pass


@dataclass(frozen=True)
class Revoked:
    shopper_id: str
    receipt_id: str


@dataclass(frozen=True)
class SetMode:
    mode: str
    record: bool = True   # False when another process (the CLI) already stored and recorded the change


@dataclass(frozen=True)
class ReaderStatus:
    ok: bool


@dataclass(frozen=True)
class FleetStatus:
    paused: bool  # in a fleet and not caught up with its revocations within [fleet] max_staleness_s: card only


@dataclass(frozen=True)
class CameraFault:
    reason: str


@dataclass(frozen=True)
class CameraRestored:
    """The camera works again after a :class:`CameraFault` (the runner opened it, or the health check saw it)."""


# --------------------------------------------------------------------------- staff events
@dataclass(frozen=True)
class OpenStaff:
    """The staff button: the PIN pad, or the menu while unlocked."""


@dataclass(frozen=True)
class CloseStaff:
    pass


@dataclass(frozen=True)
class LockStaff:
    """"Lock", or the kiosk's idle auto-lock (the clock is the driver's)."""


@dataclass(frozen=True)
class StaffPin:
    digits: str


@dataclass(frozen=True)
class PinChecked:
    ok: bool
    wait_s: float = 0.0    # the lock-out now running after wrong PINs (0: none)
    locked: bool = False   # refused unchecked: a lock-out was already running


@dataclass(frozen=True)
class StaffNewSale:
    pass


@dataclass(frozen=True)
class StaffAmount:
    """The amount typed on the staff keypad; the sale id is the driver's (it is random)."""

    text: str
    currency: str
    sale_id: str


@dataclass(frozen=True)
class StaffSetMode:
    mode: str


@dataclass(frozen=True)
class StaffReverse:
    kind: str   # "void" or "refund" of the last sale


@dataclass(frozen=True)
class Reversed:
    kind: str
    amount_minor: int
    currency: str
    status: str
    repeated: bool


@dataclass(frozen=True)
class ReverseFailed:
    what: str   # the error's words; "" with no_sales
    no_sales: bool = False


@dataclass(frozen=True)
class ShowReport:
    pass


@dataclass(frozen=True)
class ShowDoctor:
    pass


@dataclass(frozen=True)
class ReportReady:
    lines: tuple[str, ...]


# --------------------------------------------------------------------------- effects
@dataclass(frozen=True)
class OpenCamera:
    purpose: str  # "payment" or "enrolment"
    scan: int = 0  # this opening's token: the runner opens the device only while it is the scan wanted
    challenge: str | None = None  # the head turn asked for; None when liveness is not required


@dataclass(frozen=True)
class StartCooldown:
    token: int
    seconds: float


@dataclass(frozen=True)
class CloseCamera:
    scan: int = 0  # the token of the scan it ends


@dataclass(frozen=True)
class StartTimer:
    token: int
    seconds: float


@dataclass(frozen=True)
class Charge:
    sale: Sale
    method: str  # "face" or "card"
    token: str
    shopper_id: str | None
    card_hash: str | None
    masked_card: str = ""   # what the receipt shows of the card (the shopper's linked card for a face payment)


@dataclass(frozen=True)
class ResolveCharge:
    """Ask the processor by the sale's idempotency key what became of it; never charges."""

    sale_id: str


@dataclass(frozen=True)
class Record:
    kind: str
    subject: str
    details: dict


@dataclass(frozen=True)
class PersistMode:
    """Store the terminal's mode (the setting ``facepay mode`` and a restart read); the ledger entry is a
    :class:`Record` of its own."""

    mode: str


@dataclass(frozen=True)
class VerifyPhone:
    shopper_id: str
    digits: str


@dataclass(frozen=True)
class VerifyUnlock:
    shopper_id: str
    digits: str


@dataclass(frozen=True)
class StoreEnrolment:
    name: str
    phone_last4: str | None
    consent_version: str
    consent_text_hash: str
    card_hash: str
    masked_card: str
    token: str
    replace: str | None = None   # the shopper id of this face's earlier enrolment, deleted first (a receipt)


@dataclass(frozen=True)
class DropCaptures:
    """The enrolment flow ended: forget the captured descriptors held in memory."""


@dataclass(frozen=True)
class LookupCard:
    card_hash: str


@dataclass(frozen=True)
class RevokeShopper:
    shopper_id: str


@dataclass(frozen=True)
class LoadGallery:
    pass


@dataclass(frozen=True)
class DropGallery:
    pass


@dataclass(frozen=True)
class Leds:
    pattern: str  # idle, amount_due, scanning, consent, processing, approved, declined, fault, off


@dataclass(frozen=True)
class CheckPin:
    digits: str


@dataclass(frozen=True)
class Reverse:
    kind: str   # "void" or "refund" of the journal's last sale


@dataclass(frozen=True)
class BuildReport:
    """The day's report lines."""


@dataclass(frozen=True)
class RunDoctor:
    skip_camera: bool   # never during a scan


# --------------------------------------------------------------------------- unions
Event = (
    StartSale | ChooseFace | CardTapped | MoreTime | FaceGuidance | FaceMatched | FaceNoMatch | LivenessPassed |
    LivenessFailed | CooldownOver | PhoneDigits | PhoneChecked | UnlockFacePay | UnlockChecked | Confirm |
    Cancel | Timeout | ChargeResult | Done | StartEnrolment | AgreeConsent | EnrolDetails | CaptureAccepted |
    EnrolStored | EnrolFailed | AlreadyEnrolled | RetryEnrolment | StartMyData | LookupResult | DeleteMyData |
    Revoked | SetMode | ReaderStatus | FleetStatus | CameraFault | CameraRestored | OpenStaff | CloseStaff |
    LockStaff | StaffPin | PinChecked | StaffNewSale | StaffAmount | StaffSetMode | StaffReverse | Reversed |
    ReverseFailed | ShowReport | ShowDoctor | ReportReady
)
Effect = (
    OpenCamera | StartCooldown | CloseCamera | StartTimer | Charge | ResolveCharge | Record | PersistMode |
    VerifyPhone | VerifyUnlock | StoreEnrolment | DropCaptures | LookupCard | RevokeShopper | LoadGallery |
    DropGallery | Leds | CheckPin | Reverse | BuildReport | RunDoctor
)
EVENTS: tuple[type, ...] = tuple(Event.__args__)
EFFECTS: tuple[type, ...] = tuple(Effect.__args__)
