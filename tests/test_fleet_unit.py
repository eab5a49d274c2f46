"""Issue 14, the parts that need no server: [fleet] config, outbox transactions, codes, the CLI's bad input."""

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from terminal import consent
from terminal.config import parse_config
from terminal.errors import ConfigError
from terminal.fleet.link import code_hash, new_optout_code, normalise_code
from terminal.sale import run_sale
from terminal.service import Terminal

KEY = "ab" * 32
FLEET = f"""terminal_id = "till-9"
[fleet]
nats_url = "nats://127.0.0.1:1"
user = "t-till-9"
password = "pw"
card_key = "{KEY}"
"""


def test_fleet_section_parsed_and_half_filled_sections_refused():
    cfg = parse_config(FLEET, "t.toml")
    assert cfg.fleet.enabled and cfg.fleet.max_staleness_s == 300.0
    assert not parse_config('terminal_id = "x"', "t.toml").fleet.enabled  # no [fleet]: alone, as before
    for bad, what in [(FLEET.replace('card_key = "' + KEY + '"', 'card_key = "12"'), "64 hexadecimal"),
                      (FLEET.replace('password = "pw"\n', ""), "'fleet.password' is required"),
                      (FLEET.replace('nats_url = "nats://127.0.0.1:1"', 'nats_url = "http://x"'), "nats://"),
                      (FLEET.replace('"till-9"', '"till 9"', 1), "cannot be used in a fleet"),
                      (FLEET + "max_staleness_s = 0\n", "greater than 0"),
                      ('terminal_id = "x"\n[fleet]\nuser = "u"\n', "'fleet.nats_url' is missing")]:
        with pytest.raises(ConfigError, match=what):
            parse_config(bad, "t.toml")


def test_optout_codes_are_random_and_typed_forgivingly():
    codes = {new_optout_code() for _ in range(200)}
    assert len(codes) == 200 and all(len(c) == 19 and c.count("-") == 3 for c in codes)
    assert not set("".join(codes)) - set("0123456789ABCDEFGHJKMNPQRSTVWXYZ-")  # Crockford: no I, L, O, U
    assert {"0", "1", "Z"} <= set("".join(codes))   # the whole alphabet is drawn from (32 symbols)
    c = next(iter(codes))
    assert code_hash(c) == code_hash(c.lower().replace("-", " ")) != code_hash(c[:-1] + "X" if c[-1] != "X" else "Y")
    # typed back with the usual confusions: O for 0, I or l for 1
    assert code_hash("K7Q0-3XPA-WD1R-9HNE") == code_hash("k7qo 3xpa wdlr 9hne") == code_hash("K7QO3XPAWDIR9HNE")
    assert normalise_code(" k7qo-3xpa-wdIr-9hne ") == "K7Q03XPAWD1R9HNE"


def _outbox(db):
    return [(r[0], r[1]) for r in db.execute("SELECT kind, payload FROM fleet_outbox ORDER BY seq")]


def test_outbox_rows_share_the_transaction_of_their_sale_and_ledger_event(tmp_path):
    term = Terminal(parse_config(FLEET, "t.toml"), tmp_path / "d")
    try:
        base = np.ones(128, np.float32) / np.sqrt(128)
        shopper = term.enrol(name="A B", card_uid=bytes.fromhex("04A1B2C3"), embeddings=[base] * 3,
                             consent_text=consent.load("en"), phone_last4="1234")
        code = term.optout_codes[shopper.id]
        kinds = [k for k, _ in _outbox(term.store.db)]
        assert kinds == ["ledger", "enrol"]
        enrol = json.loads(_outbox(term.store.db)[1][1])
        assert enrol["code_hash"] == code_hash(code) and code not in json.dumps(enrol)  # only the hash leaves
        assert len(enrol["card_hash"]) == 64 and enrol["card_hash"] != shopper.card_hash  # the fleet's key
        sale = run_sale(term, amount="4.20", card_uid=bytes.fromhex("04000001"))
        rows = _outbox(term.journal.db)
        assert [k for k, _ in rows] == ["sale"]
        event = json.loads(rows[0][1])
        assert (event["sale_id"], event["status"], event["amount_minor"]) == (sale["sale_id"], "approved", 420)
        # a local opt-out asks the fleet to follow, with the same fleet hash
        term.revoke(shopper.id)
        optout = [json.loads(p) for k, p in _outbox(term.store.db) if k == "optout"]
        assert optout and optout[0]["card_hash"] == enrol["card_hash"]
        assert term.store.db.execute("SELECT count(*) FROM fleet_links").fetchone()[0] == 0
        assert term.fleet_paused()  # never caught up with the fleet: face pay fails closed
    finally:
        term.close()


