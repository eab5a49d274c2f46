"""The one transaction helper every SQLite write site of the terminal uses (datadir.transaction)."""
import sqlite3

import pytest

from terminal.datadir import connect, transaction


@pytest.fixture
def db(tmp_path):
    tmp_path.chmod(0o700)
    conn = connect(tmp_path / "t.db")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    conn.execute("CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER "
                 "REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")
    yield conn
    conn.close()


def test_commits_everything_inside(db):
    with transaction(db):
        db.execute("INSERT INTO parent VALUES (1)")
        db.execute("INSERT INTO child VALUES (1, 1)")
    assert not db.in_transaction
    assert db.execute("SELECT COUNT(*) FROM child").fetchone()[0] == 1


def test_an_exception_inside_rolls_back_and_is_raised(db):
    with pytest.raises(KeyError), transaction(db):
        db.execute("INSERT INTO parent VALUES (1)")
        raise KeyError("x")
    assert not db.in_transaction
    assert db.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 0


def test_a_failing_commit_rolls_back_instead_of_leaving_the_transaction_open(db):
    # a deferred foreign key is checked at COMMIT: the commit itself fails
    with pytest.raises(sqlite3.IntegrityError), transaction(db):
        db.execute("INSERT INTO parent VALUES (1)")
        db.execute("INSERT INTO child VALUES (1, 99)")
    assert not db.in_transaction
    assert db.execute("SELECT COUNT(*) FROM parent").fetchone()[0] == 0
    with transaction(db):  # and the connection is usable again
        db.execute("INSERT INTO parent VALUES (2)")
    assert db.execute("SELECT id FROM parent").fetchall() == [(2,)]


def test_write_sites_use_it():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "terminal"
    hand_written = [str(p.relative_to(root)) for p in root.rglob("*.py")
                    if p.name != "datadir.py" and 'BEGIN IMMEDIATE' in p.read_text()]
    assert hand_written == []
