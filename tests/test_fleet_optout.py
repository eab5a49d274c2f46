"""Issue 14: an opt-out made at the back office reaches every terminal's agent; each deletes and answers."""

import re

import pytest

from terminal.fleet.contract import code_hash
from tests.conftest import FACES
from tests.helpers.fleet import Fleet, deafen_pull_subscriptions, enrol_direct, shopper_count, wait_for

# make test: on one worker, one set of servers for the module
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("fleet_optout")]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    with Fleet(tmp_path_factory.mktemp("fleet") / "bo") as f:
        yield f


def test_optout_code_reaches_every_agent(fleet):
    tids = ["opt-a", "opt-b", "opt-c"]
    cfgs = {t: fleet.provision(t) for t in tids}
    uid = bytes.fromhex("04AABBCC")
    code = enrol_direct(cfgs["opt-a"], fleet.data_dir("opt-a"), uid, seed=1)
    enrol_direct(cfgs["opt-b"], fleet.data_dir("opt-b"), uid, seed=2)
    other = enrol_direct(cfgs["opt-b"], fleet.data_dir("opt-b"), bytes.fromhex("04DDEEFF"), seed=3)
    assert other != code
    for t in tids:
        fleet.start_agent(t)
    # the enrolment links reach the back office before the code can be honoured
    wait_for(lambda: fleet.sql("SELECT count(*) FROM optout_codes")[0][0] == 3, 30, "enrolment links")

    status, body = fleet.http("POST", "/api/optout", {"code": code.lower().replace("-", " ")})
    assert status == 202 and body["revocation_id"].startswith("rev_")
    rid = body["revocation_id"]

    def done():
        s, b = fleet.http("GET", f"/api/revocations/{rid}")
        return fleet.receipts(rid) if s == 200 and b["status"] == "done" else None

    states = wait_for(done, 30, "every terminal's receipt")
    assert states == {"opt-a": "deleted", "opt-b": "deleted", "opt-c": "none-held"}
    assert set(fleet.http("GET", f"/api/revocations/{rid}")[1]) == {"status", "message"}  # nothing about terminals
    assert shopper_count(cfgs["opt-a"], fleet.data_dir("opt-a")) == 0
    assert shopper_count(cfgs["opt-b"], fleet.data_dir("opt-b")) == 1  # the other card's enrolment stays

    # an unknown code gets the same answer; every terminal reports none-held
    status, body = fleet.http("POST", "/api/optout", {"code": "AAAA-BBBB-CCCC-DDDD"})
    assert status == 202
    rid2 = body["revocation_id"]
    wait_for(lambda: fleet.http("GET", f"/api/revocations/{rid2}")[1]["status"] == "done", 30,
             "receipts for an unknown code")
    assert set(fleet.receipts(rid2).values()) == {"none-held"}
    # the shopper sees the same for a real code and a made-up one
    assert fleet.http("GET", f"/api/revocations/{rid2}")[1] == fleet.http("GET", f"/api/revocations/{rid}")[1]
    assert fleet.http("GET", "/api/revocations/rev_nosuch")[0] == 404
    assert fleet.http("POST", "/api/optout", {"nocode": 1})[0] == 400



def test_an_agent_whose_revocation_subscription_goes_deaf_still_deletes(fleet):
    """The server stops delivering to the agent's pull inbox (as after a lost re-subscription) while the
    connection stays up: fetches only time out.  That must neither count as caught up for long nor lose
    the opt-out: the agent sees revocations waiting in its consumer and subscribes again."""
    import asyncio

    from terminal.config import load_config
    from terminal.fleet_agent import AgentThread

    tid = "deaf-1"
    cfg = fleet.provision(tid)
    uid = bytes.fromhex("04DEAF01")
    code = enrol_direct(cfg, fleet.data_dir(tid), uid)
    thread = AgentThread(load_config(cfg), fleet.data_dir(tid)).start()
    try:
        agent = thread.agent
        wait_for(lambda: agent.term is not None and not agent.term.fleet_paused()
                 and agent.term.fleet.backlog() == 0, 30, "the agent caught up")

        deafened = asyncio.run_coroutine_threadsafe(deafen_pull_subscriptions(agent.nc, f"_INBOX_{tid}"),
                                                    thread._loop).result(10)
        assert deafened >= 1
        status, body = fleet.http("POST", "/api/optout", {"code": code})
        assert status == 202
        rid = body["revocation_id"]
        wait_for(lambda: fleet.receipts(rid)[tid] == "deleted", 30, "the deaf agent's deletion receipt")
        assert shopper_count(cfg, fleet.data_dir(tid)) == 0
    finally:
        thread.stop()


