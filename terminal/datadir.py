"""Where the terminal keeps its data, and the secret files in it.

Layout of the data directory (mode 0700)::

    master.key            32 random bytes, mode 0600: wraps every data key
    keystore.db           per-shopper data keys, wrapped (secure_delete on)
    facepay.db            shoppers, encrypted templates, the consent ledger
    journal.db            the sales journal (WAL, synchronous=FULL)
    sandbox-processor.db  the sandbox payment processor's own ledger

Whatever the umask, the folder is made 0700 and every file the terminal creates in it 0600 (SQLite's
``-wal``/``-shm``/``-journal`` files take their database's mode); a folder that others can read or enter
is refused at start (:func:`ensure_data_dir`), and ``facepay doctor`` reports any file in it that others
can read.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
from pathlib import Path

from .errors import StorageError

MASTER_KEY_FILE = "master.key"


def resolve_data_dir(flag: str | None, config_dir: str = "") -> Path:
    """``--data-dir``, else ``$FACEPAY_DATA_DIR``, else the config's ``data_dir``, else per-user."""
    chosen = flag or os.environ.get("FACEPAY_DATA_DIR") or config_dir
    if not chosen:
        base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        chosen = os.path.join(base, "facepay")
    return Path(chosen).expanduser()


def ensure_data_dir(path: Path) -> Path:
    """Create the data directory (0700, whatever the umask) if missing; refuse one that is not a writable
    folder, or one that group or others can read, write or enter."""
    try:
        fresh = not path.exists()
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        if fresh:
            os.chmod(path, 0o700)
    except FileExistsError:
        raise StorageError("exists but is not a folder", str(path), "pass --data-dir with a folder") from None
    except PermissionError:
        raise StorageError("cannot create the data folder", str(path), "check permissions or pass --data-dir") from None
    except OSError as exc:
        raise StorageError(f"cannot create the data folder: {exc.strerror}", str(path)) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StorageError("data folder is not writable", str(path), "check its owner and mode")
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """Refuse a data folder that group or others can use: names, tokens, sealed templates and wrapped keys
    would be readable by other users of the machine."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise StorageError(f"data folder has mode {mode:04o}: group or others can open it; it must be 0700",
                           str(path), f"run: chmod 700 {path}")


def private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if missing; an existing file others can read is made 0600."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.chmod(path, 0o600)  # the umask may have taken bits away
    except FileExistsError:
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            os.chmod(path, 0o600)


def write_private(path: Path, text: str) -> None:
    """Write a small file whole (a temporary file renamed over it), mode 0600 whatever the umask."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    tmp.replace(path)


def load_or_create_master_key(data_dir: Path) -> bytes:
    """Read the master key, creating it (mode 0600, atomically) on first run.

    A key that is readable by other users, or of the wrong length, is refused:
    the terminal will not run on a leaked or damaged key.
    """
    path = data_dir / MASTER_KEY_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        try:
            os.write(fd, os.urandom(32))
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            path.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StorageError("disk full while creating the master key", str(path), "free some space") from None
            raise
        os.close(fd)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise StorageError(
            f"master key has mode {stat.S_IMODE(st.st_mode):04o}; it must be 0600", str(path),
            f"run: chmod 600 {path}",
        )
    key = path.read_bytes()
    if len(key) != 32:
        raise StorageError(
            f"master key is {len(key)} bytes, expected 32", str(path),
            "restore it from backup; without it no template can be read",
        )
    return key


def connect(path: Path, *, wal: bool = False, secure_delete: bool = False,
            journal: str | None = None) -> sqlite3.Connection:
    """Open a SQLite database with the terminal's settings; errors name the file.

    ``secure_delete`` also keeps SQLite's temporary files (VACUUM's copy of the
    database) in memory, so no copy of a database holding personal data is
    written outside it.  ``journal`` sets another rollback-journal mode
    (the key store uses ``MEMORY``: see docs/privacy.md).
    """
    try:
        private_file(path)  # SQLite gives its -wal, -shm and -journal files the database's own mode
        for side in ("-wal", "-shm", "-journal"):
            p = path.with_name(path.name + side)
            if p.exists() and stat.S_IMODE(p.stat().st_mode) & 0o077:
                os.chmod(p, 0o600)
    except OSError as exc:
        raise StorageError(f"database cannot be created: {exc.strerror}", str(path),
                           "check the data folder's owner, mode and free space (`facepay doctor`)") from None
    try:
        conn = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA schema_version").fetchone()  # fails here, not later, on a file that is not a database
        conn.execute("PRAGMA foreign_keys=ON")
        if wal:
            conn.execute("PRAGMA journal_mode=WAL")
        elif journal:
            conn.execute(f"PRAGMA journal_mode={journal}")
        conn.execute("PRAGMA synchronous=FULL")
        if secure_delete:
            conn.execute("PRAGMA secure_delete=ON")
            conn.execute("PRAGMA temp_store=MEMORY")
    except sqlite3.OperationalError as exc:
        raise StorageError(f"database cannot be opened: {exc}", str(path),
                           "check the data folder's owner, mode and free space (`facepay doctor`)") from None
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"database cannot be opened: {exc}", str(path),
            "run `facepay doctor`; restore the file from backup if it is corrupt",
        ) from None
    return conn
