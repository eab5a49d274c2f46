"""Issue 19 item 6: every file the terminal creates is 0600 and its data folder 0700 whatever the umask; a
folder others can open is refused at start with one line (what, where, the chmod to run), exit 2; `facepay
doctor` reports both."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest
from conftest import run_cli

from terminal.config import Config
from terminal.errors import StorageError
from terminal.sale import run_sale
from terminal.service import Terminal


@contextlib.contextmanager
def umask(value: int):
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


def modes(folder) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir() if p.is_file()}


@pytest.mark.parametrize("mask", [0o022, 0o000])
def test_every_file_is_0600_and_the_folder_0700_whatever_the_umask(tmp_path, mask):
    from terminal.fleet_agent import save_doctor_state

    data = tmp_path / "data"
    with umask(mask):
        term = Terminal(Config(), data)
        try:
            run_sale(term, amount="1.20", card_uid=bytes.fromhex("04A1B2C3"))
            save_doctor_state(data, [{"name": "card reader", "ok": True, "detail": "x"}])
            seen = modes(data)  # while open: the WAL and shared-memory files exist too
        finally:
            term.close()
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("facepay.db", "facepay.db-wal", "facepay.db-shm", "journal.db", "journal.db-wal", "keystore.db",
                 "master.key", "sandbox-processor.db", "doctor-last.json"):
        assert name in seen, sorted(seen)
    assert {n: m for n, m in seen.items() if m != 0o600} == {}


def test_database_files_made_readable_earlier_are_made_private_again(tmp_path):
    data = tmp_path / "data"
    Terminal(Config(), data).close()
    for p in data.glob("*.db"):
        os.chmod(p, 0o644)
    Terminal(Config(), data).close()
    assert {n: m for n, m in modes(data).items() if m != 0o600} == {}


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701])
def test_a_folder_others_can_open_is_refused_at_start_with_one_line(tmp_path, mode):
    data = tmp_path / "data"
    Terminal(Config(), data).close()
    os.chmod(data, mode)
    with pytest.raises(StorageError, match=f"run: chmod 700 {data}"):
        Terminal(Config(), data)
    r = run_cli("shoppers", data_dir=data)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"data folder has mode {mode:04o}" in lines[0] and f"chmod 700 {data}" in lines[0]
    assert str(data) in lines[0]


def test_doctor_reports_an_open_folder_and_a_readable_file(tmp_path):
    data = tmp_path / "data"
    Terminal(Config(), data).close()
    os.chmod(data, 0o755)
    r = run_cli("doctor", "--demo", "--skip", "camera", "--skip", "reader", "--skip", "leds", "--skip", "display",
                data_dir=data)
    assert r.returncode == 1
    assert "[FAIL] data folder" in r.stdout and f"run: chmod 700 {data}" in r.stdout, r.stdout
    os.chmod(data, 0o700)
    os.chmod(data / "journal.db", 0o644)
    r = run_cli("doctor", "--demo", "--skip", "camera", "--skip", "reader", "--skip", "leds", "--skip", "display",
                data_dir=data)
    assert "[FAIL] data files" in r.stdout and "journal.db 0644" in r.stdout, r.stdout
    assert f"run: chmod 600 {data / 'journal.db'}" in r.stdout
    os.chmod(data / "journal.db", 0o600)
    r = run_cli("doctor", "--demo", "--skip", "camera", "--skip", "reader", "--skip", "leds", "--skip", "display",
                data_dir=data)
    assert "[OK  ] data folder" in r.stdout and "[OK  ] data files" in r.stdout, r.stdout


def test_doctor_on_a_fresh_data_folder_and_on_a_store_without_its_key(tmp_path):
    """A terminal that never ran has no key yet (made on first run): not a failure.  A store whose key is
    gone is one: no template can be read."""
    data = tmp_path / "fresh"
    data.mkdir(mode=0o700)
    skip = ("--skip", "camera", "--skip", "reader", "--skip", "leds", "--skip", "display")
    r = run_cli("doctor", "--demo", *skip, data_dir=data)
    assert r.returncode == 0 and "[OK  ] master key" in r.stdout and "not created yet" in r.stdout, r.stdout
    Terminal(Config(), data).close()
    (data / "master.key").unlink()
    r = run_cli("doctor", "--demo", *skip, data_dir=data)
    assert r.returncode == 1 and "[FAIL] master key" in r.stdout and "restore master.key" in r.stdout, r.stdout
