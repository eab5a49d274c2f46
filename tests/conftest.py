import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FACES = ROOT / "tests" / "fixtures" / "faces"
EXTRA = FACES / "extra"
SHARED_FACES = ROOT.parent / "shared" / "faces"

OBAMA_ENROL = [FACES / "obama.jpg", FACES / "obama3.jpg", EXTRA / "obama_4.jpg"]
OBAMA_PROBES = [FACES / "obama2.jpg", FACES / "32bit.png"]
STRANGERS = [FACES / "biden.jpg", EXTRA / "biden_2.jpg", EXTRA / "alex_lacamoire_1.jpg",
             EXTRA / "alex_lacamoire_2.jpg", EXTRA / "alex_lacamoire_3.jpg", EXTRA / "kit_harington_1.jpg",
             EXTRA / "kit_harington_2.jpg", EXTRA / "kit_harington_3.jpg", EXTRA / "rose_leslie_1.jpg",
             EXTRA / "rose_leslie_2.jpg", EXTRA / "lin_manuel_miranda_1.jpg"]

needs_shared = pytest.mark.skipif(not SHARED_FACES.is_dir(), reason="../shared/faces is not present")


def run_cli(*args, data_dir: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `python -m terminal ARGS` as a technician would, with its own data folder."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("FACEPAY_")}
    e["FACEPAY_DATA_DIR"] = str(data_dir)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "terminal", *map(str, args)], capture_output=True, text=True,
                          env=e, timeout=timeout, cwd=ROOT)


# Still photos stand in for the camera only with the liveness check off: the config tests of photo
# enrolment and photo sales use (the check itself is tested on generated videos).
STILLS_CONFIG = 'terminal_id = "test-stills"\n[liveness]\nrequired = false\n'


@pytest.fixture
def cli(tmp_path):
    data = tmp_path / "data"

    def call(*args, env=None, timeout=120):
        return run_cli(*args, data_dir=data, env={**call.env, **(env or {})}, timeout=timeout)

    call.data_dir = data
    call.env = {}
    return call


@pytest.fixture
def stills(cli, tmp_path):
    """``cli`` with a config that lets still photos stand in for the camera ([liveness] required = false)."""
    cfg = tmp_path / "stills.toml"
    cfg.write_text(STILLS_CONFIG)
    cli.env["FACEPAY_CONFIG"] = str(cfg)
    return cli


@pytest.fixture(scope="session")
def pipeline():
    from terminal.config import DetectorConfig
    from terminal.face.pipeline import FacePipeline

    p = FacePipeline(DetectorConfig())
    p.warm_up()
    return p


@pytest.fixture(scope="session")
def embeddings(pipeline):
    """Descriptors of every fixture photo that passes the gates, computed once."""
    from terminal.face.images import load_rgb

    out = {}
    for f in [*OBAMA_ENROL, *OBAMA_PROBES, *STRANGERS]:
        a = pipeline.analyse(load_rgb(f))
        assert a.gate.ok, (f, a.gate.reason)
        out[f.name] = a.embedding
    return out


@pytest.fixture
def term(tmp_path, pipeline):
    """A Terminal on a fresh data folder sharing the session's loaded face models."""
    from terminal.config import Config
    from terminal.service import Terminal

    t = Terminal(Config(), tmp_path / "term")
    t._pipeline = pipeline
    yield t
    t.close()


# ---------------------------------------------------------------------------------------------------
# One X server per pytest-xdist worker.  `make test` runs the suite in several workers; kiosk windows
# from two workers on one X server would overlap, and a window's screenshot reads back its own pixels
# only where no other window covers it.  So each worker starts its own Xvfb (display number chosen by
# the server itself with -displayfd: no race between workers) and the kiosks it starts use it.
_XVFB: subprocess.Popen | None = None


def _start_xvfb() -> tuple[subprocess.Popen, str]:
    r, w = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(w), "-screen", "0", "1280x800x24", "-nolisten", "tcp",
                             "-noreset"], pass_fds=(w,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    os.close(w)
    out = b""
    deadline = time.monotonic() + 30
    try:
        while not out.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([r], [], [], left)[0]:
                raise RuntimeError("Xvfb did not report its display number within 30 s")
            chunk = os.read(r, 16)
            if not chunk:
                raise RuntimeError(f"Xvfb exited at start (exit status {proc.wait()})")
            out += chunk
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        os.close(r)
    return proc, f":{out.decode().strip()}"


def pytest_configure(config):
    global _XVFB
    if os.environ.get("PYTEST_XDIST_WORKER") and shutil.which("Xvfb"):
        _XVFB, os.environ["DISPLAY"] = _start_xvfb()


def pytest_unconfigure(config):
    global _XVFB
    if _XVFB is not None:
        _XVFB.terminate()
        try:
            _XVFB.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _XVFB.kill()
            _XVFB.wait()
        _XVFB = None
