"""The "my data" flow: tap the card, see what is held, delete it (a receipt), or switch a suspended face pay
back on with the phone digits."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .context import Context, Step, Table, four_digits, go, result, timer, to_idle
from .messages import (
    CardTapped,
    DeleteMyData,
    Leds,
    LookupCard,
    LookupResult,
    Rejected,
    RevokeShopper,
    ShopperView,
    StartMyData,
    Timeout,
    UnlockChecked,
    UnlockFacePay,
    VerifyUnlock,
)
from .payment import MAX_PHONE_TRIES
from .states import State


@dataclass(frozen=True)
class MyDataCtx:
    shopper: ShopperView | None = None   # who the tapped card belongs to (None: no face enrolled for it)
    unlock_tries: int = 0

    def cleared(self) -> MyDataCtx:
        return MyDataCtx()


def _mine(c: Context, **changes) -> Context:
    return replace(c, mine=replace(c.mine, **changes))


def start(c: Context, e: StartMyData) -> Step:
    return go(c, State.MYDATA_TAP), []


def tapped(c: Context, e: CardTapped) -> Step:
    if e.random_uid:
        return replace(c, message="random_uid"), []   # nothing is looked up; a physical card may follow
    return go(c, State.MYDATA_LOOKUP, message=None), [LookupCard(e.card_hash)]


def looked_up(c: Context, e: LookupResult) -> Step:
    shopper = e.shopper
    if shopper is not None and shopper.shopper_id in c.revoked:
        shopper = None
    c = _mine(go(c, State.MYDATA_SHOW), shopper=shopper)
    c, t = timer(c, c.policy.consent_timeout_s)
    return c, [t]


def _suspended(c: Context) -> ShopperView:
    if c.mine.shopper is None or not c.mine.shopper.suspended:
        raise Rejected("face pay is not suspended for this card")
    return c.mine.shopper


def unlock(c: Context, e: UnlockFacePay) -> Step:
    return c, [VerifyUnlock(_suspended(c).shopper_id, four_digits(e.digits))]


def unlock_checked(c: Context, e: UnlockChecked) -> Step:
    shopper = _suspended(c)
    if e.ok:
        c = _mine(c, shopper=replace(shopper, suspended=False))
        return replace(c, guidance=None, message="face_pay_unlocked"), [Leds("approved")]
    c = _mine(c, unlock_tries=c.mine.unlock_tries + 1)
    if c.mine.unlock_tries >= MAX_PHONE_TRIES:
        return to_idle(c)
    return replace(c, guidance="phone_mismatch"), []


def delete(c: Context, e: DeleteMyData) -> Step:
    if c.mine.shopper is None:
        raise Rejected("no face is enrolled for this card")
    sid = c.mine.shopper.shopper_id
    return go(c, State.MYDATA_DELETING), [RevokeShopper(sid)]


def shown_long_enough(c: Context, e: Timeout) -> Step:
    return to_idle(c)


def forget(c: Context, shopper_id: str, receipt_id: str) -> Step:
    """``Revoked``: the deletion asked for here is done (the receipt shows), or someone else deleted them."""
    if c.state == State.MYDATA_DELETING:
        c, eff = result(_mine(c, shopper=None), State.MYDATA_DELETED, None, "approved")
        return replace(c, receipt_id=receipt_id), eff
    if c.mine.shopper is not None and c.mine.shopper.shopper_id == shopper_id:
        return _mine(c, shopper=None), []
    return c, []


TABLE: Table = {
    State.IDLE: {StartMyData: start},
    State.MYDATA_TAP: {CardTapped: tapped},
    State.MYDATA_LOOKUP: {LookupResult: looked_up},
    State.MYDATA_SHOW: {UnlockFacePay: unlock, UnlockChecked: unlock_checked, DeleteMyData: delete,
                        Timeout: shown_long_enough},
}
