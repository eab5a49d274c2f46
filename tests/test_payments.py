"""Crash safety, idempotency and reconciliation of the sales journal and the sandbox processor."""

import json
import random
import signal
import subprocess
import sys
import time
from decimal import Decimal

import pytest
from conftest import ROOT
from hypothesis import given
from hypothesis import strategies as st

from terminal.failpoints import EXIT_STATUS, NAMES
from terminal.money import format_amount, parse_amount, to_decimal_str


def charges(cli):
    return json.loads(cli("processor", "charges", "--json").stdout)


def sales(cli):
    return json.loads(cli("sales", "list", "--json").stdout)


def check_reconciled(cli):
    """Journal and processor agree: one processor charge per journaled sale, same status, nothing pending."""
    proc = {c["key"]: c for c in charges(cli) if c["kind"] == "charge"}
    journal = sales(cli)
    assert all(s["status"] != "pending" for s in journal), journal
    assert sorted(proc) == sorted(s["key"] for s in journal)
    for s in journal:
        assert proc[s["key"]]["status"] == s["status"]
        assert proc[s["key"]]["amount_minor"] == s["amount_minor"]
    report = json.loads(cli("report", "day", "--json").stdout)
    assert report["sales"] == len(journal)
    counted = sum(v["count"] for k, v in report["totals"].items() if k in ("approved", "declined"))
    assert counted == len(journal)
    return journal, proc


@pytest.mark.parametrize("failpoint", ["after_journal_write", "after_processor_call", "before_final_journal_write"])
def test_crash_at_every_failpoint_then_recover(cli, failpoint):
    r = cli("sale", "--amount", "12.50", "--card-uid", "04A1B2C3", env={"FACEPAY_FAILPOINT": failpoint})
    assert r.returncode == EXIT_STATUS, (r.stdout, r.stderr)
    [pending] = sales(cli)
    assert pending["status"] == "pending"
    r = cli("recover", "--json")
    assert r.returncode == 0, r.stderr
    [done] = json.loads(r.stdout)
    assert done["sale_id"] == pending["id"] and done["status"] == "approved"
    journal, proc = check_reconciled(cli)
    assert len(proc) == 1 and journal[0]["status"] == "approved" and journal[0]["amount_minor"] == 1250
    # recovering again changes nothing
    assert json.loads(cli("recover", "--json").stdout) == []
    assert len(charges(cli)) == 1


def test_failpoints_are_listed(cli):
    r = cli("failpoints", "--json")
    assert set(json.loads(r.stdout)) == set(NAMES) and {"after_journal_write", "after_processor_call",
                                                        "before_final_journal_write"} <= set(NAMES)


@pytest.mark.parametrize("kind, failpoint", [("void", "after_void_journal_write"),
                                             ("refund", "after_refund_processor_call")])
def test_void_and_refund_crash_safe_and_idempotent(cli, kind, failpoint):
    r = cli("sale", "--json", "--amount", "20.00", "--card-uid", "04A1B2C3")
    sale_id = json.loads(r.stdout)["sale_id"]
    r = cli("sales", kind, sale_id, env={"FACEPAY_FAILPOINT": failpoint})
    assert r.returncode == EXIT_STATUS
    assert cli("recover").returncode == 0
    reversals = [c for c in charges(cli) if c["kind"] == kind]
    assert len(reversals) == 1 and reversals[0]["status"] == "approved"
    r = cli("sales", kind, sale_id, "--json")
    again = json.loads(r.stdout)
    assert again["status"] == "approved" and again["repeated"] is True
    assert len([c for c in charges(cli) if c["kind"] == kind]) == 1
    [s] = sales(cli)
    assert s["voided"] == (kind == "void") and s["refunded_minor"] == (2000 if kind == "refund" else 0)
    other = "refund" if kind == "void" else "void"
    r = cli("sales", other, sale_id)
    assert r.returncode == 2 and "already" in r.stderr
    report = json.loads(cli("report", "day", "--json").stdout)
    assert report["totals"][kind + "ed" if kind == "void" else "refunded"]["count"] == 1
    assert report["net_minor"] == 0


def test_void_last_and_declined_cannot_be_voided(cli):
    assert cli("sales", "void", "last").returncode == 2
    cli("sale", "--amount", "3.13", "--card-uid", "04A1B2C3")
    r = cli("sales", "void", "last")
    assert r.returncode == 2 and "declined" in r.stderr
    assert cli("sales", "void", "sale_nope").returncode == 1


def test_kill_9_during_a_loop_of_sales(cli):
    cli("recover")  # creates the data folder
    rng = random.Random(1234)
    for _ in range(4):
        p = subprocess.Popen([sys.executable, str(ROOT / "tests" / "helpers" / "sale_loop.py"), str(cli.data_dir)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.8))
        p.send_signal(signal.SIGKILL)
        p.wait()
        assert p.returncode == -signal.SIGKILL
        assert cli("recover").returncode == 0
    journal, proc = check_reconciled(cli)
    assert len(journal) >= 4
    assert cli("audit", "verify").returncode == 0


