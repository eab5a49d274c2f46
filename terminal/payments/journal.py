"""The sales journal: every sale is written before the processor is called.

SQLite in WAL mode with ``synchronous=FULL``: a committed row survives a power
cut.  A sale moves pending -> approved | declined | cancelled.  Pending means
the outcome is not known yet (a crash, or no answer from the processor);
:func:`terminal.service.Terminal.recover` asks the processor about each one by
its idempotency key and settles it to the answer, or cancels it when no request
with that key ever arrived (nothing is charged after the shopper has left).  Voids and refunds go through
the same write-ahead steps in ``operations``.
"""

from __future__ import annotations

import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..datadir import connect, transaction
from ..errors import StorageError
from ..fleet import tables as fleet_tables
from ..schema import migrate
from .processor import IdempotencyKeyReused

SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    amount_minor INTEGER NOT NULL CHECK (amount_minor > 0),
    currency TEXT NOT NULL,
    method TEXT NOT NULL,
    shopper_id TEXT,
    token TEXT NOT NULL,
    training INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    reference TEXT NOT NULL DEFAULT '',
    settled_at TEXT
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY,
    sale_id TEXT NOT NULL,
    at TEXT NOT NULL,
    step TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS operations (
    key TEXT PRIMARY KEY,
    sale_id TEXT NOT NULL REFERENCES sales(id),
    kind TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    status TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL,
    settled_at TEXT
);
"""

# PRAGMA user_version steps (terminal/schema.py): index i moves version i to i + 1.
# Version 2: the fleet's outbox (empty outside a fleet).
MIGRATIONS = [SCHEMA, fleet_tables.OUTBOX]

# Each sale with its approved void and refunds, read in the same query.
_SALE_COLS = ("id, key, created_at, amount_minor, currency, method, shopper_id, token, training, status, "
              "reason, reference, settled_at, "
              "EXISTS (SELECT 1 FROM operations o WHERE o.sale_id = sales.id AND o.kind = 'void' "
              "AND o.status = 'approved'), "
              "(SELECT COALESCE(SUM(o.amount_minor), 0) FROM operations o WHERE o.sale_id = sales.id "
              "AND o.kind = 'refund' AND o.status = 'approved')")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def new_sale_id() -> str:
    return "sale_" + datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S") + "_" + secrets.token_hex(3)


class SaleNotRecorded(StorageError):
    """The sale could not be written to the journal, so the processor was never called: nothing was charged."""


@dataclass(frozen=True)
class SaleRecord:
    id: str
    key: str
    created_at: str
    amount_minor: int
    currency: str
    method: str
    shopper_id: str | None
    token: str
    training: bool
    status: str
    reason: str
    reference: str
    settled_at: str | None
    voided: bool = False
    refunded_minor: int = 0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("token")
        return d


class Journal:
    outbox = False  # set by terminal.fleet.link.FleetLink when the terminal is in a fleet

    def __init__(self, path: Path):
        self.path = path
        self.db = connect(path, wal=True, secure_delete=True)
        migrate(self.db, path, MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    def begin(self, sale_id: str, key: str, amount_minor: int, currency: str, method: str,
              shopper_id: str | None, token: str, training: bool) -> None:
        """Record the sale before anything else; a journal that cannot be written stops the sale here."""
        try:
            self._begin(sale_id, key, amount_minor, currency, method, shopper_id, token, training)
        except sqlite3.OperationalError as exc:
            raise SaleNotRecorded(f"the sale could not be recorded ({exc}): nothing was charged", str(self.path),
                               "free space on the SD card (`facepay doctor`), then take the payment again") from None
        except sqlite3.IntegrityError:
            raise IdempotencyKeyReused(key, f"the journal already holds a sale under this key (sale {sale_id}); "
                                            "this one was not sent: nothing was charged") from None

    def _begin(self, sale_id, key, amount_minor, currency, method, shopper_id, token, training) -> None:
        with transaction(self.db):
            self.db.execute(
                "INSERT INTO sales (id, key, created_at, amount_minor, currency, method, shopper_id, token, training,"
                " status) VALUES (?,?,?,?,?,?,?,?,?, 'pending')",
                (sale_id, key, _now(), amount_minor, currency, method, shopper_id, token, int(training)))
            self.db.execute("INSERT INTO steps (sale_id, at, step) VALUES (?,?, 'journaled')", (sale_id, _now()))

    def step(self, sale_id: str, step: str, detail: str = "") -> None:
        self.db.execute("INSERT INTO steps (sale_id, at, step, detail) VALUES (?,?,?,?)", (sale_id, _now(), step, detail))

    def settle(self, sale_id: str, status: str, reason: str, reference: str, via: str = "settled") -> None:
        with transaction(self.db):
            self.db.execute("UPDATE sales SET status=?, reason=?, reference=?, settled_at=? WHERE id=? AND status='pending'",
                            (status, reason, reference, _now(), sale_id))
            self.db.execute("INSERT INTO steps (sale_id, at, step, detail) VALUES (?,?,?,?)", (sale_id, _now(), via, status))
            if self.outbox:  # the same transaction queues the settled sale for the back office
                self.db.execute(*_fleet_sale_row(sale_id))

    @staticmethod
    def _sale(row) -> SaleRecord:
        return SaleRecord(*row[:8], bool(row[8]), *row[9:13], voided=bool(row[13]), refunded_minor=row[14])

    def get(self, sale_id: str) -> SaleRecord | None:
        row = self.db.execute(f"SELECT {_SALE_COLS} FROM sales WHERE id = ?", (sale_id,)).fetchone()
        return self._sale(row) if row else None

    def sales(self, since: str | None = None, until: str | None = None) -> list[SaleRecord]:
        sql, args = f"SELECT {_SALE_COLS} FROM sales", []
        if since:
            sql += " WHERE created_at >= ? AND created_at < ?"
            args = [since, until or "9999"]
        return [self._sale(r) for r in self.db.execute(sql + " ORDER BY created_at", args)]

    def pending(self) -> list[SaleRecord]:
        return [self._sale(r) for r in self.db.execute(
            f"SELECT {_SALE_COLS} FROM sales WHERE status='pending' ORDER BY created_at")]

    def last_sale(self) -> SaleRecord | None:
        row = self.db.execute(f"SELECT {_SALE_COLS} FROM sales ORDER BY created_at DESC LIMIT 1").fetchone()
        return self._sale(row) if row else None

    def steps(self, sale_id: str) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self.db.execute(
            "SELECT step, detail FROM steps WHERE sale_id=? ORDER BY id", (sale_id,))]

    def sales_of(self, shopper_id: str, token: str) -> list[str]:
        """The ids of the sales linked to a shopper or paid with their card token."""
        return [r[0] for r in self.db.execute("SELECT id FROM sales WHERE shopper_id = ? OR token = ?",
                                              (shopper_id, token))]

    def tombstone(self, shopper_id: str, token: str, marker: str) -> int:
        """An opt-out: the sales stay (the shop's books), their link to the shopper and card becomes ``marker``.

        Returns how many sales were changed; the caller scrubs the file (checkpoint, truncate).
        """
        cur = self.db.execute("UPDATE sales SET shopper_id = CASE WHEN shopper_id = ? THEN ? ELSE shopper_id END, "
                              "token = CASE WHEN token = ? THEN ? ELSE token END "
                              "WHERE shopper_id = ? OR token = ?",
                              (shopper_id, marker, token, marker, shopper_id, token))
        return cur.rowcount

    # -- voids and refunds --------------------------------------------------
    def begin_operation(self, key: str, sale_id: str, kind: str, amount_minor: int) -> None:
        self.db.execute("INSERT OR IGNORE INTO operations (key, sale_id, kind, amount_minor, status, created_at)"
                        " VALUES (?,?,?,?, 'pending', ?)", (key, sale_id, kind, amount_minor, _now()))

    def settle_operation(self, key: str, status: str, reason: str) -> None:
        self.db.execute("UPDATE operations SET status=?, reason=?, settled_at=? WHERE key=? AND status='pending'",
                        (status, reason, _now(), key))

    def operation(self, key: str) -> dict | None:
        row = self.db.execute("SELECT key, sale_id, kind, amount_minor, status, reason FROM operations WHERE key=?",
                              (key,)).fetchone()
        return dict(zip(("key", "sale_id", "kind", "amount_minor", "status", "reason"), row)) if row else None

    def pending_operations(self) -> list[dict]:
        rows = self.db.execute("SELECT key FROM operations WHERE status='pending'").fetchall()
        return [self.operation(r[0]) for r in rows]


def _fleet_sale_row(sale_id: str):
    from ..fleet import outbox

    return outbox.sale_row(sale_id)
