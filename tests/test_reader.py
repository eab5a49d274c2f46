"""The PN532 link: frames (fuzzed), the driver against the simulator on a real pty, the reader
service through unplug and replug, and third-party PN532 drivers against the simulator."""

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import serial
from hypothesis import given
from hypothesis import strategies as st

from firmware_bridge import frames
from firmware_bridge.pn532 import PN532, PN532Error, parse_targets
from firmware_bridge.service import CardPresented, CardRemoved, ReaderBack, ReaderLost, ReaderService
from firmware_bridge.sim import PN532Simulator

UID4 = bytes.fromhex("04A1B2C3")
UID7 = bytes.fromhex("04112233445566")
UID10 = bytes.fromhex("0411223344556677889A")


# -- frames -------------------------------------------------------------------
def test_known_frames_from_the_datasheet():
    assert frames.encode(bytes([0x02])) == bytes.fromhex("0000FF02FED4022A00")
    assert frames.encode(bytes([0x14, 0x01])) == bytes.fromhex("0000FF03FDD4140117 00".replace(" ", ""))
    r = frames.parse(bytes.fromhex("0000FF02FED5151600"))
    assert r.frame == frames.Frame("data", 0xD5, b"\x15") and r.consumed == 9
    assert frames.parse(frames.ACK).frame.kind == "ack"
    assert frames.parse(frames.NACK).frame.kind == "nack"
    assert frames.parse(frames.ERROR_FRAME).frame.kind == "error"


def test_extended_frame_round_trip():
    data = bytes([0x00]) + bytes(range(256))[:259]
    enc = frames.encode(data, tfi=0xD5)
    assert enc[3:5] == b"\xff\xff"
    assert frames.parse(enc).frame == frames.Frame("data", 0xD5, data)
    with pytest.raises(ValueError):
        frames.encode(bytes(300))


def test_resync_after_garbage_and_extra_preamble():
    buf = b"\x55\x55\x13\x37" + b"\x00" * 5 + frames.encode(b"\x4b\x00", 0xD5)
    got, rest, problems = frames.parse_all(buf)
    assert got == [frames.Frame("data", 0xD5, b"\x4b\x00")] and rest == b"" and "garbage" in problems


def test_bad_checksums_are_never_frames():
    good = frames.encode(b"\x03\x32\x01\x06\x07", 0xD5)
    bad_dcs = good[:-2] + bytes([good[-2] ^ 1]) + good[-1:]
    bad_lcs = good[:4] + bytes([good[4] ^ 1]) + good[5:]
    for bad in (bad_dcs, bad_lcs):
        got, _, problems = frames.parse_all(bad + good)
        assert got == [frames.Frame("data", 0xD5, b"\x03\x32\x01\x06\x07")] and "checksum" in problems


def _valid(f: frames.Frame, source: bytes) -> bool:
    """A data frame found in ``source`` must re-encode to bytes that are really in ``source``."""
    if f.kind != "data":
        return True
    enc = frames.encode(bytes(f.data), tfi=f.tfi)
    return enc[:-1] in source or enc[2:-1] in source


@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes_never_crash_or_yield_bad_frames(data):
    got, rest, _ = frames.parse_all(data)
    assert len(rest) <= len(data)
    for f in got:
        assert f.kind in ("data", "ack", "nack", "error")
        assert _valid(f, data)


@given(st.binary(min_size=1, max_size=264), st.binary(max_size=40), st.binary(max_size=40),
       st.integers(0, 1000))
def test_fuzz_frames_survive_noise_and_split_reads(payload, before, after, split):
    enc = frames.encode(payload, tfi=0xD5)
    stream = before.replace(b"\x00\xff", b"\x01\xff") + enc + after
    split = split % (len(stream) + 1)
    first, rest1, _ = frames.parse_all(stream[:split])
    second, _, _ = frames.parse_all(rest1 + stream[split:])
    data = [f for f in first + second if f.kind == "data"]
    assert frames.Frame("data", 0xD5, payload) in data


