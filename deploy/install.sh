#!/bin/sh
# facepay installer for Raspberry Pi OS Bookworm (Debian 12, Python 3.11) or Trixie (Debian 13,
# Python 3.13), 64-bit Lite, run as root on the Pi.
# Idempotent: running it again changes only what is missing or out of date.
#
#   sudo sh deploy/install.sh --config /path/to/terminal.toml [--start] [--prebuilt-dlib]
#
# Run it from a release folder (`make release` makes dist/release; `facepay flash` puts one on the
# card): the wheel, requirements.lock, deploy/, systemd/.  From a source checkout it builds the wheel first.
# Steps (docs/deploy.md explains each):
#   1. apt packages: picamera2, lgpio, SDL2/KMS libraries for Kivy, CJK fonts, OpenBLAS and cmake for dlib
#   2. a system user 'facepay' in the video, render, input, gpio and dialout groups
#   3. /var/lib/facepay (0700) and /etc/facepay/terminal.toml (0640, group facepay)
#   4. a venv on the system Python with --system-site-packages (picamera2 comes from apt): the
#      dependencies from requirements.lock (hashes checked), then the facepay wheel
#   5. dlib built against OpenBLAS, once, cached in /var/cache/facepay/wheels (~6x faster descriptors)
#   6. the serial console off and the UART on, for the PN532 on GPIO14/15
#   7. the systemd units: kiosk, daily purge timer (and the fleet agent's unit, not enabled)
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
OS_RELEASE=${FACEPAY_OS_RELEASE:-/etc/os-release}
CONFIG=""
START=0
PREBUILT_DLIB=0
VENV=/opt/facepay/venv
DATA=/var/lib/facepay
WHEELS=/var/cache/facepay/wheels

while [ $# -gt 0 ]; do
    case "$1" in
        --config) CONFIG="$2"; shift 2 ;;
        --start) START=1; shift ;;
        --prebuilt-dlib) PREBUILT_DLIB=1; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

# Which Debian this is decides the Python the venv uses: picamera2 from apt is built for it.
CODENAME=$( . "$OS_RELEASE" 2>/dev/null && echo "${VERSION_CODENAME:-}") || CODENAME=""
case "$CODENAME" in
    bookworm) PYTHON=python3.11; MTDEV=libmtdev1 ;;
    trixie) PYTHON=python3.13; MTDEV=libmtdev1t64 ;;   # trixie's 64-bit-time name
    *) echo "install.sh: ${CODENAME:-this system} is not supported ($OS_RELEASE): use Raspberry Pi OS" \
            "Bookworm or Trixie (64-bit)" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
    echo "install.sh: run as root (sudo sh deploy/install.sh ...)" >&2; exit 2
fi
if [ -z "$CONFIG" ] && [ ! -f /etc/facepay/terminal.toml ]; then
    echo "install.sh: --config FILE is needed on the first install (a file holding terminal_id is enough)" >&2; exit 2
fi
if [ -n "$CONFIG" ] && [ ! -f "$CONFIG" ]; then
    echo "install.sh: config file $CONFIG not found" >&2; exit 2
fi

WHEEL=$(ls "$SRC"/facepay_terminal-*.whl 2>/dev/null | sort -V | tail -n 1) || true
if [ -z "$WHEEL" ] && [ ! -f "$SRC/setup.py" ]; then
    echo "install.sh: no facepay_terminal-*.whl in $SRC: run it from a release folder (make release)" >&2; exit 2
fi
if [ ! -f "$SRC/requirements.lock" ]; then
    echo "install.sh: $SRC/requirements.lock is missing: run it from a release folder (make release)" >&2; exit 2
fi

echo "== 1/7 apt packages ($CODENAME, $PYTHON)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq python3 python3-venv python3-dev \
    libsdl2-2.0-0 libsdl2-ttf-2.0-0 libsdl2-image-2.0-0 libsdl2-mixer-2.0-0 "$MTDEV" \
    libgl1 libgles2 libegl1 libgbm1 libdrm2 fonts-noto-cjk \
    libopenblas-dev cmake build-essential espeak-ng sox
