"""The promises of docs/privacy.md, each proven end to end."""

import json
import os
import shutil
import sqlite3
import stat
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from conftest import FACES, OBAMA_ENROL, OBAMA_PROBES

from terminal import consent
from terminal.ledger import ConsentLedger


@pytest.fixture(autouse=True)
def _photos_stand_in_for_the_camera(stills):
    """These promises are about what is stored and charged; the liveness check has its own tests."""


def enrol(cli, *extra):
    r = cli("enroll", "--json", "--name", "Barack Obama", "--card-uid", "04A1B2C3", "--phone-last4", "1234",
            "--consent", *OBAMA_ENROL, *extra)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["shopper_id"]


def test_the_story_opt_out_means_no_one(cli):
    """Enrol, opt out, then present the same face (and other photos of them) to pay: no one, nothing charged."""
    sid = enrol(cli)
    r = cli("sale", "--json", "--amount", "9.99", "--face", OBAMA_PROBES[0], "--confirm", "--phone-last4", "1234")
    assert json.loads(r.stdout)["status"] == "approved"

    r = cli("revoke", "--json", sid)
    assert r.returncode == 0, r.stderr
    receipt = json.loads(r.stdout)
    assert receipt["shopper_id"] == sid and receipt["receipt_id"].startswith("del_")
    assert any("face template" in d for d in receipt["deleted"])

    for photo in [*OBAMA_PROBES, *OBAMA_ENROL]:
        r = cli("sale", "--json", "--amount", "5.00", "--face", photo, "--confirm", "--phone-last4", "1234")
        out = json.loads(r.stdout)
        assert r.returncode == 1
        assert out["status"] == "no_match" and out["shopper"] is None
        assert "Obama" not in r.stdout and "B2C3" not in r.stdout
        r = cli("identify", "--json", photo)
        assert r.returncode == 1 and json.loads(r.stdout)["match"] is None

    charges = json.loads(cli("processor", "charges", "--json").stdout)
    assert [c["amount_minor"] for c in charges] == [999], "only the sale before the opt-out was charged"
    events = json.loads(cli("audit", "show", "--json").stdout)
    revokes = [e for e in events if e["kind"] == "consent_revoked"]
    assert len(revokes) == 1 and revokes[0]["details"]["receipt_id"] == receipt["receipt_id"]
    assert json.loads(cli("shoppers", "list", "--json").stdout) == []
    r = cli("revoke", sid)
    assert r.returncode == 1 and "no enrolled shopper" in r.stderr


