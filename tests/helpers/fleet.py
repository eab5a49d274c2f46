"""A fleet on one machine for tests: `facepay-backoffice dev` (nats-server + throwaway PostgreSQL + web),
terminals provisioned into it, agents as separate processes.  Everything on loopback, free ports, temp
folders, and stopped by pid, also when a test, a fixture's set-up or a teardown step fails or is interrupted
(Ctrl-C): see Fleet.close.  The servers are installed when missing (backoffice.servers)."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _env() -> dict:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FACEPAY_")}
    e["PYTHONUNBUFFERED"] = "1"
    return e


def free_port() -> int:
    from backoffice.servers import free_port as fp

    return fp()


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int | None:
    """Send ``sig`` to our child ``proc`` and reap it.  Killed (SIGKILL) when it has not ended within ``timeout``
    seconds or when the wait is interrupted (KeyboardInterrupt, which then goes on).  Returns its exit code;
    None when it had to be killed."""
    try:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        return None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


def stop_pid_file(pid_file: Path, *must_mention: str, sig: int = signal.SIGTERM) -> bool:
    """Stop the process a pid file names if it still runs and its command line mentions one of
    ``must_mention`` (a pid file outlives its process, and the number may belong to another process since).
    True if it ran."""
    from backoffice.servers import stop_pid

    try:
        pid = int(pid_file.read_text().split()[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (OSError, ValueError, IndexError):
        return False
    if not any(m in cmdline for m in must_mention):
        return False
    stop_pid(pid, sig, timeout=20)
    return True


def wait_for(cond, timeout: float, what: str, step: float = 0.1, detail=None):
    """Poll ``cond`` until it is true; on time-out, ``detail()`` says what was seen instead."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    seen = f"; seen: {detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout} s waiting for {what}{seen}")


