"""The till link end to end: `facepay till` driven by an independent ECR (tests/helpers/ecr.py) over
loopback TCP and over a pseudo-terminal pair, the sandbox processor and the real journal behind it."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import tty
from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from tests.helpers import ecr as E

# make test: on one worker, one till server for the module, its tests in order
pytestmark = pytest.mark.xdist_group("till")

CARD = "04A1B2C3"


def start_till(data_dir, *args, config=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPAY_")}
    env["FACEPAY_DATA_DIR"] = str(data_dir)
    if config:
        env["FACEPAY_CONFIG"] = str(config)
    log = open(data_dir.parent / f"till-{time.monotonic_ns()}.log", "w+")  # noqa: SIM115 (lives with the process)
    proc = subprocess.Popen([sys.executable, "-m", "terminal", "till", "--demo", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    proc.log = log
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        log.seek(0)
        raise AssertionError("facepay till did not start: " + log.read())
    return proc, line.strip()


def stop(proc):
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def journal(data_dir):
    """The sales journal as the terminal wrote it (read directly: a CLI start per look is slow)."""
    from terminal.payments.journal import Journal

    j = Journal(data_dir / "journal.db")
    try:
        return [s.as_dict() for s in j.sales()]
    finally:
        j.close()


def charges(data_dir):
    """What reached the sandbox processor."""
    db = sqlite3.connect(data_dir / "sandbox-processor.db")
    try:
        return [{"amount_minor": r[0], "status": r[1]} for r in
                db.execute("SELECT amount_minor, status FROM requests WHERE kind = 'charge' ORDER BY rowid")]
    finally:
        db.close()


@pytest.fixture(scope="module")
def tcp_till(tmp_path_factory):
    data = tmp_path_factory.mktemp("till") / "data"
    cfg = data.parent / "terminal.toml"
    cfg.write_text('terminal_id = "shop-7"\n[payment]\nmerchant = "Corner Shop"\n'
                   '[receipt]\nlocation = "Hauptstr. 1, Berlin"\n[till]\npassword = "123456"\n')
    proc, line = start_till(data, "--listen", "127.0.0.1:0", "--auto-card", CARD, config=cfg)
    host, port = re.search(r"tcp (\S+):(\d+)", line).groups()
    yield data, host, int(port), cfg, proc
    stop(proc)


def connect(tcp_till) -> E.Ecr:
    _, host, port, _, _ = tcp_till
    return E.Ecr(E.TcpWire(host, port))


def registered(tcp_till, config="BA") -> E.Ecr:
    e = connect(tcp_till)
    msgs = e.run(E.registration("123456", config))
    assert E.of(msgs, "060F")
    return e


def test_kermit_check_value():
    assert E.kermit(b"123456789") == 0x2189   # the catalogue's check value for CRC-16/KERMIT


def test_registration_needs_the_password_and_the_currency(tcp_till):
    e = connect(tcp_till)
    assert E.send_refused(e, E.registration("000000")) == 0x83
    assert E.send_refused(e, E.registration("123456", currency="0840")) == 0x6F   # USD on a EUR terminal
    assert E.send_refused(e, E.authorisation(500)) == 0x6B                       # not registered
    msgs = e.run(E.registration("123456"))
    done = E.bmps(E.body(E.of(msgs, "060F")[0]))
    assert E.number(done[0x49]) == 978 and 0x29 in done


def test_card_sale_approved_with_status_receipt_and_completion(tcp_till):
    data = tcp_till[0]
    e = registered(tcp_till)
    msgs = e.run(E.authorisation(1250))
    assert E.of(msgs, "04FF"), "intermediate status while the amount was due"
    assert E.body(E.of(msgs, "04FF")[0])[0] == 0x0A           # "insert card"
    info = E.status_info(msgs)
    assert info[0x27] == b"\x00" and E.number(info[0x04]) == 1250 and E.number(info[0x49]) == 978
    receipt = E.number(info[0x87])
    assert receipt > 0 and E.number(info[0x0B]) > 0
    assert msgs[-1][:2] == E.h("060F")
    text = E.printed(msgs)
    for want in ("Corner Shop", "Hauptstr. 1, Berlin", "shop-7", "SALE", "EUR 12.50", "**** B2C3", "card",
                 f"{receipt:04d}", "APPROVED", "MERCHANT COPY", "CUSTOMER COPY"):
        assert want in text, want
    assert "Obama" not in text and CARD not in text and CARD.lower() not in text
    sale = journal(data)[-1]
    assert sale["status"] == "approved" and sale["amount_minor"] == 1250


def test_text_blocks_when_the_till_does_not_take_print_lines(tcp_till):
    e = registered(tcp_till, config="3A")    # prints payment receipts, bit 80 clear: 06 D3 text blocks
    msgs = e.run(E.authorisation(1100))
    blocks = E.of(msgs, "06D3")
    assert len(blocks) == 2 and not E.of(msgs, "06D1")
    for block, kind in zip(blocks, (1, 2), strict=True):
        tlv = E.body(block)
        assert tlv[0] == 0x06                         # BMP 06, the TLV container
        n, start = (tlv[1], 2) if tlv[1] < 0x80 else (int.from_bytes(tlv[2:2 + (tlv[1] & 0x7F)], "big"),
                                                      2 + (tlv[1] & 0x7F))
        inner = tlv[start:start + n]
        assert inner[0] == 0x25                       # print texts
        assert E.h("1F0701") + bytes([kind]) in inner   # receipt type: 1 merchant, 2 customer
        assert (b"MERCHANT COPY" if kind == 1 else b"CUSTOMER COPY") in inner and inner.count(b"\x07") >= 10


def test_a_second_authorisation_while_one_runs_is_refused(tcp_till):
    data = tcp_till[0]
    before = len(charges(data))
    e = registered(tcp_till)
    assert e.send(E.authorisation(700)) == E.RECEIVED
    assert E.send_refused(e, E.authorisation(900), skip_status=True) == 0x83
    msgs = e.collect()
    assert E.status_info(msgs)[0x27] == b"\x00" and E.number(E.status_info(msgs)[0x04]) == 700
    assert [c["amount_minor"] for c in charges(data)[before:]] == [700]


def test_the_tills_abort_cancels_an_unconfirmed_sale(tcp_till):
    data = tcp_till[0]
    before = len(charges(data))
    e = registered(tcp_till, config="B2")   # no intermediate status: nothing between ACK and abort
    assert e.send(E.authorisation(800)) == E.RECEIVED
    e.wire.write_apdu(E.ABORT)
    assert e.wire.read_apdu(5) == E.RECEIVED
    msgs = e.collect()
    assert msgs[-1] == E.h("061E 01 6C")
    time.sleep(1.5)   # the auto-card would have tapped by now
    assert len(charges(data)) == before


def test_declined_by_amount_rule_is_an_abort_with_the_decline_code(tcp_till):
    e = registered(tcp_till)
    msgs = e.run(E.authorisation(1213))    # the sandbox: amounts ending in 13 are "insufficient funds"
    assert E.status_info(msgs)[0x27] == bytes([51])
    assert msgs[-1] == E.h("061E 01 33")
    assert "DECLINED" in E.printed(msgs) and "insufficient funds" in E.printed(msgs)


def test_reversal_and_refund_by_receipt_number(tcp_till):
    data = tcp_till[0]
    e = registered(tcp_till)
    first = E.number(E.status_info(e.run(E.authorisation(2000)))[0x87])
    second = E.number(E.status_info(e.run(E.authorisation(3000)))[0x87])
    msgs = e.run(E.reversal(first, "123456"))
    assert E.status_info(msgs)[0x27] == b"\x00" and msgs[-1][:2] == E.h("060F")
    assert "VOID" in E.printed(msgs) and f"{first:04d}" in E.printed(msgs)
    assert e.run(E.reversal(first, "123456"))[-1] == E.h("061E 01 B4")       # already reversed
    assert e.run(E.refund(second, 2999, "123456"))[-1] == E.h("061E 01 B7")  # full refunds only
    msgs = e.run(E.refund(second, 3000, "123456"))
    assert E.status_info(msgs)[0x27] == b"\x00" and "REFUND" in E.printed(msgs)
    assert E.send_refused(e, E.reversal(second, "999999")) == 0x83            # wrong password
    sales = {s["amount_minor"]: s for s in journal(data)}
    assert sales[2000]["voided"] and sales[3000]["refunded_minor"] == 3000


def test_end_of_day_totals_and_diagnosis(tcp_till):
    e = registered(tcp_till, config="BE")   # the till prints admin receipts too
    e.run(E.end_of_day("123456"))           # close whatever earlier tests booked
    e.run(E.authorisation(1000))
    e.run(E.authorisation(500))
    msgs = e.run(E.end_of_day("123456"))
    info = E.status_info(msgs)
    assert E.number(info[0x04]) == 1500
    totals = info[0x60]
    assert totals[-7] == 2 and E.number(totals[-6:]) == 1500      # "remaining cards": 2 sales, 15.00
    assert "END OF DAY" in E.printed(msgs) and "Net EUR 15.00" in E.printed(msgs)
    assert E.number(E.status_info(e.run(E.end_of_day("123456")))[0x04]) == 0   # the day was closed
    msgs = e.run(E.diagnosis("123456"))
    assert "Card reader OK" in E.printed(msgs) and "Processor OK" in E.printed(msgs)
    assert e.send(E.LOG_OFF) == E.RECEIVED
    assert E.send_refused(e, E.authorisation(100)) == 0x6B


def test_a_cut_connection_before_the_tap_charges_nothing_and_the_terminal_serves_on(tcp_till):
    data = tcp_till[0]
    before = len(charges(data))
    e = registered(tcp_till)
    assert e.send(E.authorisation(4400)) == E.RECEIVED
    e.wire.close()                      # the till is gone before the card (auto-card taps after 1 s)
    time.sleep(2.5)
    assert len(charges(data)) == before
    assert all(s["amount_minor"] != 4400 for s in journal(data))
    e = registered(tcp_till)
    assert E.status_info(e.run(E.authorisation(4500)))[0x27] == b"\x00"


def test_garbage_and_truncated_apdus_are_refused_and_nothing_is_charged(tcp_till):
    data = tcp_till[0]
    before = len(charges(data))
    e = registered(tcp_till)
    e.wire.write_raw(E.h("0601 0A 04 0000"))   # an authorisation cut short
    assert e.wire.read_apdu(5) == E.h("849A00")
    e.wire.write_raw(E.h("0601 03 DEADBE"))    # an unknown BMP
    assert e.wire.read_apdu(5) == E.h("849A00")
    e.wire.write_raw(E.h("FF77 00"))           # no such command
    assert e.wire.read_apdu(5) == E.h("848300")
    assert len(charges(data)) == before
    assert E.status_info(e.run(E.authorisation(600)))[0x27] == b"\x00"


def test_unknown_outcome_is_never_declined_and_the_answer_follows_recover(tcp_till):
    data = tcp_till[0]
    e = registered(tcp_till)
    assert run_cli("processor", "fault", "partition", data_dir=data).returncode == 0
    texts = []

    def watch(msg):
        if msg[:2] == E.h("04FF") and msg[3] == 0xFF:
            texts.append(msg.decode("latin-1"))
            if len(texts) == 1:   # told once: the processor comes back, staff run recover
                run_cli("processor", "fault", "none", data_dir=data)
                assert run_cli("recover", data_dir=data).returncode == 0

    msgs = e.run(E.authorisation(1900), timeout=60, on_message=watch)
    assert texts and "Outcome not known" in texts[0] and "Do not pay again" in texts[0]
    info = E.status_info(msgs)
    assert f"Receipt {E.number(info[0x87]):04d}" in texts[0]
    assert not E.of(msgs, "061E") and info[0x27] == b"\x00" and msgs[-1][:2] == E.h("060F")
    assert [c["amount_minor"] for c in charges(data)].count(1900) == 1


def test_serial_link_over_a_pty_pair(tmp_path):
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    data = tmp_path / "data"
    proc, line = start_till(data, "--serial", os.ttyname(slave), "--auto-card", CARD)
    try:
        w = E.PtyWire(master)
        e = E.Ecr(w)
        assert E.of(e.run(E.registration()), "060F")
        msgs = e.run(E.authorisation(1250))
        assert E.status_info(msgs)[0x27] == b"\x00" and msgs[-1][:2] == E.h("060F")
        frame = w.framed(E.authorisation(100))
        w.write_raw(frame[:-1] + bytes([frame[-1] ^ 0xFF]))      # CRC broken
        assert w.read_ack_byte() == E.NAK
        w.write_raw(frame[:6])                                    # cut short
        assert w.read_ack_byte(4) == E.NAK
        w.write_raw(b"\x00\x55garbage")                           # line noise between frames: ignored
        assert [c["amount_minor"] for c in charges(data)] == [1250]
        msgs = e.run(E.authorisation(1010))
        assert E.status_info(msgs)[0x27] == b"\x00"
        assert "1010" not in line
    finally:
        stop(proc)
        os.close(master)
        os.close(slave)


def test_a_face_payment_the_shopper_cancels_is_an_abort_6c(tmp_path, pipeline):
    """In-process: the headless desk with a still photo as the camera (liveness off), the link on TCP."""
    import queue as q

    from terminal import checkout as co
    from terminal.camera.replay import single_image
    from terminal.config import parse_config
    from terminal.hardware import DEMO_SHOPPER, Hardware, ensure_demo_shopper
    from terminal.leds import LedBoard
    from terminal.service import Terminal
    from terminal.till.headless import HeadlessDesk
    from terminal.till.link import TillLink

    cfg = parse_config('terminal_id = "face-till"\n[liveness]\nrequired = false\n[leds]\nbackend = "mock"\n', "t")
    term = Terminal(cfg, tmp_path / "data")
    term._pipeline = pipeline
    ensure_demo_shopper(term)
    hw = Hardware(single_image(DEMO_SHOPPER / "2.jpg"), LedBoard(cfg.leds), None, None, q.Queue())
    desk = HeadlessDesk(term, hw).start()
    link = TillLink(desk, cfg).start_tcp("127.0.0.1", 0)
    try:
        e = E.Ecr(E.TcpWire(*link.address))
        e.run(E.registration())
        seen = []

        def shopper(msg):
            if msg[:2] == E.h("04FF"):
                seen.append(msg[3])
                if msg[3] == 0x0A:            # amount due: the shopper chooses face
                    desk.post(co.ChooseFace())
                elif msg[3] == 0x00:          # the consent screen: the shopper presses Cancel
                    desk.post(co.Cancel())

        msgs = e.run(E.authorisation(990), on_message=shopper)
        assert msgs[-1] == E.h("061E 01 6C")
        assert 0x00 in seen and not E.of(msgs, "040F")
        assert term.journal.sales() == [] and term.processor.charges() == []
        assert [ev.kind for ev in term.ledger.events(kind="charge_cancelled")] == ["charge_cancelled"]
    finally:
        link.stop()
        desk.stop()
        hw.close()
        term.close()


def listening_sockets(pid: int) -> list[tuple[str, int]]:
    """The TCP sockets in LISTEN state that process ``pid`` holds, from /proc."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:
                addr, port = cols[1].split(":")
                found.append((addr, int(port, 16)))
    return found


