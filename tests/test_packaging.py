"""Installs for real: the wheel and the sdist carry the package data, the lock file covers both
architectures and both Pythons, and a fresh venv built from the wheel (outside the checkout, no
test extras, so no pytest) runs `facepay doctor --demo` and a kiosk scenario under Xvfb.
"""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from importlib import metadata, resources
from pathlib import Path

import pytest
from conftest import ROOT
from packaging.requirements import Requirement

import terminal

# make test: on one worker (the wheel is built in this checkout, and setuptools' build/ is shared)
pytestmark = pytest.mark.xdist_group("builds_in_the_checkout")

LOCK = ROOT / "requirements.lock"
TEST_LOCK = ROOT / "requirements-test.lock"
# where each data folder of the checkout goes in the wheel: the top-level assets/ is the package terminal.assets
DATA_DIRS = {"assets": "terminal/assets", "terminal/models": "terminal/models"}


def package_data_in_tree(installed: bool = True) -> set[str]:
    """Every file of the data folders, named as in the wheel (installed) or as in the checkout and the sdist."""
    out = set()
    for d, dest in DATA_DIRS.items():
        for p in (ROOT / d).rglob("*"):
            if p.is_file() and "__pycache__" not in p.parts:
                rel = p.relative_to(ROOT / d).as_posix()
                out.add(f"{dest if installed else d}/{rel}")
    return out


def locked(path: Path) -> dict[str, list[tuple[str, str, list[str]]]]:
    """name -> [(version, marker, hashes)] from a `uv pip compile --generate-hashes` file."""
    out: dict[str, list] = {}
    text = path.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)\s*(?:;\s*(.*?))?\s*((?:--hash=sha256:[0-9a-f]{64}\s*)*)$", line.strip())
        if m:
            name = re.sub(r"[-_.]+", "-", m[1]).lower()
            out.setdefault(name, []).append((m[2], m[3] or "", re.findall(r"sha256:([0-9a-f]{64})", m[4])))
    return out


def test_lock_files_pin_what_setup_py_asks_for_with_hashes():
    runtime, test = locked(LOCK), locked(TEST_LOCK)
    assert runtime and test
    for name, pins in {**runtime, **test}.items():
        for version, _marker, hashes in pins:
            assert hashes, f"{name}=={version} has no hash"
    for name, pins in runtime.items():  # the test lock is the runtime lock plus the test extras
        assert test.get(name) == pins, f"{name}: {pins} in {LOCK.name} but {test.get(name)} in {TEST_LOCK.name}"
    reqs = [Requirement(r) for r in metadata.requires("facepay-terminal")]
    assert reqs
    for req in reqs:
        if req.name == "facepay-terminal":  # the test extra naming another extra: its requirements are checked
            continue
        in_an_extra = req.marker is not None and "extra" in str(req.marker)
        lock = test if in_an_extra else runtime
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        assert name in lock, f"{req} is not in the lock file: run `make lock`"
        for version, _marker, _hashes in lock[name]:
            assert req.specifier.contains(version, prereleases=True), \
                f"setup.py asks for {req} but the lock pins {version}: run `make lock`"


