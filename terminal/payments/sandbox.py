"""The sandbox processor: a gateway that runs inside the terminal, with its own ledger.

It keeps every request in ``sandbox-processor.db`` and behaves like a real
gateway, by documented rules:

- an amount whose minor units end in 13 (``12.13``) is declined: "insufficient funds";
- an amount ending in 51 is declined: "do not honour";
- a card token on the blocked list (``facepay processor block``) is declined: "card reported stolen";
- a fault set with ``facepay processor fault``: ``timeout`` (the charge is made
  but the answer is lost, as on a dropped connection; asking by key finds it),
  ``fail`` (the gateway cannot be reached: nothing arrives, every call fails,
  lookups too), ``partition`` (the charge is made, then the line drops: no answer,
  and lookups fail until the fault is cleared), ``none``;
- it knows what it received: ``lookup(key)`` answers with the request held under
  the key, or None when nothing arrived with it;
- the same idempotency key returns the earlier result; the same key with a
  different request (another amount, card or kind) raises
  :class:`IdempotencyKeyReused` and charges nothing;
- ``cancel(key)`` closes a key the terminal gave up on: a charge already made
  under it is returned unchanged, else a charge arriving later with it charges
  nothing;
- training sales are approved and marked training (no money moves).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from ..datadir import connect, transaction
from ..money import format_amount
from ..schema import migrate
from .processor import IdempotencyKeyReused, Outcome, Processor, ProcessorTimeout, ProcessorUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    target TEXT,
    token TEXT,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL,
    reference TEXT NOT NULL,
    training INTEGER NOT NULL,
    at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocked_tokens (token TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS sandbox_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

MIGRATIONS = [SCHEMA]  # PRAGMA user_version steps (terminal/schema.py)

FAULTS = ("none", "timeout", "fail", "partition")
_PAST = {"void": "voided", "refund": "refunded"}
_COLS = "key, kind, status, reason, reference, amount_minor, currency, training"


class SandboxProcessor(Processor):
    name = "sandbox"

    def __init__(self, path: Path, secret: bytes):
        self.path = path
        self._secret = secret
        self.db = connect(path, wal=True)
        migrate(self.db, path, MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    # -- configuration ------------------------------------------------------
    def set_fault(self, fault: str) -> None:
        if fault not in FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FAULTS)}")
        self.db.execute("INSERT INTO sandbox_settings VALUES ('fault', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value=excluded.value", (fault,))

    def fault(self) -> str:
        row = self.db.execute("SELECT value FROM sandbox_settings WHERE key='fault'").fetchone()
        return row[0] if row else "none"

    def block(self, token: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO blocked_tokens VALUES (?)", (token,))

    # -- the gateway ---------------------------------------------------------
    def tokenize(self, card_hash: str) -> str:
        return "tok_" + hmac.new(self._secret, card_hash.encode(), hashlib.sha256).hexdigest()[:24]

    def _row(self, key: str) -> Outcome | None:
        r = self.db.execute(f"SELECT {_COLS} FROM requests WHERE key = ?", (key,)).fetchone()
        return Outcome(r[0], r[1], r[2], r[3], r[4], r[5], r[6], bool(r[7])) if r else None

    def lookup(self, key: str) -> Outcome | None:
        if (fault := self.fault()) in ("fail", "partition"):
            raise ProcessorUnavailable(f"sandbox processor cannot be reached (fault={fault})")
        return self._row(key)

    def cancel(self, key: str) -> Outcome:
        if (fault := self.fault()) in ("fail", "partition"):
            raise ProcessorUnavailable(f"sandbox processor cannot be reached (fault={fault})")
        with transaction(self.db):
            out = self._row(key)
            if out is None:
                out = self._record(key, "cancel", None, None, 0, "", "cancelled",
                                   "closed by the terminal before any request arrived", False)
        return out

    def _record(self, key, kind, target, token, amount, currency, status, reason, training) -> Outcome:
        ref = "sbx_" + secrets.token_hex(6)
        at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.db.execute(
            "INSERT INTO requests (key, kind, target, token, amount_minor, currency, status, reason, reference, training, at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (key, kind, target, token, amount, currency, status, reason, ref, int(training), at),
        )
        return Outcome(key, kind, status, reason, ref, amount, currency, training)

    def _replay(self, key: str, kind: str, target: str | None, token: str | None, amount: int,
                currency: str) -> Outcome | None:
        r = self.db.execute("SELECT kind, target, token, amount_minor, currency FROM requests WHERE key = ?",
                            (key,)).fetchone()
        if r is None:
            return None
        if r[0] == "cancel" and kind == "charge":
            return self._row(key)  # closed by the terminal: this late request charges nothing
        if (r[0], r[1], r[2], r[3]) != (kind, target, token, amount):
            held = f"a {r[0]} of {format_amount(r[3], r[4])}" + (" for another card" if r[3] == amount else "")
            raise IdempotencyKeyReused(key, f"the processor already holds {held} under this key and refused "
                                            f"a {kind} of {format_amount(amount, currency)}: nothing was charged")
        return self._row(key)

    def _gate(self) -> str:
        fault = self.fault()
        if fault == "fail":
            raise ProcessorUnavailable("sandbox processor cannot be reached (fault=fail)")
        return fault

    def charge(self, key, token, amount_minor, currency, *, training=False) -> Outcome:
        fault = self._gate()
        with transaction(self.db):
            out = self._replay(key, "charge", None, token, amount_minor, currency)
            if out is None:
                blocked = self.db.execute("SELECT 1 FROM blocked_tokens WHERE token = ?", (token,)).fetchone()
                if training:
                    status, reason = "approved", "training"
                elif blocked:
                    status, reason = "declined", "card reported stolen"
                elif amount_minor % 100 == 13:
                    status, reason = "declined", "insufficient funds"
                elif amount_minor % 100 == 51:
                    status, reason = "declined", "do not honour"
                else:
                    status, reason = "approved", ""
                out = self._record(key, "charge", None, token, amount_minor, currency, status, reason, training)
        if fault == "timeout":
            raise ProcessorTimeout("sandbox processor timed out after making the charge (fault=timeout)")
        if fault == "partition":
            raise ProcessorUnavailable("the connection to the sandbox processor dropped after it made the charge "
                                       "(fault=partition)")
        return out

    def _reverse(self, kind: str, key: str, charge_key: str, amount: int | None) -> Outcome:
        self._gate()
        with transaction(self.db):
            original = self._row(charge_key)
            if original is None or original.kind != "charge":
                raise ValueError(f"no charge with key {charge_key}")
            amount = original.amount_minor if amount is None else amount
            out = self._replay(key, kind, charge_key, None, amount, original.currency)
            if out is None:
                done = self.db.execute(
                    "SELECT kind FROM requests WHERE target = ? AND status = 'approved'", (charge_key,)).fetchone()
                if original.status != "approved":
                    status, reason = "declined", "the charge was not approved"
                elif done:
                    status, reason = "declined", f"the charge was already {_PAST[done[0]]}"
                elif amount > original.amount_minor:
                    status, reason = "declined", "refund larger than the charge"
                else:
                    status, reason = "approved", ""
                out = self._record(key, kind, charge_key, None, amount, original.currency, status, reason,
                                   original.training)
        return out

    def void(self, key, charge_key) -> Outcome:
        return self._reverse("void", key, charge_key, None)

    def refund(self, key, charge_key, amount_minor) -> Outcome:
        return self._reverse("refund", key, charge_key, amount_minor)

    def charges(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT key, kind, target, token, amount_minor, currency, status, reason, reference, training, at"
            " FROM requests ORDER BY rowid").fetchall()
        names = ("key", "kind", "target", "token", "amount_minor", "currency", "status", "reason",
                 "reference", "training", "at")
        return [dict(zip(names, r)) | {"training": bool(r[9])} for r in rows]


__all__ = ["SandboxProcessor", "FAULTS", "sqlite3"]
