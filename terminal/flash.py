"""``facepay flash``: write a Raspberry Pi OS image to an SD card and provision it for this terminal.

1. refuse a TARGET that is mounted, holds the running system, or is smaller than the image;
2. ask for confirmation (unless ``--yes``);
3. write the image (``.img`` or ``.img.xz``) with a progress bar, hashing it on the way;
4. read the written bytes back and compare SHA-256;
5. without mounting anything, find the FAT boot partition in the MBR and, with mtools, copy in
   ``facepay/terminal.toml``, ``facepay/terminal-id``, the release (``facepay/facepay-release.tar.gz``:
   the wheel, ``requirements.lock``, ``deploy/``, ``systemd/``, as ``make release`` lays them out in
   ``dist/release``), and a first-boot script that ``cmdline.txt`` runs once (``systemd.run=``, as
   Raspberry Pi Imager does).

The payload is built from the release folder, never from this package's own files, so an installed
``facepay`` flashes exactly what was released.

The views of the machine's mounts and system disk are injectable, so tests use image files and
never name a real block device.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import shutil
import stat
import struct
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .config import load_config
from .errors import FacepayError, InputError, StorageError, UsageError

CHUNK = 4 * 1024 * 1024
FAT_TYPES = {0x01, 0x04, 0x06, 0x0B, 0x0C, 0x0E}
DEFAULT_RELEASE = Path("dist/release")
WHEEL_GLOB = "facepay_terminal-*.whl"
# What a release folder must hold besides the wheel: the installer, the lock file it installs from,
# and the units (the first-boot unit runs the installer; the installer enables the others).
RELEASE_FILES = ("requirements.lock", "deploy/install.sh", "systemd/facepay-firstboot.service",
                 "systemd/facepay-kiosk.service", "systemd/facepay-purge.service", "systemd/facepay-purge.timer",
                 "systemd/facepay-agent.service")
RELEASE_DIR_ON_PI = "/opt/facepay-release"
FIRSTBOOT_ARGS = ("systemd.run=/boot/firmware/facepay/firstboot.sh systemd.run_success_action=reboot "
                  "systemd.unit=kernel-command-line.target")

FIRSTBOOT_SH = """#!/bin/sh
# facepay first boot (run once by cmdline.txt's systemd.run=): unpack the release, install the
# installer's unit, then reboot.  FACEPAY_ROOT (unset on the Pi) puts every path under another root.
set -e
R="${FACEPAY_ROOT:-}"
BOOT="$R/boot/firmware"
sed -i -e 's| systemd.run=[^ ]*||' -e 's| systemd.run_success_action=[^ ]*||' \
    -e 's| systemd.unit=kernel-command-line.target||' "$BOOT/cmdline.txt"
