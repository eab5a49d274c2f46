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
    code, checks = doctor(cli, "--demo", "--skip", "display")
    assert code == 0, checks
    assert not any(c["warn"] for c in checks.values()), checks
    assert checks["staff PIN"]["ok"] and "demo PIN" in checks["staff PIN"]["detail"]
    assert "firmware 1.6" in checks["card reader"]["detail"] and "simulated" in checks["card reader"]["detail"]
    assert "640x" in checks["camera"]["detail"] and "frames/s" in checks["camera"]["detail"]
    assert checks["master key"]["detail"].startswith("mode 0600")
    assert checks["database facepay.db"]["detail"] == "integrity_check: ok"
    assert "consent ledger" in checks and "clock" in checks and "free space" in checks
    assert checks["arithmetic"]["ok"], checks["arithmetic"]
    code, checks = doctor(cli, "--demo", "--skip", "display", "--blink")
    assert code == 0 and checks["LEDs"]["detail"].startswith("mock: blinked privacy, consent")


def test_doctor_fails_a_blas_that_gets_matrix_products_wrong():
    """As numpy's OpenBLAS did under qemu's default arm64 CPU: landmark rows shifted, or a product slightly off."""
    import numpy as np

    from terminal.doctor import check_arithmetic

    assert check_arithmetic().ok
    shifted = check_arithmetic(lambda a, b: np.roll(np.matmul(a, b), 4, axis=0))
    assert not shifted.ok and "OPENBLAS_CORETYPE" in shifted.hint
    assert not check_arithmetic(lambda a, b: np.matmul(a, b) * (1 + 1e-4)).ok
    assert check_arithmetic(lambda a, b: np.matmul(a, b) * (1 + 1e-14)).ok   # rounding is not an error


def test_doctor_warns_about_simulated_parts_outside_demo(cli, tmp_path):
    """The simulators named in a config are warnings, and a missing staff PIN fails: not a healthy shop terminal."""
    cli("recover")
    cfg = tmp_path / "t.toml"
    cfg.write_text('terminal_id = "t"\n[camera]\nbackend = "replay"\n[reader]\nport = "sim"\n[leds]\nbackend = "mock"\n')
    r = cli("--config", cfg, "doctor", "--json", "--skip", "display")
    out = json.loads(r.stdout)
    checks = {c["name"]: c for c in out["checks"]}
    assert r.returncode == 1 and not checks["staff PIN"]["ok"] and "facepay staff-pin" in checks["staff PIN"]["hint"]
    for part in ("camera", "card reader", "LEDs", "payment processor"):
        assert checks[part]["ok"] and checks[part]["warn"], (part, checks[part])
        assert "--demo" in checks[part]["hint"]
    assert out["warnings"] == 4
    pin = cli("staff-pin", "--pin", "4821").stdout
    cfg.write_text(cfg.read_text() + pin)
    r = cli("--config", cfg, "doctor", "--skip", "display")
    assert r.returncode == 0, r.stdout  # warnings do not fail the check...
    assert r.stdout.count("[WARN]") == 4 and "[WARN] camera" in r.stdout and "SIMULATED" in r.stdout
    assert "4 warning(s)" in r.stdout  # ...but they are said


def test_doctor_lights_the_privacy_led_while_the_camera_is_open(tmp_path, monkeypatch, capsys):
    """`facepay doctor` (the CLI, in this process) drives the privacy LED around the camera check."""
    from gpiozero import Device
    from gpiozero.pins.mock import MockFactory

    from terminal.cli import main

    factory = MockFactory()
    monkeypatch.setattr(Device, "pin_factory", factory)  # what gpiozero uses for backend = "gpio"
    for k in [k for k in os.environ if k.startswith("FACEPAY_")]:
        monkeypatch.delenv(k)
    cfg = tmp_path / "t.toml"
    cfg.write_text('terminal_id = "t"\n[camera]\nbackend = "replay"\nfps = 20.0\n[leds]\nbackend = "gpio"\n')
    code = main(["--config", str(cfg), "--data-dir", str(tmp_path / "data"), "doctor", "--json",
                 "--skip", "display", "--skip", "reader", "--skip", "leds"])
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["camera"]["ok"] and "frames/s" in checks["camera"]["detail"], checks["camera"]
    states = factory.pin(17).states  # GPIO17, the privacy LED: (seconds since the previous change, level)
    assert [s.state for s in states] == [False, True, False], states
    lit_for = states[-1].timestamp
    assert lit_for >= 5 / 20.0, f"lit {lit_for:.3f} s: shorter than the six frames the check reads at 20 fps"
    assert code == 1  # no staff PIN in this config


def test_doctor_fails_clearly_when_parts_are_missing(cli, tmp_path):
    cli("recover")
    cfg = tmp_path / "t.toml"
    cfg.write_text(f'terminal_id = "t"\n[reader]\nport = "{tmp_path}/ttyNOPE"\n[leds]\nbackend = "mock"\n'
                   f'[camera]\nbackend = "replay"\nreplay_path = "{tmp_path}/no-such-folder"\n')
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