def test_no_fleet_section_writes_no_outbox(tmp_path):
    term = Terminal(parse_config('terminal_id = "alone"', "t.toml"), tmp_path / "d")
    try:
        run_sale(term, amount="1.00", card_uid=bytes.fromhex("04000001"))
        assert not term.fleet_paused() and term.fleet is None
    finally:
        term.close()
    for db in ("facepay.db", "journal.db"):  # the table is part of the schema; alone, nothing is queued in it
        with sqlite3.connect(tmp_path / "d" / db) as c:
            assert c.execute("SELECT COUNT(*) FROM fleet_outbox").fetchone()[0] == 0


def _bo(*args):
    return subprocess.run([sys.executable, "-m", "backoffice.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


def test_backoffice_cli_bad_input_is_one_clear_error(tmp_path):
    r = _bo("--workdir", tmp_path / "none", "provision", "--terminal-id", "t1", "--out", tmp_path / "t1.toml")
    assert r.returncode == 2 and "holds no back office" in r.stderr and not (tmp_path / "t1.toml").exists()
    r = _bo("--workdir", tmp_path / "none", "provision", "--terminal-id", "t.1", "--out", tmp_path / "t1.toml")
    assert r.returncode == 2 and "letters, digits" in r.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("")
    r = _bo("--workdir", tmp_path / "busy", "dev", "--listen", "127.0.0.1:1")
    assert r.returncode == 2 and "not empty" in r.stderr
    r = _bo("--workdir", tmp_path / "w", "dev", "--listen", "nonsense")
    assert r.returncode == 2 and "HOST:PORT" in r.stderr and not (tmp_path / "w").exists()
    r = subprocess.run([sys.executable, "-m", "terminal", "agent"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not in a fleet" in r.stderr


def test_generated_permissions_confine_each_terminal():
    from backoffice.natsconf import render

    conf = json.loads(render({"nats_port": 4222, "admin_user": "backoffice", "admin_password": "a",
                              "nats_pid_file": "/x/pid", "nats_store": "/x/js", "terminals": {"t1": "p1", "t2": "p2"}}))
    users = {u["user"]: u for u in conf["authorization"]["users"]}
    t1 = users["t-t1"]["permissions"]
    assert "facepay.t.t1.>" in t1["publish"]["allow"]
    assert not [s for s in t1["publish"]["allow"] if "t2" in s or s == "facepay.revocations" or s.endswith(".*")]
    assert t1["subscribe"]["allow"] == ["_INBOX_t1.>"]
    assert "permissions" not in users["backoffice"]


def test_enroll_json_gives_the_optout_code_in_a_fleet(tmp_path):
    from tests.conftest import OBAMA_ENROL, run_cli

    cfg = tmp_path / "till.toml"
    cfg.write_text(FLEET + "[liveness]\nrequired = false\n")  # photos stand in for the camera
    r = run_cli("--config", cfg, "enroll", "--json", "--name", "Barack Obama", "--card-uid", "04A1B2C3",
                "--phone-last4", "1234", "--consent", *OBAMA_ENROL, data_dir=tmp_path / "d")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    code = out["optout_code"]
    assert len(code) == 19 and code.count("-") == 3
    with sqlite3.connect(tmp_path / "d" / "facepay.db") as c:
        assert c.execute("SELECT code_hash FROM fleet_links").fetchone()[0] == code_hash(code)