def test_sandbox_rules(cli):
    def sale(amount, uid="04A1B2C3"):
        return json.loads(cli("sale", "--json", "--amount", amount, "--card-uid", uid).stdout)

    assert sale("7.13")["reason"] == "insufficient funds"
    assert sale("7.51")["reason"] == "do not honour"
    assert sale("7.50")["status"] == "approved"
    assert cli("processor", "block", "--card-uid", "04000009").returncode == 0
    out = sale("1.00", "04000009")
    assert out["status"] == "declined" and out["reason"] == "card reported stolen"


def test_processor_timeout_is_resolved_by_idempotency_key(cli):
    cli("processor", "fault", "timeout")
    out = json.loads(cli("sale", "--json", "--amount", "8.00", "--card-uid", "04A1B2C3").stdout)
    assert out["status"] == "approved", "the charge was made; asking again by key finds it"
    assert len(charges(cli)) == 1
    check_reconciled(cli)


def test_processor_down_leaves_sale_pending_until_recover(cli):
    cli("processor", "fault", "fail")
    r = cli("sale", "--json", "--amount", "8.00", "--card-uid", "04A1B2C3")
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["status"] == "pending"
    r = cli("recover")
    assert r.returncode == 1 and "still pending" in r.stdout
    cli("processor", "fault", "none")
    assert cli("recover").returncode == 0
    journal, proc = check_reconciled(cli)
    assert journal[0]["status"] == "approved" and len(proc) == 1


def test_training_sales_are_marked(cli):
    cli("mode", "training")
    out = json.loads(cli("sale", "--json", "--amount", "5.13", "--card-uid", "04A1B2C3").stdout)
    assert out["status"] == "approved"
    [c] = charges(cli)
    assert c["training"] is True
    report = json.loads(cli("report", "day", "--json").stdout)
    assert "card/training" in report["by_method"]


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal("99999.99"), places=2))
def test_amounts_are_exact(d):
    minor = parse_amount(str(d), "EUR")
    assert isinstance(minor, int) and Decimal(minor) / 100 == d
    assert to_decimal_str(minor, "EUR") == f"{d:.2f}"
    assert format_amount(minor, "EUR").startswith("€")


def test_amount_exponents():
    assert parse_amount("1500", "JPY") == 1500
    with pytest.raises(ValueError):
        parse_amount("15.5", "JPY")
    assert parse_amount("1.234", "KWD") == 1234
    assert parse_amount("0.1", "EUR") + parse_amount("0.2", "EUR") == parse_amount("0.3", "EUR")
    for bad in ("nan", "inf", "0", "1e400", "", "1,50"):
        with pytest.raises(ValueError):
            parse_amount(bad, "EUR")


def test_full_disk_stops_the_sale_before_the_processor(term):
    """SQLite's 'database or disk is full', as on a full SD card: nothing charged, one clear error."""
    from terminal.errors import StorageError
    from terminal.sale import run_sale

    run_sale(term, amount="1.00", card_uid=bytes.fromhex("04A1B2C3"))
    pages = term.journal.db.execute("PRAGMA page_count").fetchone()[0]
    term.journal.db.execute(f"PRAGMA max_page_count = {pages}")
    before = len(term.processor.charges())
    with pytest.raises(StorageError, match="nothing was charged") as err:
        for _ in range(50):  # fill the last free pages
            run_sale(term, amount="2.00", card_uid=bytes.fromhex("04A1B2C3"))
    assert "free space" in err.value.one_line()
    assert all(s.status != "pending" for s in term.journal.sales())
    assert len(term.processor.charges()) - before == len(term.journal.sales()) - 1


def test_corrupt_database_gets_one_clear_error(cli):
    cli("recover")
    (cli.data_dir / "journal.db").write_bytes(b"this is not a database at all" * 100)
    for name in ("journal.db-wal", "journal.db-shm"):
        (cli.data_dir / name).unlink(missing_ok=True)
    r = cli("sales", "list")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "journal.db" in r.stderr and "restore" in r.stderr


def test_no_sales_out_of_service_or_in_enrolment_mode(cli):
    cli("mode", "out_of_service")
    r = cli("sale", "--amount", "1.00", "--card-uid", "04A1B2C3")
    assert r.returncode == 2 and "out of service" in r.stderr
    cli("mode", "enrolment")
    r = cli("sale", "--amount", "1.00", "--card-uid", "04A1B2C3")
    assert r.returncode == 2 and "enrolment mode" in r.stderr
    assert charges(cli) == [] and sales(cli) == []
