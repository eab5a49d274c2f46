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
    """Journal and processor agree: one processor charge per charged sale, same status, nothing pending.

    A cancelled sale never reached the processor: it has no charge there, only its closed key.
    """
    requests = charges(cli)
    proc = {c["key"]: c for c in requests if c["kind"] == "charge"}
    closed = {c["key"] for c in requests if c["kind"] == "cancel"}
    journal = sales(cli)
    assert all(s["status"] != "pending" for s in journal), journal
    charged = [s for s in journal if s["status"] != "cancelled"]
    assert sorted(proc) == sorted(s["key"] for s in charged)
    assert closed == {s["key"] for s in journal if s["status"] == "cancelled"}
    for s in charged:
        assert proc[s["key"]]["status"] == s["status"]
        assert proc[s["key"]]["amount_minor"] == s["amount_minor"]
    report = json.loads(cli("report", "day", "--json").stdout)
    assert report["sales"] == len(journal)
    counted = sum(v["count"] for k, v in report["totals"].items() if k in ("approved", "declined", "cancelled"))
    assert counted == len(journal)
    return journal, proc


@pytest.mark.parametrize("failpoint, settled", [("after_journal_write", "cancelled"),
                                                ("after_processor_call", "approved"),
                                                ("before_final_journal_write", "approved")])
def test_crash_at_every_failpoint_then_recover(cli, failpoint, settled):
    """Recovery never sends a charge: a request that never reached the processor is cancelled, one that did
    is looked up by its idempotency key and settled to the processor's answer."""
    r = cli("sale", "--amount", "12.50", "--card-uid", "04A1B2C3", env={"FACEPAY_FAILPOINT": failpoint})
    assert r.returncode == EXIT_STATUS, (r.stdout, r.stderr)
    [pending] = sales(cli)
    assert pending["status"] == "pending"
    before = charges(cli)
    r = cli("recover", "--json")
    assert r.returncode == 0, r.stderr
    [done] = json.loads(r.stdout)
    assert done["sale_id"] == pending["id"] and done["status"] == settled
    assert done["action"] == ("cancelled" if settled == "cancelled" else "looked up")
    journal, proc = check_reconciled(cli)
    assert journal[0]["status"] == settled and journal[0]["amount_minor"] == 1250
    # nothing was charged by the recovery itself
    assert [c for c in charges(cli) if c["kind"] == "charge"] == [c for c in before if c["kind"] == "charge"]
    assert len(proc) == (0 if settled == "cancelled" else 1)
    listed = cli("sales", "list").stdout
    assert pending["id"] in listed and settled in listed
    report = json.loads(cli("report", "day", "--json").stdout)
    assert report["totals"][settled]["count"] == 1
    assert report["net_minor"] == (0 if settled == "cancelled" else 1250)
    # recovering again changes nothing
    after = charges(cli)
    assert len(after) == 1
    assert json.loads(cli("recover", "--json").stdout) == []
    assert charges(cli) == after


def test_a_cancelled_key_charges_nothing_when_the_request_arrives_late(term):
    """A request still on its way when recovery gave up on it finds its key closed: nothing is charged."""
    token = term.card(bytes.fromhex("04A1B2C3"))[2]
    key = term.idempotency_key("sale_late")
    closed = term.processor.cancel(key)
    assert closed.status == "cancelled"
    late = term.processor.charge(key, token, 1250, "EUR")
    assert late.status == "cancelled" and late.kind == "cancel"
    assert [c["kind"] for c in term.processor.charges()] == ["cancel"]
    # and a key that was charged stays charged: cancel returns the charge's outcome unchanged
    made = term.processor.charge(term.idempotency_key("sale_made"), token, 700, "EUR")
    assert term.processor.cancel(made.key) == made


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
    assert cli("sales", "void", "last").returncode == 1   # no sales yet: a clean "no", like an unknown id
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
        assert p.returncode == -signal.SIGKILL, p.stderr.read()[-3000:]
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


UNKNOWN = "Payment not confirmed - do not pay again; staff will check sale {}"


