"""The staff flow: the PIN, the panel over the idle screen, a sale keyed in, the mode, void or refund of the
last sale, the day's report and the health check.

The panel shows only at rest (the kiosk puts it over the idle or out-of-service screen); its note is a
:class:`StaffNote`, a code with its values (``StaffNote("mode", mode="card_only")``) that the kiosk words in
the shopper's language.
The PIN is checked, and its lock-out timed, by the driver (``CheckPin`` -> ``PinChecked``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..money import parse_amount
from . import availability, payment
from .context import Context, Handler, Step, Table
from .messages import (
    BuildReport,
    CheckPin,
    CloseStaff,
    LockStaff,
    OpenStaff,
    PinChecked,
    Rejected,
    ReportReady,
    Reverse,
    Reversed,
    ReverseFailed,
    RunDoctor,
    SetMode,
    ShowDoctor,
    ShowReport,
    StaffAmount,
    StaffNewSale,
    StaffPin,
    StaffReverse,
    StaffSetMode,
    StartSale,
)
from .states import State

SCREENS = ("", "staff_pin", "staff_menu", "staff_amount", "staff_report")
REVERSALS = ("void", "refund")
NOTES = ("", "pin_locked", "pin_wrong", "amount", "mode", "reversed", "no_sales", "error")   # StaffNote.code


@dataclass(frozen=True)
class StaffNote:
    """What the staff panel says: ``code`` and the fields that code uses ("": nothing to say)."""

    code: str = ""                     # one of NOTES
    wait_s: float = 0.0                # pin_locked, pin_wrong: the PIN lock-out now running (0: none)
    words: str = ""                    # amount, error: why the amount is not one, what went wrong
    mode: str = ""                     # mode: the mode just set
    reversal: Reversed | None = None   # reversed: the void or refund done


@dataclass(frozen=True)
class StaffCtx:
    screen: str = ""               # one of SCREENS ("": the panel is closed)
    unlocked: bool = False
    note: StaffNote = StaffNote()  # what the panel says
    report: tuple[str, ...] = ()   # the report or health-check lines the report screen shows


def _staff(c: Context, **changes) -> Context:
    return replace(c, staff=replace(c.staff, **changes))


def _need_unlocked(c: Context) -> None:
    if not c.staff.unlocked:
        raise Rejected("enter the staff PIN first")


def open_panel(c: Context, e: OpenStaff) -> Step:
    return _staff(c, screen="staff_menu" if c.staff.unlocked else "staff_pin", note=StaffNote()), []


def close_panel(c: Context, e: CloseStaff) -> Step:
    return _staff(c, screen=""), []


def lock(c: Context, e: LockStaff) -> Step:
    return _staff(c, unlocked=False, screen=""), []


def pin(c: Context, e: StaffPin) -> Step:
    return c, [CheckPin(e.digits)]


def pin_checked(c: Context, e: PinChecked) -> Step:
    if e.locked:
        return _staff(c, note=StaffNote("pin_locked", wait_s=e.wait_s)), []
    if e.ok:
        return _staff(c, unlocked=True, note=StaffNote(), screen="staff_menu"), []
    return _staff(c, note=StaffNote("pin_wrong", wait_s=e.wait_s)), []


def new_sale(c: Context, e: StaffNewSale) -> Step:
    _need_unlocked(c)
    return _staff(c, screen="staff_amount", note=StaffNote()), []


def amount(c: Context, e: StaffAmount) -> Step:
    """The amount keyed in: a clear note when it is not one, else the panel closes and the sale starts."""
    _need_unlocked(c)
    try:
        minor = parse_amount(e.text, e.currency)
    except ValueError as exc:
        return _staff(c, note=StaffNote("amount", words=str(exc))), []
    return payment.start_sale(_staff(c, screen=""), StartSale(e.sale_id, minor, e.currency))


def set_mode(c: Context, e: StaffSetMode) -> Step:
    _need_unlocked(c)
    c, eff = availability.set_mode(c, SetMode(e.mode))
    return _staff(c, note=StaffNote("mode", mode=e.mode), screen="staff_menu"), eff


def reverse(c: Context, e: StaffReverse) -> Step:
    _need_unlocked(c)
    if e.kind not in REVERSALS:
        raise Rejected(f"a reversal is a void or a refund, not {e.kind!r}")
    return c, [Reverse(e.kind)]


def reversed_(c: Context, e: Reversed) -> Step:
    return _staff(c, note=StaffNote("reversed", reversal=e)), []


def reverse_failed(c: Context, e: ReverseFailed) -> Step:
    return _staff(c, note=StaffNote("no_sales") if e.no_sales else StaffNote("error", words=e.what)), []


def report(c: Context, e: ShowReport) -> Step:
    _need_unlocked(c)
    return c, [BuildReport()]


def doctor(c: Context, e: ShowDoctor) -> Step:
    _need_unlocked(c)
    return c, [RunDoctor(skip_camera=c.scan.camera_open)]


def report_ready(c: Context, e: ReportReady) -> Step:
    return _staff(c, report=tuple(e.lines), screen="staff_report"), []


# The panel can be opened and used in any state (it shows at rest); a sale or a mode only at rest.
ANY_STATE: dict[type, Handler] = {
    OpenStaff: open_panel, CloseStaff: close_panel, LockStaff: lock, StaffPin: pin, PinChecked: pin_checked,
    StaffNewSale: new_sale, StaffReverse: reverse, Reversed: reversed_, ReverseFailed: reverse_failed,
    ShowReport: report, ShowDoctor: doctor, ReportReady: report_ready,
}
TABLE: Table = {State.IDLE: {StaffAmount: amount, StaffSetMode: set_mode},
                State.OUT_OF_SERVICE: {StaffSetMode: set_mode}}
