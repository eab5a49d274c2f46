"""The machine's whole context, frozen, and the transitions every flow shares.

:class:`Context` holds the state, the policy, the two side machines (``avail``: availability.py, ``scan``:
scan.py) and one sub-context per flow (``pay``, ``enrol``, ``mine``, ``staff``).  Every function here is pure: it
takes a context and returns a new one with the effects to perform; nothing is changed in place
(``dataclasses.replace``).  A flow module's handler has the same shape: ``(ctx, event) -> (ctx, effects)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TypeVar

from .messages import CloseCamera, DropCaptures, DropGallery, Leds, LoadGallery, Record, Rejected, StartTimer
from .policy import Mode, Policy
from .states import State

if TYPE_CHECKING:
    from .availability import Availability
    from .enrolment import EnrolCtx
    from .mydata import MyDataCtx
    from .payment import PaymentCtx
    from .scan import ScanCtx
    from .staff import StaffCtx

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    state: State
    policy: Policy
    avail: Availability
    scan: ScanCtx
    pay: PaymentCtx
    enrol: EnrolCtx
    mine: MyDataCtx
    staff: StaffCtx
    guidance: str | None = None     # what the shopper should change (a gate reason, "phone_mismatch")
    message: str | None = None      # why the last step ended as it did (a code the screens explain)
    receipt_id: str | None = None   # the deletion receipt the result screen shows
    timer: int = 0                  # the token of the one timer that may still fire
    revoked: frozenset[str] = frozenset()


Step = tuple[Context, list]
Handler = Callable[[Context, Any], Step]
Table = dict[State, dict[type, Handler]]


def each(states, handlers: dict[type, Handler]) -> Table:
    """The same handlers in several states (a table fragment)."""
    return {s: dict(handlers) for s in states}


def merge(*tables: Table) -> Table:
    """One table from the flows' tables; an event handled twice in one state is a programming error."""
    out: Table = {}
    for table in tables:
        for state, handlers in table.items():
            row = out.setdefault(state, {})
            clash = row.keys() & handlers.keys()
            assert not clash, (state, clash)
            row.update(handlers)
    return out


def present(value: T | None, what: str) -> T:
    """A field the state guarantees (the sale in CONSENT, the card in ENROL_SAVING): refused here when absent."""
    if value is None:
        raise Rejected(f"no {what} in this state")
    return value


def four_digits(digits: str) -> str:
    if not (len(digits) == 4 and digits.isdigit()):
        raise Rejected("enter exactly four digits")
    return digits


def timer(c: Context, seconds: float) -> tuple[Context, StartTimer]:
    c = replace(c, timer=c.timer + 1)
    return c, StartTimer(c.timer, seconds)


_KEEP: Any = object()


def go(c: Context, state: State, *, message: str | None = _KEEP) -> Context:
    """Enter ``state``: guidance is cleared, the payment keeps its shopper only in the paying states
    (``PaymentCtx.entering``), and ``message`` replaces the message when given."""
    c = replace(c, state=state, guidance=None, pay=c.pay.entering(state))
    return c if message is _KEEP else replace(c, message=message)


def open_camera(c: Context, purpose: str, challenge: str | None) -> Step:
    scan, effect = c.scan.opened(purpose, challenge, c.policy.liveness_required)
    return replace(c, scan=scan), [effect]


def close_camera(c: Context) -> Step:
    if not c.scan.camera_open:
        return c, []
    return replace(c, scan=c.scan.closed()), [CloseCamera(c.scan.token)]


def idle_pattern(c: Context) -> str:
    return c.avail.idle_pattern()


def to_idle(c: Context) -> Step:
    c, eff = close_camera(c)
    if c.enrol.details is not None:
        eff.append(DropCaptures())
    c = replace(c, pay=c.pay.cleared(), enrol=c.enrol.cleared(), mine=c.mine.cleared(), receipt_id=None)
    c = go(c, State.OUT_OF_SERVICE if c.avail.mode == Mode.OUT_OF_SERVICE else State.IDLE, message=None)
    c = replace(c, timer=c.timer + 1)   # any pending timer is now stale
    return c, eff + [Leds(idle_pattern(c))]


def result(c: Context, state: State, message: str | None, pattern: str) -> Step:
    c, eff = close_camera(c)
    c = go(c, state, message=message)
    # a failed enrolment says what failed and what to do: time to read it, as long as the consent screen
    seconds = c.policy.consent_timeout_s if state == State.ENROL_FAILED else c.policy.result_timeout_s
    c, t = timer(c, seconds)
    return c, eff + [Leds(pattern), t]


def back_to_amount_due(c: Context, message: str) -> Step:
    """The scan ended without a payment: the camera closes, the amount is due again, offer the card."""
    c, eff = close_camera(c)
    return go(c, State.AMOUNT_DUE, message=message), eff + [Leds("amount_due")]


def cancel_sale(c: Context, why: str) -> Step:
    eff: list = []
    if c.state == State.CONSENT and c.pay.candidate is not None:
        sale = present(c.pay.sale, "sale")
        eff.append(Record("charge_cancelled", c.pay.candidate.shopper_id,
                          {"sale_id": sale.sale_id, "amount_minor": sale.amount_minor,
                           "currency": sale.currency, "why": why}))
    c, more = result(c, State.CANCELLED, why, "declined")
    return c, eff + more


def gallery_effects(was_on: bool, c: Context) -> list:
    """Drop or load the gallery when face pay has just been switched off or on."""
    on = c.avail.face_pay_on
    if was_on and not on:
        return [DropGallery()]
    if on and not was_on:
        return [LoadGallery()]
    return []


def need_live(c: Context) -> None:
    if c.policy.liveness_required and not c.scan.live:
        raise Rejected("no liveness, no match: the head-turn challenge has not been passed in this scan")

