"""What a Terminal in a fleet keeps and does locally: fleet card links, opt-out codes, staleness.

Everything here is SQLite in the terminal's own ``facepay.db``; the network side is :mod:`.agent`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from ..payments.journal import with_tx
from . import outbox

PAUSED_MESSAGE = "Face pay paused: this terminal is offline"

# Crockford's base32 (https://www.crockford.com/base32.html): digits and capitals without I, L, O and U,
# so no code holds both a 0 and an O, or a 1 and an I or L.  Typed back, case does not matter and the
# letters people confuse with a digit are read as that digit.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_optout_code() -> str:
    """16 Crockford base32 characters (80 random bits) in groups of four: ``K7QM-3XPA-WD2R-9HNE``."""
    raw = "".join(secrets.choice(CROCKFORD) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normalise_code(code: str) -> str:
    """A typed code as it was issued: capitals, spaces and dashes dropped, O read as 0 and I or L as 1."""
    return "".join(ch for ch in code.upper() if ch.isalnum()).translate(_CONFUSABLE)


def code_hash(code: str) -> str:
    """What the back office stores and looks a typed code up by (the code itself is never stored)."""
    return hashlib.sha256(b"facepay-optout:" + normalise_code(code).encode()).hexdigest()


def fleet_card_hash(card_key_hex: str, uid: bytes) -> str:
    """The keyed hash that links one card's enrolments across the fleet (the fleet's key, not the terminal's)."""
    return hmac.new(bytes.fromhex(card_key_hex), b"fleet-card:" + uid, hashlib.sha256).hexdigest()


class FleetLink:
    def __init__(self, term):
        self.term = term
        self.cfg = term.cfg.fleet
        self.db = term.store.db
        term.journal.outbox = True
        term.ledger.outbox = True
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
        with_tx(self.db, [
            ("INSERT INTO fleet_links (shopper_id, card_hash, code_hash) VALUES (?,?,?)", (shopper.id, fleet_hash, ch)),
            outbox.row(f"enrol:{shopper.id}", "enrol", {"shopper_id": shopper.id, "card_hash": fleet_hash,
                                                        "code_hash": ch}),
        ])
        return code

    def card_hash_of(self, shopper_id: str) -> str | None:
        row = self.db.execute("SELECT card_hash FROM fleet_links WHERE shopper_id = ?", (shopper_id,)).fetchone()
        return row[0] if row else None

    def optout_requested(self, shopper_id: str, receipt_id: str) -> None:
        """A shopper opted out here (the "my data" screen or `facepay revoke`): ask the fleet to follow."""
        h = self.card_hash_of(shopper_id)
        if h is not None:
            self.db.execute(*outbox.row(f"optout:{receipt_id}", "optout",
                                        {"card_hash": h, "receipt_id": receipt_id, "shopper_id": shopper_id}))

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
        state = "deleted" if sids else "none-held"
        with_tx(self.db, [("DELETE FROM fleet_links WHERE shopper_id = ?", (s,)) for s in sids] + [
            outbox.row(f"receipt:{revocation_id}", "receipt",
                       {"revocation_id": revocation_id, "state": state, "receipt_ids": receipts})])
        return state

    # -- staleness -------------------------------------------------------------------
    def _get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM fleet_state WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO fleet_state (key, value) VALUES (?, ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))

    def mark_caught_up(self, at: float | None = None) -> None:
        self._set("caught_up_at", repr(at if at is not None else time.time()))

    def caught_up_at(self) -> float | None:
        v = self._get("caught_up_at")
        return float(v) if v is not None else None

    def paused(self) -> bool:
        """Fail closed: no face pay until the revocation stream was read to its end within max_staleness_s."""
        t = self.caught_up_at()
        return t is None or time.time() - t > self.cfg.max_staleness_s

    def backlog(self) -> int:
        return outbox.backlog(self.db) + outbox.backlog(self.term.journal.db)
