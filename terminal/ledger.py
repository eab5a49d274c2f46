"""The consent ledger: an append-only, hash-chained record of every consent event.

Each row carries ``prev`` (the previous row's MAC) and ``mac`` =
HMAC-SHA256(ledger key, prev || canonical JSON of the row).  The ledger key is
derived from the terminal's master key, so someone holding only the database
cannot rewrite history and recompute the chain.

Three more checks close the ends of the chain:

- a **genesis** entry (terminal id, creation time, key id) is written in the
  same transaction that creates ``facepay.db``; a ledger without one (emptied,
  or replaced by rows of another key) does not verify;
- a **head** record in ``facepay.db`` (last sequence number and MAC, itself
  MACed) catches removal of the newest rows;
- an **anchor** in ``keystore.db`` holds the head's sequence number and MAC a
  second time.  The two files roll back separately: restoring an older
  ``facepay.db``, or cutting the chain back to an older head, leaves the
  anchor ahead of it, and verification fails.  (Rolling back both files
  together is caught only by an anchor off the device.)

Every event carries the channel it came through (``kiosk`` or ``cli``).  Rows
hold no biometric data and no names: shopper ids, consent text hashes, amounts.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone

from . import crypto
from .datadir import transaction

GENESIS = "0" * 64

EVENT_KINDS = (
    "genesis",              # the data folder was created: terminal id, creation time, key id
    "consent_granted",      # enrolment: consent text version + hash
    "consent_revoked",      # opt-out: deletion receipt id
    "template_purged",      # retention purge: deletion receipt id
    "charge_confirmed",     # the shopper confirmed an amount on screen
    "charge_cancelled",     # the shopper cancelled, or the consent step timed out
    "mode_changed",         # staff switched terminal mode
    "face_pay_switched",    # face pay on/off for this terminal
    "identification",       # a 1:N face search outside a payment (`facepay identify`): matched or not
    "enrolment_duplicate",  # the 1:N search before storing found the face enrolled already: nothing stored
    "phone_check_failed",   # wrong phone digits entered for a shopper
    "face_pay_suspended",   # too many wrong phone digits: face pay off for that shopper
    "face_pay_unlocked",    # the shopper tapped their card at "my data" and entered the digits
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
CREATE INDEX IF NOT EXISTS consent_ledger_subject ON consent_ledger(subject);
CREATE TABLE IF NOT EXISTS ledger_head (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    mac TEXT NOT NULL,
    head_mac TEXT NOT NULL
);
"""

