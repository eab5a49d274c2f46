"""`facepay flash` on image files: copy, verify, the boot-partition files, and every refusal.

No test here names a real block device: targets are files, and the views of mounts and the
system disk are injected.
"""

import json
import lzma
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

from terminal.flash import FIRSTBOOT_ARGS, RELEASE_DIR_ON_PI, FlashRefused, MachineView, flash, xz_uncompressed_size

# make test: on one worker, builds the wheel in this checkout (setuptools' build/ is shared)
pytestmark = [pytest.mark.skipif(shutil.which("mformat") is None, reason="mtools is in the README's apt line"),
              pytest.mark.xdist_group("builds_in_the_checkout")]
ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")
EMPTY = MachineView(set(), set())


def mtools(cmd, img, *args):
    return subprocess.run([cmd, "-i", f"{img}@@1M", *args], capture_output=True, env=ENV, check=True).stdout


ROOT_OFFSET = (2048 + 64 * 2048) * 512  # where the image's Linux partition starts


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The release folder exactly as `make release` lays it out (the wheel built from this checkout)."""
    out = tmp_path_factory.mktemp("release") / "release"
    r = subprocess.run(["make", "-s", "-o", ".venv/.installed", "release", f"RELEASE_DIR={out}",
                        f"BIN={Path(sys.executable).parent}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return out


@pytest.fixture
def pi_image(tmp_path):
    """A 72 MiB disk image shaped like Raspberry Pi OS: MBR, a FAT boot partition with cmdline.txt, a Linux one.

    The boot partition is 64 MiB (Raspberry Pi OS's is 512 MiB): the payload carries the face model
    files (about 30 MB compressed).
    """
    img = tmp_path / "raspios-lite.img"
    size = 72 * 1024 * 1024
    boot_sectors = 64 * 2048
    root_lba = ROOT_OFFSET // 512
    mbr = bytearray(512)

    def entry(ptype, lba, n):
        return bytes([0, 0, 0, 0, ptype, 0, 0, 0]) + struct.pack("<II", lba, n)

    mbr[446:462] = entry(0x0C, 2048, boot_sectors)
    mbr[462:478] = entry(0x83, root_lba, size // 512 - root_lba)
    mbr[510:512] = b"\x55\xaa"
    with open(img, "wb") as f:
        f.write(mbr)
        f.truncate(size)
        f.seek(root_lba * 512)
        f.write(b"rootfs marker " * 1000)
    subprocess.run(["mformat", "-i", f"{img}@@1M", "-T", str(boot_sectors), "-h", "64", "-s", "32", "-v", "BOOT", "::"],
                   env=ENV, check=True, capture_output=True)
    cmdline = tmp_path / "cmdline.txt"
    cmdline.write_text("console=serial0,115200 console=tty1 root=PARTUUID=abc-02 rootwait\n")
    mtools("mcopy", img, str(cmdline), "::cmdline.txt")
    return img


@pytest.fixture
def config(tmp_path):
    p = tmp_path / "terminal.toml"
    p.write_text('terminal_id = "shop-7-till-2"\n[reader]\nport = "/dev/serial0"\n')
    return p


def test_flash_img_to_file_verifies_and_provisions(pi_image, config, release, tmp_path):
    target = tmp_path / "sdcard.bin"
    result = flash(pi_image, target, config, yes=True, release=release, view=EMPTY, out=None)
    assert result["verified"] and result["bytes"] == pi_image.stat().st_size
    assert result["terminal_id"] == "shop-7-till-2"
    original, copy = pi_image.read_bytes(), target.read_bytes()
    # the root partition is copied byte for byte; only the boot partition gained files
    assert copy[ROOT_OFFSET:] == original[ROOT_OFFSET:]
    assert copy[:512] == original[:512]
    assert mtools("mtype", target, "::facepay/terminal.toml").decode() == config.read_text()
    assert mtools("mtype", target, "::facepay/terminal-id").decode().strip() == "shop-7-till-2"
    first = mtools("mtype", target, "::facepay/firstboot.sh").decode()
    assert first.startswith("#!/bin/sh") and "facepay-firstboot.service" in first
    cmdline = mtools("mtype", target, "::cmdline.txt").decode()
    assert cmdline.strip().endswith(FIRSTBOOT_ARGS) and "root=PARTUUID=abc-02" in cmdline
    assert cmdline.count("\n") == 1, "cmdline.txt must stay one line"
    listing = mtools("mdir", target, "-b", "::facepay").decode()
    assert "facepay-release.tar.gz" in listing


def test_flash_img_xz(pi_image, config, release, tmp_path):
    xz = tmp_path / "raspios-lite.img.xz"
    xz.write_bytes(lzma.compress(pi_image.read_bytes(), format=lzma.FORMAT_XZ))
    assert xz_uncompressed_size(xz) == pi_image.stat().st_size
    target = tmp_path / "sd.bin"
    result = flash(xz, target, config, yes=True, release=release, view=EMPTY, out=None)
    assert result["verified"] and target.read_bytes()[ROOT_OFFSET:] == pi_image.read_bytes()[ROOT_OFFSET:]


def test_refuses_a_mounted_target(pi_image, config, release, tmp_path):
    target = tmp_path / "sd.bin"
    target.write_bytes(b"\0" * (32 * 1024 * 1024))
    view = MachineView(mounted_sources={str(target)}, system_disks=set())
    with pytest.raises(FlashRefused, match="is mounted"):
        flash(pi_image, target, config, yes=True, release=release, view=view, out=None)
    assert target.read_bytes() == b"\0" * (32 * 1024 * 1024), "nothing was written"


def test_refuses_the_system_disk(pi_image, config, release, tmp_path):
    target = tmp_path / "disk.bin"
    target.write_bytes(b"\0" * (32 * 1024 * 1024))
    view = MachineView(mounted_sources=set(), system_disks={os.path.realpath(target)})
    with pytest.raises(FlashRefused, match="running system"):
        flash(pi_image, target, config, yes=True, release=release, view=view, out=None)


def test_refuses_a_target_smaller_than_the_image(pi_image, config, release, tmp_path):
    target = tmp_path / "tiny.bin"
    target.write_bytes(b"\0" * (4 * 1024 * 1024))
    with pytest.raises(FlashRefused, match="needs"):
        flash(pi_image, target, config, yes=True, release=release, view=EMPTY, out=None)
    assert target.stat().st_size == 4 * 1024 * 1024


def test_asks_for_confirmation(pi_image, config, release, tmp_path):
    target = tmp_path / "sd.bin"
    asked = []
    with pytest.raises(FlashRefused, match="not confirmed"):
        flash(pi_image, target, config, yes=False, release=release, view=EMPTY, out=None,
              ask=lambda q: asked.append(q) or "no")
    assert asked and "Everything on it is lost" in asked[0] and not target.exists()
    result = flash(pi_image, target, config, yes=False, release=release, view=EMPTY, out=None, ask=lambda q: "yes")
    assert result["verified"]


def test_bad_inputs(pi_image, config, release, tmp_path):
    from terminal.errors import ConfigError, InputError

    with pytest.raises(InputError, match="not found"):
        flash(tmp_path / "none.img", tmp_path / "t", config, yes=True, release=release, view=EMPTY, out=None)
    other = tmp_path / "photo.jpg"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=".img or .img.xz"):
        flash(other, tmp_path / "t", config, yes=True, release=release, view=EMPTY, out=None)
    bad = tmp_path / "bad.toml"
    bad.write_text("terminal_id = 3\n")
    with pytest.raises(ConfigError):
        flash(pi_image, tmp_path / "t", bad, yes=True, release=release, view=EMPTY, out=None)
    assert not (tmp_path / "t").exists()
    no_mbr = tmp_path / "blank.img"
    no_mbr.write_bytes(b"\0" * 1024 * 1024)
    with pytest.raises(InputError, match="MBR"):
        flash(no_mbr, tmp_path / "t2", config, yes=True, release=release, view=EMPTY, out=None)


def test_cli_flash_without_tty_refuses_then_works_with_yes(cli, pi_image, config, release, tmp_path):
    target = tmp_path / "sd.bin"
    r = cli("flash", pi_image, target, "--config", config, "--release", release)
    assert r.returncode == 2 and "not confirmed" in r.stderr and not target.exists()
    r = cli("flash", pi_image, target, "--config", config, "--release", release, "--yes", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] and out["terminal_id"] == "shop-7-till-2"


def test_firstboot_unit_is_shipped():
    assert (ROOT / "systemd" / "facepay-firstboot.service").is_file()


def test_refuses_without_a_complete_release(pi_image, config, release, tmp_path):
    from terminal.errors import InputError

    target = tmp_path / "sd.bin"
    with pytest.raises(InputError, match="no release folder") as e:
        flash(pi_image, target, config, yes=True, release=tmp_path / "dist" / "release", view=EMPTY, out=None)
    assert "make release" in e.value.one_line()
    partial = tmp_path / "partial"
    shutil.copytree(release, partial)
    (partial / "deploy" / "install.sh").unlink()
    with pytest.raises(InputError, match="lacks deploy/install.sh"):
        flash(pi_image, target, config, yes=True, release=partial, view=EMPTY, out=None)
    for whl in partial.glob("*.whl"):
        whl.unlink()
    with pytest.raises(InputError, match="expected one facepay_terminal"):
        flash(pi_image, target, config, yes=True, release=partial, view=EMPTY, out=None)
    assert not target.exists(), "nothing is written before the release is checked"


def unit_paths(unit: str) -> list[str]:
    """Absolute paths a unit's ExecStart=/ConditionPathExists= name (the first-boot unit's calls)."""
    out = []
    for line in unit.splitlines():
        key, _, value = line.partition("=")
        if key in ("ExecStart", "ConditionPathExists") and not value.startswith("!"):
            out += [w for w in value.split() if w.startswith("/")]
    return out


def test_first_boot_finds_every_file_it_calls(pi_image, config, release, tmp_path):
    """Flash, copy the boot partition out, run firstboot.sh under a scratch root, then follow each call:
    firstboot.sh -> facepay-firstboot.service -> deploy/install.sh -> the wheel, the lock, the units."""
    target = tmp_path / "sd.bin"
    flash(pi_image, target, config, yes=True, release=release, view=EMPTY, out=None)
    root = tmp_path / "pi"
    boot = root / "boot" / "firmware"
    boot.mkdir(parents=True)
    subprocess.run(["mcopy", "-s", "-i", f"{target}@@1M", "::facepay", "::cmdline.txt", str(boot)], env=ENV, check=True,
                   capture_output=True)
    script = (boot / "facepay" / "firstboot.sh").read_text()
    # every file under the boot partition the script names is on the card
    for name in re.findall(r'\$BOOT/([\w./-]+)', script):
        assert (boot / name).is_file(), f"firstboot.sh reads {name}, not on the boot partition"
    r = subprocess.run(["sh", str(boot / "facepay" / "firstboot.sh")], env=dict(ENV, FACEPAY_ROOT=str(root)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "systemd.run=" not in (boot / "cmdline.txt").read_text(), "the one-time cmdline args are removed"
    assert (root / "etc/facepay/terminal.toml").read_text() == config.read_text()
    unit = root / "etc/systemd/system/facepay-firstboot.service"
    link = root / "etc/systemd/system/multi-user.target.wants/facepay-firstboot.service"
    assert os.readlink(link) == "/etc/systemd/system/facepay-firstboot.service"
    called = unit_paths(unit.read_text())
    assert f"{RELEASE_DIR_ON_PI}/deploy/install.sh" in called
    for path in [p for p in called if p.startswith(("/opt/", "/etc/"))]:  # /bin/sh is the OS's
        assert (root / path.lstrip("/")).exists(), f"facepay-firstboot.service calls {path}, missing after first boot"

    # install.sh runs from the unpacked release: each "$SRC"/... it uses is there, and one wheel
    unpacked = root / RELEASE_DIR_ON_PI.lstrip("/")
    installer = (unpacked / "deploy" / "install.sh").read_text()
    used = set(re.findall(r'"\$SRC"?/([\w./*-]+)', installer)) - {"setup.py"}  # setup.py: only from a checkout
    assert {"requirements.lock", "systemd/facepay-kiosk.service", "facepay_terminal-*.whl"} <= used, used
    for name in used:
        assert list(unpacked.glob(name)), f"install.sh uses $SRC/{name}, not in the release on the card"
    (wheel,) = unpacked.glob("facepay_terminal-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "terminal/assets/kv/shell.kv" in names and "terminal/assets/consent/en.md" in names
    # the payload is the release, not the source tree
    with tarfile.open(boot / "facepay" / "facepay-release.tar.gz") as tar:
        members = tar.getnames()
    assert not [m for m in members if m.startswith(("terminal/", "tests/", "setup.py"))], members
    assert (unpacked / "requirements.lock").read_bytes() == (ROOT / "requirements.lock").read_bytes()
