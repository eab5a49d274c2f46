"""Receipts: what they say (and never say), ESC/POS bytes through python-escpos's Dummy printer, the QR code
decoded back with zbarimg, `facepay receipt`, and the [till]/[receipt] config checks."""

import subprocess

import pytest

from terminal import receipts as rc
from terminal.config import parse_config
from terminal.errors import ConfigError
from terminal.sale import run_sale
from terminal.service import Terminal
from tests.conftest import run_cli

CARD = bytes.fromhex("04A1B2C3")
CFG = ('terminal_id = "shop-9"\n[payment]\nmerchant = "Bakery Lund"\n[receipt]\nlocation = "Marktplatz 3"\n'
       'width = 32\n')


@pytest.fixture
def term(tmp_path):
    t = Terminal(parse_config(CFG, "test.toml"), tmp_path / "data")
    yield t
    t.close()


def test_an_approved_card_sale_and_its_void_have_numbered_receipts(term):
    sale = run_sale(term, amount="12.50", card_uid=CARD)
    assert sale["status"] == "approved"
    r = rc.build(term, sale["sale_id"])
    text = r.text(term.cfg)
    for want in ("Bakery Lund", "Marktplatz 3", "shop-9", "SALE", "EUR 12.50", "**** B2C3", "card", "APPROVED",
                 f"{r.receipt:04d}", f"{r.trace:06d}", sale["reference"], "CUSTOMER COPY", "MERCHANT COPY"):
        assert want in text, want
    assert all(len(line) <= 32 for line in text.splitlines())
    assert "04A1B2C3" not in text.upper() and "tok_" not in text      # no card UID, no processor token
    term.reverse("void", sale["sale_id"])
    void = rc.build(term, sale["sale_id"], "void")
    assert void.trace == r.trace + 1 and void.original_receipt == r.receipt
    assert "VOID" in void.text(term.cfg) and f"Of receipt {r.receipt:04d}".replace(" ", "") in \
        void.text(term.cfg).replace(" ", "")
    assert [x.kind for x in rc.receipts_of(term, sale["sale_id"])] == ["sale", "void"]
    assert rc.build(term, sale["sale_id"]).trace == r.trace              # asking again: the same numbers


def test_a_declined_sale_says_why_and_is_numbered(term):
    sale = run_sale(term, amount="3.13", card_uid=CARD)
    text = rc.build(term, sale["sale_id"]).text(term.cfg)
    assert "DECLINED" in text and "insufficient funds" in text


def test_escpos_bytes_through_the_dummy_printer(term):
    from escpos.printer import Dummy

    sale = run_sale(term, amount="7.00", card_uid=CARD)
    r = rc.build(term, sale["sale_id"])
    data = rc.escpos_bytes(r, term.cfg)
    ref = Dummy()
    ref.cut()
    cut = ref.output                       # python-escpos's own bytes for a paper cut
    assert data.count(cut) == 2            # one per copy
    assert b"Bakery Lund" in data and b"EUR 7.00" in data and b"CUSTOMER COPY" in data
    assert data.index(b"CUSTOMER COPY") < data.index(b"MERCHANT COPY")
    assert b"\x1bE\x01" in data            # ESC E 1: the merchant's name in bold


def test_the_qr_code_decodes_back_to_the_customer_receipt(term, tmp_path):
    sale = run_sale(term, amount="4.20", card_uid=CARD)
    r = rc.build(term, sale["sale_id"])
    text = rc.qr_text(r, term.cfg)
    png = tmp_path / "qr.png"
    rc.qr_png(text, png)
    out = subprocess.run(["zbarimg", "--raw", "-q", str(png)], capture_output=True, text=True, check=True)
    assert out.stdout.rstrip("\n") == text
    assert "CUSTOMER COPY" in text and f"Receipt no. {r.receipt:04d}" in text


def test_facepay_receipt_cli(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text(CFG)
    data = tmp_path / "data"
    env = {"FACEPAY_CONFIG": str(cfg)}
    assert run_cli("sale", "--amount", "9.99", "--card-uid", "04A1B2C3", data_dir=data, env=env).returncode == 0
    r = run_cli("receipt", "last", data_dir=data, env=env)
    assert r.returncode == 0 and "EUR 9.99" in r.stdout and r.stdout.count("COPY") == 2
    r = run_cli("receipt", "nope", data_dir=data, env=env)
    assert r.returncode != 0 and "no sale nope" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = run_cli("receipt", "last", "--format", "pdf", data_dir=data, env=env)
    assert r.returncode == 2


def test_receipt_escpos_cli_writes_the_printer_bytes(tmp_path):
    import os
    import sys

    from tests.conftest import ROOT

    data = tmp_path / "data"
    assert run_cli("sale", "--amount", "1.50", "--card-uid", "04A1B2C3", data_dir=data).returncode == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPAY_")} | {"FACEPAY_DATA_DIR": str(data)}
    r = subprocess.run([sys.executable, "-m", "terminal", "receipt", "last", "--format", "escpos"],
                       capture_output=True, env=env, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and b"EUR 1.50" in r.stdout and b"\x1dV" in r.stdout   # GS V: cut


@pytest.mark.parametrize("text, words", [
    ('[till]\ntransport = "usb"', "till.transport"),
    ('[till]\npassword = "12345"', "6 digits"),
    ('[till]\npassword = "abcdef"', "6 digits"),
    ('[till]\nlisten = "0.0.0.0"', "HOST:PORT"),
    ('[till]\nlisten = "127.0.0.1:70000"', "HOST:PORT"),
    ('[till]\nbaudrate = 300', "till.baudrate"),
    ('[till]\ntransport = "serial"', "till.device"),
    ('[till]\ntransport = "tcp"\n[payment]\ncurrency = "XOF"', "ZVT currency number"),
    ('[receipt]\nprinter = "lpt1"', "receipt.printer"),
    ('[receipt]\nwidth = 10', "receipt.width"),
    ('[receipt]\nqr = "yes"', "receipt.qr"),
])
def test_till_and_receipt_config_is_range_checked(text, words):
    with pytest.raises(ConfigError) as exc:
        parse_config('terminal_id = "till-9"\n' + text, "terminal.toml")
    assert words in str(exc.value) and "terminal.toml" in str(exc.value)


def test_till_defaults_open_no_listener_and_loopback_when_tcp():
    cfg = parse_config('terminal_id = "till-9"', "t")
    assert cfg.till.transport == "none" and cfg.till.listen.startswith("127.0.0.1:")
    ok = parse_config('terminal_id = "till-9"\n[till]\ntransport = "tcp"\nlisten = "192.168.1.20:20007"\n[receipt]\n'
                      'printer = "network:10.0.0.5:9100"', "t")
    assert ok.till.listen == "192.168.1.20:20007" and ok.receipt.printer == "network:10.0.0.5:9100"
