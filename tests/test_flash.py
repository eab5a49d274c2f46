"""`facepay flash` on image files: copy, verify, the boot-partition files, and every refusal.

No test here names a real block device: targets are files, and the views of mounts and the
system disk are injected.
"""

import json
import lzma
import os
import shutil
import struct
import subprocess

import pytest
from conftest import ROOT

from terminal.flash import FIRSTBOOT_ARGS, FlashRefused, MachineView, flash, xz_uncompressed_size

pytestmark = pytest.mark.skipif(shutil.which("mformat") is None, reason="mtools is in the README's apt line")
ENV = dict(os.environ, MTOOLS_SKIP_CHECK="1")
EMPTY = MachineView(set(), set())


def mtools(cmd, img, *args):
    return subprocess.run([cmd, "-i", f"{img}@@1M", *args], capture_output=True, env=ENV, check=True).stdout


ROOT_OFFSET = (2048 + 64 * 2048) * 512  # where the image's Linux partition starts


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


def test_flash_img_to_file_verifies_and_provisions(pi_image, config, tmp_path):
    target = tmp_path / "sdcard.bin"
    result = flash(pi_image, target, config, yes=True, view=EMPTY, out=None)
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
    assert "facepay-terminal.tar.gz" in listing


def test_flash_img_xz(pi_image, config, tmp_path):
    xz = tmp_path / "raspios-lite.img.xz"
    xz.write_bytes(lzma.compress(pi_image.read_bytes(), format=lzma.FORMAT_XZ))
    assert xz_uncompressed_size(xz) == pi_image.stat().st_size
    target = tmp_path / "sd.bin"
    result = flash(xz, target, config, yes=True, view=EMPTY, out=None)
    assert result["verified"] and target.read_bytes()[ROOT_OFFSET:] == pi_image.read_bytes()[ROOT_OFFSET:]


def test_refuses_a_mounted_target(pi_image, config, tmp_path):
    target = tmp_path / "sd.bin"
    target.write_bytes(b"\0" * (32 * 1024 * 1024))
    view = MachineView(mounted_sources={str(target)}, system_disks=set())
    with pytest.raises(FlashRefused, match="is mounted"):
        flash(pi_image, target, config, yes=True, view=view, out=None)
    assert target.read_bytes() == b"\0" * (32 * 1024 * 1024), "nothing was written"


def test_refuses_the_system_disk(pi_image, config, tmp_path):
    target = tmp_path / "disk.bin"
    target.write_bytes(b"\0" * (32 * 1024 * 1024))
    view = MachineView(mounted_sources=set(), system_disks={os.path.realpath(target)})
    with pytest.raises(FlashRefused, match="running system"):
        flash(pi_image, target, config, yes=True, view=view, out=None)


def test_refuses_a_target_smaller_than_the_image(pi_image, config, tmp_path):
    target = tmp_path / "tiny.bin"
    target.write_bytes(b"\0" * (4 * 1024 * 1024))
    with pytest.raises(FlashRefused, match="needs"):
        flash(pi_image, target, config, yes=True, view=EMPTY, out=None)
    assert target.stat().st_size == 4 * 1024 * 1024


def test_asks_for_confirmation(pi_image, config, tmp_path):
    target = tmp_path / "sd.bin"
    asked = []
    with pytest.raises(FlashRefused, match="not confirmed"):
        flash(pi_image, target, config, yes=False, view=EMPTY, out=None, ask=lambda q: asked.append(q) or "no")
    assert asked and "Everything on it is lost" in asked[0] and not target.exists()
    result = flash(pi_image, target, config, yes=False, view=EMPTY, out=None, ask=lambda q: "yes")
    assert result["verified"]


def test_bad_inputs(pi_image, config, tmp_path):
    from terminal.errors import ConfigError, InputError

    with pytest.raises(InputError, match="not found"):
        flash(tmp_path / "none.img", tmp_path / "t", config, yes=True, view=EMPTY, out=None)
    other = tmp_path / "photo.jpg"
    other.write_bytes(b"x")
    with pytest.raises(InputError, match=".img or .img.xz"):
        flash(other, tmp_path / "t", config, yes=True, view=EMPTY, out=None)
    bad = tmp_path / "bad.toml"
    bad.write_text("terminal_id = 3\n")
    with pytest.raises(ConfigError):
        flash(pi_image, tmp_path / "t", bad, yes=True, view=EMPTY, out=None)
    assert not (tmp_path / "t").exists()
    no_mbr = tmp_path / "blank.img"
    no_mbr.write_bytes(b"\0" * 1024 * 1024)
    with pytest.raises(InputError, match="MBR"):
        flash(no_mbr, tmp_path / "t2", config, yes=True, view=EMPTY, out=None)


def test_cli_flash_without_tty_refuses_then_works_with_yes(cli, pi_image, config, tmp_path):
    target = tmp_path / "sd.bin"
    r = cli("flash", pi_image, target, "--config", config)
    assert r.returncode == 2 and "not confirmed" in r.stderr and not target.exists()
    r = cli("flash", pi_image, target, "--config", config, "--yes", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["verified"] and out["terminal_id"] == "shop-7-till-2"


def test_firstboot_unit_is_shipped():
    assert (ROOT / "systemd" / "facepay-firstboot.service").is_file()