def test_parse_targets_sizes():
    for uid, sens in ((UID4, b"\x00\x04"), (UID7, b"\x00\x44"), (UID10, b"\x00\x84")):
        body = bytes([1, 1]) + sens + bytes([0, len(uid)]) + uid
        assert parse_targets(body)[0].uid == uid
    with pytest.raises(PN532Error):
        parse_targets(bytes([1, 1, 0, 4, 8, 5]) + b"\x01\x02")


# -- the driver against the simulator on a real pty ----------------------------
@pytest.fixture
def sim(tmp_path):
    s = PN532Simulator(tmp_path / "pn532", seed=7).start()
    yield s
    s.stop()


@pytest.fixture
def reader(sim):
    r = PN532.open(str(sim.link))
    yield r
    r.close()


def test_driver_reads_cards_of_every_uid_size(sim, reader):
    assert os.path.islink(sim.link) and os.readlink(sim.link).startswith("/dev/pts/")
    reader.wake_up()
    assert reader.firmware_version() == (0x32, 0x01, 0x06, 0x07)
    assert reader.list_passive_target(0.15) is None
    for uid in (UID4, UID7, UID10):
        sim.present(uid)
        t = reader.list_passive_target(0.3)
        assert t.uid == uid
        reader.release()
    # the timed-out poll was aborted with an ACK from the host
    assert any(d == "rx" and frames.ACK in b for d, b in sim.log)


def test_a_command_without_preamble_wakes_the_chip_but_is_lost(sim, reader):
    """UM0701: in LowVbat any byte wakes the chip; what arrives while it wakes is lost."""
    assert sim.power == "lowvbat"
    reader.retries = 0
    with pytest.raises(PN532Error, match="no ACK"):
        reader.firmware_version()       # its first bytes woke the chip and were lost with the rest
    assert sim.power == "awake"
    lost = b"".join(b for d, b in sim.log if d == "lost")
    assert lost and frames.encode(bytes([0x02])).startswith(lost)
    assert reader.firmware_version() == (0x32, 1, 6, 7)   # awake now: the same command is answered


def acked(reader, data: bytes) -> bool:
    """Write ``data`` in one go, as a driver does; did the chip ACK and answer the GetFirmwareVersion in it?"""
    reader._buf = b""
    reader.port.reset_input_buffer()
    reader._write(data)
    f = reader._next_frame(time.monotonic() + 0.1)
    if f is None or f.kind != "ack":
        return False
    answer = reader._next_frame(time.monotonic() + 0.2)
    return answer is not None and answer.data[:1] == b"\x03"


@pytest.mark.parametrize("preamble,answered", [
    (b"\x00" * 10, True),                   # nfcpy: ten zero bytes, no 55
    (b"\x55\x55" + b"\x00" * 15, True),      # Adafruit: 55 55 and fifteen zeros
    (b"\x13", False),                       # one byte of anything wakes it, but the frame follows too soon
    (b"\x55\x55\x00\x00\x00", False),         # libnfc's old short preamble, reported to fail on real chips
])
def test_wake_up_from_lowvbat_and_from_powerdown(sim, reader, preamble, answered):
    """Any byte wakes the chip; bytes inside the wake-up delay are lost, the same after PowerDown."""
    get_firmware_version = frames.encode(bytes([0x02]))
    for state in ("lowvbat", "powerdown"):
        assert sim.power == state
        assert acked(reader, preamble + get_firmware_version) is answered
        assert sim.power == "awake"
        assert reader.firmware_version() == (0x32, 1, 6, 7)       # awake now, whatever was lost
        reader.command(0x16, bytes([0x10]), timeout=0.2)          # PowerDown, the HSU may wake it
        time.sleep(0.02)


