"""What a Terminal in a fleet keeps and does locally: fleet card links, opt-out codes, staleness.

Everything here is SQLite in the terminal's own ``facepay.db``; the network side is :mod:`terminal.fleet_agent`.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from ..datadir import transaction
from . import outbox
from .contract import ENROL, OPTOUT, RECEIPT, RECEIPT_STATES, code_hash, new_optout_code

PAUSED_MESSAGE = "Face pay paused: this terminal is offline"
_SET = "INSERT INTO fleet_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"


def fleet_card_hash(card_key_hex: str, uid: bytes) -> str:
    """The keyed hash that links one card's enrolments across the fleet (the fleet's key, not the terminal's)."""
    return hmac.new(bytes.fromhex(card_key_hex), b"fleet-card:" + uid, hashlib.sha256).hexdigest()


class FleetLink:
    def __init__(self, term):
        self.term = term
        self.cfg = term.cfg.fleet
        self.db = term.store.db
        term.journal.outbox = True
        term.ledger.on_append = outbox.queue_ledger_event
        self._recent_cards: dict[str, str] = {}

    # -- cards and enrolment --------------------------------------------------------
    def card_seen(self, uid: bytes, terminal_hash: str) -> None:
        """Remember the fleet hash of a tapped card for the enrolment that may follow (memory only)."""
        self._recent_cards[terminal_hash] = fleet_card_hash(self.cfg.card_key, uid)
        while len(self._recent_cards) > 8:
            self._recent_cards.pop(next(iter(self._recent_cards)))

    def enrolled(self, shopper) -> str | None:
        """Link a new enrolment to the fleet; returns the shopper's opt-out code (shown once, never stored)."""
        fleet_hash = self._recent_cards.pop(shopper.card_hash, None)
        if fleet_hash is None:
            return None
        code = new_optout_code()
        ch = code_hash(code)
        with transaction(self.db):
            self.db.execute("INSERT INTO fleet_links (shopper_id, card_hash, code_hash) VALUES (?,?,?)",
                            (shopper.id, fleet_hash, ch))
            self.db.execute(*outbox.row(f"{ENROL}:{shopper.id}", ENROL, {"shopper_id": shopper.id,
                                                                        "card_hash": fleet_hash, "code_hash": ch}))
        return code

    def card_hash_of(self, shopper_id: str) -> str | None:
        row = self.db.execute("SELECT card_hash FROM fleet_links WHERE shopper_id = ?", (shopper_id,)).fetchone()
        return row[0] if row else None

    def optout_requested(self, shopper_id: str, receipt_id: str) -> None:
        """A shopper opted out here (the "my data" screen or `facepay revoke`): ask the fleet to follow."""
        h = self.card_hash_of(shopper_id)
        if h is not None:  # remembered so the fleet's revocation of this card gets our "deleted" receipt
            with transaction(self.db):
                self.db.execute(*outbox.row(f"{OPTOUT}:{receipt_id}", OPTOUT,
                                            {"card_hash": h, "receipt_id": receipt_id, "shopper_id": shopper_id}))
                self.db.execute(_SET, (f"optout:{h}", receipt_id))

    def forget(self, shopper_id: str) -> None:
        self.db.execute("DELETE FROM fleet_links WHERE shopper_id = ?", (shopper_id,))

    def apply_revocation(self, revocation_id: str, card_hash: str) -> str:
        """Crypto-shred every local enrolment of this card through Terminal.revoke; queue the receipt.

        Safe to repeat after a crash: a link whose shopper is already gone still counts as deleted here,
        and the receipt row is written once (its id is the revocation's).
        """
        sids = [r[0] for r in self.db.execute("SELECT shopper_id FROM fleet_links WHERE card_hash = ?", (card_hash,))]
        receipts = []
        for sid in sids:
            if self.term.store.get(sid) is not None:
                receipts.append(self.term.revoke(sid, cause="fleet opt-out").id)
        own = self._get(f"optout:{card_hash}")  # the shopper opted out here: deleted before the fleet asked
        if own is not None:
            receipts.append(own)
        deleted, none_held = RECEIPT_STATES
        state = deleted if sids or own is not None else none_held
        with transaction(self.db):
            self.db.executemany("DELETE FROM fleet_links WHERE shopper_id = ?", [(s,) for s in sids])
            self.db.execute(*outbox.row(f"{RECEIPT}:{revocation_id}", RECEIPT,
                                        {"revocation_id": revocation_id, "state": state, "receipt_ids": receipts}))
        return state

    def linked_card_hashes(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT DISTINCT card_hash FROM fleet_links ORDER BY card_hash")]

    # -- staleness, hold, bad messages -----------------------------------------------------
    def _get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM fleet_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set(self, key: str, value: str) -> None:
        self.db.execute(_SET, (key, value))

    def reset_caught_up(self) -> None:
        """At agent start: a restored or copied folder's old "caught up" proves nothing about today."""
        self.db.execute("DELETE FROM fleet_state WHERE key = 'caught_up_at'")

    def set_hold(self, reason: str) -> None:
        """The back office paused face pay here (a rolled-back ledger) until staff clear it; '' clears."""
        if reason:
            self._set("hold", reason)
        else:
            self.db.execute("DELETE FROM fleet_state WHERE key = 'hold'")

    def hold(self) -> str | None:
        return self._get("hold")

    def count_bad_revocation(self) -> int:
        n = self.bad_revocations() + 1
        self._set("bad_revocations", str(n))
        return n

    def bad_revocations(self) -> int:
        return int(self._get("bad_revocations") or 0)

    def mark_caught_up(self, at: float | None = None) -> None:
        self._set("caught_up_at", repr(at if at is not None else time.time()))

    def caught_up_at(self) -> float | None:
        v = self._get("caught_up_at")
        return float(v) if v is not None else None

    def paused(self) -> bool:
        """Fail closed: no face pay until the revocation stream was read to its end within max_staleness_s."""
        t = self.caught_up_at()
        return t is None or time.time() - t > self.cfg.max_staleness_s or self.hold() is not None

    def backlog(self) -> int:
        return outbox.backlog(self.db) + outbox.backlog(self.term.journal.db)