def test_processor_down_is_unknown_not_declined_and_recover_cancels(cli):
    """The gateway cannot be reached: the outcome is unknown (exit 3), never "declined"; once the processor
    can be asked and says no request arrived, recovery cancels the sale and nothing is ever charged."""
    cli("processor", "fault", "fail")
    r = cli("sale", "--json", "--amount", "8.00", "--card-uid", "04A1B2C3")
    out = json.loads(r.stdout)
    assert r.returncode == 3 and out["status"] == "unknown", (r.stdout, r.stderr)
    assert out["reason"] == UNKNOWN.format(out["sale_id"])
    assert [s["status"] for s in sales(cli)] == ["pending"]
    r = cli("recover")
    assert r.returncode == 3 and "still pending" in r.stdout
    cli("processor", "fault", "none")
    r = cli("recover", "--json")
    assert r.returncode == 0
    assert json.loads(r.stdout) == [{"sale_id": out["sale_id"], "action": "cancelled", "status": "cancelled"}]
    journal, proc = check_reconciled(cli)
    assert journal[0]["status"] == "cancelled" and proc == {}
    report = json.loads(cli("report", "day", "--json").stdout)
    assert report["by_method"]["card"]["cancelled"] == {"count": 1, "sum_minor": 800} and report["net_minor"] == 0
    assert "cancelled" in cli("report", "day").stdout


def test_lost_answer_is_unknown_then_settled_to_the_processors_answer(cli):
    """The charge is made and the line drops (lookups fail too): unknown; later it is looked up, not re-sent."""
    cli("processor", "fault", "partition")
    r = cli("sale", "--json", "--amount", "8.00", "--card-uid", "04A1B2C3")
    out = json.loads(r.stdout)
    assert r.returncode == 3 and out["status"] == "unknown" and out["reason"] == UNKNOWN.format(out["sale_id"])
    assert cli("recover").returncode == 3
    cli("processor", "fault", "none")
    assert json.loads(cli("recover", "--json").stdout) == [{"sale_id": out["sale_id"], "action": "looked up",
                                                            "status": "approved"}]
    journal, proc = check_reconciled(cli)
    assert journal[0]["status"] == "approved" and len(proc) == 1


def card_sale(term, sale_id: str, minor: int, leds=None):
    """One card sale through the state machine and the runner, as the kiosk drives them: (machine, runner, the
    charge's error or None)."""
    from terminal import checkout as co
    from terminal.runner import Runner

    machine = co.CheckoutMachine(term.policy(), face_pay=False, mode=term.mode())
    runner = Runner(term, machine, None, leds)
    runner.dispatch(co.StartSale(sale_id, minor, "EUR"))
    [charge] = runner.dispatch(co.CardTapped(*term.card(bytes.fromhex("04A1B2C3"))), deferred={co.Charge})
    outcome = runner.charge(charge)   # the event for the machine, and the error when it was not a clear answer
    runner.dispatch(outcome.event)
    return machine, runner, outcome.error


def test_unknown_outcomes_light_the_fault_led_and_are_resolved_by_lookup(term):
    from gpiozero.pins.mock import MockFactory

    from terminal import checkout as co
    from terminal.config import LedConfig
    from terminal.leds import LedBoard

    leds = LedBoard(LedConfig(backend="mock"), pin_factory=MockFactory())
    term.processor.set_fault("partition")
    machine, runner, error = card_sale(term, "sale_u1", 1250, leds)
    assert machine.state == co.State.UNKNOWN
    assert machine.view().message == UNKNOWN.format("sale_u1")
    assert leds.pattern == "fault" and leds.state["fault"] == "blink" and leds.state["declined"] == "off"
    assert term.journal.get("sale_u1").status == "pending"
    # asked again while the line is still down: still unknown, asked again later
    eff = runner.dispatch(co.Timeout(machine.view().timer))
    assert machine.state == co.State.UNKNOWN and eff == []
    term.processor.set_fault("none")
    runner.dispatch(co.Timeout(machine.view().timer))
    assert machine.state == co.State.APPROVED and leds.pattern == "approved"
    assert term.journal.get("sale_u1").status == "approved"
    assert [c["kind"] for c in term.processor.charges()] == ["charge"]
    leds.close()


def test_a_journal_that_fails_after_approval_is_unknown(term):
    """The processor approved but the journal cannot record it: unknown (not declined), and the lookup settles it."""
    import sqlite3

    from terminal import checkout as co

    def no_settling(action, table, *_):
        return sqlite3.SQLITE_DENY if action == sqlite3.SQLITE_UPDATE and table == "sales" else sqlite3.SQLITE_OK

    term.journal.db.set_authorizer(no_settling)
    machine, runner, error = card_sale(term, "sale_j1", 1250)
    assert machine.state == co.State.UNKNOWN and machine.view().message == UNKNOWN.format("sale_j1")
    assert isinstance(error, sqlite3.DatabaseError)
    [charge] = term.processor.charges()
    assert charge["status"] == "approved" and term.journal.get("sale_j1").status == "pending"
    term.journal.db.set_authorizer(None)
    assert term.recover() == [{"sale_id": "sale_j1", "action": "looked up", "status": "approved"}]
    assert len(term.processor.charges()) == 1