# From the Raspberry Pi archive: the camera stack, and lgpio (gpiozero's pin driver on a Pi 5).
for pkg in python3-picamera2 python3-lgpio; do
    if apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get install -y -qq "$pkg"
    else
        echo "install.sh: warning: $pkg is not in this system's apt sources (not Raspberry Pi OS?): skipped" >&2
    fi
done

echo "== 2/7 user facepay"
id facepay >/dev/null 2>&1 || useradd --system --home-dir "$DATA" --shell /usr/sbin/nologin facepay
for g in video render input gpio dialout; do
    getent group "$g" >/dev/null && usermod -aG "$g" facepay
done

echo "== 3/7 data folder and config"
install -d -m 0700 -o facepay -g facepay "$DATA"
install -d -m 0755 /etc/facepay
if [ -n "$CONFIG" ]; then
    [ "$(readlink -f "$CONFIG")" = /etc/facepay/terminal.toml ] || install -m 0640 -g facepay "$CONFIG" /etc/facepay/terminal.toml
fi

echo "== 4/7 venv and the project"
# A venv on another Python (left by an OS upgrade) is made again on this one.
if [ -x "$VENV/bin/python" ] && [ "$("$VENV/bin/python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])')" != "$PYTHON" ]; then
    rm -rf "$VENV"
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv --system-site-packages "$VENV"
"$VENV/bin/pip" install -q --require-hashes -r "$SRC/requirements.lock"
if [ -z "$WHEEL" ]; then  # a source checkout: build the wheel, install that (never the tree itself)
    BUILD=$(mktemp -d)
    trap 'rm -rf "$BUILD"' EXIT
    "$VENV/bin/pip" wheel -q --no-deps -w "$BUILD" "$SRC"
    WHEEL=$(ls "$BUILD"/facepay_terminal-*.whl)
fi
"$VENV/bin/pip" install -q --no-deps --force-reinstall "$WHEEL"
# The config must parse before anything is enabled: a bad file stops the install here, with its error.
"$VENV/bin/facepay" --config /etc/facepay/terminal.toml config >/dev/null

echo "== 5/7 dlib with OpenBLAS"
if [ "$PREBUILT_DLIB" = 0 ]; then
    if ! "$VENV/bin/python" -c 'import dlib, sys; sys.exit(0 if dlib.DLIB_USE_BLAS else 1)' 2>/dev/null; then
        install -d "$WHEELS"
        ls "$WHEELS"/dlib-*.whl >/dev/null 2>&1 || \
            "$VENV/bin/pip" wheel --no-binary dlib --no-deps -w "$WHEELS" dlib==20.0.1   # long on a Pi: once
        "$VENV/bin/pip" uninstall -y -q dlib-bin || true
        "$VENV/bin/pip" install -q --force-reinstall --no-deps "$WHEELS"/dlib-*.whl
    fi
fi

echo "== 6/7 serial port for the reader"
if command -v raspi-config >/dev/null 2>&1; then
    raspi-config nonint do_serial_cons 1   # no login console on the UART
    raspi-config nonint do_serial_hw 0     # the UART itself on
fi

echo "== 7/7 systemd units"
# facepay-agent.service is installed, not enabled: the kiosk runs the same agent in-process; only a
# terminal without the kiosk enables it (docs/fleet.md).
install -m 0644 "$SRC"/systemd/facepay-kiosk.service "$SRC"/systemd/facepay-purge.service \
    "$SRC"/systemd/facepay-purge.timer "$SRC"/systemd/facepay-firstboot.service \
    "$SRC"/systemd/facepay-agent.service /etc/systemd/system/
if [ -d /run/systemd/system ]; then  # a running systemd (not a chroot, where enabling works offline)
    systemctl daemon-reload
fi
systemctl enable facepay-kiosk.service facepay-purge.timer
systemctl disable getty@tty1.service 2>/dev/null || true
touch "$DATA/.installed"
chown facepay:facepay "$DATA/.installed"
if [ "$START" = 1 ]; then
    systemctl restart facepay-kiosk.service
fi
echo "facepay $("$VENV/bin/facepay" --version | cut -d' ' -f2) installed on $CODENAME ($PYTHON). Check it with: sudo -u facepay $VENV/bin/facepay --config /etc/facepay/terminal.toml --data-dir $DATA doctor"
