"""The payment processor interface.

Every call carries an idempotency key: sending the same key again returns the
earlier result and never charges twice.  A real gateway plugs in by
implementing :class:`Processor` (see README, "Plugging in a real gateway").
"""

from __future__ import annotations

import abc
from dataclasses import dataclass


class ProcessorError(Exception):
    """The processor could not be asked; the outcome is unknown, so ask again with the same key."""


class ProcessorTimeout(ProcessorError):
    pass


class ProcessorUnavailable(ProcessorError):
    pass


@dataclass(frozen=True)
class Outcome:
    key: str
    kind: str          # charge, void, refund
    status: str        # approved, declined
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
        """What the processor knows of ``key``, or None if it never saw it."""