def test_powerdown_without_hsu_wake_up_stays_asleep(sim, reader):
    reader.wake_up()
    reader.command(0x16, bytes([0x20]), timeout=0.2)      # PowerDown, only SPI may wake it
    reader.retries = 0
    reader._write(b"\x55\x55" + b"\x00" * 15)
    with pytest.raises(PN532Error, match="no ACK"):
        reader.firmware_version()
    assert sim.power == "powerdown"
    sim.replug()                                          # a power cycle: LowVbat, and any byte wakes it
    r = PN532.open(str(sim.link))
    try:
        r.wake_up()
        assert r.firmware_version() == (0x32, 1, 6, 7)
    finally:
        r.close()


@pytest.mark.parametrize("fault", ["drop", "garbage"])
def test_driver_recovers_from_line_faults(sim, reader, fault):
    reader.wake_up()
    sim.set_fault(fault)
    sim.present(UID4)
    ok = 0
    for _ in range(10):
        try:
            if reader.firmware_version() == (0x32, 1, 6, 7):
                ok += 1
        except PN532Error:
            pass
    assert ok >= 8, reader.stats
    assert reader.stats["checksum"] + reader.stats["garbage"] > 0


def test_corrupt_answers_are_nacked_and_never_accepted(sim, reader):
    reader.wake_up()
    sim.set_fault("corrupt")
    with pytest.raises(PN532Error, match="checksum"):
        reader.firmware_version()
    assert reader.stats["nacks_sent"] >= 1
    sim.set_fault("none")
    assert reader.firmware_version() == (0x32, 1, 6, 7)


def test_silence_times_out(sim, reader):
    reader.wake_up()
    sim.set_fault("silence")
    t0 = time.monotonic()
    with pytest.raises(PN532Error):
        reader.firmware_version()
    assert time.monotonic() - t0 < 2.0, "retries are bounded"


def test_baud_rate_switch(sim, reader):
    reader.wake_up()
    reader.set_baud_rate(230400)
    time.sleep(0.05)
    assert sim.baudrate == 230400 and reader.port.baudrate == 230400
    assert reader.firmware_version()[0] == 0x32


def test_unknown_command_gets_error_frame(sim, reader):
    reader.wake_up()
    with pytest.raises(PN532Error, match="application error"):
        reader.command(0x60, b"", timeout=0.2)


# -- the reader service ----------------------------------------------------------
def events_until(q, kind, timeout=5.0):
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            e = q.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(e)
        if isinstance(e, kind):
            return seen
    raise AssertionError(f"no {kind.__name__} within {timeout}s; saw {seen}")


def test_service_taps_unplug_replug(sim):
    svc = ReaderService(str(sim.link), poll_timeout=0.1, reconnect_every=0.1).start()
    try:
        back = events_until(svc.events, ReaderBack)[-1]
        assert back.firmware == (0x32, 1, 6, 7)
        sim.present(UID4)
        seen = events_until(svc.events, CardPresented)
        assert seen[-1].uid == UID4
        time.sleep(0.5)  # the card stays: no second CardPresented
        sim.remove()
        seen = events_until(svc.events, CardRemoved)
        assert not any(isinstance(e, CardPresented) for e in seen)
        sim.unplug()
        lost = events_until(svc.events, ReaderLost)
        time.sleep(0.6)  # still unplugged: retries in the background, but reports the loss once
        assert not any(isinstance(e, ReaderLost) for e in list(svc.events.queue))
        assert lost[-1].reason
        sim.replug()
        events_until(svc.events, ReaderBack)
        sim.present(UID7)
        assert events_until(svc.events, CardPresented)[-1].uid == UID7
    finally:
        svc.stop()


def test_service_reports_missing_port_clearly(tmp_path):
    svc = ReaderService(str(tmp_path / "nope"), reconnect_every=0.1).start()
    try:
        lost = events_until(svc.events, ReaderLost)[-1]
        assert "does not exist" in lost.reason
    finally:
        svc.stop()


def test_driver_reports_a_vanished_tty_as_a_serial_error():
    """The USB adapter pulled between two commands: tcflush, tcdrain and TIOCINQ on the dead tty
    raise termios.error (not an OSError); the driver names it as the serial error callers handle."""
    import pty

    master, slave = pty.openpty()
    reader = PN532.open(os.ttyname(slave))
    os.close(slave)
    os.close(master)
    try:
        for call in (reader.firmware_version, reader.wake_up, lambda: reader.set_baud_rate(230400)):
            with pytest.raises(serial.SerialException, match="went away|failed"):
                call()
    finally:
        reader.close()


