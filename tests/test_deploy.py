"""Deployment: systemd units verify, the installer's guards, `facepay doctor` in the demo setup."""

import json
import os
import shutil
import stat
import subprocess

import pytest
from conftest import ROOT

UNITS = sorted((ROOT / "systemd").glob("facepay-*"))


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd is in the README's apt line")
def test_systemd_units_verify(tmp_path):
    """`systemd-analyze verify` on every unit; the venv's facepay is stood in by a stub at a temp path."""
    stub = tmp_path / "bin" / "facepay"
    stub.parent.mkdir()
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copies = []
    for unit in UNITS:
        text = unit.read_text().replace("/opt/facepay/venv/bin/facepay", str(stub))
        (tmp_path / unit.name).write_text(text)
        copies.append(str(tmp_path / unit.name))
    assert {u.name for u in UNITS} >= {"facepay-kiosk.service", "facepay-purge.service", "facepay-purge.timer",
                                       "facepay-firstboot.service"}
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", *copies], capture_output=True, text=True,
                       cwd=tmp_path, timeout=60)
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "facepay-" in line]
    assert r.returncode == 0 and not ours, r.stdout + r.stderr


def test_kiosk_unit_promises():
    text = (ROOT / "systemd" / "facepay-kiosk.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=always", "ProtectSystem=strict",
                 "ReadWritePaths=/var/lib/facepay", "PrivateTmp=yes", "NoNewPrivileges=yes", "DevicePolicy=closed",
                 "RestrictAddressFamilies=AF_UNIX"):
        assert line in text, line
    timer = (ROOT / "systemd" / "facepay-purge.timer").read_text()
    assert "OnCalendar=daily" in timer and "Persistent=true" in timer


def test_sdnotify_sends_ready_and_watchdog(tmp_path, monkeypatch):
    import socket

    from terminal import sdnotify

    path = tmp_path / "notify"
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.notify("READY=1") and sdnotify.notify("WATCHDOG=1")
    assert srv.recv(64) == b"READY=1" and srv.recv(64) == b"WATCHDOG=1"
    assert sdnotify.watchdog_interval() == 15.0
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.notify("READY=1") is False
    srv.close()


def test_installer_syntax_and_guards(tmp_path):
    script = ROOT / "deploy" / "install.sh"
    assert subprocess.run(["sh", "-n", str(script)]).returncode == 0
    assert os.stat(script).st_mode & stat.S_IXUSR
    r = subprocess.run(["sh", str(script), "--bogus"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option" in r.stderr
    r = subprocess.run(["sh", str(script), "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "Idempotent" in r.stdout
    if os.geteuid() == 0:
        r = subprocess.run(["sh", str(script), "--config", str(tmp_path / "none.toml")], capture_output=True, text=True)
        assert r.returncode == 2 and "not found" in r.stderr


def doctor(cli, *args):
    r = cli("doctor", "--json", *args)
    return r.returncode, {c["name"]: c for c in json.loads(r.stdout)["checks"]}


def test_doctor_passes_in_the_demo_setup(cli):
    cli("recover")  # first run creates the data folder and key
    code, checks = doctor(cli, "--skip", "display")
    assert code == 0, checks
    assert "firmware 1.6" in checks["card reader"]["detail"] and "simulated" in checks["card reader"]["detail"]
    assert "640x" in checks["camera"]["detail"] and "frames/s" in checks["camera"]["detail"]
    assert checks["master key"]["detail"].startswith("mode 0600")
    assert checks["database facepay.db"]["detail"] == "integrity_check: ok"
    assert "consent ledger" in checks and "clock" in checks and "free space" in checks
    code, checks = doctor(cli, "--skip", "display", "--blink")
    assert code == 0 and checks["LEDs"]["detail"].startswith("mock: blinked privacy, consent")


def test_doctor_fails_clearly_when_parts_are_missing(cli, tmp_path):
    cli("recover")
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'terminal_id = "t"\n[reader]\nport = "{tmp_path}/ttyNOPE"\n'
                   f'[camera]\nreplay_path = "{tmp_path}/no-such-folder"\n')
    os.chmod(cli.data_dir / "master.key", 0o644)
    r = cli("--config", cfg, "doctor", "--skip", "display")
    assert r.returncode == 1
    assert "[FAIL] card reader" in r.stdout and "does not exist" in r.stdout
    assert "[FAIL] camera" in r.stdout and "replay source not found" in r.stdout
    assert "[FAIL] master key" in r.stdout and "chmod 600" in r.stdout


def test_doctor_does_not_open_camera_when_face_pay_off(cli):
    cli("mode", "card_only")
    code, checks = doctor(cli, "--skip", "display")
    assert checks["camera"]["detail"] == "not opened: face pay is off at this terminal"


def test_doctor_reports_display(cli, monkeypatch):
    cli("recover")
    r = cli("doctor", "--json", "--skip", "camera", "--skip", "reader", env={"DISPLAY": ":99"})
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["display"]["ok"] and ":99" in checks["display"]["detail"]