mkdir -p "$R/opt/facepay-release" "$R/etc/facepay" "$R/etc/systemd/system/multi-user.target.wants"
tar -xzf "$BOOT/facepay/facepay-release.tar.gz" -C "$R/opt/facepay-release"
install -m 0640 "$BOOT/facepay/terminal.toml" "$R/etc/facepay/terminal.toml"
install -m 0644 "$R/opt/facepay-release/systemd/facepay-firstboot.service" "$R/etc/systemd/system/"
ln -sf /etc/systemd/system/facepay-firstboot.service "$R/etc/systemd/system/multi-user.target.wants/"
exit 0
"""


class FlashRefused(FacepayError):
    exit_code = 2


@dataclass
class MachineView:
    """What the flasher needs to know about this machine; tests pass their own."""

    mounted_sources: set[str] = field(default_factory=set)
    system_disks: set[str] = field(default_factory=set)

    @classmethod
    def current(cls) -> "MachineView":
        mounted = set()
        try:
            for line in Path("/proc/mounts").read_text().splitlines():
                src = line.split()[0]
                if src.startswith("/"):
                    mounted.add(os.path.realpath(src))
        except OSError:
            pass
        system = set()
        try:
            dev = os.stat("/").st_dev
            sysdev = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
            if sysdev.exists():
                real = sysdev.resolve()
                disk = real.parent if (real / "partition").exists() else real
                system.add(f"/dev/{disk.name}")
                system.add(f"/dev/{real.name}")
        except OSError:
            pass
        return cls(mounted, system)


def _disk_of(path: str) -> str:
    """/dev/sdb1 -> /dev/sdb, /dev/mmcblk0p2 -> /dev/mmcblk0; files are themselves."""
    name = os.path.realpath(path)
    base = os.path.basename(name)
    if base.startswith(("mmcblk", "nvme", "loop")) and "p" in base[4:]:
        return name[: name.rindex("p")]
    return name.rstrip("0123456789") if base.startswith(("sd", "vd", "hd")) else name


def xz_uncompressed_size(path: Path) -> int:
    """The uncompressed size of a single-stream .xz, from its index (no decompression)."""
    with open(path, "rb") as f:
        f.seek(-12, os.SEEK_END)
        footer = f.read(12)
        if footer[10:12] != b"YZ":
            raise ValueError("not an xz file (no footer magic)")
        backward = (struct.unpack("<I", footer[4:8])[0] + 1) * 4
        f.seek(-12 - backward, os.SEEK_END)
        index = f.read(backward)
    if index[0] != 0:
        raise ValueError("xz index indicator missing")
    pos = 1

    def varint():
        nonlocal pos
        value, shift = 0, 0
        while True:
            b = index[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    records = varint()
    total = 0
    for _ in range(records):
        varint()          # unpadded size
        total += varint()
    return total


def image_size(image: Path) -> int:
    if image.suffix == ".xz":
        try:
            return xz_uncompressed_size(image)
        except (ValueError, IndexError, OSError):
            with lzma.open(image) as f:  # several streams or padding: count by reading
                return sum(len(c) for c in iter(lambda: f.read(CHUNK), b""))
    return image.stat().st_size


def target_capacity(target: Path) -> int | None:
    """Bytes a target can hold: a block device's size, an existing file's size, None for a new file."""
    if not target.exists():
        return None
    st = target.stat()
    if stat.S_ISBLK(st.st_mode):
        with open(target, "rb") as f:
            return f.seek(0, os.SEEK_END)
    return st.st_size or None


def check_target(image_bytes: int, target: Path, view: MachineView) -> None:
    real = os.path.realpath(target)
    disk = _disk_of(real)
    mounted = {m for m in view.mounted_sources if m == real or _disk_of(m) == disk}
    if mounted:
        raise FlashRefused(f"{target} is mounted ({', '.join(sorted(mounted))})", "flash",
                           "unmount it first (sudo umount ...), then run flash again")
    if real in view.system_disks or disk in view.system_disks:
        raise FlashRefused(f"{target} holds the running system", "flash", "choose the SD card, not this machine's disk")
    cap = target_capacity(target)
    if cap is not None and cap < image_bytes:
        raise FlashRefused(f"{target} holds {cap:,} bytes but the image needs {image_bytes:,}", "flash",
                           "use a larger SD card")


def _progress(done: int, total: int, out) -> None:
    if out is None:
        return
    width = 30
    frac = done / total if total else 1
    out.write(f"\r  [{'#' * int(frac * width):<{width}}] {frac:6.1%}  {done / 1e6:,.0f}/{total / 1e6:,.0f} MB")
    if done >= total:
        out.write("\n")
    out.flush()


def write_image(image: Path, target: Path, total: int, out=None) -> str:
    opener = lzma.open if image.suffix == ".xz" else open
    h = hashlib.sha256()
    done = 0
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(target, flags, 0o644)
    try:
        with opener(image, "rb") as src:
            while chunk := src.read(CHUNK):
                h.update(chunk)
                view = memoryview(chunk)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                done += len(chunk)
                _progress(done, total, out)
        os.fsync(fd)
    except OSError as exc:
        raise StorageError(f"writing failed after {done:,} bytes: {exc.strerror}", str(target),
                           "check the card (write-protect switch, a failing card) and try again") from None
    finally:
        os.close(fd)
    return h.hexdigest()


def read_back(target: Path, total: int) -> str:
    h = hashlib.sha256()
    with open(target, "rb") as f:
        try:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # read the card, not the page cache
        except (AttributeError, OSError):
            pass
        left = total
        while left:
            chunk = f.read(min(CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
    return h.hexdigest()


def boot_partition_offset(target: Path) -> int:
    """Byte offset of the first FAT partition in the MBR."""
    with open(target, "rb") as f:
        mbr = f.read(512)
    if len(mbr) < 512 or mbr[510:512] != b"\x55\xaa":
        raise InputError("the written image has no MBR partition table", str(target),
                         "use a Raspberry Pi OS image")
    for i in range(4):
        entry = mbr[446 + 16 * i: 446 + 16 * (i + 1)]
        ptype = entry[4]
        lba = struct.unpack("<I", entry[8:12])[0]
        if ptype in FAT_TYPES and lba:
            return lba * 512
    raise InputError("the image has no FAT boot partition", str(target), "use a Raspberry Pi OS image")


def _mtools(args: list[str], target: Path, offset: int, stdin: bytes | None = None) -> bytes:
    if shutil.which(args[0]) is None:
        raise StorageError(f"{args[0]} is not installed", "flash", "apt-get install mtools")
    cmd = [args[0], "-i", f"{target}@@{offset}", *args[1:]]
    r = subprocess.run(cmd, input=stdin, capture_output=True, env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    if r.returncode != 0:
        raise StorageError(f"{' '.join(args[:1])} failed: {r.stderr.decode(errors='replace').strip()}", str(target))
    return r.stdout


def check_release(release: Path) -> Path:
    """The release folder's one wheel, after checking that every file the first boot needs is there."""
    hint = "build it with `make release` in the project (it fills dist/release), or pass --release DIR"
    if not release.is_dir():
        raise InputError("no release folder", str(release), hint)
    wheels = sorted(release.glob(WHEEL_GLOB))
    if len(wheels) != 1:
        raise InputError(f"expected one {WHEEL_GLOB} in the release folder, found {len(wheels)}", str(release), hint)
    missing = [name for name in RELEASE_FILES if not (release / name).is_file()]
    if missing:
        raise InputError(f"the release folder lacks {', '.join(missing)}", str(release), hint)
    return wheels[0]