# -- the simulator's own command line ------------------------------------------------
def test_sim_command_line_control_channel(tmp_path):
    link = tmp_path / "pn"
    p = subprocess.Popen([sys.executable, "-m", "firmware_bridge.sim", "--link", str(link)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "ready" in p.stdout.readline()
        r = PN532.open(str(link))
        r.wake_up()
        assert r.list_passive_target(0.1) is None
        p.stdin.write("present 04A1B2C3\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ok present"
        assert r.list_passive_target(0.3).uid == UID4
        p.stdin.write("present random\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ok present"
        uids = {r.list_passive_target(0.3).uid for _ in range(3)}
        assert len(uids) == 3 and all(u[0] == 0x08 and len(u) == 4 for u in uids)
        p.stdin.write("unplug\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ok unplug"
        with pytest.raises((serial.SerialException, OSError, PN532Error)):
            r.firmware_version()
        r.close()
        assert not link.exists()
        p.stdin.write("replug\n")
        p.stdin.flush()
        p.stdout.readline()
        r = PN532.open(str(link))
        r.wake_up()
        assert r.firmware_version()[0] == 0x32
        r.close()
        p.stdin.write("quit\n")
        p.stdin.flush()
        assert p.wait(5) == 0
    finally:
        p.kill()


@pytest.mark.parametrize("stop_with", [signal.SIGTERM, signal.SIGINT])
def test_sim_keeps_serving_when_its_stdin_closes(tmp_path, stop_with):
    """`python -m firmware_bridge.sim --link /tmp/x &` from a script or a unit file: stdin is at EOF."""
    link = tmp_path / "pn"
    p = subprocess.Popen([sys.executable, "-m", "firmware_bridge.sim", "--link", str(link), "--card", "04A1B2C3"],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "ready" in p.stdout.readline()
        time.sleep(1.0)
        assert p.poll() is None, "the simulator quit when its standard input closed"
        r = PN532.open(str(link))
        try:
            r.wake_up()
            assert r.list_passive_target(0.3).uid == UID4
        finally:
            r.close()
        p.send_signal(stop_with)
        assert p.wait(5) == 0
        assert not link.exists()
        assert "standard input closed" in p.stderr.read()
    finally:
        p.kill()


def test_sim_card_random_from_the_command_line(tmp_path):
    link = tmp_path / "pn"
    p = subprocess.Popen([sys.executable, "-m", "firmware_bridge.sim", "--link", str(link), "--card", "random"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "ready" in p.stdout.readline()
        r = PN532.open(str(link))
        try:
            r.wake_up()
            first, second = r.list_passive_target(0.3), r.list_passive_target(0.3)
        finally:
            r.close()
        assert first.uid[0] == second.uid[0] == 0x08 and len(first.uid) == 4 and first.uid != second.uid
        assert first.sel_res == 0x20 and first.ats        # ISO 14443-4, as a phone
        p.stdin.write("quit\n")
        p.stdin.flush()
        assert p.wait(5) == 0
    finally:
        p.kill()


def test_sim_rejects_bad_card(tmp_path):
    r = subprocess.run([sys.executable, "-m", "firmware_bridge.sim", "--link", str(tmp_path / "x"), "--card", "zz"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "--card" in r.stderr


# -- third-party PN532 drivers against the simulator -------------------------------------
# Each test names the peer it stands for: a driver that talks to real PN532 boards.
def test_peer_adafruit_circuitpython_pn532_reads_uid(sim):
    """Peer: Adafruit CircuitPython PN532 (PN532_UART over a pyserial port), as on a Pi with Blinka."""
    from adafruit_pn532.uart import PN532_UART

    uart = serial.Serial(str(sim.link), baudrate=115200, timeout=0.1)
    try:
        pn = PN532_UART(uart, debug=False)
        assert pn.firmware_version == (0x32, 1, 6, 7)
        pn.SAM_configuration()
        assert pn.read_passive_target(timeout=0.3) is None
        # Adafruit left that InListPassiveTarget running (it sends no ACK to abort it): the card
        # laid on the reader answers it, and the next call flushes that answer before it asks
        # again.  Wait for that answer to reach the port, as a shopper's card lies there first;
        # a card arriving in the few bit times between that flush and the next command breaks
        # Adafruit's ACK check on a real chip too.
        sim.present(UID7)
        deadline = time.monotonic() + 5
        while not uart.in_waiting and time.monotonic() < deadline:
            time.sleep(0.005)
        assert sim.activations == [UID7], "the chip did not answer the command Adafruit left waiting"
        assert bytes(pn.read_passive_target(timeout=0.5)) == UID7, sim.log
        sim.present_random()            # a phone: ISO 14443-4 with an ATS, a new UID each activation
        first = bytes(pn.read_passive_target(timeout=0.5))
        second = bytes(pn.read_passive_target(timeout=0.5))
        assert first[0] == second[0] == 0x08 and len(first) == 4 and first != second
    finally:
        uart.close()


@pytest.mark.skipif(shutil.which("nfc-list") is None, reason="libnfc-bin is not installed (it is in the README's apt line)")
def test_peer_libnfc_nfc_list_reads_uid(sim):
    """Peer: libnfc's pn532_uart driver (`nfc-list` from libnfc-bin)."""
    sim.present(UID4)
    env = dict(os.environ, LIBNFC_DEFAULT_DEVICE=f"pn532_uart:{sim.link}", LIBNFC_AUTO_SCAN="false")
    r = subprocess.run(["nfc-list"], capture_output=True, text=True, timeout=30, env=env)
    assert "UID (NFCID1): 04  a1  b2  c3" in r.stdout, r.stdout + r.stderr
    assert "SAK (SEL_RES): 08" in r.stdout
    sim.present_random()
    r = subprocess.run(["nfc-list"], capture_output=True, text=True, timeout=30, env=env)
    first = r.stdout.split("target:")[1]
    uid = re.search(r"UID \(NFCID3\): ((?:[0-9a-f]{2}\s+){4})", first)  # libnfc calls an 08 UID NFCID3: random
    assert uid and bytes.fromhex(uid.group(1)) in sim.activations, r.stdout + r.stderr
    assert "SAK (SEL_RES): 20" in first and "ATS: 75  77  81  02  80" in first


# nfcpy finds serial readers by their name in /dev ("tty:NAME:pn532"): the pty gets a /dev name
# when this process may create one (root), and is removed after; otherwise nfcpy's own TTY
# transport and PN532 driver are pointed at the pty path.  No real device is ever opened.
@pytest.fixture(params=["dev-name", "pty-path"])
def nfcpy_open(sim, request):
    nfc = pytest.importorskip("nfc")
    from nfc.clf import pn532 as nfcpy_pn532
    from nfc.clf import transport

    name = f"ttyFACEPAYSIM{os.getpid()}"
    dev = f"/dev/{name}" if request.param == "dev-name" else None
    if dev is not None:
        try:
            os.symlink(os.readlink(sim.link), dev)
        except OSError as exc:
            pytest.skip(f"cannot give the pty a name in /dev ({exc}); the pty-path variant runs instead")
    opened = []

    def open_():
        clf = nfc.ContactlessFrontend()
        if dev is not None:
            if os.readlink(dev) != os.readlink(sim.link):     # replugged: a new pty
                os.unlink(dev)
                os.symlink(os.readlink(sim.link), dev)
            try:
                if not clf.open(f"tty:{name}:pn532"):
                    return None
            except OSError:                 # nfcpy raises when the one device it was given does not answer
                return None
        else:
            try:
                clf.device = nfcpy_pn532.init(transport.TTY(os.readlink(sim.link)))
                clf.device._path = os.readlink(sim.link)    # what device.connect() sets after init
            except OSError:
                return None
        opened.append(clf)
        return clf

    yield open_
    for clf in opened:
        if clf.device is not None:
            clf.close()
    if dev is not None:
        os.unlink(dev)


def test_peer_nfcpy_reads_uid_through_sense(sim, nfcpy_open):
    """Peer: nfcpy 1.0.4, nfc.ContactlessFrontend("tty:NAME:pn532"), as used on a Pi's UART.

    Its first command is GetFirmwareVersion after ten zero bytes and no 55: those bytes wake the
    chip from LowVbat (some are lost in the wake-up) and the command is answered within 100 ms."""
    from nfc.clf import RemoteTarget

    sim.present(UID4)
    clf = nfcpy_open()
    assert clf is not None, "nfcpy did not find a PN532"
    lost = b"".join(b for d, b in sim.log if d == "lost")
    assert lost and set(lost) == {0}, "the wake-up ate part of nfcpy's zero preamble, not its command"
    assert str(clf.device).startswith("PN532v1.6")
    target = clf.sense(RemoteTarget("106A"))
    assert bytes(target.sdd_res) == UID4 and bytes(target.sel_res) == b"\x08"
    sim.present(UID7)
    assert bytes(clf.sense(RemoteTarget("106A")).sdd_res) == UID7
    sim.remove()
    assert clf.sense(RemoteTarget("106A")) is None
    sim.present_random()
    uids = [bytes(clf.sense(RemoteTarget("106A")).sdd_res) for _ in range(3)]
    assert all(u[0] == 0x08 and len(u) == 4 for u in uids) and len(set(uids)) == 3


def test_peer_nfcpy_baud_rate_switch(sim, nfcpy_open):
    """Peer: nfcpy 1.0.4's speed switch: it asks `stty` for 921600, 460800, 230400 and 115200 in turn
    and sends SetSerialBaudRate for the first the port takes; the chip follows after the host's ACK.
    nfcpy's close() sets 115200 again and sends PowerDown (HSU wake-up); the next open wakes it."""
    from nfc.clf import RemoteTarget

    sim.present(UID4)
    clf = nfcpy_open()
    assert clf is not None
    host = clf.device.chipset.transport
    assert host.baudrate == 921600 and sim.baudrate == 921600      # a pty takes 921600: the chip followed
    assert bytes(clf.sense(RemoteTarget("106A")).sdd_res) == UID4  # and is heard at the new speed
    clf.close()
    clf.device = None
    assert sim.baudrate == 115200 and sim.power == "powerdown"
    clf = nfcpy_open()                                             # ten zeros wake it from PowerDown
    assert clf is not None and sim.baudrate == 921600
    assert bytes(clf.sense(RemoteTarget("106A")).sdd_res) == UID4
    # nfcpy killed without close(): the chip stays at 921600 until it is power-cycled, as a real one does
    clf.device.chipset.transport.close()
    clf.device = None
    assert nfcpy_open() is None
    assert any(d == "garbled" for d, _ in sim.log)
    sim.replug()
    clf = nfcpy_open()
    assert clf is not None and bytes(clf.sense(RemoteTarget("106A")).sdd_res) == UID4


def test_the_chip_refuses_what_a_chip_refuses(sim, reader):
    """Peer: this project's driver.  A host that changes its speed alone is not heard; a rate code
    past 1288000 baud gets the application error frame; the chip stays where it was."""
    reader.wake_up()
    reader.port.baudrate = 230400
    reader.retries = 0
    with pytest.raises(PN532Error, match="no ACK"):
        reader.firmware_version()
    assert sim.baudrate == 115200 and any(d == "garbled" for d, _ in sim.log)
    reader.port.baudrate = 115200
    assert reader.firmware_version() == (0x32, 1, 6, 7)
    with pytest.raises(PN532Error, match="application error"):
        reader.command(0x10, bytes([9]), timeout=0.2)
    assert sim.baudrate == 115200