# In keystore.db: the second copy of the head, which rolls back separately from facepay.db.
ANCHOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger_anchor (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL,
    mac TEXT NOT NULL,
    anchor_mac TEXT NOT NULL
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


def ledger_key(master_key: bytes) -> bytes:
    return crypto.derive(master_key, "consent-ledger")


def _mac(key: bytes, prev: str, seq: int, at: str, kind: str, subject: str, details: str) -> str:
    body = json.dumps([seq, at, kind, subject, details], separators=(",", ":"))
    return hmac.new(key, prev.encode() + body.encode(), hashlib.sha256).hexdigest()


def _head_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(key, f"head:{seq}:{mac}".encode(), hashlib.sha256).hexdigest()


def _anchor_mac(key: bytes, seq: int, mac: str) -> str:
    return hmac.new(key, f"anchor:{seq}:{mac}".encode(), hashlib.sha256).hexdigest()


def _insert(conn: sqlite3.Connection, key: bytes, kind: str, subject: str, details: dict) -> LedgerEvent:
    """Chain one row and move the head, inside the caller's write transaction."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown consent event kind {kind!r}")
    text = json.dumps(details, sort_keys=True, separators=(",", ":"))
    at = _now()
    row = conn.execute("SELECT seq, mac FROM consent_ledger ORDER BY seq DESC LIMIT 1").fetchone()
    seq, prev = (row[0] + 1, row[1]) if row else (1, GENESIS)
    mac = _mac(key, prev, seq, at, kind, subject, text)
    conn.execute("INSERT INTO consent_ledger (seq, at, kind, subject, details, prev, mac) VALUES (?,?,?,?,?,?,?)",
                 (seq, at, kind, subject, text, prev, mac))
    conn.execute(
        "INSERT INTO ledger_head (id, seq, mac, head_mac) VALUES (1, ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET seq=excluded.seq, mac=excluded.mac, head_mac=excluded.head_mac",
        (seq, mac, _head_mac(key, seq, mac)))
    return LedgerEvent(seq, at, kind, subject, details, prev, mac)


def genesis_details(master_key: bytes, terminal_id: str, channel: str, adopted: int = 0) -> dict:
    details: dict[str, object] = {"terminal_id": terminal_id, "created_at": _now(), "key_id": crypto.key_id(master_key),
               "channel": channel}
    if adopted:
        details["adopted_entries"] = adopted  # a data folder from before genesis entries: the chain so far
    return details


def write_genesis(conn: sqlite3.Connection, master_key: bytes, terminal_id: str, channel: str) -> LedgerEvent:
    """The first entry of a new data folder, inside the transaction that creates ``facepay.db``."""
    return _insert(conn, ledger_key(master_key), "genesis", "", genesis_details(master_key, terminal_id, channel))


class ConsentLedger:
    """The ledger in ``conn`` (facepay.db); ``anchor`` is the key store's connection, when there is one."""

    # Set by terminal.fleet.link.FleetLink when the terminal is in a fleet: called with the connection and
    # each new event inside the event's own transaction (it queues the event for the back office).
    on_append: Callable[[sqlite3.Connection, LedgerEvent], None] | None = None

    def __init__(self, conn: sqlite3.Connection, master_key: bytes, anchor: sqlite3.Connection | None = None,
                 channel: str = "cli"):
        self._conn = conn
        self._master = master_key
        self._key = ledger_key(master_key)
        self._anchor = anchor
        self.channel = channel
        conn.executescript(SCHEMA)
        if anchor is not None:
            anchor.executescript(ANCHOR_SCHEMA)

    def _mac(self, prev: str, seq: int, at: str, kind: str, subject: str, details: str) -> str:
        return _mac(self._key, prev, seq, at, kind, subject, details)

    def append(self, kind: str, subject: str = "", **details) -> LedgerEvent:
        """Append one event in its own transaction, then move the anchor; returns it with its MAC."""
        details.setdefault("channel", self.channel)
        conn = self._conn
        with transaction(conn):
            event = _insert(conn, self._key, kind, subject, details)
            if self.on_append is not None:
                self.on_append(conn, event)
        self._set_anchor(event.seq, event.mac)
        return event

    def adopt(self, terminal_id: str) -> LedgerEvent | None:
        """A data folder from before genesis entries: close its chain so far with one (once)."""
        if self._conn.execute("SELECT 1 FROM consent_ledger WHERE kind = 'genesis' LIMIT 1").fetchone():
            return None
        count = self._conn.execute("SELECT COUNT(*) FROM consent_ledger").fetchone()[0]
        return self.append("genesis", "", **genesis_details(self._master, terminal_id, self.channel, adopted=count))

    # -- the anchor in the key store ---------------------------------------------------
    def _set_anchor(self, seq: int, mac: str, start: bool = False) -> None:
        """Move the anchor forward (never back: another process may have moved it further already).

        Only :meth:`settle_anchor` may ``start`` a missing anchor: an ordinary append to a ledger
        whose key store lost its anchor must not quietly make a new one.  The key store runs
        without an on-disk journal for its data keys; this small write touches no page holding a
        key, so it runs with a rollback journal and survives a power cut.
        """
        a = self._anchor
        if a is None:
            return
        a.execute("PRAGMA journal_mode=DELETE")
        try:
            args = (seq, mac, _anchor_mac(self._key, seq, mac))
            if start:
                a.execute("INSERT OR IGNORE INTO ledger_anchor (id, seq, mac, anchor_mac) VALUES (1, ?, ?, ?)", args)
            a.execute("UPDATE ledger_anchor SET seq = ?, mac = ?, anchor_mac = ? WHERE id = 1 AND seq < ?",
                      (*args, seq))
        finally:
            a.execute("PRAGMA journal_mode=MEMORY")

    def head(self) -> tuple[int, str] | None:
        row = self._conn.execute("SELECT seq, mac FROM consent_ledger ORDER BY seq DESC LIMIT 1").fetchone()
        return (row[0], row[1]) if row else None

    def anchor(self) -> tuple[int, str, str] | None:
        if self._anchor is None:
            return None
        row = self._anchor.execute("SELECT seq, mac, anchor_mac FROM ledger_anchor WHERE id = 1").fetchone()
        return tuple(row) if row else None

    def settle_anchor(self, may_start: bool) -> str | None:
        """At start: set a missing anchor where that is safe, or finish a move a power cut interrupted.

        ``may_start``: the key store has just been created with the data folder, or is an old one
        being migrated.  A missing anchor beside a longer ledger is otherwise left missing
        (``keystore.db`` was replaced), and an anchor more than one entry behind is left as it is:
        both are for :meth:`verify` to report, not for the start to paper over.
        """
        head = self.head()
        if self._anchor is None or head is None:
            return None
        anchor = self.anchor()
        if anchor is None:
            if may_start or head[0] == 1:
                self._set_anchor(*head, start=True)
                return "started"
            return None
        aseq, amac, amac_mac = anchor
        if aseq == head[0] - 1 and hmac.compare_digest(_anchor_mac(self._key, aseq, amac), amac_mac):
            row = self._conn.execute("SELECT mac FROM consent_ledger WHERE seq = ?", (aseq,)).fetchone()
            if row and row[0] == amac:  # the ledger row was committed, the anchor write was cut off
                self._set_anchor(*head)
                return "moved"
        return None

    # -- reading ----------------------------------------------------------------------------
    def events(self, kind: str | None = None, subject: str | None = None,
               kinds: tuple[str, ...] = ()) -> list[LedgerEvent]:
        sql = "SELECT seq, at, kind, subject, details, prev, mac FROM consent_ledger"
        where: list[str] = []
        args: list[object] = []
        kinds = (kind,) if kind else kinds
        if kinds:
            where.append(f"kind IN ({','.join('?' * len(kinds))})")
            args.extend(kinds)
        if subject:
            where.append("subject = ?")
            args.append(subject)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self._conn.execute(sql + " ORDER BY rowid", args).fetchall()
        return [LedgerEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def verify(self) -> VerifyResult:
        """Walk the chain in storage order; name the first row that was altered, removed or moved.

        Then check both ends: a genesis entry at the start, and the head record and the key
        store's anchor both at the last entry.
        """
        rows = self._conn.execute(
            "SELECT seq, at, kind, subject, details, prev, mac FROM consent_ledger ORDER BY rowid"
        ).fetchall()
        prev, expected_seq = GENESIS, 1
        genesis_seq = None
        for seq, at, kind, subject, details, stored_prev, mac in rows:
            if seq != expected_seq:
                return VerifyResult(False, len(rows), seq,
                                    f"entry {seq} found where entry {expected_seq} should be (removed or reordered)")
            if stored_prev != prev:
                return VerifyResult(False, len(rows), seq, f"entry {seq} does not follow entry {seq - 1}")
            if not hmac.compare_digest(self._mac(prev, seq, at, kind, subject, details), mac):
                return VerifyResult(False, len(rows), seq, f"entry {seq} was altered")
            if kind == "genesis" and genesis_seq is None:
                if seq != 1 and json.loads(details).get("adopted_entries") != seq - 1:
                    return VerifyResult(False, len(rows), seq, f"entry {seq} is a genesis entry in mid-chain")
                genesis_seq = seq
            prev, expected_seq = mac, seq + 1
        if genesis_seq is None:
            return VerifyResult(False, len(rows), 1, "the ledger has no genesis entry: it was emptied or replaced"
                                if rows else "the ledger is empty: its genesis entry is gone (emptied or replaced)")
        head = self._conn.execute("SELECT seq, mac, head_mac FROM ledger_head WHERE id = 1").fetchone()
        last = expected_seq - 1
        if head is None:
            return VerifyResult(False, len(rows), 1, "the ledger head record is missing")
        hseq, hmac_, head_mac = head
        if not hmac.compare_digest(_head_mac(self._key, hseq, hmac_), head_mac):
            return VerifyResult(False, len(rows), hseq, "the ledger head record was altered")
        if hseq != last or hmac_ != prev:
            return VerifyResult(False, len(rows), last + 1,
                                f"entries after {last} were removed (head says {hseq})")
        if self._anchor is not None:
            anchor = self.anchor()
            if anchor is None:
                return VerifyResult(False, len(rows), last + 1,
                                    "keystore.db holds no anchor for the ledger (keystore.db was replaced or reset)")
            aseq, amac, amac_mac = anchor
            if not hmac.compare_digest(_anchor_mac(self._key, aseq, amac), amac_mac):
                return VerifyResult(False, len(rows), aseq, "the ledger anchor in keystore.db was altered")
            if (aseq, amac) != (last, prev):
                where = (f"the anchor in keystore.db is at entry {aseq} but the ledger ends at entry {last}"
                         if aseq != last else f"entry {last} is not the entry the anchor in keystore.db names")
                return VerifyResult(False, len(rows), min(aseq, last) + 1,
                                    where + ": facepay.db or keystore.db was restored from an older copy, "
                                    "or the chain was cut back")
        return VerifyResult(True, len(rows))
