"""The outbox: an event row written in the same SQLite transaction as the sale or ledger event it reports.

The agent drains it to JetStream with the row id as ``Nats-Msg-Id`` and marks the row sent after the
server's acknowledgement.  A crash between the acknowledgement and the mark only repeats a publish, which
the stream's duplicate window drops and the back office ignores (it stores each event once by id).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone

from .contract import LEDGER

# A settled sale as the back office stores it; selected inside the settling transaction.
SALE_EVENT_SQL = (
    "INSERT OR IGNORE INTO fleet_outbox (id, kind, payload, created_at) "
    "SELECT 'sale:' || id, 'sale', json_object('sale_id', id, 'created_at', created_at, "
    "'amount_minor', amount_minor, 'currency', currency, 'method', method, 'training', training, "
    "'status', status, 'settled_at', settled_at), ? FROM sales WHERE id = ? AND status != 'pending'"
)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def row(event_id: str, kind: str, payload: dict) -> tuple[str, tuple]:
    """The statement that queues one event; run it inside the event's own transaction."""
    return ("INSERT OR IGNORE INTO fleet_outbox (id, kind, payload, created_at) VALUES (?,?,?,?)",
            (event_id, kind, json.dumps(payload, sort_keys=True, separators=(",", ":")), now()))


def sale_row(sale_id: str) -> tuple[str, tuple]:
    return SALE_EVENT_SQL, (now(), sale_id)


def unsent(conn, limit: int = 200) -> list[tuple[int, str, str, str]]:
    return conn.execute("SELECT seq, id, kind, payload FROM fleet_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
                        (limit,)).fetchall()


def mark_sent(conn, seq: int) -> None:
    conn.execute("UPDATE fleet_outbox SET sent_at = ? WHERE seq = ?", (now(), seq))


def backlog(conn) -> int:
    return conn.execute("SELECT COUNT(*) FROM fleet_outbox WHERE sent_at IS NULL").fetchone()[0]


def queue_ledger_event(conn, event) -> None:
    """The consent ledger's hook in a fleet (``ConsentLedger.on_append``): queues ``event`` in the
    transaction that appends it."""
    conn.execute(*row(f"{LEDGER}:{event.seq}:{event.mac[:16]}", LEDGER, {
        "seq": event.seq, "at": event.at, "kind": event.kind, "subject": event.subject, "details": event.details,
        "mac": event.mac}))