def test_a_gateway_error_that_is_not_a_processor_error_is_unknown(term):
    """The gateway's own database is locked by another process: a plain sqlite3 error, not a ProcessorError."""
    import sqlite3

    from terminal import checkout as co

    term.processor.db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(term.processor.path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        machine, runner, error = card_sale(term, "sale_g1", 1250)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert machine.state == co.State.UNKNOWN and machine.view().message == UNKNOWN.format("sale_g1")
    assert term.journal.get("sale_g1").status == "pending"
    assert "processor_error" in [s for s, _ in term.journal.steps("sale_g1")]
    # nothing arrived at the processor, so recovery cancels it
    assert term.recover() == [{"sale_id": "sale_g1", "action": "cancelled", "status": "cancelled"}]
    assert [c["kind"] for c in term.processor.charges()] == ["cancel"]


def test_a_locked_shopper_store_after_approval_keeps_the_approval(term):
    """store.touch (the template's last-use date) fails on a locked facepay.db: the money is settled at the
    processor and in the journal, so the sale is approved, never declined."""
    import sqlite3

    term.store.db.execute("PRAGMA busy_timeout = 50")
    other = sqlite3.connect(term.data_dir / "facepay.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        token = term.card(bytes.fromhex("04A1B2C3"))[2]
        report = term.charge("sale_t1", 1250, "EUR", "face", token, "shp_someone")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert report.status == "approved"
    assert term.journal.get("sale_t1").status == "approved"


def test_a_journal_that_cannot_record_the_sale_charges_nothing(term):
    """The SD card fills up: a sale the journal cannot record is never sent (cancelled, nothing charged); one
    whose answer could not be written any more is unknown, never declined."""
    from terminal import checkout as co
    from terminal.payments.journal import SaleNotRecorded

    pages = term.journal.db.execute("PRAGMA page_count").fetchone()[0]
    term.journal.db.execute(f"PRAGMA max_page_count = {pages}")
    states = []
    for i in range(80):
        machine, runner, error = card_sale(term, f"sale_f{i}", 100 + 2 * i)  # even: never a sandbox decline
        states.append(machine.state)
        if machine.state == co.State.CANCELLED:
            break
    assert machine.state == co.State.CANCELLED and machine.view().message == "not_recorded"
    assert isinstance(error, SaleNotRecorded)
    assert set(states[:-1]) <= {co.State.APPROVED, co.State.UNKNOWN}
    journaled = {s.key for s in term.journal.sales()}
    assert {c["key"] for c in term.processor.charges()} == journaled
    assert term.idempotency_key(f"sale_f{i}") not in journaled


def test_idempotency_key_is_terminal_id_plus_sale_id(tmp_path):
    """Two terminals of one shop talk to one processor and happen to make the same sale id: both are charged."""
    import dataclasses

    from terminal import checkout as co
    from terminal.config import Config
    from terminal.service import Terminal

    one = Terminal(dataclasses.replace(Config(), terminal_id="shop-1-till-1"), tmp_path / "t1")
    two = Terminal(dataclasses.replace(Config(), terminal_id="shop-1-till-2"), tmp_path / "t2")
    two.processor.close()
    two.processor = one.processor  # the shop's one gateway
    try:
        m1, *_ = card_sale(one, "sale_20260101120000_abcdef", 1250)
        m2, *_ = card_sale(two, "sale_20260101120000_abcdef", 990)
        assert m1.state == m2.state == co.State.APPROVED
        keys = sorted(c["key"] for c in one.processor.charges())
        assert keys == ["shop-1-till-1:sale_20260101120000_abcdef", "shop-1-till-2:sale_20260101120000_abcdef"]
        assert one.journal.get("sale_20260101120000_abcdef").key == keys[0]
    finally:
        one.close()
        two.journal.close()
        two.store.close()


def test_a_reused_key_with_another_amount_is_a_clear_error_not_a_decline(term):
    """The processor holds a different request under the key (say, a second terminal with the same terminal_id):
    the sandbox refuses it with IdempotencyKeyReused, nothing is charged, and the sale is not "declined"."""
    from terminal import checkout as co
    from terminal.payments.processor import IdempotencyKeyReused

    token = term.card(bytes.fromhex("04A1B2C3"))[2]
    key = term.idempotency_key("sale_k1")
    first = term.processor.charge(key, token, 500, "EUR")
    with pytest.raises(IdempotencyKeyReused, match="5.00.*refused a charge of €7.00: nothing was charged"):
        term.processor.charge(key, token, 700, "EUR")
    assert term.processor.charge(key, token, 500, "EUR") == first  # the same request again: the same answer
    machine, runner, error = card_sale(term, "sale_k1", 700)
    assert machine.state == co.State.CANCELLED and machine.view().message == "key_reused"
    assert isinstance(error, IdempotencyKeyReused)
    assert "terminal_id" in error.one_line()
    sale = term.journal.get("sale_k1")
    assert sale.status == "cancelled" and "nothing was charged" in sale.reason
    assert [(c["amount_minor"], c["status"]) for c in term.processor.charges()] == [(500, "approved")]


def test_training_sales_are_listed_apart_and_never_counted(cli):
    cli("sale", "--amount", "3.00", "--card-uid", "04A1B2C3")
    cli("mode", "training")
    out = json.loads(cli("sale", "--json", "--amount", "5.13", "--card-uid", "04A1B2C3").stdout)
    assert out["status"] == "approved"
    [_, c] = charges(cli)
    assert c["training"] is True
    report = json.loads(cli("report", "day", "--json").stdout)
    assert report["totals"] == {"approved": {"count": 1, "sum_minor": 300}}
    assert report["net_minor"] == 300 and report["sales"] == 1
    assert list(report["by_method"]) == ["card"]
    assert [(t["sale_id"], t["amount_minor"], t["status"]) for t in report["training"]] == \
        [(out["sale_id"], 513, "approved")]
    text = cli("report", "day").stdout
    assert "net €3.00" in text and "Training sales, not counted above (1)" in text and out["sale_id"] in text


def _sale_at(term, sale_id: str, at: str, minor: int = 1000):
    """A settled sale created at a given UTC instant (the journal stamps sales with the clock)."""
    term.journal.begin(sale_id, term.idempotency_key(sale_id), minor, "EUR", "card", None, "tok", False)
    term.journal.settle(sale_id, "approved", "", "ref")
    term.journal.db.execute("UPDATE sales SET created_at = ? WHERE id = ?", (at, sale_id))


def test_report_days_follow_the_terminals_time_zone(tmp_path):
    import dataclasses
    from datetime import date

    from terminal.config import Config, TerminalConfig
    from terminal.service import Terminal

    cfg = dataclasses.replace(Config(), terminal=TerminalConfig(timezone="Pacific/Auckland"))
    term = Terminal(cfg, tmp_path / "t")
    try:
        _sale_at(term, "s_late_utc", "2026-03-01T23:30:00.000000+00:00")   # 2 March, 12:30 in Auckland
        _sale_at(term, "s_early_utc", "2026-03-01T10:30:00.000000+00:00")  # 1 March, 23:30 in Auckland
        _sale_at(term, "s_next", "2026-03-02T11:00:00.000000+00:00")       # 3 March, 00:00 in Auckland
        r = term.report_day(date(2026, 3, 2))
        assert r["timezone"] == "Pacific/Auckland" and r["from"] == "2026-03-02T00:00:00+13:00"
        assert r["sales"] == 1 and r["net_minor"] == 1000
        assert term.report_day(date(2026, 3, 1))["sales"] == 1
        # the day DST ends in Auckland (5 April 2026) has 25 hours
        r = term.report_day(date(2026, 4, 5))
        assert (r["from"], r["until"]) == ("2026-04-05T00:00:00+13:00", "2026-04-06T00:00:00+12:00")
    finally:
        term.close()


def test_report_day_defaults_to_the_systems_time_zone(cli):
    r = cli("report", "day", "--date", "2026-07-01", "--json", env={"TZ": "Asia/Tokyo"})
    report = json.loads(r.stdout)
    assert report["from"] == "2026-07-01T00:00:00+09:00" and report["timezone"] == "system (JST)"


def test_a_bad_time_zone_is_one_clear_error(cli, tmp_path):
    conf = tmp_path / "terminal.toml"
    conf.write_text('terminal_id = "till-1"\n[terminal]\ntimezone = "Europe/Berlln"\n')
    r = cli("--config", conf, "report", "day")
    assert r.returncode == 2 and r.stdout == ""
    [line] = r.stderr.strip().splitlines()
    assert str(conf) in line and "'terminal.timezone'" in line and "Europe/Berlln" in line
    conf.write_text('terminal_id = "till-1"\n[terminal]\ntimezone = "Europe/Berlin"\n')
    assert cli("--config", conf, "report", "day").returncode == 0


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
