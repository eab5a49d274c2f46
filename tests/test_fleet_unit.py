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
from terminal.fleet.contract import code_hash, new_optout_code, normalise_code
from terminal.sale import run_sale
from terminal.service import Terminal

KEY = "ab" * 32
PUB = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"  # RFC 8032 test 1's public key
FLEET = f"""terminal_id = "till-9"
[fleet]
nats_url = "nats://127.0.0.1:1"
user = "t-till-9"
password = "pw"
card_key = "{KEY}"
revocation_key = "{PUB}"
"""


def test_fleet_section_parsed_and_half_filled_sections_refused():
    cfg = parse_config(FLEET, "t.toml")
    assert cfg.fleet.enabled and cfg.fleet.max_staleness_s == 300.0
    assert not parse_config('terminal_id = "x"', "t.toml").fleet.enabled  # no [fleet]: alone, as before
    for bad, what in [(FLEET.replace('card_key = "' + KEY + '"', 'card_key = "12"'), "64 hexadecimal"),
                      (FLEET.replace('password = "pw"\n', ""), "'fleet.password' is required"),
                      (FLEET.replace(PUB, "12"), "Ed25519 public key"),
                      (FLEET.replace(f'revocation_key = "{PUB}"\n', ""), "'fleet.revocation_key' is required"),
                      (FLEET + 'ca_pem = "not a certificate"\n', "not a PEM certificate"),
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


def test_generated_nats_conf_puts_each_terminal_in_its_own_account():
    from backoffice.natsconf import render

    conf = json.loads(render({"nats_port": 4222, "admin_user": "backoffice", "admin_password_hash": "$2a$11$x",
                              "nats_pid_file": "/x/pid", "nats_store": "/x/js",
                              "terminals": {"t1": "$2a$11$h1", "t2": "$2a$11$h2"}}))
    assert "authorization" not in conf
    accounts = conf["accounts"]
    assert set(accounts) == {"BACKOFFICE", "T_t1", "T_t2"}
    bo = accounts["BACKOFFICE"]
    assert bo["jetstream"] == "enabled" and "jetstream" not in accounts["T_t1"]
    assert "permissions" not in bo["users"][0] and bo["users"][0]["password"].startswith("$2a$")
    exported = {e["service"] for e in bo["exports"]}
    assert not [s for s in exported if "CREATE" in s or s.startswith("facepay.revocations")]
    t1 = accounts["T_t1"]
    imported = {i["service"]["subject"] for i in t1["imports"]}
    assert "facepay.t.t1.>" in imported and "$JS.API.CONSUMER.MSG.NEXT.REVOCATIONS.rev_t1" in imported
    assert not [s for s in imported if "t2" in s or "CREATE" in s or "DELETE" in s or s == "facepay.revocations"]
    perms = t1["users"][0]["permissions"]
    assert t1["users"][0]["password"] == "$2a$11$h1"
    assert not [s for s in perms["publish"]["allow"] if "t2" in s or s.endswith(".*") or s.startswith("$JS.API")]
    assert perms["subscribe"]["allow"] == ["_INBOX_t1.>"]


def test_a_revocation_counts_only_with_the_back_offices_signature():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from terminal.fleet.contract import BadRevocation, signed_revocation, verify_revocation

    key, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    h = "c" * 64
    good = signed_revocation(key, "rev_0123456789abcdef", h)
    assert verify_revocation(key.public_key(), good) == ("rev_0123456789abcdef", h)
    d = json.loads(good)
    bad = [signed_revocation(other, "rev_0123456789abcdef", h),  # someone else's key
           json.dumps({**d, "card_hash": "d" * 64}).encode(),  # another card under the same signature
           json.dumps({"revocation_id": d["revocation_id"], "card_hash": h}).encode(),  # unsigned
           b'{"type":"io.nats.jetstream.api.v1.consumer_info_response"}', b"\x00junk", b"[]", b"",
           json.dumps({**d, "sig": "zz"}).encode(), json.dumps({**d, "revocation_id": 7}).encode()]
    for b in bad:
        with pytest.raises(BadRevocation):
            verify_revocation(key.public_key(), b)


def test_nats_passwords_are_bcrypt_hashes_nats_server_reads():
    import bcrypt

    from backoffice.natsconf import hash_password

    h = hash_password("secret password")
    assert h.startswith("$2a$11$") and "secret" not in h
    assert bcrypt.checkpw(b"secret password", ("$2b$" + h[4:]).encode())


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