def test_revocation_from_another_process_reaches_a_running_terminal(term, embeddings, tmp_path):
    """The kiosk holds the gallery in memory; `facepay revoke` over SSH must still take effect at once."""
    from terminal.config import Config
    from terminal.service import Terminal

    shopper = term.enrol(name="Barack Obama", card_uid=bytes.fromhex("04A1B2C3"), consent_text=consent.load("en"),
                         embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    assert term.match(embeddings["obama2.jpg"]).shopper_id == shopper.id  # the gallery is now in memory
    other = Terminal(Config(), term.data_dir)  # another process: the CLI
    other.revoke(shopper.id)
    other.close()
    m = term.match(embeddings["obama2.jpg"])
    assert m.shopper_id is None and len(term.gallery()) == 0


def test_revoke_by_card(cli):
    enrol(cli)
    r = cli("revoke", "--card-uid", "04:a1:b2:c3")
    assert r.returncode == 0 and "receipt del_" in r.stdout
    assert cli("revoke", "--card-uid", "04A1B2C3").returncode == 1


def test_crypto_shredding_defeats_an_old_copy(term, embeddings, tmp_path):
    text = consent.load("en")
    shopper = term.enrol(name="Barack Obama", card_uid=bytes.fromhex("04A1B2C3"), consent_text=text,
                         embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    before = term.store.template(shopper.id)
    assert np.allclose(before, np.mean([embeddings[p.name] for p in OBAMA_ENROL], axis=0), atol=1e-6)
    # an attacker's backup of the templates database, taken while the shopper was enrolled
    term.store.db.execute("PRAGMA wal_checkpoint(FULL)")
    stolen = tmp_path / "stolen-facepay.db"
    shutil.copy(term.data_dir / "facepay.db", stolen)
    term.revoke(shopper.id)
    old = sqlite3.connect(stolen)
    sealed = old.execute("SELECT template FROM shoppers WHERE id = ?", (shopper.id,)).fetchone()[0]
    assert sealed, "the old copy still holds the sealed template"
    # the data key is gone from the key store, and its bytes are overwritten (secure_delete + VACUUM)
    assert term.store.keys.execute("SELECT COUNT(*) FROM data_keys").fetchone()[0] == 0
    with pytest.raises(KeyError):
        term.store.template(shopper.id)
    keystore_bytes = (term.data_dir / "keystore.db").read_bytes()
    assert shopper.id.encode() not in keystore_bytes
    # the raw template floats are nowhere in plain form
    raw = before.astype(np.float32).tobytes()
    for name in ("facepay.db", "keystore.db"):
        assert raw[:64] not in (term.data_dir / name).read_bytes()
    assert raw[:64] not in stolen.read_bytes()


def test_templates_are_encrypted_and_authenticated(term, embeddings):
    shopper = term.enrol(name="A B", card_uid=bytes.fromhex("04000001"), consent_text=consent.load("en"),
                         embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    blob = term.store.db.execute("SELECT template FROM shoppers WHERE id=?", (shopper.id,)).fetchone()[0]
    tampered = bytes([blob[0] ^ 1]) + blob[1:]
    wrapped = term.store.keys.execute("SELECT wrapped FROM data_keys WHERE shopper_id=?", (shopper.id,)).fetchone()[0]
    with pytest.raises(ValueError):
        term.store.decrypt_template(shopper.id, tampered, wrapped)
    # a template cannot be moved to another shopper's row: the id is bound in
    with pytest.raises(ValueError):
        term.store.decrypt_template("shp_other", blob, wrapped)


def test_master_key_is_0600_and_refused_when_open(tmp_path):
    from terminal.datadir import load_or_create_master_key
    from terminal.errors import StorageError

    key = load_or_create_master_key(tmp_path)
    p = tmp_path / "master.key"
    assert len(key) == 32 and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert load_or_create_master_key(tmp_path) == key
    os.chmod(p, 0o644)
    with pytest.raises(StorageError, match="chmod 600"):
        load_or_create_master_key(tmp_path)
    os.chmod(p, 0o600)
    p.write_bytes(b"short")
    with pytest.raises(StorageError, match="5 bytes"):
        load_or_create_master_key(tmp_path)


def test_retention_purge(term, embeddings):
    text = consent.load("en")
    old = term.enrol(name="Old Shopper", card_uid=bytes.fromhex("04000002"), consent_text=text,
                     embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    term.store.db.execute("UPDATE shoppers SET last_used_at = ? WHERE id = ?",
                          ((datetime.now(timezone.utc) - timedelta(days=1096)).isoformat(timespec="seconds"), old.id))
    fresh = term.enrol(name="New Shopper", card_uid=bytes.fromhex("04000003"), consent_text=text,
                       embeddings=[embeddings[n] for n in ("kit_harington_1.jpg", "kit_harington_2.jpg",
                                                           "kit_harington_3.jpg")], phone_last4="5678")
    receipts = term.purge()
    assert [r.shopper_id for r in receipts] == [old.id] and receipts[0].cause == "retention"
    assert term.store.get(old.id) is None and term.store.get(fresh.id) is not None
    kinds = [(e.kind, e.subject) for e in term.ledger.events()]
    assert ("template_purged", old.id) in kinds
    assert term.match(embeddings["obama2.jpg"]).shopper_id is None


def test_face_pay_off_never_opens_the_camera(cli):
    enrol(cli)
    assert cli("mode", "card_only").returncode == 0
    r = cli("sale", "--amount", "3.00", "--face", FACES / "obama2.jpg", "--confirm", "--phone-last4", "1234")
    assert r.returncode == 2 and "face pay is off" in r.stderr
    r = cli("identify", "--json", FACES / "obama2.jpg")
    assert r.returncode == 2 and json.loads(r.stdout)["match"] is None
    r = cli("sale", "--json", "--amount", "3.00", "--card-uid", "04A1B2C3")
    assert json.loads(r.stdout)["status"] == "approved", "card payment stays available"
    events = json.loads(cli("audit", "show", "--json", "--kind", "mode_changed").stdout)
    assert events[-1]["details"]["to"] == "card_only"


def test_no_charge_without_confirmation(cli):
    enrol(cli)
    r = cli("sale", "--json", "--amount", "12.50", "--face", OBAMA_PROBES[0])
    out = json.loads(r.stdout)
    assert r.returncode == 1 and out["status"] == "cancelled"
    assert out["shopper"] == {"masked_name": "Barack O.", "masked_card": "•••• B2C3"}
    assert json.loads(cli("processor", "charges", "--json").stdout) == []
    cancelled = json.loads(cli("audit", "show", "--json", "--kind", "charge_cancelled").stdout)
    assert cancelled[0]["details"]["amount_minor"] == 1250


def test_step_up_asks_for_phone_digits(cli):
    enrol(cli)
    r = cli("sale", "--json", "--amount", "4.00", "--face", OBAMA_PROBES[0], "--confirm")
    out = json.loads(r.stdout)
    assert out["status"] == "cancelled" and out["step_up"] and "phone" in out["reason"]
    r = cli("sale", "--json", "--amount", "4.00", "--face", OBAMA_PROBES[0], "--confirm", "--phone-last4", "9999")
    assert json.loads(r.stdout)["status"] == "cancelled"
    r = cli("sale", "--json", "--amount", "4.00", "--face", OBAMA_PROBES[0], "--confirm", "--phone-last4", "1234")
    assert json.loads(r.stdout)["status"] == "approved"
    assert len(json.loads(cli("processor", "charges", "--json").stdout)) == 1


def test_step_up_off_by_config_when_bound_allows(cli, tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('terminal_id = "t"\n[match]\nstepup_false_match_bound = 0.5\n[liveness]\nrequired = false\n')
    r = cli("--config", cfg, "enroll", "--name", "Barack Obama", "--card-uid", "04A1B2C3", "--consent", *OBAMA_ENROL)
    assert r.returncode == 0
    r = cli("--config", cfg, "sale", "--json", "--amount", "4.00", "--face", OBAMA_PROBES[0], "--confirm")
    out = json.loads(r.stdout)
    assert out["status"] == "approved" and out["step_up"] is False


def test_no_face_image_is_written_anywhere(cli, tmp_path):
    """Whatever runs (enrol, identify, sale, errors), no image file appears in the data folder."""
    enrol(cli)
    cli("identify", FACES / "obama2.jpg")
    cli("identify", FACES / "obama_partial_face.jpg")
    cli("sale", "--amount", "1.00", "--face", FACES / "obama2.jpg", "--confirm", "--phone-last4", "1234")
    image_magic = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")
    for root, _, files in os.walk(cli.data_dir):
        for f in files:
            with open(os.path.join(root, f), "rb") as fh:
                head = fh.read(8)
            assert not head.startswith(image_magic), f
            assert not f.lower().endswith((".jpg", ".jpeg", ".png", ".bmp", ".npy"))


class TestLedgerTamper:
    @pytest.fixture
    def ledger(self, tmp_path):
        from terminal.datadir import connect

        conn = connect(tmp_path / "l.db")
        led = ConsentLedger(conn, b"k" * 32)
        led.adopt("t")  # entry 1: the genesis entry
        for i in range(5):
            led.append("charge_confirmed", f"shp_{i}", amount_minor=100 + i)
        assert led.verify().ok
        return led, conn

    def test_edit_detected(self, ledger):
        led, conn = ledger
        conn.execute("UPDATE consent_ledger SET details = '{\"amount_minor\":1}' WHERE seq = 3")
        r = led.verify()
        assert not r.ok and r.broken_seq == 3 and "altered" in r.reason

    def test_delete_detected(self, ledger):
        led, conn = ledger
        conn.execute("DELETE FROM consent_ledger WHERE seq = 2")
        r = led.verify()
        assert not r.ok and r.broken_seq == 3

    def test_delete_last_detected(self, ledger):
        led, conn = ledger
        conn.execute("DELETE FROM consent_ledger WHERE seq = 6")
        r = led.verify()
        assert not r.ok and "removed" in r.reason

    def test_reorder_detected(self, ledger):
        led, conn = ledger
        # swap entries 2 and 3: each keeps its own content and MAC, only the order changes
        rows = {r[0]: r[1:] for r in conn.execute("SELECT seq, at, kind, subject, details, prev, mac FROM consent_ledger")}
        for seq, src in ((2, 3), (3, 2)):
            conn.execute("UPDATE consent_ledger SET at=?, kind=?, subject=?, details=?, prev=?, mac=? WHERE seq=?",
                         (*rows[src], seq))
        r = led.verify()
        assert not r.ok and r.broken_seq == 2

    def test_rewrite_without_key_detected(self, ledger):
        """Recomputing the chain needs the master key: a forger without it is caught."""
        led, conn = ledger
        forger = ConsentLedger(conn, b"x" * 32)
        conn.execute("DELETE FROM consent_ledger")
        conn.execute("DELETE FROM ledger_head")
        forger.append("charge_confirmed", "shp_9", amount_minor=1)
        assert not led.verify().ok

    def test_cli_verify_exits_1_naming_entry(self, cli):
        enrol(cli)
        cli("sale", "--amount", "2.00", "--face", OBAMA_PROBES[0])
        assert cli("audit", "verify").returncode == 0
        conn = sqlite3.connect(cli.data_dir / "facepay.db")
        conn.execute("UPDATE consent_ledger SET subject = 'shp_someone' WHERE seq = 2")
        conn.commit()
        conn.close()
        r = cli("audit", "verify")
        assert r.returncode == 1 and "entry 2" in r.stdout
        r = cli("audit", "verify", "--json")
        assert json.loads(r.stdout)["broken_entry"] == 2


@pytest.mark.parametrize("failpoint", ["after_revoke_ledger_write", "after_data_key_deleted"])
def test_power_cut_during_opt_out_still_deletes(cli, failpoint):
    """An opt-out interrupted at any point is finished by the next start, with the receipt it promised."""
    sid = enrol(cli)
    r = cli("revoke", sid, env={"FACEPAY_FAILPOINT": failpoint})
    assert r.returncode == 86
    # whatever runs next (here: identify) first finishes the deletion, and the face resolves to no one
    r = cli("identify", "--json", OBAMA_PROBES[0])
    assert r.returncode == 1 and json.loads(r.stdout)["match"] is None
    assert json.loads(cli("shoppers", "list", "--json").stdout) == []
    [event] = json.loads(cli("audit", "show", "--json", "--kind", "consent_revoked").stdout)
    db = sqlite3.connect(cli.data_dir / "facepay.db")
    receipts = db.execute("SELECT id, shopper_id FROM deletion_receipts").fetchall()
    assert receipts == [(event["details"]["receipt_id"], sid)]
    keys = sqlite3.connect(cli.data_dir / "keystore.db").execute("SELECT COUNT(*) FROM data_keys").fetchone()[0]
    assert keys == 0
    assert cli("audit", "verify").returncode == 0
    for p in cli.data_dir.iterdir():  # the finished deletion was scrubbed too
        assert not p.is_file() or b"Barack Obama" not in p.read_bytes(), p.name


def test_mid_deletion_shopper_is_never_matched(term, embeddings):
    """Between the ledger entry and the deletion, a running terminal already resolves the face to no one."""

    shopper = term.enrol(name="Barack Obama", card_uid=bytes.fromhex("04A1B2C3"), consent_text=consent.load("en"),
                         embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    assert term.match(embeddings["obama2.jpg"]).shopper_id == shopper.id
    term.ledger.append("consent_revoked", shopper.id, receipt_id="del_test", cause="opt-out", deleted=[])
    term.drop_gallery()
    assert term.match(embeddings["obama2.jpg"]).shopper_id is None


def test_power_cut_during_enrolment_leaves_no_unrecorded_template(cli):
    r = cli("enroll", "--name", "Barack Obama", "--card-uid", "04A1B2C3", "--phone-last4", "1234", "--consent",
            *OBAMA_ENROL, env={"FACEPAY_FAILPOINT": "after_consent_ledger_write"})
    assert r.returncode == 86
    assert json.loads(cli("shoppers", "list", "--json").stdout) == []
    grants = json.loads(cli("audit", "show", "--json", "--kind", "consent_granted").stdout)
    assert len(grants) == 1, "the consent was recorded before anything was stored"
    assert cli("audit", "verify").returncode == 0
    # the shopper simply enrols again
    sid = enrol(cli)
    grants = json.loads(cli("audit", "show", "--json", "--kind", "consent_granted").stdout)
    assert grants[-1]["subject"] == sid
    db = sqlite3.connect(cli.data_dir / "facepay.db")
    for (shopper_id,) in db.execute("SELECT id FROM shoppers"):
        assert any(g["subject"] == shopper_id for g in grants), "every stored template has its grant"