class Fleet:
    def __init__(self, workdir: Path, optout_rate: str = "1000/60", terminal_optout_rate: str = "10/3600",
                 extra_args: tuple[str, ...] = ()):
        from backoffice.servers import ensure_nats_server, ensure_postgres

        ensure_nats_server()
        ensure_postgres()
        self.workdir = workdir
        self.port = free_port()
        self.agents: dict[str, subprocess.Popen] = {}
        self._started: list[subprocess.Popen] = []  # every agent ever started, stopped or not
        self._closed = False
        self.log = (workdir.parent / f"{workdir.name}-dev.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "backoffice.cli", "--workdir", str(workdir), "dev",
             "--listen", f"127.0.0.1:{self.port}", "--optout-rate", optout_rate,
             "--terminal-optout-rate", terminal_optout_rate, *extra_args],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=_env(), cwd=ROOT)
        atexit.register(self.close)  # a run that ends without the fixture's teardown still stops them
        try:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                raise AssertionError("facepay-backoffice dev exited: " + Path(self.log.name).read_text()[-2000:])
            info = json.loads(line)
            self.web, self.nats, self.db = info["web"], info["nats"], info["db"]
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- terminals ----------------------------------------------------------------------------
    def provision(self, tid: str, *, max_staleness_s: float = 300.0, heartbeat_s: float = 1.0,
                  extra_toml: str = "") -> Path:
        out = self.workdir.parent / f"{tid}.toml"
        r = subprocess.run([sys.executable, "-m", "backoffice.cli", "--workdir", str(self.workdir), "provision",
                            "--terminal-id", tid, "--out", str(out), "--max-staleness-s", str(max_staleness_s)],
                           capture_output=True, text=True, env=_env(), cwd=ROOT, timeout=60)
        assert r.returncode == 0, r.stderr
        with out.open("a") as f:  # [fleet] is the file's last table
            f.write(f"heartbeat_s = {heartbeat_s}\n")
            f.write(extra_toml)  # other sections, appended as an installer would
        return out

    def data_dir(self, tid: str) -> Path:
        return self.workdir.parent / f"data-{tid}"

    def start_agent(self, tid: str, env: dict | None = None) -> subprocess.Popen:
        log = (self.workdir.parent / f"agent-{tid}.log").open("a")
        proc = subprocess.Popen([sys.executable, "-m", "terminal", "--config", str(self.workdir.parent / f"{tid}.toml"),
                                 "--data-dir", str(self.data_dir(tid)), "agent"],
                                stdout=log, stderr=subprocess.STDOUT, env=_env() | (env or {}), cwd=ROOT)
        log.close()  # the child holds its own copy
        self.agents[tid] = proc
        self._started.append(proc)
        return proc

    def stop_agent(self, tid: str, sig=signal.SIGTERM) -> int:
        code = stop_process(self.agents.pop(tid), sig, 15)
        if code is None:
            raise AssertionError(f"agent {tid} did not stop within 15 s of {sig!r}")
        return code

    def nats_pid(self) -> int | None:
        """The running nats-server's pid; None while its pid file is missing or half written."""
        try:
            return int((self.workdir / "nats.pid").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            return None

    # -- web ------------------------------------------------------------------------------------
    def http(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.web + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def sql(self, query: str, *args):
        import psycopg

        with psycopg.connect(self.db, autocommit=True) as conn:
            return conn.execute(query, args).fetchall()

    def receipts(self, rid: str) -> dict[str, str]:
        """Each terminal's answer to a revocation, as staff see it (the public API says only done or not)."""
        return dict(self.sql("SELECT terminal_id, state FROM revocation_states WHERE revocation_id = %s", rid))

    def staff_login(self, username: str | None = None, password: str | None = None):
        """A logged-in staff browser session without a browser: (opener, form) where ``form(path, **fields)``
        posts with the page's CSRF token, as the dashboard's forms do."""
        import http.cookiejar
        import re

        who = self.staff()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))

        def token(page: str) -> str:
            html = opener.open(self.web + page, timeout=10).read().decode()
            return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)

        def form(path: str, page: str = "/dashboard", **fields):
            data = urllib.parse.urlencode({"csrf_token": token(page), **fields}).encode()
            return opener.open(urllib.request.Request(self.web + path, data=data, headers={"Origin": self.web}),
                               timeout=10)

        r = form("/login", page="/login", username=username or who["username"], password=password or who["password"])
        assert r.url.endswith("/dashboard"), r.url
        return opener, form

    def log_tail(self, chars: int = 1500) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-chars:]

    def staff(self) -> dict:
        return json.loads((self.workdir / "staff.json").read_text())

    def close(self) -> None:
        """Stop every process this fleet started, by pid, whatever fails on the way (an agent that does not
        stop, a teardown step that raises, a KeyboardInterrupt): the agents, then `dev`, then whatever of
        its nats-server and PostgreSQL outlived it (they run in sessions of their own, so a `dev` that had to
        be killed leaves them behind).  Safe to call twice; raises afterwards if an agent had to be killed."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        stuck = []
        try:
            for proc in self.agents.values():  # all at once: each takes a moment to close its connection
                if proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        proc.send_signal(signal.SIGTERM)
            for tid in list(self.agents):
                if stop_process(self.agents.pop(tid), signal.SIGTERM, 15) is None:
                    stuck.append(tid)
        finally:
            try:
                for proc in self._started:  # any left by an interruption above, or started twice for one id
                    stop_process(proc, signal.SIGKILL, 5)
            finally:
                try:
                    stop_process(self.proc, signal.SIGTERM, 40)
                finally:
                    try:
                        stop_pid_file(self.workdir / "nats.pid", str(self.workdir / "nats.conf"))
                    finally:
                        try:
                            self._stop_leftover_postgres()
                        finally:
                            self.log.close()
        if stuck:
            raise AssertionError(f"agents {stuck} did not stop within 15 s of SIGTERM (killed)")

    def _stop_leftover_postgres(self) -> None:
        link = self.workdir / "pg"  # dev's cluster folder (as root: a link to a temp folder)
        base = link.resolve()
        if stop_pid_file(self.workdir / "postgres.pid", str(link / "data"), str(base / "data"),
                         sig=signal.SIGINT) and base != link:
            import shutil

            shutil.rmtree(base, ignore_errors=True)  # what dev's clean-up would have removed


def enrol_direct(cfg_path: Path, data_dir: Path, uid: bytes, name: str = "Test Shopper", seed: int = 1) -> str:
    """Enrol through Terminal.enrol (the same path as `facepay enroll`) with made-up descriptors; returns the
    opt-out code.  The face pipeline is not what these tests are about."""
    import numpy as np

    from terminal import consent
    from terminal.config import load_config
    from terminal.service import Terminal

    rng = np.random.default_rng(seed)
    base = rng.normal(size=128).astype(np.float32)
    base /= np.linalg.norm(base)
    term = Terminal(load_config(cfg_path), data_dir)
    try:
        shopper = term.enrol(name=name, card_uid=uid, embeddings=[base, base, base], consent_text=consent.load("en"),
                             phone_last4="1234")
        return term.optout_codes[shopper.id]
    finally:
        term.close()


def shopper_count(cfg_path: Path, data_dir: Path) -> int:
    import sqlite3

    with sqlite3.connect(data_dir / "facepay.db") as c:
        return c.execute("SELECT COUNT(*) FROM shoppers").fetchone()[0]


def provision_many(fleet: Fleet, tids: list[str], **kw) -> dict[str, Path]:
    """Provision in parallel (each is its own process, as an installer would run it)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(6) as pool:
        return dict(zip(tids, pool.map(lambda t: fleet.provision(t, **kw), tids)))


