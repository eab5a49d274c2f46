# facepay terminal: the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The lock files (hashes for x86_64 and aarch64, Python 3.11 and 3.13): `make lock` writes them.
LOCK      := requirements.lock
TEST_LOCK := requirements-test.lock
# System packages the tests and the demo need (Debian 12 Bookworm with Python 3.11, or Debian 13
# Trixie with Python 3.13, where glib and mtdev are the 64-bit-time packages: apt would take the old names
# through Provides, but dpkg-query and debootstrap do not):
CODENAME := $(shell . /etc/os-release 2>/dev/null && echo $$VERSION_CODENAME)
GLIB     := $(if $(filter trixie,$(CODENAME)),libglib2.0-0t64,libglib2.0-0)
MTDEV    := $(if $(filter trixie,$(CODENAME)),libmtdev1t64,libmtdev1)
APT_PACKAGES := python3-venv xvfb xauth fonts-noto-cjk mtools fdisk systemd libgl1 libegl1 libgles2 $(GLIB) libxrender1 $(MTDEV) xz-utils libnfc-bin xsel \
                postgresql chromium espeak-ng sox zbar-tools

.PHONY: demo test test-fast lint system-deps dlib-blas bench clean lock lock-check release trixie-check bookworm-check arm64-check debian-clean \
        fleet-demo bench-fleet dist

# The venv: dependencies exactly as locked (hashes checked), then the project itself, editable.
$(STAMP): setup.py pyproject.toml $(TEST_LOCK)
	@$(PYTHON) -c 'import sys; v = sys.version_info[:2]; assert v in ((3, 11), (3, 12), (3, 13)), "Python 3.11 (Bookworm) or 3.13 (Trixie) is needed, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q --require-hashes -r $(TEST_LOCK)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Resolve setup.py's dependencies (and with the test extras) for every platform at once, with hashes,
# then check that each of x86_64/aarch64 x Python 3.11/3.13 installs from wheels alone.  Needs PyPI.
lock: $(STAMP)
	$(BIN)/uv pip compile setup.py --universal --generate-hashes --python-version 3.11 --quiet \
	  --custom-compile-command "make lock" -o $(LOCK)
	$(BIN)/uv pip compile setup.py --extra test --universal --generate-hashes --python-version 3.11 --quiet \
	  --custom-compile-command "make lock" -c $(LOCK) -o $(TEST_LOCK)
	$(MAKE) lock-check

# The Pi's lock installs from wheels alone; the test lock may build a pure-Python sdist (pyDes, for nfcpy).
lock-check: $(STAMP)
	@for plat in x86_64-manylinux_2_28 aarch64-manylinux_2_28; do for py in 3.11 3.13; do \
	  echo "$(LOCK) and $(TEST_LOCK) on $$plat, Python $$py"; \
	  $(BIN)/uv pip install --dry-run --quiet --require-hashes --only-binary :all: --python-platform $$plat \
	    --python-version $$py --target build/lock-check -r $(LOCK) || exit 1; \
	  $(BIN)/uv pip install --dry-run --quiet --require-hashes --python-platform $$plat \
	    --python-version $$py --target build/lock-check -r $(TEST_LOCK) || exit 1; \
	done; done

# The source distribution (MANIFEST.in: the checkout's assets/, models, deploy/, systemd/, docs/) and the wheel
# (assets/ as the package terminal.assets) in DIST_DIR.
DIST_DIR ?= dist
dist: $(STAMP)
	mkdir -p $(DIST_DIR)
	$(BIN)/python setup.py -q sdist -d $(DIST_DIR)
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(DIST_DIR) .
	@echo "dist: $$(cd $(DIST_DIR) && ls facepay*.tar.gz facepay_terminal-*.whl | tr '\n' ' ')"

# The release folder `facepay flash` puts on the card and deploy/install.sh installs from: the wheel,
# the lock file, the installer, the units, the docs they point to, and SHA256SUMS.
RELEASE_DIR ?= dist/release
release: $(STAMP)
	rm -rf $(RELEASE_DIR)
	mkdir -p $(RELEASE_DIR)/deploy $(RELEASE_DIR)/systemd $(RELEASE_DIR)/docs
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(RELEASE_DIR) .
	cp $(LOCK) LICENSE SECURITY.md CHANGELOG.md README.md $(RELEASE_DIR)/
	cp deploy/install.sh $(RELEASE_DIR)/deploy/
	cp systemd/facepay-* $(RELEASE_DIR)/systemd/
	cp docs/deploy.md docs/privacy.md docs/fleet.md $(RELEASE_DIR)/docs/
	cd $(RELEASE_DIR) && find . -type f ! -name SHA256SUMS | sort | xargs sha256sum > SHA256SUMS
	@echo "release: $(RELEASE_DIR) ($$(cd $(RELEASE_DIR) && ls *.whl))"

