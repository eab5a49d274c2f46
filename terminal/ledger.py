"""The consent ledger: an append-only, hash-chained record of every consent event.

Each row carries ``prev`` (the previous row's MAC) and ``mac`` =
HMAC-SHA256(ledger key, prev || canonical JSON of the row).  The ledger key is
derived from the terminal's master key, so someone holding only the database
cannot rewrite history and recompute the chain.  A head record (last sequence
number and MAC, itself MACed) catches removal of the newest rows.

Rows hold no biometric data: shopper ids, consent text hashes, amounts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from . import crypto

GENESIS = "0" * 64

EVENT_KINDS = (
    "consent_granted",      # enrolment: consent text version + hash
    "consent_revoked",      # opt-out: deletion receipt id
    "template_purged",      # retention purge: deletion receipt id
    "charge_confirmed",     # the shopper confirmed an amount on screen
    "charge_cancelled",     # the shopper cancelled, or the consent step timed out
    "mode_changed",         # staff switched terminal mode
    "face_pay_switched",    # face pay on/off for this terminal
    "liveness_failed",      # a head-turn challenge failed: reason, challenge, purpose (no biometric data)
    "liveness_cooldown",    # three failures in a row: face pay paused for a while
    "liveness_off",         # a face step ran with [liveness] required = false (demo, tests)
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS consent_ledger (
    seq INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev TEXT NOT NULL,
    mac TEXT NOT NULL
);
-- opt-outs are looked up by kind at every start and gallery load; charges make the ledger long
CREATE INDEX IF NOT EXISTS consent_ledger_kind ON consent_ledger(kind);
CREATE TABLE IF NOT EXISTS ledger_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    mac TEXT NOT NULL,
    head_mac TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class LedgerEvent:
    seq: int
    at: str
    kind: str
    subject: str
    details: dict
    prev: str
    mac: str

    def as_dict(self) -> dict:
        return {"seq": self.seq, "at": self.at, "kind": self.kind, "subject": self.subject,
                "details": self.details, "mac": self.mac}


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    count: int
    broken_seq: int | None = None
    reason: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class ConsentLedger:
    outbox = False  # set by terminal.fleet.link.FleetLink when the terminal is in a fleet

    def __init__(self, conn: sqlite3.Connection, master_key: bytes):
        self._conn = conn
        self._key = crypto.derive(master_key, "consent-ledger")
        conn.executescript(SCHEMA)

    def _mac(self, prev: str, seq: int, at: str, kind: str, subject: str, details: str) -> str:
        body = json.dumps([seq, at, kind, subject, details], separators=(",", ":"))
        return hmac.new(self._key, prev.encode() + body.encode(), hashlib.sha256).hexdigest()

    def _head_mac(self, seq: int, mac: str) -> str:
        return hmac.new(self._key, f"head:{seq}:{mac}".encode(), hashlib.sha256).hexdigest()

    def append(self, kind: str, subject: str = "", **details) -> LedgerEvent:
        """Append one event in its own transaction; returns it with its MAC."""
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown consent event kind {kind!r}")
        text = json.dumps(details, sort_keys=True, separators=(",", ":"))
        at = _now()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT seq, mac FROM consent_ledger ORDER BY seq DESC LIMIT 1").fetchone()
            seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
            mac = self._mac(prev, seq, at, kind, subject, text)
            conn.execute(
                "INSERT INTO consent_ledger (seq, at, kind, subject, details, prev, mac) VALUES (?,?,?,?,?,?,?)",
                (seq, at, kind, subject, text, prev, mac),
            )
            conn.execute(
                "INSERT INTO ledger_head (id, seq, mac, head_mac) VALUES (1, ?, ?, ?) "
                "ON CONFLICT(id) DO UPDATE SET seq=excluded.seq, mac=excluded.mac, head_mac=excluded.head_mac",
                (seq, mac, self._head_mac(seq, mac)),
            )
            if self.outbox:  # fleet hook: the same transaction queues the event for the back office
                from .fleet import outbox

                conn.execute(*outbox.row(f"ledger:{seq}:{mac[:16]}", "ledger", {
                    "seq": seq, "at": at, "kind": kind, "subject": subject, "details": details, "mac": mac}))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return LedgerEvent(seq, at, kind, subject, details, prev, mac)

    def events(self, kind: str | None = None, subject: str | None = None) -> list[LedgerEvent]:
        sql = "SELECT seq, at, kind, subject, details, prev, mac FROM consent_ledger"
        where, args = [], []
        if kind:
            where.append("kind = ?")
            args.append(kind)
        if subject:
            where.append("subject = ?")
            args.append(subject)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [LedgerEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def verify(self) -> VerifyResult:
        """Walk the chain in storage order; name the first row that was altered, removed or moved."""
        rows = self._conn.execute(
            "SELECT seq, at, kind, subject, details, prev, mac FROM consent_ledger ORDER BY rowid"
        ).fetchall()
        prev, expected_seq = GENESIS, 1
        for seq, at, kind, subject, details, stored_prev, mac in rows:
            if seq != expected_seq:
                return VerifyResult(False, len(rows), seq,
                                    f"entry {seq} found where entry {expected_seq} should be (removed or reordered)")
            if stored_prev != prev:
                return VerifyResult(False, len(rows), seq, f"entry {seq} does not follow entry {seq - 1}")
            if not hmac.compare_digest(self._mac(prev, seq, at, kind, subject, details), mac):
                return VerifyResult(False, len(rows), seq, f"entry {seq} was altered")
            prev, expected_seq = mac, seq + 1
        head = self._conn.execute("SELECT seq, mac, head_mac FROM ledger_head WHERE id = 1").fetchone()
        last = expected_seq - 1
        if head is None:
            if rows:
                return VerifyResult(False, len(rows), 1, "the ledger head record is missing")
            return VerifyResult(True, 0)
        hseq, hmac_, head_mac = head
        if not hmac.compare_digest(self._head_mac(hseq, hmac_), head_mac):
            return VerifyResult(False, len(rows), hseq, "the ledger head record was altered")
        if hseq != last or hmac_ != prev:
            return VerifyResult(False, len(rows), last + 1,
                                f"entries after {last} were removed (head says {hseq})")
        return VerifyResult(True, len(rows))