def release_tarball(release: Path) -> bytes:
    """The release folder as the Pi unpacks it into /opt/facepay-release (regular files only, no caches)."""
    check_release(release)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(release.rglob("*")):
            rel = p.relative_to(release)
            if p.is_file() and not p.is_symlink() and "__pycache__" not in rel.parts:
                tar.add(p, arcname=str(rel), recursive=False)
    return buf.getvalue()


def provision(target: Path, config_text: str, terminal_id: str, release: Path) -> list[str]:
    payload = release_tarball(release)
    offset = boot_partition_offset(target)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        files = {
            "terminal.toml": config_text.encode(),
            "terminal-id": (terminal_id + "\n").encode(),
            "firstboot.sh": FIRSTBOOT_SH.encode(),
            "facepay-release.tar.gz": payload,
        }
        if not _has_dir(target, offset):
            _mtools(["mmd", "::facepay"], target, offset)
        for name, data in files.items():
            (t / name).write_bytes(data)
            _mtools(["mcopy", "-o", str(t / name), f"::facepay/{name}"], target, offset)
        cmdline = _mtools(["mtype", "::cmdline.txt"], target, offset).decode().strip()
        if "systemd.run=" not in cmdline:
            (t / "cmdline.txt").write_text(cmdline + " " + FIRSTBOOT_ARGS + "\n")
            _mtools(["mcopy", "-o", str(t / "cmdline.txt"), "::cmdline.txt"], target, offset)
    return [f"facepay/{n}" for n in files] + ["cmdline.txt"]


def _has_dir(target: Path, offset: int) -> bool:
    out = _mtools(["mdir", "-b", "::"], target, offset).decode()
    return any(line.rstrip("/").endswith("facepay") for line in out.splitlines())


def flash(image: Path, target: Path, config_path: Path, *, yes: bool, release: Path = DEFAULT_RELEASE,
          view: MachineView | None = None, ask=input, out=sys.stderr) -> dict:
    if not image.is_file():
        raise InputError("image not found", str(image))
    if image.suffix not in (".img", ".xz") or (image.suffix == ".xz" and not image.name.endswith(".img.xz")):
        raise InputError("not a .img or .img.xz file", str(image), "download Raspberry Pi OS Lite (64-bit)")
    cfg = load_config(config_path)
    config_text = config_path.read_text(encoding="utf-8")
    wheel = check_release(release)  # before anything is written
    try:
        total = image_size(image)
    except (lzma.LZMAError, EOFError):
        raise InputError("the .xz image is damaged", str(image), "download it again") from None
    check_target(total, target, view or MachineView.current())
    if not yes:
        try:
            answer = ask(f"Write {image.name} ({total / 1e6:,.0f} MB) to {target}? Everything on it is lost. "
                         "Type 'yes': ")
        except EOFError:
            answer = ""
        if answer.strip().lower() != "yes":
            raise FlashRefused("not confirmed: nothing was written", "flash", "answer 'yes', or pass --yes")
    written = write_image(image, target, total, out)
    readback = read_back(target, total)
    if readback != written:
        raise StorageError("read-back does not match what was written", str(target),
                           "the card may be failing or counterfeit: use another card")
    files = provision(target, config_text, cfg.terminal_id, release)
    return {"image": str(image), "target": str(target), "bytes": total, "sha256": written, "verified": True,
            "terminal_id": cfg.terminal_id, "release": wheel.name, "boot_files": files}


def run_flash(ctx) -> int:
    import json

    a = ctx.args
    try:
        result = flash(Path(a.image), Path(a.target), Path(a.flash_config), yes=a.yes, release=Path(a.release),
                       out=None if a.json else sys.stderr)
    except FileNotFoundError as exc:
        raise UsageError(str(exc), "flash") from None
    if a.json:
        print(json.dumps(result))
    else:
        print(f"wrote and verified {result['bytes']:,} bytes (sha256 {result['sha256'][:16]}...) to {result['target']}")
        print(f"terminal {result['terminal_id']}: {result['release']} and " + ", ".join(result["boot_files"])
              + " written to the boot partition")
    return 0