# Debian 13 trixie in a debootstrap root: `make test` with its Python 3.13, then deploy/install.sh.
# Needs root; takes a while (not part of `make test`).  .ci/debian-check says what it does.
trixie-check:
	.ci/debian-check trixie

# The same on Debian 12 bookworm (Python 3.11).
bookworm-check:
	.ci/debian-check bookworm

# Debian 13 trixie arm64 (the Pi's architecture) in a debootstrap root under qemu user-mode emulation:
# the lock from aarch64 wheels alone, the release wheel, then the CLI and one kiosk scenario, emulated.
# Needs root; long (not part of `make test`).  QEMU_FROM=trixie|bookworm|bookworm-backports picks the qemu
# package, QEMU_CPU the CPU model (default cortex-a76, the Pi 5's core); .ci/arm64-check and docs/deploy.md ("The arm64 check") say more.
arm64-check:
	.ci/arm64-check

debian-clean:
	rm -rf /var/cache/facepay-debian

# Installs the apt packages above when they are missing and we are root; otherwise says what to run.
system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "missing system packages: $$missing -- run: sudo apt-get install $$missing"; exit 2; fi; \
	fi

demo: $(STAMP)
	$(BIN)/facepay --data-dir demo-data run --demo

lint: $(STAMP)
	$(BIN)/ruff check terminal firmware_bridge backoffice tests benchmarks setup.py
	$(BIN)/mypy

# The pure tier, in seconds: the checkout machine's flows event by event, the PN532 chip model, the
# storage helper. No display, camera, server or pty.
FAST_TESTS := tests/test_checkout_flows.py tests/test_checkout_tables.py tests/test_pn532_chip.py tests/test_datadir_transaction.py
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q $(FAST_TESTS)

# make test: first the `serial` tests alone (they measure a fleet through a server crash and must not share
# the machine), then every other test in TEST_WORKERS pytest-xdist workers (most tests wait on kiosks,
# servers and ptys rather than on the CPU; each worker starts its own Xvfb, tests/conftest.py; the tests of
# a module that share one set of servers stay together on one worker).  The last line is the big summary.
TEST_WORKERS ?= 2
test: system-deps $(STAMP) lint
	@if [ -n "$$DISPLAY" ]; then $(BIN)/python -m pytest -m serial $(PYTEST_ARGS); \
	else xvfb-run -a -s "-screen 0 1280x800x24" $(BIN)/python -m pytest -m serial $(PYTEST_ARGS); fi
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" $(PYTEST_ARGS)

# dlib built from source against OpenBLAS: ~6x faster face descriptors.  Builds the wheel once
# into wheels/ (about 7 minutes on 2 cores, much longer on a Pi) and swaps it in for dlib-bin.
dlib-blas: $(STAMP)
	@dpkg-query -W libopenblas-dev cmake >/dev/null 2>&1 || { echo "needs: apt-get install libopenblas-dev cmake"; exit 2; }
	mkdir -p wheels
	ls wheels/dlib-*.whl >/dev/null 2>&1 || $(BIN)/pip wheel --no-binary dlib --no-deps -w wheels dlib==20.0.1
	$(BIN)/pip uninstall -y dlib-bin
	$(BIN)/pip install --force-reinstall --no-deps wheels/dlib-*.whl
	$(BIN)/python -c 'import dlib; print("dlib", dlib.__version__, "BLAS" if dlib.DLIB_USE_BLAS else "no BLAS")'

bench: $(STAMP)
	$(BIN)/pip install -q --no-deps face_recognition==1.3.0 face_recognition_models==0.3.0
	$(BIN)/python benchmarks/calibrate.py
	$(BIN)/python benchmarks/compare.py
	$(BIN)/facepay bench --frames tests/fixtures/faces

# The fleet on one machine: nats-server, a throwaway PostgreSQL cluster, the back office, one kiosk window and
# two headless agents (docs/fleet.md).  Ctrl-C or closing the kiosk window stops everything.
fleet-demo: system-deps $(STAMP)
	$(BIN)/python -m backoffice.demo --workdir fleet-demo

# 20 terminals (agents as separate processes): time from an opt-out request to the last deletion receipt.
bench-fleet: system-deps $(STAMP)
	$(BIN)/python benchmarks/fleet_optout.py --terminals 20 --rounds 10

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
