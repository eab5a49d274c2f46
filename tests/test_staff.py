"""The staff PIN (scrypt, growing lock-out) and the kiosk's font check."""

import pytest

from terminal.staff import DEMO_PIN, PinGate, hash_pin, verify_pin


def test_pin_hash_is_salted_scrypt():
    h1, h2 = hash_pin("482916"), hash_pin("482916")
    assert h1 != h2 and h1.startswith("scrypt$16384$8$1$")
    assert verify_pin("482916", h1) and not verify_pin("482917", h1)
    assert not verify_pin("482916", "garbage") and not verify_pin("1", "scrypt$x$y$z$a$b")
    for bad in ("12", "abcd", "123456789"):
        with pytest.raises(ValueError):
            hash_pin(bad)


def test_lockout_grows_after_failures():
    now = [1000.0]
    gate = PinGate(hash_pin("4321"), clock=lambda: now[0])
    assert not gate.check("0000") and not gate.check("0000") and gate.wait_seconds() == 0
    assert not gate.check("0000")
    first = gate.wait_seconds()
    assert first == 2.0
    assert not gate.check("4321"), "even the right PIN is refused while locked"
    now[0] += first
    assert not gate.check("1111")
    assert gate.wait_seconds() == 4.0
    now[0] += 4.0
    assert gate.check("4321") and gate.failures == 0 and gate.wait_seconds() == 0


def test_lockout_survives_a_restart():
    saved = {}
    h = hash_pin("4321")
    now = [50.0]
    gate = PinGate(h, clock=lambda: now[0], load=lambda: saved.get("s"), save=lambda st: saved.update(s=st))
    for _ in range(3):
        gate.check("0000")
    again = PinGate(h, clock=lambda: now[0], load=lambda: saved.get("s"), save=lambda st: saved.update(s=st))
    assert again.failures == 3 and again.wait_seconds() == 2.0 and not again.check("4321")
    now[0] += 2
    assert again.check("4321") and saved["s"] == {"failures": 0, "locked_until": 0.0}


def test_demo_pin_only_without_a_configured_hash():
    assert PinGate("").check(DEMO_PIN)
    assert not PinGate(hash_pin("9876")).check(DEMO_PIN)


def test_font_missing_is_a_clear_error(monkeypatch):
    from terminal.errors import HardwareError
    from terminal.ui import app

    monkeypatch.setattr(app, "FONT_CANDIDATES", [])
    with pytest.raises(HardwareError, match="fonts-noto-cjk"):
        app.find_font()


def test_cli_staff_pin(cli):
    r = cli("staff-pin", "--pin", "271828", "--json")
    import json

    h = json.loads(r.stdout)["pin_hash"]
    assert verify_pin("271828", h)
    assert cli("staff-pin", "--pin", "12").returncode == 2


def test_face_pay_off_drops_the_gallery(term, embeddings):
    from conftest import OBAMA_ENROL

    from terminal import checkout as co
    from terminal import consent
    from terminal.runner import Runner

    term.enrol(name="A B", card_uid=bytes.fromhex("04000001"), consent_text=consent.load("en"),
               embeddings=[embeddings[p.name] for p in OBAMA_ENROL], phone_last4="1234")
    m = co.CheckoutMachine(term.policy())
    r = Runner(term, m, None)
    for eff in m.startup_effects():
        r.perform(eff)
    assert term._gallery is not None and len(term._gallery) == 1
    held = term._gallery.matrix
    r.dispatch(co.SetMode("card_only"))
    assert term._gallery is None and not held.any(), "templates overwritten and released"
    r.dispatch(co.SetMode("normal"))
    assert term._gallery is not None and len(term._gallery) == 1


def test_the_runner_stores_a_staff_mode_change_and_the_ledger_has_it_once(tmp_path):
    from terminal import checkout as co
    from terminal.config import Config
    from terminal.runner import Runner
    from terminal.service import Terminal

    term = Terminal(Config(), tmp_path / "term")
    try:
        m = co.CheckoutMachine(term.policy(), mode=term.mode())
        r = Runner(term, m, None)
        r.pins = PinGate("")
        r.dispatch(co.OpenStaff())
        r.dispatch(co.StaffPin(DEMO_PIN))
        r.dispatch(co.StaffSetMode("card_only"))
        assert term.mode() == "card_only" == term.store.settings()["mode"], "stored: a restart starts card only"
        changes = term.ledger.events(kind="mode_changed")
        assert [(e.details["from"], e.details["to"]) for e in changes] == [("normal", "card_only")]
        term.set_mode("normal", by="cli")   # `facepay mode normal`: stored and recorded by the CLI
        r.dispatch(co.SetMode("normal", record=False))   # the kiosk picks it up
        assert m.view().mode == co.Mode.NORMAL and term.mode() == "normal"
        assert [(e.details["from"], e.details["to"]) for e in term.ledger.events(kind="mode_changed")] == [
            ("normal", "card_only"), ("card_only", "normal")]
    finally:
        term.close()
