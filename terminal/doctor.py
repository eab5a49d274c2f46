"""``facepay doctor``: one report a field technician can read on the screen or over SSH.

Checks: config, data folder (0700, its files 0600, free space), master key (present,
0600), databases (``PRAGMA integrity_check``), consent ledger chain, clock,
numpy's matrix products (the face checks' arithmetic, against plain Python),
camera (opens, frame size, frame rate), card reader (firmware version),
LEDs (blink test on request), display.  The privacy LED is lit for as long as
the camera is open, here as in a scan.  A simulated part (replay camera, PN532
simulator, mock LEDs, sandbox processor) is a warning unless ``--demo`` says the
simulators are meant; warnings do not change the exit status.  Exit 0 when
every check passes.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

MIN_FREE_MB = 200
BUILD_YEAR = 2026


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""
    warn: bool = False


def check_data_dir(data_dir: Path) -> list[Check]:
    out = []
    if not data_dir.is_dir():
        return [Check("data folder", False, f"{data_dir} does not exist", "run the installer, or pass --data-dir")]
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    writable = os.access(data_dir, os.W_OK)
    ok = writable and not mode & 0o077
    out.append(Check("data folder", ok, f"{data_dir} mode {mode:04o}{'' if writable else ', not writable'}"
                     + ("" if not mode & 0o077 else ": group or others can open it; the terminal refuses to start"),
                     "" if ok else f"run: chmod 700 {data_dir} (and chown it to the terminal's user)"))
    loose = sorted(p for p in data_dir.iterdir()
                   if p.is_file() and not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077)
    out.append(Check("data files", not loose,
                     "every file is 0600" if not loose else
                     "readable by others: " + ", ".join(f"{p.name} {stat.S_IMODE(p.stat().st_mode):04o}" for p in loose),
                     "" if not loose else "run: chmod 600 " + " ".join(str(p) for p in loose)))
    free = shutil.disk_usage(data_dir).free // (1024 * 1024)
    out.append(Check("free space", free >= MIN_FREE_MB, f"{free} MB free",
                     "" if free >= MIN_FREE_MB else "free space on the SD card: sales cannot be journaled on a full disk"))
    key = data_dir / "master.key"
    if not key.exists() and not (data_dir / "facepay.db").exists():
        # a terminal that never ran (a fresh SD card): the key is made with the store on first run
        out.append(Check("master key", True, "not created yet (made on first run)"))
    elif not key.exists():
        out.append(Check("master key", False, "missing", "the store exists without its key: restore master.key "
                                                         "from backup, or no template can be read"))
    else:
        kmode = stat.S_IMODE(key.stat().st_mode)
        size = key.stat().st_size
        ok = kmode == 0o600 and size == 32
        out.append(Check("master key", ok, f"mode {kmode:04o}, {size} bytes", "" if ok else f"chmod 600 {key}"))
    for name in ("facepay.db", "keystore.db", "journal.db", "sandbox-processor.db"):
        p = data_dir / name
        if not p.exists():
            out.append(Check(f"database {name}", True, "not created yet"))
            continue
        try:
            conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5)
            res = conn.execute("PRAGMA integrity_check").fetchone()[0]
            conn.close()
        except sqlite3.DatabaseError as exc:
            res = str(exc)
        out.append(Check(f"database {name}", res == "ok", f"integrity_check: {res}",
                         "" if res == "ok" else "restore this file from backup"))
    return out


def check_clock() -> Check:
    now = datetime.now(timezone.utc)
    ok = now.year >= BUILD_YEAR
    synced = Path("/run/systemd/timesync/synchronized").exists()
    return Check("clock", ok, now.isoformat(timespec="seconds") + (" (NTP synchronised)" if synced else ""),
                 "" if ok else "the clock is behind the build date: enable NTP (timedatectl set-ntp true); "
                               "receipts and retention need a right clock")


def check_arithmetic(matmul=None) -> Check:
    """numpy's matrix products against plain Python, in the shapes the face checks use (landmarks through a
    2x2 matrix, a descriptor against templates).  numpy hands them to its BLAS, which picks kernels for the
    CPU it finds: under qemu's default arm64 CPU (with SVE) those kernels gave products off by hundreds of
    pixels, and every head turn failed (docs/deploy.md, the arm64 check)."""
    import random

    import numpy as np

    matmul = matmul or np.matmul
    rnd = random.Random(22)
    worst = 0.0
    for rows, inner, cols in ((468, 2, 2), (7, 3, 3), (100, 128, 1)):
        a = [[rnd.uniform(-100, 100) for _ in range(inner)] for _ in range(rows)]
        b = [[rnd.uniform(-1, 1) for _ in range(cols)] for _ in range(inner)]
        ref = np.array([[sum(x * y for x, y in zip(row, col)) for col in zip(*b)] for row in a])
        for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-5)):   # relative to the largest entry
            got = np.asarray(matmul(np.array(a, dtype), np.array(b, dtype)), np.float64)
            worst = max(worst, float(np.abs(got - ref).max() / np.abs(ref).max()) / tol)
    if worst <= 1:
        return Check("arithmetic", True, "numpy's matrix products agree with plain Python")
    return Check("arithmetic", False, "numpy's matrix products are wrong on this CPU (its BLAS kernels); "
                 "the face checks' geometry cannot be trusted (head turns are refused)",
                 "set OPENBLAS_CORETYPE to a plainer core (ARMV8 on arm64) in the kiosk's environment "
                 "(systemd: Environment= in facepay-kiosk.service), run doctor again, and report the CPU")


def check_camera(camera, leds) -> Check:
    """Open the camera with its privacy LED lit, time a few frames, close it and put the LED out."""
    try:
        leds.privacy(True)
        camera.open()
        t0 = time.monotonic()
        stamps, size = [], None
        while len(stamps) < 6 and time.monotonic() - t0 < 3:
            f = camera.read()
            if f is None:
                break
            stamps.append(f.timestamp)
            size = f.image.shape[1], f.image.shape[0]
        frames = len(stamps)
        dt = stamps[-1] - stamps[0] if frames > 1 else 0
    except Exception as exc:  # any backend's failure is a failed check, reported
        return Check("camera", False, f"{camera.describe().get('backend')}: {exc}",
                     "check the ribbon cable / USB plug and [camera] backend")
    finally:
        camera.close()
        leds.privacy(False)
    if not frames:
        return Check("camera", False, "opened but sent no frame", "check [camera] settings")
    fps = (frames - 1) / dt if dt > 0 else 0
    return Check("camera", True, f"{camera.describe().get('backend')}: {size[0]}x{size[1]}, {fps:.1f} frames/s "
                                 "(no frame kept)")


def check_reader(port: str, baudrate: int) -> Check:
    from firmware_bridge.pn532 import PN532, PN532Error
    from firmware_bridge.service import describe_open_error

    try:
        r = PN532.open(port, baudrate)
    except Exception as exc:  # serial.SerialException, OSError
        return Check("card reader", False, describe_open_error(port, exc))
    try:
        r.wake_up()
        ic, ver, rev, support = r.firmware_version()
    except Exception as exc:
        return Check("card reader", False, describe_open_error(port, PN532Error(str(exc))))
    finally:
        r.close()
    return Check("card reader", True, f"PN5{ic:02X} firmware {ver}.{rev} (support 0x{support:02X}) on {port}")


def check_display() -> Check:
    if os.environ.get("DISPLAY"):
        return Check("display", True, f"X display {os.environ['DISPLAY']}")
    cards = sorted(str(p) for p in Path("/dev/dri").glob("card*")) if Path("/dev/dri").exists() else []
    if cards:
        return Check("display", True, "KMS/DRM: " + ", ".join(cards))
    return Check("display", False, "no X display and no /dev/dri/card*",
                 "connect the display; on a Pi enable the KMS overlay (dtoverlay=vc4-kms-v3d)")


def check_staff_pin(cfg, demo: bool) -> Check:
    if cfg.staff.pin_hash:
        return Check("staff PIN", True, "set ([staff] pin_hash)")
    if demo:
        return Check("staff PIN", True, "the public demo PIN 2580 (--demo)")
    return Check("staff PIN", False, "not set: `facepay run` will not start",
                 "run `facepay staff-pin` and put the line it prints in the config")


def mark_simulated(cfg, checks: list[Check], demo: bool) -> list[Check]:
    """Outside --demo, every part that is a simulator becomes a warning with a hint."""
    from .config import simulated_parts

    checks = checks + [Check("payment processor", True, cfg.payment.processor)]
    if demo:
        return checks
    by_part = {line.split(":", 1)[0]: line for line in simulated_parts(cfg)}
    for c in checks:
        if c.ok and c.name in by_part:
            c.warn = True
            c.detail += " - SIMULATED"
            c.hint = (f"{by_part[c.name]}: name the real part in the config (see the README's configuration "
                      "section), or run with --demo")
    return checks


def collect(term, hw, skip: set[str] = frozenset(), blink: bool = False, demo: bool = False) -> list[Check]:
    """Checks against a running terminal (the kiosk's staff screen uses this)."""
    out = [Check("config", True, f"{term.cfg.source}, terminal {term.cfg.terminal_id}"),
           check_staff_pin(term.cfg, demo)]
    out += check_data_dir(term.data_dir)
    led = term.ledger.verify()
    out.append(Check("consent ledger", led.ok, f"{led.count} entries" + ("" if led.ok else f": {led.reason}")))
    out.append(check_clock())
    out.append(check_arithmetic())
    if not term.face_pay_on():
        out.append(Check("camera", True, "not opened: face pay is off at this terminal"))
    elif "camera" not in skip:
        out.append(check_camera(hw.camera, hw.leds))
    if hw.reader is not None and hw.reader.connected:
        fw = hw.reader.firmware
        out.append(Check("card reader", True, f"PN5{fw[0]:02X} firmware {fw[1]}.{fw[2]} (polling)"))
    elif hw.reader is not None:
        out.append(Check("card reader", False, hw.reader.lost_reason or "not connected yet"))
    if blink:
        out.append(Check("LEDs", True, "blinked " + ", ".join(hw.leds.blink_each())))
    else:
        out.append(Check("LEDs", True, f"{hw.leds.pin_factory.__class__.__name__ if hw.leds.pin_factory else 'GPIO'}: "
                                       + ", ".join(f"{n} GPIO{p}" for n, p in hw.leds.pins.items())))
    return mark_simulated(term.cfg, out, demo)


def run_doctor(ctx) -> int:
    """The CLI: checks that need no running kiosk; the reader and camera are opened and closed again."""
    from .errors import FacepayError
    from .hardware import demo_config

    a = ctx.args
    results: list[Check] = []
    try:
        cfg = demo_config(ctx.cfg) if a.demo else ctx.cfg
        results.append(Check("config", True, f"{cfg.source}, terminal {cfg.terminal_id}"))
        results.append(check_staff_pin(cfg, a.demo))
    except FacepayError as exc:
        results.append(Check("config", False, exc.one_line()))
        cfg = None
    if cfg is not None:
        data_dir = ctx.data_dir
        results += check_data_dir(data_dir)
        if (data_dir / "facepay.db").exists() and (data_dir / "master.key").exists():
            try:
                r = ctx.terminal().ledger.verify()
                results.append(Check("consent ledger", r.ok, f"{r.count} entries" + ("" if r.ok else f": {r.reason}"),
                                     "" if r.ok else "run `facepay audit show`; report it"))
            except FacepayError as exc:
                results.append(Check("consent ledger", False, exc.one_line()))
        results.append(check_clock())
        results.append(check_arithmetic())
        skip = set(a.skip)
        face_pay = cfg.face_pay
        if face_pay and (data_dir / "facepay.db").exists() and (data_dir / "master.key").exists():
            try:
                face_pay = ctx.terminal().face_pay_on()
            except FacepayError:
                pass
        if not face_pay:
            results.append(Check("camera", True, "not opened: face pay is off at this terminal"))
        elif "camera" not in skip:
            results.append(_cli_camera_check(cfg))
        if "reader" not in skip:
            sim = None
            port = cfg.reader.port
            if port == "sim":
                from firmware_bridge.sim import PN532Simulator

                data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
                sim = PN532Simulator(data_dir / "pn532-doctor").start()
                port = str(sim.link)
            try:
                check = check_reader(port, cfg.reader.baudrate)
                if sim is not None:
                    check.detail += " (simulated reader)"
                results.append(check)
            finally:
                if sim is not None:
                    sim.stop()
        if "leds" not in skip:
            from .leds import LedBoard

            try:
                board = LedBoard(cfg.leds)
                detail = ", ".join(f"{n} GPIO{p}" for n, p in board.pins.items())
                if a.blink:
                    detail = "blinked " + ", ".join(board.blink_each())
                results.append(Check("LEDs", True, f"{cfg.leds.backend}: {detail}"))
                board.close()
            except FacepayError as exc:
                results.append(Check("LEDs", False, exc.one_line()))
        if "display" not in skip:
            results.append(check_display())
    if cfg is not None:
        results = mark_simulated(cfg, results, a.demo)
    ok = all(c.ok for c in results)
    if cfg is not None and cfg.fleet.enabled:  # fleet hook: the agent reports reader/camera in its heartbeats
        from .fleet_agent import save_doctor_state

        save_doctor_state(ctx.data_dir, [asdict(c) for c in results])
    warnings = sum(c.warn for c in results)
    if a.json:
        print(json.dumps({"ok": ok, "warnings": warnings, "checks": [asdict(c) for c in results]}))
    else:
        for c in results:
            print(f"[{'FAIL' if not c.ok else 'WARN' if c.warn else 'OK  '}] {c.name:<28} {c.detail}")
            if c.hint and (c.warn or not c.ok):
                print(f"       -> {c.hint}")
        print(("all checks passed" if ok else f"{sum(not c.ok for c in results)} check(s) failed")
              + (f", {warnings} warning(s)" if warnings else ""))
    return 0 if ok else 1


def _cli_camera_check(cfg) -> Check:
    """The CLI's camera check: the privacy LED is driven first; no LED, no camera."""
    from .camera import make_camera
    from .errors import FacepayError
    from .hardware import DEMO_CAMERA
    from .leds import LedBoard

    try:
        board = LedBoard(cfg.leds)
    except FacepayError as exc:
        return Check("camera", False, f"not opened: the privacy LED cannot be lit: {exc.one_line()}",
                     "the camera opens only with its privacy LED: fix the LEDs first")
    try:
        return check_camera(make_camera(cfg.camera, replay_default=str(DEMO_CAMERA)), board)
    except FacepayError as exc:
        return Check("camera", False, exc.one_line())
    finally:
        board.close()
