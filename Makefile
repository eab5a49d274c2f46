# facepay terminal: the README's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# System packages the tests and the demo need (Debian 12 / Raspberry Pi OS Bookworm):
APT_PACKAGES := python3-venv xvfb xauth fonts-noto-cjk mtools fdisk systemd libgl1 libegl1 libgles2 libglib2.0-0 libxrender1 libmtdev1 xz-utils libnfc-bin xsel \
                postgresql chromium

.PHONY: demo test lint system-deps dlib-blas bench clean fleet-demo bench-fleet

$(STAMP): setup.py pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is needed, found " + sys.version.split()[0]'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip "setuptools<81" wheel
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

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

test: system-deps $(STAMP) lint
	@if [ -n "$$DISPLAY" ]; then $(BIN)/python -m pytest $(PYTEST_ARGS); \
	else xvfb-run -a -s "-screen 0 1280x800x24" $(BIN)/python -m pytest $(PYTEST_ARGS); fi

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
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