def fleet_state(fleet: Fleet) -> dict:
    return json.loads((fleet.workdir / "fleet.json").read_text())


def fleet_tls(fleet: Fleet):
    """The client TLS context that trusts the fleet's CA (``dev`` makes one)."""
    from terminal.fleet.contract import tls_context

    return tls_context((fleet.workdir / "ca.pem").read_text())


def admin_nats(fleet: Fleet):
    """An async NATS connection as the back office's own user (for stream counts)."""
    import nats

    state = fleet_state(fleet)
    return nats.connect(f"tls://127.0.0.1:{state['nats_port']}", user=state["admin_user"],
                        password=state["admin_password"], tls=fleet_tls(fleet))


def terminal_nats(fleet: Fleet, cfg_path: Path, **kw):
    """An async NATS connection with a terminal's own credentials from its TOML (what a stolen config gives)."""
    import tomllib

    import nats

    f = tomllib.loads(Path(cfg_path).read_text())["fleet"]
    tid = f["user"][2:]
    return nats.connect(f["nats_url"], user=f["user"], password=f["password"], inbox_prefix=f"_INBOX_{tid}",
                        tls=fleet_tls(fleet), allow_reconnect=False, **kw)


def _as_admin(fleet: Fleet, ask):
    """Run ``await ask(js)`` on a JetStream context of the back office's own user; its answer."""
    import asyncio

    async def go():
        nc = await admin_nats(fleet)
        try:
            return await ask(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(go())


def consumer_state(fleet: Fleet, stream: str, durable: str = "backoffice") -> str:
    """The stream's last sequence and the consumer's delivered / acknowledged / pending counts."""

    async def ask(js):
        si = await js.stream_info(stream)
        ci = await js.consumer_info(stream, durable)
        return (f"{stream}: last seq {si.state.last_seq}; {durable}: delivered {ci.delivered.stream_seq}, "
                f"ack floor {ci.ack_floor.stream_seq}, pending {ci.num_pending}, ack pending "
                f"{ci.num_ack_pending}, redelivered {ci.num_redelivered}, waiting pulls {ci.num_waiting}")

    return _as_admin(fleet, ask)


def stream_messages(fleet: Fleet, stream: str) -> int:
    async def ask(js):
        return (await js.stream_info(stream)).state.messages

    return _as_admin(fleet, ask)


def consumer_names(fleet: Fleet, stream: str) -> list[str]:
    async def ask(js):
        return sorted(c.name for c in await js.consumers_info(stream))

    return _as_admin(fleet, ask)


def stream_count(fleet: Fleet, stream: str, subject: str) -> int:
    async def ask(js):
        info = await js.stream_info(stream, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())

    return _as_admin(fleet, ask)


async def deafen_pull_subscriptions(nc, inbox_prefix: str = "_INBOX") -> int:
    """What a lost subscription looks like from the server after a reconnect: the server drops the client's
    interest in its inboxes (a protocol UNSUB) while the client still holds them.  The request/reply inbox
    (``PREFIX.x.*``) is left alone.  Returns how many went deaf."""
    from nats.protocol import command as prot

    deaf = [s for s in nc._subs.values()
            if s._subject.startswith(inbox_prefix + ".") and not s._subject.endswith("*")]
    for s in deaf:
        await nc._send_command(prot.unsub_cmd(s._id, 0))
    await nc.flush()
    return len(deaf)


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"]


def chromium():
    """Debian's chromium driven by Playwright (no browser download); installed when missing, like Xvfb."""
    import contextlib

    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        from backoffice.servers import _apt_install

        _apt_install("chromium")

    @contextlib.contextmanager
    def launch():
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            try:
                yield browser
            finally:
                browser.close()

    return launch()