def test_optout_at_one_terminals_my_data_goes_fleet_wide(fleet):
    """`facepay revoke --card-uid` (the till's version of "my data" with the card) at one terminal: every
    other terminal holding that card's enrolment deletes it too, and the enrolment's code is gone with it."""
    import subprocess
    import sys

    tids = ["md-a", "md-b"]
    cfgs = {t: fleet.provision(t) for t in tids}
    uid = bytes.fromhex("04ABCDEF")
    for i, t in enumerate(tids):
        enrol_direct(cfgs[t], fleet.data_dir(t), uid, seed=20 + i)
        fleet.start_agent(t)
    r = subprocess.run([sys.executable, "-m", "terminal", "--config", str(cfgs["md-a"]), "--data-dir",
                        str(fleet.data_dir("md-a")), "revoke", "--card-uid", uid.hex(), "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert shopper_count(cfgs["md-a"], fleet.data_dir("md-a")) == 0
    wait_for(lambda: shopper_count(cfgs["md-b"], fleet.data_dir("md-b")) == 0, 30, "md-b deleting the same card")
    rid, source = fleet.sql("SELECT id, source FROM revocations WHERE source = 'terminal md-a'")[0]
    # the sender is "deleted" by its own receipt for the fleet's revocation, never by its request alone
    wait_for(lambda: fleet.receipts(rid)["md-a"] == "deleted", 20, "md-a's own receipt")
    wait_for(lambda: fleet.receipts(rid)["md-b"] == "deleted", 20, "md-b's receipt")


def test_partitioned_terminal_deletes_before_it_serves_a_face_payment(fleet, pipeline, embeddings):
    from terminal import consent
    from terminal.config import load_config
    from terminal.sale import run_sale
    from terminal.service import Terminal
    from tests.conftest import OBAMA_ENROL, OBAMA_PROBES

    tid = "part-1"
    # The face stands in as a still photo (what is under test is the partition, not the head-turn check,
    # which tests/test_liveness.py covers): the ledger records that liveness was off.
    cfg = fleet.provision(tid, max_staleness_s=2, extra_toml="[liveness]\nrequired = false\n")
    term = Terminal(load_config(cfg), fleet.data_dir(tid))
    term._pipeline = pipeline
    try:
        shopper = term.enrol(name="Barack Obama", card_uid=bytes.fromhex("04B0B0B0"),
                             embeddings=[embeddings[p.name] for p in OBAMA_ENROL], consent_text=consent.load("en"),
                             phone_last4="1234")
        code = term.optout_codes[shopper.id]
        assert term.fleet_paused()  # never caught up yet: fail closed
        fleet.start_agent(tid)
        wait_for(lambda: not term.fleet_paused() and term.fleet.backlog() == 0, 30, "the agent caught up")
        face = dict(amount="1.00", face=str(OBAMA_PROBES[0]), confirm=True, phone_last4="1234")
        assert run_sale(term, **face)["status"] == "approved"

        fleet.stop_agent(tid)  # partitioned: nothing reaches this terminal from now on
        status, body = fleet.http("POST", "/api/optout", {"code": code})
        assert status == 202
        rid = body["revocation_id"]
        wait_for(lambda: fleet.sql("SELECT published_at FROM revocations WHERE id = %s", rid)[0][0], 20,
                 "the revocation on the stream")
        wait_for(term.fleet_paused, 10, "face pay paused after max_staleness_s")
        assert term.store.get(shopper.id) is not None  # not deleted yet: it has not heard
        paused = run_sale(term, **face)
        assert paused["status"] == "face_pay_paused" and "Face pay paused: this terminal is offline" in paused["reason"]
        assert term.gallery().ids == []  # no template is matched while paused
        assert run_sale(term, amount="1.00", card_uid=bytes.fromhex("04B0B0B0"))["status"] == "approved"

        fleet.start_agent(tid)  # reconnects
        while term.fleet_paused():  # face pay comes back only after the deletion
            assert fleet.agents[tid].poll() is None
        assert term.store.get(shopper.id) is None
        assert run_sale(term, **face)["status"] == "no_match"
        wait_for(lambda: fleet.receipts(rid)[tid] == "deleted", 20, "the receipt of the partitioned terminal")
    finally:
        term.close()


def test_offline_past_max_staleness_refuses_face_pay(fleet, tmp_path):
    """`facepay sale --face` on a terminal that has not heard from the back office: card only."""
    import json
    import subprocess
    import sys

    from tests.conftest import OBAMA_PROBES

    cfg = fleet.provision("stale-1", max_staleness_s=1)
    r = subprocess.run([sys.executable, "-m", "terminal", "--config", str(cfg), "--data-dir", str(tmp_path / "d"),
                        "sale", "--amount", "2.00", "--face", str(OBAMA_PROBES[0]), "--confirm", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["status"] == "face_pay_paused"
    assert out["reason"].startswith("Face pay paused: this terminal is offline")
    r = subprocess.run([sys.executable, "-m", "terminal", "--config", str(cfg), "--data-dir", str(tmp_path / "d"),
                        "sale", "--amount", "2.00", "--card-uid", "04A1B2C3", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout)["status"] == "approved"  # the card is always offered


def test_a_terminal_cannot_publish_on_another_terminals_subjects(fleet):
    import asyncio

    import nats

    from tests.helpers.fleet import terminal_nats

    cfg_a = fleet.provision("perm-a")
    fleet.provision("perm-b")

    async def go():
        errors = []

        async def error_cb(exc):
            errors.append(str(exc))

        nc = await terminal_nats(fleet, cfg_a, error_cb=error_cb)
        js = nc.jetstream(timeout=2)
        try:
            ack = await js.publish("facepay.t.perm-a.sale", b'{"sale_id": "own"}', headers={"Nats-Msg-Id": "perm-a:x"})
            assert ack.stream == "SALES"  # its own subject: accepted
            with pytest.raises(nats.errors.TimeoutError):  # the server drops it: no ack ever comes
                await js.publish("facepay.t.perm-b.sale", b'{"sale_id": "forged"}')
            with pytest.raises(nats.errors.TimeoutError):  # nor may it inject revocations
                await js.publish("facepay.revocations", b'{"revocation_id": "x", "card_hash": "y"}')
            await nc.flush()
            await asyncio.sleep(0.3)
        finally:
            await nc.close()
        return errors

    errors = asyncio.run(go())
    assert any("permissions violation for publish to \"facepay.t.perm-b.sale\"" in e.lower() for e in errors), errors
    assert any("permissions violation for publish to \"facepay.revocations\"" in e.lower() for e in errors), errors


def test_manager_sets_a_mode_and_the_terminal_follows_and_records_it(fleet):
    import http.cookiejar
    import urllib.request

    from terminal.config import load_config
    from terminal.service import Terminal

    tid = "mode-1"
    cfg = fleet.provision(tid)
    fleet.start_agent(tid)
    anon = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    assert anon.open(fleet.web + "/dashboard", timeout=10).url.endswith("/login")  # staff only
    opener, post = fleet.staff_login()
    post(f"/terminals/{tid}/mode", mode="card_only")
    wait_for(lambda: fleet.sql("SELECT mode FROM terminals WHERE id = %s", tid)[0][0] == "card_only", 30,
             "the terminal's heartbeat with the new mode")
    term = Terminal(load_config(cfg), fleet.data_dir(tid))
    try:
        assert term.mode() == "card_only"
        changes = term.ledger.events(kind="mode_changed")
        assert changes[-1].details["to"] == "card_only" and changes[-1].details["by"] == "back office"
    finally:
        term.close()
    assert "card_only" in opener.open(fleet.web + "/dashboard", timeout=10).read().decode()


def test_browser_shopper_opts_out_with_a_code_and_sees_the_receipts(fleet):
    from tests.helpers.fleet import chromium

    tids = ["web-a", "web-b"]
    cfgs = {t: fleet.provision(t) for t in tids}
    code = enrol_direct(cfgs["web-a"], fleet.data_dir("web-a"), bytes.fromhex("04C0FFEE"), seed=7)
    for t in tids:
        fleet.start_agent(t)
    wait_for(lambda: fleet.sql("SELECT count(*) FROM optout_codes WHERE terminal_id = 'web-a'")[0][0] == 1, 30,
             "the enrolment link")
    with chromium() as browser:
        page = browser.new_page()
        page.goto(fleet.web + "/")
        page.get_by_label("Opt-out code").fill(code)
        page.get_by_role("button", name="Opt out").click()
        page.wait_for_url("**/optout/rev_*")
        assert page.get_by_role("heading").inner_text() == "Received"
        rid = page.url.rsplit("/", 1)[1]
        wait_for(lambda: {t: fleet.receipts(rid).get(t) for t in tids} == {"web-a": "deleted", "web-b": "none-held"},
                 20, "the receipts of web-a and web-b", detail=lambda: fleet.receipts(rid))
        # the shopper is told only "being carried out" or, once every terminal of the fleet (those of earlier
        # tests too) has answered, "done"
        told = re.compile(r"^(Your request is being carried out\.|Done: your request has been carried out\.)$")
        page.get_by_role("status").filter(has_text=told).wait_for(timeout=5000)
        assert "web-a" not in page.content() and "web-b" not in page.content()  # no terminal inventory
        page.screenshot(path=str(fleet.workdir.parent / "optout-page.png"))
    assert shopper_count(cfgs["web-a"], fleet.data_dir("web-a")) == 0


KIOSK_ENROL = """
name = "fleet kiosk: the enrolment-done screen shows the opt-out code as text and QR code"
[[steps]]
do = "wait"
screen = "attract"
[[steps]]
do = "see"
target = "facepay_state"
text = "Face pay ON"
[[steps]]
do = "press"
target = "enrol"
[[steps]]
do = "wait"
screen = "enrol_consent"
[[steps]]
do = "press"
target = "agree"
[[steps]]
do = "wait"
screen = "enrol_details"
[[steps]]
do = "type"
target = "name"
text = "Kit Harington"
[[steps]]
do = "type"
target = "phone"
text = "4321"
[[steps]]
do = "camera"
source = "empty"
[[steps]]
do = "press"
target = "next"
[[steps]]
do = "wait"
screen = "enrol_capture"
[[steps]]
do = "camera"
source = "turn"
photo = "{ROSE}"
[[steps]]
do = "wait"
screen = "enrol_card"
[[steps]]
do = "tap_card"
card = "other"
[[steps]]
do = "wait"
screen = "enrol_done"
[[steps]]
do = "see"
target = "optout"
text = "Your opt-out code: "
[[steps]]
do = "screenshot"
label = "enrol_done-optout"
[[steps]]
do = "press"
target = "done"
[[steps]]
do = "wait"
screen = "attract"
"""

KIOSK_PAUSED = """
name = "fleet kiosk out of touch: face pay paused, card only"
[[steps]]
do = "wait"
screen = "attract"
[[steps]]
do = "see"
target = "consent_state"
text = "Face pay paused: this terminal is offline. Please pay by card."
[[steps]]
do = "see"
target = "facepay_state"
text = "Face pay paused: this terminal is offline"
[[steps]]
do = "screenshot"
label = "attract-paused"
"""


def _kiosk(cfg, data, script, shots, tmp_path):
    import json
    import os
    import shutil
    import subprocess
    import sys

    (tmp_path / "scenario.toml").write_text(script)
    cmd = [sys.executable, "-m", "terminal", "--config", str(cfg), "--data-dir", str(data), "run", "--demo",
           "--script", str(tmp_path / "scenario.toml"), "--screenshots", str(shots)]
    if not os.environ.get("DISPLAY"):
        cmd = [shutil.which("xvfb-run") or "xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *cmd]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPAY_")} | {"KIVY_NO_ARGS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    result = json.loads((shots / "result.json").read_text()) if (shots / "result.json").exists() else None
    assert r.returncode == 0 and result and result["passed"], (result, r.stdout[-2000:], r.stderr[-3000:])


@pytest.mark.ui
def test_kiosk_shows_the_optout_code_and_its_agent_links_the_enrolment(fleet, tmp_path):
    import tomllib

    from terminal.ui.qr import qr_matrix

    cfg = fleet.provision("kiosk-1")
    shots = tmp_path / "shots"
    # the shopper does the head-turn challenge (a turn rendered from the photo's own face mesh)
    rose = FACES / "extra" / "rose_leslie_1.jpg"
    _kiosk(cfg, fleet.data_dir("kiosk-1"), KIOSK_ENROL.replace("{ROSE}", str(rose)), shots, tmp_path)
    assert list(shots.glob("*enrol_done-optout*.png"))
    # the kiosk's in-process agent sent both enrolment links (the demo shopper's and Kit's)
    wait_for(lambda: fleet.sql("SELECT count(*) FROM optout_codes WHERE terminal_id = 'kiosk-1'")[0][0] == 2, 30,
             "the kiosk's enrolment links")
    url = tomllib.loads(cfg.read_text())["fleet"]["optout_url"]
    assert url == fleet.web + "/" and len(qr_matrix(url + "?code=ABCD-EFGH-JKLM-NPQR")) > 21
    assert not [p for p in fleet.data_dir("kiosk-1").rglob("*") if p.suffix.lower() in (".png", ".jpg")]


@pytest.mark.ui
def test_kiosk_out_of_touch_shows_face_pay_paused(fleet, tmp_path):
    from tests.helpers.fleet import free_port

    cfg = fleet.provision("kiosk-2", max_staleness_s=1)
    text = cfg.read_text().replace(fleet.nats, f"nats://127.0.0.1:{free_port()}")  # nothing listens there
    cfg.write_text(text)
    _kiosk(cfg, tmp_path / "data", KIOSK_PAUSED, tmp_path / "shots", tmp_path)


def test_a_ledger_head_that_goes_backwards_is_flagged(fleet):
    """The back office anchors each terminal's ledger head: restoring an old copy of facepay.db shows."""
    import shutil

    tid = "rb-1"
    cfg = fleet.provision(tid)
    data = fleet.data_dir(tid)
    enrol_direct(cfg, data, bytes.fromhex("04010101"), seed=31)  # ledger entry 2 (entry 1 is the genesis entry)
    backup = data.parent / f"{tid}-backup"
    shutil.copytree(data, backup)
    enrol_direct(cfg, data, bytes.fromhex("04020202"), seed=32)  # 3
    enrol_direct(cfg, data, bytes.fromhex("04030303"), seed=33)  # 4
    fleet.start_agent(tid)
    wait_for(lambda: fleet.sql("SELECT ledger_seq FROM terminals WHERE id = %s", tid)[0][0] == 4, 30, "head 4")
    assert fleet.sql("SELECT ledger_flag FROM terminals WHERE id = %s", tid)[0][0] is None
    fleet.stop_agent(tid)
    shutil.rmtree(data)
    shutil.copytree(backup, data)  # the old copy, whose own chain verifies
    fleet.start_agent(tid)
    flag = wait_for(lambda: fleet.sql("SELECT ledger_flag FROM terminals WHERE id = %s", tid)[0][0], 30, "the flag")
    assert flag == "ledger rolled back: head went back from 4 to 2"


def test_serve_rate_limits_the_public_optout(fleet):
    """A second back office (`facepay-backoffice serve`) on the same PostgreSQL and NATS, with a low limit:
    the public opt-out answers 429 past it, and "received" the same way for any code before it."""
    import json
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from tests.helpers.fleet import free_port, stop_process

    state = json.loads((fleet.workdir / "fleet.json").read_text())
    nats = f"tls://{state['admin_user']}:{state['admin_password']}@127.0.0.1:{state['nats_port']}"
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "backoffice.cli", "serve", "--db", fleet.db, "--nats", nats,
                             "--listen", f"127.0.0.1:{port}", "--optout-rate", "2/60",
                             "--signing-key", str(fleet.workdir / "revocation-signing.key"),
                             "--nats-ca", str(fleet.workdir / "ca.pem")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("back office on http://127.0.0.1:")
        web = f"http://127.0.0.1:{port}"

        def post(code):
            req = urllib.request.Request(web + "/api/optout", data=json.dumps({"code": code}).encode(),
                                         method="POST", headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, json.loads(e.read())

        a, b, c = post("AAAA-AAAA-AAAA-AAAA"), post("BBBB-BBBB-BBBB-BBBB"), post("CCCC-CCCC-CCCC-CCCC")
        assert a[0] == b[0] == 202 and set(a[1]) == set(b[1]) == {"status", "revocation_id"}
        assert a[1]["status"] == b[1]["status"] == "received"
        assert c[0] == 429
    finally:
        code = stop_process(proc, timeout=30)
    assert code == 0


# -- issue 19: what one terminal's config can and cannot do to the fleet ---------------------------------
ATTACK = ["atk-a", "atk-b", "atk-c"]


@pytest.fixture(scope="module")
def trio(fleet):
    """Three terminals with running agents; the attacker holds atk-a's config (user, password, card key)."""
    cfgs = {t: fleet.provision(t) for t in ATTACK}
    for t in ATTACK:
        fleet.start_agent(t)
    wait_for(lambda: fleet.sql("SELECT count(*) FROM terminals WHERE id LIKE 'atk-%%' AND NOT face_pay_paused")[0][0]
             == 3, 60, "the three agents caught up")
    return cfgs


def _optout_reaches_every_terminal(fleet, cfgs, uid: bytes, within_s: float = 5.0) -> float:
    """A real opt-out: the card enrolled at every terminal, its code posted; every terminal has deleted it
    (receipts at the back office, no shopper left) within ``within_s``.  Returns the seconds it took."""
    import time

    codes = [enrol_direct(cfgs[t], fleet.data_dir(t), uid, seed=i + 60) for i, t in enumerate(cfgs)]
    held = {t: shopper_count(cfgs[t], fleet.data_dir(t)) for t in cfgs}
    wait_for(lambda: fleet.sql("SELECT count(*) FROM optout_codes WHERE code_hash = ANY(%s)",
                               [code_hash(c) for c in codes])[0][0] == len(cfgs), 30, "the enrolment links")
    start = time.monotonic()
    status, body = fleet.http("POST", "/api/optout", {"code": codes[0]})
    assert status == 202
    rid = body["revocation_id"]
    wait_for(lambda: all(fleet.receipts(rid).get(t) == "deleted"
                         for t in cfgs), within_s, f"every terminal's deletion within {within_s} s",
             detail=lambda: fleet.receipts(rid))
    took = time.monotonic() - start
    assert all(shopper_count(cfgs[t], fleet.data_dir(t)) == held[t] - 1 for t in cfgs)
    return took


def test_a_terminal_cannot_jam_the_revocation_stream(fleet, trio):
    """Issue 19, attack 1: JetStream API requests with reply="facepay.revocations" and a push consumer whose
    deliver subject is the revocation stream, from a stolen terminal config; and junk already in the stream
    (unsigned, wrongly signed, not even JSON): agents skip it, count it, and a real opt-out still reaches every
    terminal within 5 s."""
    import asyncio
    import json

    import nats
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from terminal.fleet.contract import signed_revocation
    from tests.helpers.fleet import _as_admin, admin_nats, consumer_names, stream_messages, terminal_nats

    before = stream_messages(fleet, "REVOCATIONS")
    kv = "KV_fleet_atk-a"
    consumers = consumer_names(fleet, kv)

    async def attack():
        nc = await terminal_nats(fleet, trio["atk-a"])
        answers = {}
        try:
            # 1a: answers aimed at the revocation stream, on every subject the terminal may use (and the
            # issue's own names for them)
            for subj, body in [("JS.BO.API.CONSUMER.INFO.REVOCATIONS.rev_atk-a", b""),
                               ("JS.BO.API.CONSUMER.MSG.NEXT.REVOCATIONS.rev_atk-a", b'{"batch":1,"no_wait":true}'),
                               (f"JS.BO.API.STREAM.MSG.GET.{kv}", b'{"last_by_subj":"$KV.fleet_atk-a.mode"}'),
                               ("JS.BO.API.STREAM.MSG.GET.REVOKED", b'{"seq":1}'),
                               ("facepay.t.atk-a.hb", b"{}"),
                               ("$JS.API.CONSUMER.INFO.REVOCATIONS.rev_atk-a", b""),
                               (f"$JS.API.STREAM.INFO.{kv}", b"")]:
                for _ in range(3):
                    await nc.publish(subj, body, reply="facepay.revocations")
            # 1b: a push consumer on its own bucket delivering into the revocation stream
            create = json.dumps({"stream_name": kv, "config": {
                "deliver_subject": "facepay.revocations", "ack_policy": "none", "deliver_policy": "all",
                "idle_heartbeat": 1_000_000_000, "flow_control": True}}).encode()
            for subj in (f"$JS.API.CONSUMER.CREATE.{kv}", f"JS.BO.API.CONSUMER.CREATE.{kv}",
                         f"JS.BO.API.CONSUMER.DURABLE.CREATE.{kv}.jam", "$JS.API.CONSUMER.CREATE.REVOCATIONS"):
                try:
                    answers[subj] = (await nc.request(subj, create, timeout=1)).data.decode()
                except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
                    answers[subj] = type(exc).__name__
            await nc.flush()
        finally:
            await nc.close()
        return answers

    answers = asyncio.run(attack())
    # its own account has no JetStream to make a consumer in, and the back office's is not imported
    assert all("consumer_create_response" not in a or "not enabled" in a for a in answers.values()), answers
    import time

    time.sleep(3)  # the old attack added a message a second: none came
    assert stream_messages(fleet, "REVOCATIONS") == before
    assert consumer_names(fleet, kv) == consumers

    # junk in the stream all the same (as the issue found it, left by the old attack, or a key mix-up)
    async def junk():
        nc = await admin_nats(fleet)
        try:
            js = nc.jetstream()
            for body in [b'{"type":"io.nats.jetstream.api.v1.consumer_info_response","stream_name":"REVOCATIONS"}',
                         json.dumps({"revocation_id": "rev_00000000000000aa", "card_hash": "a" * 64}).encode(),
                         signed_revocation(Ed25519PrivateKey.generate(), "rev_00000000000000bb", "b" * 64),
                         b"\xff not json"]:
                await js.publish("facepay.revocations", body)
        finally:
            await nc.close()

    asyncio.run(junk())
    took = _optout_reaches_every_terminal(fleet, trio, bytes.fromhex("04A7A701"))
    print(f"opt-out after the attacks reached 3 terminals in {took:.2f} s")
    wait_for(lambda: fleet.sql("SELECT min(bad_revocations) FROM terminals WHERE id LIKE 'atk-%%'")[0][0] >= 4, 20,
             "every agent reporting the 4 skipped messages in its heartbeat")

    # poison-message safe: the junk was acknowledged (not left to be redelivered for ever), so every
    # consumer's ack floor is the stream's end and no terminal pauses face pay over it
    async def unacked(js):
        last = (await js.stream_info("REVOCATIONS")).state.last_seq
        out = {}
        for t in trio:
            ci = await js.consumer_info("REVOCATIONS", f"rev_{t}")
            out[t] = (last - ci.ack_floor.stream_seq, ci.num_ack_pending, ci.num_redelivered)
        return out

    wait_for(lambda: all(v[:2] == (0, 0) for v in _as_admin(fleet, unacked).values()), 20,
             "every agent's consumer acknowledged to the stream's end", detail=lambda: _as_admin(fleet, unacked))
    assert fleet.sql("SELECT count(*) FROM terminals WHERE id LIKE 'atk-%%' AND face_pay_paused")[0][0] == 0


def test_a_terminal_cannot_rewrite_another_terminals_sale(fleet, trio):
    """Issue 19, attack 2: a sale event with another terminal's sale_id, on the attacker's own subject,
    writes only the attacker's own row; and no terminal can move a status backwards."""
    import asyncio
    import json

    import nats

    from terminal.config import load_config
    from terminal.sale import run_sale
    from terminal.service import Terminal
    from tests.helpers.fleet import terminal_nats

    term = Terminal(load_config(trio["atk-b"]), fleet.data_dir("atk-b"))
    try:
        sale = run_sale(term, amount="4.20", card_uid=bytes.fromhex("04A1B2C3"))
    finally:
        term.close()
    assert sale["status"] == "approved"
    sid = sale["sale_id"]
    row = "SELECT terminal_id, status, amount_minor FROM sales WHERE sale_id = %s ORDER BY terminal_id"
    wait_for(lambda: fleet.sql(row, sid) == [("atk-b", "approved", 420)], 30, "atk-b's sale at the back office")

    def event(status, amount=420):
        return json.dumps({"sale_id": sid, "created_at": "2026-12-01T10:00:00+00:00", "amount_minor": amount,
                           "currency": "EUR", "method": "card", "training": 0, "status": status}).encode()

    async def forge(cfg, tid, sends):
        nc = await terminal_nats(fleet, cfg)
        js = nc.jetstream(timeout=2)
        try:
            for i, (subject, status) in enumerate(sends):
                try:
                    await js.publish(subject, event(status, 1), headers={"Nats-Msg-Id": f"{tid}:forged:{i}"})
                except nats.errors.TimeoutError:
                    pass  # another terminal's subject: dropped by the server
        finally:
            await nc.close()

    asyncio.run(forge(trio["atk-a"], "atk-a", [("facepay.t.atk-a.sale", "declined"),
                                               ("facepay.t.atk-b.sale", "declined")]))
    wait_for(lambda: fleet.sql("SELECT count(*) FROM events WHERE id = 'atk-a:forged:0'")[0][0] == 1, 30,
             "the forged event ingested")
    # the attacker wrote a row of its own, under its own id; atk-b's sale is untouched
    assert fleet.sql(row, sid) == [("atk-a", "declined", 1), ("atk-b", "approved", 420)]

    # atk-b's own config cannot move its approved sale back either; forward (refunded) it may
    asyncio.run(forge(trio["atk-b"], "atk-b", [("facepay.t.atk-b.sale", "declined"),
                                               ("facepay.t.atk-b.sale", "pending")]))
    wait_for(lambda: fleet.sql("SELECT count(*) FROM events WHERE id LIKE 'atk-b:forged:%%'")[0][0] == 2, 30,
             "atk-b's rewrites ingested")
    assert fleet.sql("SELECT status, amount_minor FROM sales WHERE terminal_id = 'atk-b' AND sale_id = %s", sid) == \
        [("approved", 420)]
    async def refund():
        nc = await terminal_nats(fleet, trio["atk-b"])
        try:
            await nc.jetstream(timeout=2).publish("facepay.t.atk-b.sale", event("refunded"),
                                                  headers={"Nats-Msg-Id": "atk-b:refund:1"})
        finally:
            await nc.close()

    asyncio.run(refund())
    wait_for(lambda: fleet.sql("SELECT status FROM sales WHERE terminal_id = 'atk-b' AND sale_id = %s", sid)
             == [("refunded",)], 30, "approved -> refunded")


def test_a_stolen_config_forges_optouts_only_at_its_rate_shown_with_its_name(fleet, trio):
    """Issue 19, attack 3: HMAC(card_key, UID) sent as atk-a's `optout`.  It still deletes the card fleet-wide
    (what a stolen config can do, docs/fleet.md), but at most 10 per hour go out, the dashboard names atk-a
    as the sender, and atk-a is never marked `deleted` without a receipt of its own."""
    import asyncio
    import json
    import secrets
    import tomllib

    from terminal.fleet.link import fleet_card_hash
    from tests.helpers.fleet import terminal_nats

    uid = bytes.fromhex("04FA4E01")
    enrol_direct(trio["atk-b"], fleet.data_dir("atk-b"), uid, seed=70)
    held = shopper_count(trio["atk-b"], fleet.data_dir("atk-b"))
    key = tomllib.loads(trio["atk-a"].read_text())["fleet"]["card_key"]
    hashes = [fleet_card_hash(key, uid)] + [secrets.token_hex(32) for _ in range(11)]

    async def forge():
        nc = await terminal_nats(fleet, trio["atk-a"])
        js = nc.jetstream(timeout=3)
        try:
            for i, h in enumerate(hashes):
                await js.publish("facepay.t.atk-a.optout", json.dumps({"card_hash": h, "receipt_id": f"r{i}"}).encode(),
                                 headers={"Nats-Msg-Id": f"atk-a:forged-optout:{i}"})
        finally:
            await nc.close()

    asyncio.run(forge())
    rows = "SELECT id, card_hash, published_at IS NOT NULL, not_before > now() + interval '50 minutes' " \
           "FROM revocations WHERE source_terminal = 'atk-a'"
    wait_for(lambda: len(fleet.sql(rows)) == 12, 30, "12 opt-outs recorded from atk-a")
    wait_for(lambda: sum(r[2] for r in fleet.sql(rows)) == 10, 30, "10 of them sent")
    recorded = fleet.sql(rows)
    assert sorted((r[2], r[3]) for r in recorded) == [(False, True)] * 2 + [(True, False)] * 10  # 2 wait an hour
    rid = next(r[0] for r in recorded if r[1] == hashes[0])
    # what a stolen config can still do: the card is gone at atk-b too
    wait_for(lambda: fleet.receipts(rid)["atk-b"] == "deleted", 20,
             "atk-b's deletion")
    assert shopper_count(trio["atk-b"], fleet.data_dir("atk-b")) == held - 1
    # the sender's own agent answered for itself: it held nothing, so it is not "deleted"
    wait_for(lambda: fleet.receipts(rid)["atk-a"] == "none-held", 20,
             "atk-a's own receipt")
    opener, _ = fleet.staff_login()
    page = opener.open(fleet.web + "/dashboard", timeout=10).read().decode()
    table = page[page.index('id="optouts"'):]
    row = table[table.index(f'data-revocation="{rid}"'):]
    assert row[:row.index("</tr>")].count('<span data-sender="atk-a">atk-a</span>') == 1  # shown with its sender
    assert table.count("waiting (that terminal's rate limit) until") == 2


def test_a_restored_data_folder_loses_the_opted_out_shopper_and_is_flagged(fleet):
    """Issue 19, attack 4 (also an innocent SD-image restore followed by offline trading): copy the data
    folder, opt the shopper out, copy the old facepay.db and keystore.db back, make four ledger entries,
    start the agent.  The shopper is deleted before face pay comes back, the back office flags "ledger
    rolled back" and face pay stays paused there until staff clear it."""
    import shutil
    import sqlite3

    from terminal.config import load_config
    from terminal.service import Terminal

    tid = "rs-1"
    cfg = fleet.provision(tid, max_staleness_s=3)  # the copy is older than that when it comes back
    data = fleet.data_dir(tid)
    uid = bytes.fromhex("04BE57AE")
    code = enrol_direct(cfg, data, uid, seed=80)
    fleet.start_agent(tid)
    wait_for(lambda: fleet.sql("SELECT count(*) FROM optout_codes WHERE terminal_id = %s", tid)[0][0] == 1, 30,
             "the enrolment link")
    fleet.stop_agent(tid)
    backup = data.parent / f"{tid}-copy"
    backup.mkdir()
    saved = [p for p in data.iterdir() if p.name.startswith(("facepay.db", "keystore.db"))]
    for p in saved:
        shutil.copy2(p, backup / p.name)

    fleet.start_agent(tid)
    status, body = fleet.http("POST", "/api/optout", {"code": code})
    assert status == 202
    rid = body["revocation_id"]
    wait_for(lambda: fleet.receipts(rid)[tid] == "deleted", 30,
             "the deletion receipt")
    assert shopper_count(cfg, data) == 0

    def head():
        with sqlite3.connect(data / "facepay.db") as c:
            return c.execute("SELECT seq FROM ledger_head WHERE id = 1").fetchone()[0]

    after_delete = head()
    wait_for(lambda: fleet.sql("SELECT ledger_seq FROM terminals WHERE id = %s", tid)[0][0] == after_delete, 30,
             "the back office seeing the head after the deletion")
    fleet.stop_agent(tid)

    for p in data.iterdir():
        if p.name.startswith(("facepay.db", "keystore.db")):
            p.unlink()
    for p in saved:
        shutil.copy2(backup / p.name, data / p.name)
    term = Terminal(load_config(cfg), data)
    try:
        with sqlite3.connect(data / "facepay.db") as c:
            (sid,), = c.execute("SELECT id FROM shoppers").fetchall()
        shopper = term.store.get(sid)
        assert shopper is not None  # the opted-out shopper is back in the copy
        for mode in ("card_only", "normal", "card_only", "normal"):  # four ledger entries, offline
            term.set_mode(mode)
        assert head() >= after_delete  # the old check (sequence numbers only) sees nothing wrong
        wait_for(term.fleet_paused, 10, "the copy's old 'caught up' running out")

        fleet.start_agent(tid)
        import time

        deadline = time.monotonic() + 30
        while term.store.get(shopper.id) is not None:  # face pay stays off while the face is still here
            assert term.fleet_paused() and term.gallery().ids == []
            assert fleet.agents[tid].poll() is None
            assert time.monotonic() < deadline, "the agent's start did not delete the opted-out shopper"
            time.sleep(0.02)
        flag = wait_for(lambda: fleet.sql("SELECT ledger_flag FROM terminals WHERE id = %s", tid)[0][0], 30,
                        "the rollback flag")
        assert flag.startswith("ledger rolled back: entry ")
        wait_for(lambda: term.fleet.hold() is not None, 20, "the back office's hold on face pay")
        assert term.fleet_paused()
        assert fleet.receipts(rid)[tid] == "deleted"

        opener, form = fleet.staff_login()
        assert "ledger rolled back" in opener.open(fleet.web + "/dashboard", timeout=10).read().decode()
        form(f"/terminals/{tid}/clear-flag")
        wait_for(lambda: not term.fleet_paused(), 30, "face pay back after staff cleared the flag")
        assert fleet.sql("SELECT ledger_flag FROM terminals WHERE id = %s", tid)[0][0] is None
        assert shopper.id not in term.gallery().ids
    finally:
        term.close()


def test_nats_conf_keeps_bcrypt_hashes_and_terminals_connect_only_over_tls(fleet):
    """Issue 19, item 6 (transport): provision writes tls:// with the fleet's CA; nats.conf and fleet.json
    hold no terminal password; the server takes no plain connection and no certificate but the fleet's."""
    import asyncio
    import json
    import ssl
    import tomllib

    import nats

    from tests.helpers.fleet import terminal_nats

    cfg = fleet.provision("tls-1")
    f = tomllib.loads(cfg.read_text())["fleet"]
    assert f["nats_url"].startswith("tls://127.0.0.1:") and "BEGIN CERTIFICATE" in f["ca_pem"]
    conf_text = (fleet.workdir / "nats.conf").read_text()
    state_text = (fleet.workdir / "fleet.json").read_text()
    admin_pw = json.loads(state_text)["admin_password"]
    assert f["password"] not in conf_text and f["password"] not in state_text and admin_pw not in conf_text
    conf = json.loads(conf_text)
    users = [u for a in conf["accounts"].values() for u in a["users"]]
    assert len(users) >= 2 and all(u["password"].startswith("$2a$11$") for u in users)
    assert conf["tls"]["cert_file"].endswith("server.pem")

    async def go():
        plain = f["nats_url"].replace("tls://", "nats://")
        for url, tls in [(plain, None), (f["nats_url"], ssl.create_default_context())]:
            with pytest.raises(Exception):  # noqa: B017 - no plain-text login, no other CA
                nc = await nats.connect(url, user=f["user"], password=f["password"], tls=tls, allow_reconnect=False,
                                        connect_timeout=2, max_reconnect_attempts=0)
                await nc.close()
        nc = await terminal_nats(fleet, cfg)  # the fleet's CA: accepted
        assert nc.connected_url.scheme == "tls"
        await nc.close()

    asyncio.run(go())
