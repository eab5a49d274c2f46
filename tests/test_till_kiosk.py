"""The kiosk with [till] set, under Xvfb: the amount arrives from an independent ECR over TCP, the
consent screen shows it, the shopper confirms, and the till receives the result and the receipt."""

import json
import socket
import subprocess
import threading
import time

import pytest
from conftest import ROOT
from test_ui import assert_not_blank, env, kiosk_cmd

from tests.helpers import ecr as E

pytestmark = pytest.mark.ui


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def till_side(port: int, got: dict) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            wire = E.TcpWire("127.0.0.1", port)
            break
        except OSError:
            if time.monotonic() > deadline:
                got["error"] = "the kiosk never listened"
                return
            time.sleep(0.3)
    try:
        e = E.Ecr(wire)
        e.run(E.registration("246810"))
        got["messages"] = e.run(E.authorisation(1250), timeout=150)
    except Exception as exc:  # reported by the test
        got["error"] = repr(exc)


def test_an_amount_from_the_till_is_paid_by_face_and_the_till_hears_it(tmp_path):
    port = free_port()
    cfg = tmp_path / "terminal.toml"
    cfg.write_text(f'terminal_id = "kiosk-till"\n[till]\ntransport = "tcp"\nlisten = "127.0.0.1:{port}"\n'
                   'password = "246810"\n')
    got: dict = {}
    t = threading.Thread(target=till_side, args=(port, got), daemon=True)
    t.start()
    shots = tmp_path / "shots"
    e = env() | {"FACEPAY_CONFIG": str(cfg)}
    r = subprocess.run(kiosk_cmd("--data-dir", tmp_path / "data", "run", "--demo", "--size", "800x480", "--script",
                                 ROOT / "tests" / "scenarios_till" / "till_face_confirmed.toml",
                                 "--screenshots", shots), capture_output=True, text=True, timeout=240, env=e, cwd=ROOT)
    t.join(30)
    result = json.loads((shots / "result.json").read_text()) if (shots / "result.json").exists() else None
    assert r.returncode == 0 and result and result["passed"], (result, got, r.stderr[-3000:])
    assert "error" not in got, got
    msgs = got["messages"]
    assert E.of(msgs, "04FF"), "the till heard how the shopper was getting on"
    info = E.status_info(msgs)
    assert info[0x27] == b"\x00" and E.number(info[0x04]) == 1250
    assert msgs[-1][:2] == E.h("060F")
    assert "face" in E.printed(msgs) and "APPROVED" in E.printed(msgs)
    for png in shots.glob("*.png"):
        assert_not_blank(png, (800, 480))
    # the receipt's QR code on the result screen decodes back to the customer receipt
    qr = next(shots.glob("*result-with-receipt-qr*.png"))
    out = subprocess.run(["zbarimg", "--raw", "-q", str(qr)], capture_output=True, text=True)
    assert out.returncode == 0 and "CUSTOMER COPY" in out.stdout and f"{E.number(info[0x87]):04d}" in out.stdout, \
        out.stdout