@pytest.mark.parametrize("platform", ["x86_64-manylinux_2_28", "aarch64-manylinux_2_28"])
@pytest.mark.parametrize("python", ["3.11", "3.13"])
def test_lock_installs_from_wheels_on_each_pi_platform(platform, python, tmp_path):
    """uv resolves the lock for that platform and Python, hashes required: the Pi's lock from wheels alone (no
    builds on a Pi); the test lock may build a pure-Python sdist (pyDes, for nfcpy)."""
    uv = find_uv()
    for lock, wheels_only in ((LOCK, ["--only-binary", ":all:"]), (TEST_LOCK, [])):
        r = subprocess.run([uv, "pip", "install", "--dry-run", "--require-hashes", *wheels_only,
                            "--python-platform", platform, "--python-version", python, "--target", str(tmp_path / "t"),
                            "-r", str(lock)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Would install" in r.stderr + r.stdout


def find_uv() -> str:
    uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or shutil.which("uv")
    assert uv, "uv is a test extra: make .venv/.installed"
    return uv


def run(cmd: list, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this checkout, built once for the tests below."""
    return build_wheel(tmp_path_factory.mktemp("dist"))


def build_wheel(dest: Path, source: Path = ROOT) -> Path:
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dest, source],
        timeout=300)
    (wheel,) = dest.glob("facepay_terminal-*.whl")
    return wheel


def test_wheel_and_sdist_carry_every_asset_and_model(wheel, tmp_path):
    expected = package_data_in_tree()
    assert {p for p in expected if p.startswith("terminal/assets/kv/")} and \
        {p for p in expected if p.startswith("terminal/assets/consent/")}
    names = set(zipfile.ZipFile(wheel).namelist())
    assert expected <= names, sorted(expected - names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
    assert not [n for n in names if n.startswith("tests/") or "__pycache__" in n]

    assert not [n for n in names if n.startswith("assets/")]   # inside the terminal package, not beside it

    sdist_dir = tmp_path / "sdist"
    run(["make", "-s", "dist", f"DIST_DIR={sdist_dir}"], cwd=ROOT, timeout=600)
    (sdist,) = sdist_dir.glob("facepay*.tar.gz")
    assert expected <= set(zipfile.ZipFile(next(sdist_dir.glob("facepay_terminal-*.whl"))).namelist())
    with tarfile.open(sdist) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
        in_checkout = package_data_in_tree(installed=False)   # the sdist is the checkout's layout: assets/ on top
        assert {p for p in in_checkout if p.startswith("assets/kv/")} and in_checkout <= members, \
            sorted(in_checkout - members)
        assert {"LICENSE", "SECURITY.md", "requirements.lock", "deploy/install.sh"} <= members
        tar.extractall(tmp_path / "unpacked", filter="data")
    # and a wheel built from the sdist (as pip does from PyPI) carries them too
    (src,) = (tmp_path / "unpacked").iterdir()
    from_sdist = build_wheel(tmp_path / "wheel-from-sdist", src)
    assert expected <= set(zipfile.ZipFile(from_sdist).namelist())


def test_editable_install_finds_the_top_level_assets_with_importlib_resources():
    from terminal import consent

    assets = resources.files("terminal.assets")
    assert (assets / "kv" / "shell.kv").is_file() and Path(str(assets)) == consent.ASSETS == ROOT / "assets"
    assert consent.load("en").version
    assert not (ROOT / "terminal" / "assets").exists()   # one copy: the design card's top-level assets/


# What the kiosk looks up at start (kv layouts, consent texts, locale catalogues, demo photos), asked of an
# installed terminal package from a folder that is not the checkout; prints where each was found.
ASSET_LOOKUP = """
import json, sys
from importlib import resources
import terminal
from terminal import consent
root = resources.files("terminal.assets")
found = {"terminal": terminal.__file__, "assets": str(consent.ASSETS),
         "kv": sorted(p.name for p in (root / "kv").iterdir() if p.name.endswith(".kv")),
         "consent": {lang: consent.load(lang).version for lang in consent.LANGUAGES},
         "locale": sorted(p.name for p in (root / "locale").iterdir() if (p / "LC_MESSAGES" / "facepay.po").is_file()),
         "demo_photo": (root / "demo" / "shopper" / "1.jpg").is_file()}
if "--kiosk" in sys.argv:   # the kiosk's own lookups (these modules need the dependencies installed)
    from terminal.hardware import DEMO_SHOPPER
    from terminal.i18n import LOCALE_DIR
    from terminal.ui.app import KV_DIR
    found["kiosk"] = {"kv": str(KV_DIR), "locale": str(LOCALE_DIR), "demo_shopper": str(DEMO_SHOPPER / "1.jpg"),
                      "ok": (KV_DIR / "shell.kv").is_file() and (LOCALE_DIR / "de").is_dir()
                            and (DEMO_SHOPPER / "1.jpg").is_file()}
print(json.dumps(found))
"""


def check_installed_assets(python: Path, venv: Path, cwd: Path, env: dict, kiosk: bool = False) -> dict:
    r = subprocess.run([str(python), "-c", ASSET_LOOKUP, *(["--kiosk"] if kiosk else [])], capture_output=True,
                       text=True, cwd=cwd, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    found = json.loads(r.stdout.strip().splitlines()[-1])
    assert Path(found["terminal"]).is_relative_to(venv) and Path(found["assets"]).is_relative_to(venv), found
    assert Path(found["assets"]).parts[-2:] == ("terminal", "assets"), found
    kv = sorted(p.name for p in (ROOT / "assets" / "kv").glob("*.kv"))
    assert kv and found["kv"] == kv, found
    assert all(found["consent"].values()) and set(found["consent"]) == {"en", "de", "fr", "es", "zh"}
    assert found["locale"] == sorted(p.name for p in (ROOT / "assets" / "locale").iterdir() if p.is_dir()), found
    assert found["demo_photo"], found
    if kiosk:
        assert found["kiosk"]["ok"] and all(Path(found["kiosk"][k]).is_relative_to(venv)
                                            for k in ("kv", "locale", "demo_shopper")), found
    return found


def test_wheel_installed_outside_the_checkout_finds_its_assets(wheel, tmp_path):
    """The wheel alone (no dependencies) in a fresh venv, run from another folder: the assets resolve inside it."""
    venv = tmp_path / "venv"
    uv = find_uv()
    run([uv, "venv", "-q", "--python", sys.executable, venv], timeout=120)
    run([uv, "pip", "install", "-q", "--python", venv / "bin" / "python", "--no-index", "--no-deps", wheel], timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    check_installed_assets(venv / "bin" / "python", venv, work, env)


def test_version_is_one_number():
    r = subprocess.run([sys.executable, "-m", "terminal", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == f"facepay {terminal.__version__}"
    assert metadata.version("facepay-terminal") == terminal.__version__
    assert f"## {terminal.__version__} " in (ROOT / "CHANGELOG.md").read_text()


def test_license_matches_setup_py():
    meta = metadata.metadata("facepay-terminal")
    assert meta["License"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    text = (ROOT / "SECURITY.md").read_text()
    assert "Reporting a vulnerability" in text and "In scope" in text and "Out of scope" in text


def kiosk_env(tmp_path: Path) -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith(("FACEPAY_", "PYTHON", "VIRTUAL_ENV"))}
    e.update(KIVY_NO_ARGS="1", KIVY_HOME=str(tmp_path / "kivy"))
    return e


def with_display(cmd: list[str]) -> list[str]:
    if os.environ.get("DISPLAY"):
        return cmd
    if shutil.which("xvfb-run") is None:
        pytest.fail("no display and no xvfb-run: install xvfb (the README's apt line)")
    return ["xvfb-run", "-a", "-s", "-screen 0 1280x800x24", *cmd]


@pytest.mark.ui
def test_scenario_player_runs_without_pytest(tmp_path):
    """`facepay run --script` with pytest made unimportable (sys.modules['pytest'] = None)."""
    shots = tmp_path / "shots"
    code = ("import sys; sys.modules['pytest'] = None; from terminal.cli import main; "
            "sys.exit(main(sys.argv[1:]))")
    r = subprocess.run(with_display([sys.executable, "-c", code, "--data-dir", str(tmp_path / "data"), "run", "--demo",
                                     "--script", str(ROOT / "tests" / "scenarios" / "card_payment.toml"),
                                     "--screenshots", str(shots)]),
                       capture_output=True, text=True, timeout=240, env=kiosk_env(tmp_path), cwd=tmp_path)
    result = json.loads((shots / "result.json").read_text()) if (shots / "result.json").exists() else None
    assert r.returncode == 0 and result and result["passed"], (result, r.stderr[-3000:])


def wheelhouse() -> Path:
    """The lock's wheels for this Python, downloaded once (through pip's cache) into the user's cache."""
    key = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:16]
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "facepay" / "wheelhouse"
    house = base / f"{key}-cp{sys.version_info[0]}{sys.version_info[1]}"
    if not (house / ".complete").exists():
        partial = base / f"{house.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        try:
            run([sys.executable, "-m", "pip", "download", "-q", "--require-hashes", "--only-binary", ":all:",
                 "-d", partial, "-r", LOCK], timeout=1200)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        (partial / ".complete").touch()
        shutil.rmtree(house, ignore_errors=True)
        partial.rename(house)
        for old in base.glob(f"*-cp{sys.version_info[0]}{sys.version_info[1]}"):  # earlier locks' wheelhouses
            if old != house:
                shutil.rmtree(old, ignore_errors=True)
    return house


@pytest.mark.slow
@pytest.mark.ui
def test_installed_wheel_runs_doctor_and_a_kiosk_scenario_outside_the_checkout(wheel, tmp_path):
    timings = {}
    t0 = time.monotonic()
    house = wheelhouse()
    timings["wheelhouse"] = time.monotonic() - t0
    venv = tmp_path / "venv"
    t0 = time.monotonic()
    # uv installs the same files as pip (hashes required, nothing from an index), ~40x faster once its cache is warm
    uv = find_uv()
    run([uv, "venv", "-q", "--python", sys.executable, venv], timeout=120)
    install = [uv, "pip", "install", "-q", "--python", venv / "bin" / "python", "--no-index", "--find-links", house]
    run([*install, "--require-hashes", "-r", LOCK], timeout=900)
    run([*install, "--no-deps", wheel], timeout=300)
    timings["venv"] = time.monotonic() - t0
    work = tmp_path / "elsewhere"  # not the checkout: only the installed package can be found
    work.mkdir()
    env = kiosk_env(tmp_path)
    facepay = str(venv / "bin" / "facepay")

    r = subprocess.run([str(venv / "bin" / "python"), "-c",
                        "import importlib.util, terminal; print(terminal.__file__); "
                        "print(importlib.util.find_spec('pytest') is None)"],
                       capture_output=True, text=True, cwd=work, env=env, timeout=60)
    where, no_pytest = r.stdout.split()
    assert Path(where).is_relative_to(venv) and no_pytest == "True", r.stdout + r.stderr
    r = subprocess.run([facepay, "--version"], capture_output=True, text=True, cwd=work, env=env)
    assert r.stdout.strip() == f"facepay {terminal.__version__}"
    check_installed_assets(venv / "bin" / "python", venv, work, env, kiosk=True)

    data = work / "data"
    scenario = work / "face_confirmed.toml"
    shutil.copy(ROOT / "tests" / "scenarios" / "face_confirmed.toml", scenario)
    shots = work / "shots"
    t0 = time.monotonic()
    r = subprocess.run(with_display([facepay, "--data-dir", str(data), "run", "--demo", "--script", str(scenario),
                                     "--screenshots", str(shots)]),
                       capture_output=True, text=True, cwd=work, env=env, timeout=300)
    timings["scenario"] = time.monotonic() - t0
    result = json.loads((shots / "result.json").read_text()) if (shots / "result.json").exists() else None
    assert r.returncode == 0 and result and result["passed"], (result, r.stderr[-3000:])
    assert len(list(shots.glob("*.png"))) >= 3
    # then the technician's check on the data folder the kiosk made
    t0 = time.monotonic()
    r = subprocess.run(with_display([facepay, "--data-dir", str(data), "doctor", "--demo", "--json"]),
                       capture_output=True, text=True, cwd=work, env=env, timeout=300)
    timings["doctor"] = time.monotonic() - t0
    assert r.returncode == 0 and r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["camera"]["ok"] and "frames/s" in checks["camera"]["detail"]
    assert all(c["ok"] for c in checks.values()) and any(n.startswith("database") for n in checks), checks

    print("installed-wheel timings (s):", {k: round(v, 1) for k, v in timings.items()})