def test_exactly_one_listener_on_the_configured_address(tcp_till):
    _, host, port, _, proc = tcp_till
    assert host == "127.0.0.1"
    assert listening_sockets(proc.pid) == [("0100007F", port)]   # 127.0.0.1 in /proc's byte order


def test_a_connection_cut_while_the_outcome_is_unknown_charges_once_and_recover_settles_it(tcp_till):
    data = tcp_till[0]
    e = registered(tcp_till)
    assert run_cli("processor", "fault", "partition", data_dir=data).returncode == 0
    try:
        assert e.send(E.authorisation(2300)) == E.RECEIVED
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:   # until the terminal says it does not know
            msg = e.wire.read_apdu(5)
            e.wire.write_apdu(E.RECEIVED)
            if msg and msg[:2] == E.h("04FF") and msg[3] == 0xFF:
                break
        else:
            raise AssertionError("never told 'outcome not known'")
        e.wire.close()                       # the till gives up
    finally:
        run_cli("processor", "fault", "none", data_dir=data)
    assert run_cli("recover", data_dir=data).returncode == 0
    time.sleep(1)
    assert [c["amount_minor"] for c in charges(data)].count(2300) == 1
    sale = [s for s in journal(data) if s["amount_minor"] == 2300][-1]
    assert sale["status"] == "approved"
    r = run_cli("receipt", sale["id"], data_dir=data, env={"FACEPAY_CONFIG": str(tcp_till[3])})
    assert "APPROVED" in r.stdout
    # and it serves the next sale once its own look-up (every resolve_interval_s, 5 s) has seen the settled
    # outcome: until then a new authorisation is refused as "a sale is running" (84 83 00)
    deadline = time.monotonic() + 20
    while True:
        e = registered(tcp_till)
        try:
            msgs = e.run(E.authorisation(2400))
            break
        except AssertionError as exc:
            if "848300" not in str(exc) or time.monotonic() > deadline:
                raise
            e.wire.close()
            time.sleep(0.5)
    assert E.status_info(msgs)[0x27] == b"\x00"


def test_a_blocked_card_is_declined_card_in_blocked_list(tcp_till):
    """Last in the module: the auto-card stays blocked."""
    data = tcp_till[0]
    assert run_cli("processor", "block", "--card-uid", CARD, data_dir=data).returncode == 0
    e = registered(tcp_till)
    msgs = e.run(E.authorisation(2500))
    assert msgs[-1] == E.h("061E 01 2B")     # 43: stolen card (ISO 8583), from the processor's reason
    assert "card reported stolen" in E.printed(msgs)
    r = run_cli("receipt", journal(data)[-1]["id"], data_dir=data, env={"FACEPAY_CONFIG": str(tcp_till[3])})
    assert r.returncode == 0 and "DECLINED" in r.stdout and r.stdout.count("COPY") == 2
