"""The payment processor interface.

Every call carries an idempotency key (terminal id + sale id, globally unique):
sending the same key again returns the earlier result and never charges twice;
the same key with a different request raises :class:`IdempotencyKeyReused`.  A real gateway plugs in by
implementing :class:`Processor` (see README, "Plugging in a real gateway").
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from ..errors import FacepayError


class ProcessorError(Exception):
    """The processor could not be asked; the outcome is unknown, so ask again with the same key."""


class ProcessorTimeout(ProcessorError):
    pass


class ProcessorUnavailable(ProcessorError):
    pass


class IdempotencyKeyReused(FacepayError):
    """The processor already holds a different request under this key: this request was refused, nothing charged.

    Not a decline (the card was never asked) and not unknown: a configuration fault, such as two
    terminals sharing one ``terminal_id``.
    """

    def __init__(self, key: str, what: str):
        self.key = key
        super().__init__(what, f"idempotency key {key}",
                         "every terminal needs its own terminal_id; staff: check this sale in `facepay sales list`")


@dataclass(frozen=True)
class Outcome:
    key: str
    kind: str          # charge, void, refund
    status: str        # approved, declined; cancelled for a key closed by cancel()
    reason: str
    reference: str
    amount_minor: int
    currency: str
    training: bool = False


class Processor(abc.ABC):
    name = "processor"

    @abc.abstractmethod
    def tokenize(self, card_hash: str) -> str:
        """A processor token for a card, from the card UID's keyed hash (never a PAN)."""

    @abc.abstractmethod
    def charge(self, key: str, token: str, amount_minor: int, currency: str, *, training: bool = False) -> Outcome: ...

    @abc.abstractmethod
    def void(self, key: str, charge_key: str) -> Outcome: ...

    @abc.abstractmethod
    def refund(self, key: str, charge_key: str, amount_minor: int) -> Outcome: ...

    @abc.abstractmethod
    def lookup(self, key: str) -> Outcome | None:
        """What the processor received under ``key`` and answered, or None if no request with it arrived.

        Raises :class:`ProcessorError` when the processor cannot be asked: that is not "never saw it".
        """

    @abc.abstractmethod
    def cancel(self, key: str) -> Outcome:
        """Close a key the terminal gave up on (the shopper has left): nothing may be charged with it any more.

        If a charge already arrived under ``key``, its outcome is returned unchanged (the terminal
        settles to it); otherwise the key is recorded as cancelled, and a charge arriving later with
        it is refused and charges nothing (the answer is the cancelled outcome).
        """
