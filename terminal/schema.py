"""Schema versions of the terminal's SQLite databases, and the migration step run at every start.

Each database records its version in ``PRAGMA user_version``.  :func:`migrate`
runs the steps from the stored version up to the newest this code knows, each
in its own write transaction together with the new version number, so a
crash leaves either the old or the new version, never half of a step.  A data
folder from before versions existed has ``user_version = 0`` with tables in
it; the first step of every database only creates what is missing, so it
brings such a folder up as well.  A database written by a newer facepay (a
version higher than this code knows) is refused with one clear error: an old
program must not write to a schema it does not understand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .datadir import transaction
from .errors import StorageError

Step = str | Callable[[sqlite3.Connection], None]


@dataclass(frozen=True)
class Migration:
    found: int       # the version the database had when it was opened
    version: int     # the version it has now
    created: bool    # the database was empty: this process created it


def version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def _statements(script: str):
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                yield buf
            buf = ""
    if buf.strip() and not all(ln.strip().startswith("--") or not ln.strip() for ln in buf.splitlines()):
        raise ValueError(f"incomplete SQL statement in a migration: {buf.strip()[:60]!r}")


def migrate(conn: sqlite3.Connection, path: Path, steps: Sequence[Step],
            on_create: Callable[[sqlite3.Connection], None] | None = None) -> Migration:
    """Bring the database at ``path`` to ``len(steps)``; ``steps[i]`` moves version i to i + 1.

    ``on_create`` runs inside the first step's transaction when the database was empty
    (a new data folder), so what it writes exists exactly when the tables do.
    """
    target = len(steps)
    found = version(conn)
    if found > target:
        raise StorageError(
            f"{path.name} has schema version {found}, newer than this facepay knows ({target})", str(path),
            "it was written by a newer facepay: run that version (downgrades are not supported)")
    created = False
    for v in range(found, target):
        try:
            with transaction(conn):
                now = version(conn)  # another process may have migrated while we waited for the lock
                if now > target:
                    raise StorageError(f"{path.name} has schema version {now}, newer than this facepay knows "
                                       f"({target})", str(path), "run the newer facepay")
                if now == v:
                    empty = conn.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()[0] == 0
                    step = steps[v]
                    if callable(step):
                        step(conn)
                    else:
                        for stmt in _statements(step):
                            conn.execute(stmt)
                    if v == 0 and empty:
                        created = True
                        if on_create is not None:
                            on_create(conn)
                    conn.execute(f"PRAGMA user_version = {v + 1}")
        except sqlite3.OperationalError as exc:
            raise StorageError(f"cannot bring {path.name} to schema version {v + 1}: {exc}", str(path),
                               "check free space and the data folder's owner (`facepay doctor`)") from None
    return Migration(found, version(conn), created)
