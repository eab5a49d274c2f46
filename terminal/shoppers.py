"""Enrolled shoppers and their encrypted face templates.

``facepay.db`` holds, per shopper: a random id, the name, the card's keyed
hash and masked form, the processor token, a salted keyed hash of the phone's
last four digits, and the template sealed with AES-GCM under the shopper's own
data key.  The data key lives wrapped in ``keystore.db``.  Deleting a shopper
deletes the data key and the row, then scrubs both files: ``secure_delete``
overwrites the deleted cells, ``facepay.db``'s write-ahead log is checkpointed
and truncated, and both databases are rebuilt with VACUUM, so no file in the
data folder still holds the shopper's name, card, token, phone hash, sealed
template or wrapped key.  The key store keeps its rollback journal in memory,
so a key is never copied to a journal file.  The template cannot be recovered
from any copy of ``facepay.db``, old or new, once the key is gone.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from . import crypto, ledger
from .datadir import connect, transaction
from .errors import StorageError
from .face.matcher import Gallery
from .fleet import tables as fleet_tables
from .schema import migrate

SCHEMA = """
CREATE TABLE IF NOT EXISTS shoppers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    card_hash TEXT NOT NULL UNIQUE,
    card_mask TEXT NOT NULL,
    token TEXT NOT NULL,
    phone_salt BLOB,
    phone_hash TEXT,
    template BLOB NOT NULL,
    captures INTEGER NOT NULL,
    consent_version TEXT NOT NULL,
    consent_hash TEXT NOT NULL,
    enrolled_at TEXT NOT NULL,
    last_used_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deletion_receipts (
    id TEXT PRIMARY KEY,
    shopper_id TEXT NOT NULL,
    at TEXT NOT NULL,
    cause TEXT NOT NULL,
    deleted TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

KEYSTORE_SCHEMA = "CREATE TABLE IF NOT EXISTS data_keys (shopper_id TEXT PRIMARY KEY, wrapped BLOB NOT NULL);"

# PRAGMA user_version steps (terminal/schema.py): index i moves version i to i + 1.
# Version 2: the fleet's tables (empty outside a fleet).
FACEPAY_MIGRATIONS = [SCHEMA + ledger.SCHEMA, fleet_tables.LINKS + fleet_tables.OUTBOX]
KEYSTORE_MIGRATIONS = [KEYSTORE_SCHEMA + ledger.ANCHOR_SCHEMA]


def _now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Shopper:
    id: str
    name: str
    card_hash: str
    card_mask: str
    token: str
    phone_salt: bytes | None
    phone_hash: str | None
    captures: int
    consent_version: str
    consent_hash: str
    enrolled_at: str
    last_used_at: str

    @property
    def masked_name(self) -> str:
        """What the consent screen shows: first name and the initial of the last ("Barack O.")."""
        parts = self.name.split()
        if len(parts) == 1:
            return parts[0][:1] + "•" * max(2, len(parts[0]) - 1)
        return f"{parts[0]} {parts[-1][0]}."

    def public(self) -> dict:
        """Everything `facepay shoppers list` may print: no biometric data, no card hash."""
        return {"shopper_id": self.id, "name": self.name, "card": self.card_mask,
                "phone_step_up": self.phone_hash is not None, "captures": self.captures,
                "consent_version": self.consent_version, "enrolled_at": self.enrolled_at,
                "last_used_at": self.last_used_at}


@dataclass(frozen=True)
class DeletionReceipt:
    id: str
    shopper_id: str
    at: str
    cause: str
    deleted: list[str]

    def as_dict(self) -> dict:
        return {"receipt_id": self.id, "shopper_id": self.shopper_id, "at": self.at,
                "cause": self.cause, "deleted": self.deleted}


_COLS = ("id, name, card_hash, card_mask, token, phone_salt, phone_hash, captures, "
         "consent_version, consent_hash, enrolled_at, last_used_at")


class ShopperStore:
    def __init__(self, data_dir: Path, master_key: bytes, on_create=None):
        """Open (and create or migrate) both databases; ``on_create(conn)`` runs in the transaction
        that creates a new ``facepay.db`` (the ledger's genesis entry)."""
        self._master = master_key
        self._wrap_key = crypto.derive(master_key, "data-key-wrap")
        # Keys: the rollback journal stays in memory, never a copy of a key page in a file (docs/privacy.md).
        self.keys = connect(data_dir / "keystore.db", secure_delete=True, journal="MEMORY")
        try:
            self._check_keystore(data_dir / "keystore.db")
            self.keys_migration = migrate(self.keys, data_dir / "keystore.db", KEYSTORE_MIGRATIONS)
        except sqlite3.DatabaseError as exc:
            self._damaged(data_dir / "keystore.db", str(exc))
        self.db = connect(data_dir / "facepay.db", wal=True, secure_delete=True)
        self.migration = migrate(self.db, data_dir / "facepay.db", FACEPAY_MIGRATIONS, on_create=on_create)
        if self.settings().get("scrub_pending"):
            self.scrub()  # an opt-out's scrub could not finish (another process held the database)

    def _check_keystore(self, path: Path) -> None:
        """Without an on-disk journal a power cut during a key write can damage the file: say so plainly."""
        result = self.keys.execute("PRAGMA quick_check").fetchone()[0]
        if result != "ok":
            self._damaged(path, result)

    @staticmethod
    def _damaged(path: Path, why: str):
        why = " ".join(why.replace("*** in database main ***", "").split())
        raise StorageError(
            f"keystore.db is damaged ({why}): no face template can be decrypted", str(path),
            "delete keystore.db; at the next start every enrolment is closed with a deletion receipt "
            "and shoppers enrol again (docs/privacy.md)") from None

    def close(self) -> None:
        self.db.close()
        self.keys.close()

    # -- reading ---------------------------------------------------------
    def _shopper(self, row) -> Shopper | None:
        return Shopper(*row) if row else None

    def get(self, shopper_id: str) -> Shopper | None:
        return self._shopper(self.db.execute(f"SELECT {_COLS} FROM shoppers WHERE id = ?", (shopper_id,)).fetchone())

    def by_card(self, uid: bytes) -> Shopper | None:
        return self.by_card_hash(crypto.card_hash(self._master, uid))

    def by_card_hash(self, h: str) -> Shopper | None:
        return self._shopper(self.db.execute(f"SELECT {_COLS} FROM shoppers WHERE card_hash = ?", (h,)).fetchone())

    def all(self) -> list[Shopper]:
        return [Shopper(*r) for r in self.db.execute(f"SELECT {_COLS} FROM shoppers ORDER BY enrolled_at")]

    def data_version(self) -> int:
        """Changes whenever another connection commits to facepay.db."""
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM shoppers").fetchone()[0]

    def template(self, shopper_id: str) -> np.ndarray:
        """Decrypt one template; ``KeyError`` if the shopper or their data key is gone."""
        row = self.db.execute("SELECT template FROM shoppers WHERE id = ?", (shopper_id,)).fetchone()
        key_row = self.keys.execute("SELECT wrapped FROM data_keys WHERE shopper_id = ?", (shopper_id,)).fetchone()
        if row is None or key_row is None:
            raise KeyError(shopper_id)
        return self.decrypt_template(shopper_id, row[0], key_row[0])

    def decrypt_template(self, shopper_id: str, sealed: bytes, wrapped: bytes) -> np.ndarray:
        data_key = crypto.open_sealed(self._wrap_key, wrapped, shopper_id.encode())
        raw = crypto.open_sealed(data_key, sealed, b"template:" + shopper_id.encode())
        return np.frombuffer(raw, dtype=np.float32).copy()

    def gallery(self, exclude: set[str] = frozenset()) -> Gallery:
        ids, rows = [], []
        for sid, sealed in self.db.execute("SELECT id, template FROM shoppers ORDER BY id"):
            if sid in exclude:
                continue
            key_row = self.keys.execute("SELECT wrapped FROM data_keys WHERE shopper_id = ?", (sid,)).fetchone()
            if key_row is None:  # a half-finished deletion: treat as deleted
                continue
            ids.append(sid)
            rows.append(self.decrypt_template(sid, sealed, key_row[0]))
        return Gallery(ids, np.vstack(rows) if rows else np.zeros((0, 128), np.float32))

    def check_phone(self, shopper: Shopper, digits: str) -> bool:
        if shopper.phone_hash is None:
            return True
        return secrets.compare_digest(crypto.phone_digest(self._master, shopper.phone_salt, digits), shopper.phone_hash)

    # -- writing ---------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        return "shp_" + secrets.token_hex(6)

    @staticmethod
    def new_receipt_id() -> str:
        return "del_" + secrets.token_hex(8)

    def add(self, *, sid: str, name: str, card_hash: str, card_mask: str, token: str, template: np.ndarray,
            captures: int, consent_version: str, consent_hash: str, phone_last4: str | None) -> Shopper:
        data_key = crypto.new_data_key()
        sealed = crypto.seal(data_key, np.asarray(template, np.float32).tobytes(), b"template:" + sid.encode())
        wrapped = crypto.seal(self._wrap_key, data_key, sid.encode())
        salt = phone_hash = None
        if phone_last4:
            salt = os.urandom(16)
            phone_hash = crypto.phone_digest(self._master, salt, phone_last4)
        now = _now().isoformat(timespec="seconds")
        self.keys.execute("INSERT INTO data_keys (shopper_id, wrapped) VALUES (?, ?)", (sid, wrapped))
        try:
            self.db.execute(
                f"INSERT INTO shoppers ({_COLS}, template) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (sid, name, card_hash, card_mask, token, salt, phone_hash,
                 captures, consent_version, consent_hash, now, now, sealed),
            )
        except sqlite3.IntegrityError:
            self.keys.execute("DELETE FROM data_keys WHERE shopper_id = ?", (sid,))
            raise
        return self.get(sid)

    def touch(self, shopper_id: str) -> None:
        self.db.execute("UPDATE shoppers SET last_used_at = ? WHERE id = ?",
                        (_now().isoformat(timespec="seconds"), shopper_id))

    @staticmethod
    def deletion_list(shopper: Shopper) -> list[str]:
        """What deleting this shopper destroys, in words for the receipt."""
        return [
            f"face template ({shopper.captures} captures, averaged) and its encryption key",
            "name", "card link", "payment token",
        ] + (["phone check"] if shopper.phone_hash else [])

    def drop_orphan_keys(self) -> int:
        """Data keys with no shopper (an enrolment cut off before its row was written): useless, removed."""
        known = {r[0] for r in self.db.execute("SELECT id FROM shoppers")}
        orphans = [r[0] for r in self.keys.execute("SELECT shopper_id FROM data_keys") if r[0] not in known]
        for sid in orphans:
            self.keys.execute("DELETE FROM data_keys WHERE shopper_id = ?", (sid,))
        return len(orphans)

    def has_key(self, shopper_id: str) -> bool:
        return self.keys.execute("SELECT 1 FROM data_keys WHERE shopper_id = ?", (shopper_id,)).fetchone() is not None

    def delete(self, shopper_id: str, cause: str, receipt_id: str | None = None) -> DeletionReceipt:
        """Crypto-shred: destroy the data key first, then the row and write the receipt (one transaction).

        Safe to run again after a crash at any point: a row whose key is gone is finished off.
        The scrub is left to the caller (:meth:`scrub`; a purge of many shoppers scrubs once, at the end);
        until it has run, ``scrub_pending`` is set.
        """
        from . import failpoints

        shopper = self.get(shopper_id)
        if shopper is None:
            raise KeyError(shopper_id)
        self.keys.execute("DELETE FROM data_keys WHERE shopper_id = ?", (shopper_id,))
        failpoints.hit("after_data_key_deleted")
        deleted = self.deletion_list(shopper)
        receipt = DeletionReceipt(receipt_id or self.new_receipt_id(), shopper_id,
                                  _now().isoformat(timespec="seconds"), cause, deleted)
        with transaction(self.db):
            self.db.execute("DELETE FROM shoppers WHERE id = ?", (shopper_id,))
            self.db.execute("INSERT INTO deletion_receipts (id, shopper_id, at, cause, deleted) VALUES (?,?,?,?,?)",
                            (receipt.id, shopper_id, receipt.at, cause, json.dumps(deleted)))
            # until the scrub has run, a crash or power cut leaves this mark for the next start to finish it
            self.set_setting("scrub_pending", True)  # a plain statement: committed with the rest below
        return receipt

    def scrub(self) -> bool:
        """Leave no deleted bytes in either file: checkpoint and truncate the WAL, VACUUM both databases.

        ``secure_delete`` zeroes deleted cells in the database file, but earlier copies of the
        page stay in ``facepay.db-wal`` until a checkpoint, and in free space until a VACUUM.
        Returns False (and remembers to try again at the next start) when another process kept
        the WAL from being truncated.
        """
        self.keys.execute("VACUUM")
        self.db.execute("DELETE FROM settings WHERE key = 'scrub_pending'")
        if scrub_wal_database(self.db):
            return True
        self.set_setting("scrub_pending", True)
        return False

    def receipt(self, receipt_id: str) -> DeletionReceipt | None:
        row = self.db.execute("SELECT id, shopper_id, at, cause, deleted FROM deletion_receipts WHERE id = ?",
                              (receipt_id,)).fetchone()
        return DeletionReceipt(row[0], row[1], row[2], row[3], json.loads(row[4])) if row else None

    def unused_since(self, days: int, now: datetime | None = None) -> list[Shopper]:
        cutoff = ((now or _now()) - timedelta(days=days)).isoformat(timespec="seconds")
        return [Shopper(*r) for r in self.db.execute(
            f"SELECT {_COLS} FROM shoppers WHERE last_used_at < ? ORDER BY last_used_at", (cutoff,))]

    def settings(self) -> dict:
        return {k: json.loads(v) for k, v in self.db.execute("SELECT key, value FROM settings")}

    def set_setting(self, key: str, value) -> None:
        self.db.execute("INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                        (key, json.dumps(value)))


def scrub_wal_database(db: sqlite3.Connection, vacuum: bool = True) -> bool:
    """Checkpoint a WAL database into its file and truncate the WAL to zero bytes (then VACUUM, and again).

    False if another connection's reader kept the WAL from being emptied within the busy timeout.
    """
    def truncate() -> bool:
        busy, _, _ = db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        return busy == 0

    if not truncate():
        return False
    if vacuum:
        db.execute("VACUUM")  # in WAL mode the rebuilt file goes through the WAL: truncate once more
        return truncate()
    return True
