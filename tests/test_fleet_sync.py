"""Issue 14: sales upload exactly once through nats-server crashes and agent crashes; 20 terminals."""

import os
import signal
import threading

import pytest

from terminal.config import load_config
from terminal.sale import run_sale
from terminal.service import Terminal
from tests.helpers.fleet import Fleet, consumer_state, provision_many, stream_count, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.serial]  # 20 agents through a server crash: alone (make test)
TIDS = [f"till-{i:02d}" for i in range(1, 21)]


@pytest.fixture(scope="module")
def fleet20(tmp_path_factory):
    with Fleet(tmp_path_factory.mktemp("fleet20") / "bo") as f:  # stopped also when the set-up fails
        f.cfgs = provision_many(f, TIDS)
        for t in TIDS:
            f.start_agent(t)
        yield f


def test_1000_sales_exactly_once_through_a_nats_server_crash(fleet20):
    f = fleet20
    terms = {t: Terminal(load_config(f.cfgs[t]), f.data_dir(t)) for t in TIDS}
    done = threading.Event()
    made = []

    def sell(group):
        for i in range(50):
            for t in group:
                cents = 100 + (i * 7) % 900
                r = run_sale(terms[t], amount=f"{cents // 100}.{cents % 100:02d}", card_uid=bytes.fromhex("04A1B2C3"))
                assert r["status"] == "approved", r
                made.append(r["sale_id"])

    # five tills selling at once (each Terminal is used by one thread only)
    sellers = [threading.Thread(target=sell, args=(TIDS[k::5],)) for k in range(5)]
    for s in sellers:
        s.start()
    seller = threading.Thread(target=lambda: ([s.join() for s in sellers], done.set()))
    seller.start()
    try:
        wait_for(lambda: len(made) >= 300, 120, "300 sales")
        killed = f.nats_pid()
        os.kill(killed, signal.SIGKILL)  # mid-stream; `dev` starts it again a second later
        wait_for(lambda: f.nats_pid() not in (None, killed), 30, "nats-server back")
        seller.join(300)
        assert done.is_set() and len(made) == 1000
        wait_for(lambda: f.sql("SELECT count(*) FROM sales")[0][0] >= 1000, 120, "1000 sales at the back office",
                 detail=lambda: f"{f.sql('SELECT count(*) FROM sales')[0][0]} stored; {consumer_state(f, 'SALES')}; "
                                f"outboxes {sum(t.fleet.backlog() for t in terms.values())}; back office log: "
                                f"{f.log_tail()}")
        wait_for(lambda: all(t.fleet.backlog() == 0 for t in terms.values()), 60, "empty outboxes")
    finally:
        seller.join(300)
        for t in terms.values():
            t.close()
    rows = f.sql("SELECT sale_id, terminal_id FROM sales")
    assert len(rows) == 1000 and {r[0] for r in rows} == set(made)
    assert f.sql("SELECT count(*) FROM events WHERE kind = 'sale'")[0][0] == 1000
    per_terminal = dict(f.sql("SELECT terminal_id, count(*) FROM sales GROUP BY terminal_id"))
    assert per_terminal == {t: 50 for t in TIDS}
    # and none twice in the stream itself: Nats-Msg-Id de-duplicated every retried publish
    assert stream_count(f, "SALES", "facepay.t.*.sale") == 1000


def test_agent_killed_between_publish_and_marking_sent_makes_no_duplicate(fleet20):
    f = fleet20
    tid = "till-01"
    f.stop_agent(tid)
    before = stream_count(f, "SALES", f"facepay.t.{tid}.sale")
    term = Terminal(load_config(f.cfgs[tid]), f.data_dir(tid))
    try:
        sale = run_sale(term, amount="3.10", card_uid=bytes.fromhex("04A1B2C3"))
        assert term.fleet.backlog() == 1
        crashing = f.start_agent(tid, env={"FACEPAY_FAILPOINT": "fleet_after_publish"})
        assert crashing.wait(60) == 86  # published, acknowledged, then killed before marking the row sent
        f.agents.pop(tid)
        assert term.fleet.backlog() == 1  # still queued: it will be published again
        f.start_agent(tid)
        wait_for(lambda: term.fleet.backlog() == 0, 60, "the row marked sent after the restart")
        wait_for(lambda: f.sql("SELECT count(*) FROM sales WHERE sale_id = %s", sale["sale_id"])[0][0] == 1, 30,
                 "the sale at the back office")
    finally:
        term.close()
    assert stream_count(f, "SALES", f"facepay.t.{tid}.sale") == before + 1
    assert f.sql("SELECT count(*) FROM events WHERE id = %s", f"{tid}:sale:{sale['sale_id']}")[0][0] == 1


def test_browser_manager_sees_the_20_terminals_and_changes_a_mode(fleet20):
    from tests.helpers.fleet import chromium

    f = fleet20
    wait_for(lambda: f.sql("SELECT count(*) FROM terminals WHERE last_heartbeat IS NOT NULL")[0][0] == 20, 60,
             "heartbeats from the 20 terminals")
    staff = f.staff()
    with chromium() as browser:
        page = browser.new_page()
        page.goto(f.web + "/dashboard")
        page.wait_for_url("**/login")
        page.get_by_label("Name").fill(staff["username"])
        page.get_by_label("Password").fill(staff["password"])
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url("**/dashboard")
        rows = page.locator("#terminals tbody tr")
        assert rows.count() == 20
        assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.terminal)")) == TIDS
        row = page.locator('tr[data-terminal="till-07"]')
        row.get_by_label("mode for till-07").select_option("training")
        row.get_by_role("button", name="Set").click()
        page.wait_for_url("**/dashboard")
        for _ in range(60):  # the terminal follows when idle and reports it in its next heartbeat
            mode = page.locator('tr[data-terminal="till-07"] .mode').inner_text()
            if mode.strip() == "training":
                break
            page.wait_for_timeout(500)
            page.reload()
        assert mode.strip() == "training"
        page.screenshot(path=str(f.workdir.parent / "dashboard.png"), full_page=True)
