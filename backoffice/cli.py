"""``facepay-backoffice``: migrate, serve, provision, dev, staff.

``--workdir DIR`` holds the fleet's state (``fleet.json``, mode 0600: NATS users and the fleet's card
key) and the generated ``nats.conf``.  ``dev`` fills a fresh DIR with everything and runs it;
``provision`` adds a terminal to a running fleet (the NATS server reloads its config).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import sys
from pathlib import Path

import tomli_w

from terminal.fleet import contract as c

from . import db, natsconf, servers

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
_log = logging.getLogger("facepay.backoffice")


class CliError(Exception):
    def __init__(self, what: str, hint: str = "", code: int = EXIT_USAGE):
        super().__init__(what + (f" ({hint})" if hint else ""))
        self.code = code


# -- workdir state ------------------------------------------------------------------------------------
def state_path(workdir: Path) -> Path:
    return workdir / "fleet.json"


def load_state(workdir: Path) -> dict:
    try:
        return json.loads(state_path(workdir).read_text())
    except FileNotFoundError:
        raise CliError(f"{workdir} holds no back office", "start one with `facepay-backoffice --workdir "
                       f"{workdir} dev`, or pass the --workdir of a running one") from None


def save_state(workdir: Path, state: dict) -> None:
    natsconf.write_private(state_path(workdir), json.dumps(state, indent=2))
    natsconf.write(workdir / "nats.conf", state)


@contextlib.contextmanager
def locked(workdir: Path):
    with open(workdir / ".lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _scheme(state: dict) -> str:
    return "tls" if state.get("tls") else "nats"


def admin_url(state: dict) -> str:
    return f"{_scheme(state)}://{state['admin_user']}:{state['admin_password']}@127.0.0.1:{state['nats_port']}"


def public_nats_url(state: dict) -> str:
    return f"{_scheme(state)}://127.0.0.1:{state['nats_port']}"


def ca_pem(state: dict) -> str:
    return Path(state["tls"]["ca_file"]).read_text() if state.get("tls") else ""


def signing_key_path(workdir: Path) -> Path:
    return workdir / "revocation-signing.key"


def load_signing_key(path: Path):
    """The back office's Ed25519 key that signs every revocation (64 hex digits in a 0600 file)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        raw = bytes.fromhex(Path(path).read_text().strip())
        return Ed25519PrivateKey.from_private_bytes(raw)
    except FileNotFoundError:
        raise CliError(f"--signing-key {path} does not exist", "dev writes one as WORKDIR/revocation-signing.key",
                       EXIT_ERROR) from None
    except ValueError:
        raise CliError(f"--signing-key {path} is not an Ed25519 key (64 hexadecimal digits)", code=EXIT_ERROR) from None


def public_key_hex(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def new_state(workdir: Path, nats_port: int, tls: bool = True) -> dict:
    """A fresh fleet: the back office's NATS user (bcrypt in nats.conf), the card key, the revocation
    signing key, and (``tls``) the fleet's CA and nats-server certificate."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    password = secrets.token_urlsafe(24)
    key = Ed25519PrivateKey.generate()
    natsconf.write_private(signing_key_path(workdir), key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()).hex() + "\n")
    return {"nats_port": nats_port, "admin_user": "backoffice", "admin_password": password,
            "admin_password_hash": natsconf.hash_password(password),
            "nats_pid_file": str(workdir / "nats.pid"), "nats_store": str(workdir / "nats-store"),
            "db_url": "", "card_key": secrets.token_hex(32), "terminals": {},
            "revocation_key": public_key_hex(key), "tls": servers.make_tls(workdir) if tls else None}


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CliError(f"--listen {text!r} is not HOST:PORT", "e.g. --listen 127.0.0.1:8080")
    return host, int(port)


def parse_proxies(values: list[str] | None) -> list[str]:
    """--trusted-proxy ADDR (repeatable): IP addresses or networks whose X-Forwarded-For is believed."""
    import ipaddress

    out = []
    for v in values or []:
        try:
            ipaddress.ip_network(v, strict=False)
        except ValueError:
            raise CliError(f"--trusted-proxy {v!r} is not an IP address or network",
                           "e.g. --trusted-proxy 127.0.0.1 or --trusted-proxy 10.0.0.0/24") from None
        out.append(v)
    return out


def parse_rate(text: str, flag: str = "--optout-rate") -> tuple[int, float]:
    try:
        n, _, s = text.partition("/")
        rate = int(n), float(s or 60)
        if rate[0] < 1 or rate[1] <= 0:
            raise ValueError
        return rate
    except ValueError:
        raise CliError(f"{flag} {text!r} is not COUNT/SECONDS", f"e.g. {flag} 10/60") from None


# -- commands ------------------------------------------------------------------------------------------
def cmd_migrate(args) -> int:
    url = args.db or load_state(args.workdir)["db_url"]
    print(f"schema at version {db.migrate(url)}")
    return EXIT_OK


def toml_config(tid: str, state: dict, password: str, max_staleness_s: float) -> str:
    fleet = {"nats_url": public_nats_url(state), "user": c.terminal_user(tid), "password": password,
             "card_key": state["card_key"], "revocation_key": state["revocation_key"],
             "max_staleness_s": max_staleness_s}
    if state.get("tls"):
        fleet["ca_pem"] = ca_pem(state)
    if state.get("web_url"):
        fleet["optout_url"] = state["web_url"] + "/"
    # [fleet] is the only table, so the last: installers (and the tests) append keys to it
    return tomli_w.dumps({"terminal_id": tid, "fleet": fleet})


def network_dropin(nats_url: str) -> str:
    """A systemd drop-in for facepay-kiosk.service and facepay-agent.service: the NATS server's address only."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(nats_url)
    addrs = sorted({ai[4][0] for ai in socket.getaddrinfo(u.hostname, u.port or 4222, type=socket.SOCK_STREAM)})
    return ("# Install as /etc/systemd/system/facepay-kiosk.service.d/fleet.conf (and facepay-agent.service.d/):\n"
            f"# the terminal may reach exactly its fleet's NATS server ({nats_url}) and nothing else.\n"
            "[Service]\nRestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\nIPAddressDeny=any\n"
            f"IPAddressAllow={' '.join(addrs)}\n")


def nats_tls(state: dict):
    return c.tls_context(ca_pem(state)) if state.get("tls") else None


def _reload_nats(state: dict) -> None:
    pid_file = Path(state["nats_pid_file"])
    if pid_file.exists():  # a running server learns new accounts by a config reload
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGHUP)
        except (ProcessLookupError, ValueError, IndexError):
            pass


async def _wait_terminal_ready(state: dict, tid: str, password: str, timeout: float = 20.0) -> None:
    """Until the new terminal can log in and reach the back office through its imports.

    nats-server (2.10-2.15 seen) wires the service imports of an account added by a reload only at the next
    reload: so while the probe (a read of the revoked view) finds no responder, reload once more."""
    import nats

    async def quiet(exc):  # refused until the server has reloaded its config: expected, retried below
        _log.debug("new terminal's login not accepted yet: %r", exc)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    reloaded = loop.time()  # the provisioning's own reload; JetStream is unavailable for a moment after each
    while True:
        try:
            # without error_cb, nats-py logs every refused attempt with a traceback (make fleet-demo showed three)
            nc = await nats.connect(public_nats_url(state), user=c.terminal_user(tid), password=password,
                                    allow_reconnect=False, connect_timeout=2, max_reconnect_attempts=0, tls=nats_tls(state),
                                    inbox_prefix=c.inbox_prefix(tid), error_cb=quiet)
            try:
                await nc.request(c.msg_get_subject(c.REVOKED_STREAM, c.JS_PREFIX),
                                 json.dumps({"last_by_subj": c.revoked_subject("probe")}).encode(), timeout=2)
                return
            except nats.errors.NoRespondersError:
                if loop.time() - reloaded > 2.0:
                    _reload_nats(state)
                    reloaded = loop.time()
            finally:
                await nc.close()
        except Exception:
            pass
        if loop.time() > deadline:
            raise CliError("the NATS server did not accept the new terminal's credentials",
                           "is the back office's nats-server running with this --workdir?", EXIT_ERROR) from None
        await asyncio.sleep(0.3)


def cmd_provision(args) -> int:
    from .bus import provision_terminal

    tid = args.terminal_id
    if not c.TERMINAL_ID_RE.match(tid):
        raise CliError(f"--terminal-id {tid!r} may use only letters, digits, - and _ (64 at most)")
    out = Path(args.out)
    if out.is_dir():
        raise CliError(f"--out {out} is a folder", "give a file name, e.g. terminal.toml")
    if not out.parent.is_dir():
        raise CliError(f"--out: folder {out.parent} does not exist")
    workdir = args.workdir
    load_state(workdir)  # a clear error before anything is written
    with locked(workdir):
        state = load_state(workdir)
        password = secrets.token_urlsafe(24)
        state["terminals"][tid] = natsconf.hash_password(password)  # the password itself is kept nowhere here
        save_state(workdir, state)
        _reload_nats(state)
    asyncio.run(provision_terminal(admin_url(state), tid, tls=nats_tls(state)))
    with locked(workdir):  # one provisioning at a time reloads and probes
        asyncio.run(_wait_terminal_ready(state, tid, password))
    if state["db_url"]:
        db.add_terminal(state["db_url"], tid)
    natsconf.write_private(out, toml_config(tid, state, password, args.max_staleness_s))
    dropin = out.with_name(out.stem + ".network.conf")
    dropin.write_text(network_dropin(public_nats_url(state)))
    print(json.dumps({"terminal_id": tid, "config": str(out), "systemd_dropin": str(dropin)}) if args.json
          else f"wrote {out} for {tid}, and {dropin} for its systemd units")
    return EXIT_OK


def cmd_staff(args) -> int:
    from .web import hash_password

    url = args.db or load_state(args.workdir)["db_url"]
    password = sys.stdin.readline().rstrip("\n") if args.password_stdin else None
    if not password:
        raise CliError("no password given", "pipe it in: echo PASSWORD | facepay-backoffice staff add "
                       "--user NAME --password-stdin")
    if len(password) < 10:
        raise CliError("a staff password needs at least 10 characters")
    db.migrate(url)
    db.set_staff(url, args.user, hash_password(password))
    print(f"staff user {args.user} saved")
    return EXIT_OK


class _Server:
    """uvicorn without its own signal handling: the back office decides when to stop."""

    def __init__(self, app, host: str, port: int):
        import uvicorn

        class Server(uvicorn.Server):
            def capture_signals(self):
                return contextlib.nullcontext()

        # no `server: uvicorn` banner; X-Forwarded-* are believed only from --trusted-proxy (web.make_app)
        self.server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off",
                                            server_header=False, proxy_headers=False))
        self.task = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise CliError("the web server did not start", code=EXIT_ERROR)
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)


async def _run_backoffice(db_url: str, nats_url: str, host: str, port: int, rate, stop: asyncio.Event,
                          ready=None, supervise=None, *, signing_key, tls=None, terminal_rate=(10, 3600.0),
                          trusted_proxies=()) -> None:
    import psycopg

    from .bus import Bus
    from .web import make_app

    with psycopg.connect(db_url, autocommit=True) as conn:
        secret = db.session_secret(conn)
    bus = Bus(nats_url, db_url, signing_key=signing_key, tls=tls, terminal_rate=terminal_rate)
    await bus.start()
    web = _Server(make_app(bus, db_url, secret, rate, trusted_proxies=trusted_proxies), host, port)
    await web.start()
    try:
        if ready is not None:
            ready()
        waiters = [asyncio.create_task(stop.wait())] + ([asyncio.create_task(supervise)] if supervise else [])
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for w in waiters:
            w.cancel()
    finally:
        await web.stop()
        await bus.stop()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def cmd_serve(args) -> int:
    host, port = parse_listen(args.listen)
    rate = parse_rate(args.optout_rate)
    terminal_rate = parse_rate(args.terminal_optout_rate, "--terminal-optout-rate")
    proxies = parse_proxies(args.trusted_proxy)
    key = load_signing_key(args.signing_key)
    tls = None
    if args.nats_ca:
        try:
            tls = c.tls_context(Path(args.nats_ca).read_text())
        except (OSError, ValueError) as exc:
            raise CliError(f"--nats-ca {args.nats_ca}: not a readable PEM certificate ({exc})", code=EXIT_ERROR) from None
    db.migrate(args.db)

    async def main():
        stop = asyncio.Event()
        _stop_on_signals(stop)
        await _run_backoffice(args.db, args.nats, host, port, rate, stop,
                              ready=lambda: print(f"back office on http://{host}:{port}", flush=True),
                              signing_key=key, tls=tls, terminal_rate=terminal_rate, trusted_proxies=proxies)

    asyncio.run(main())
    return EXIT_OK


def cmd_dev(args) -> int:
    host, port = parse_listen(args.listen)
    rate = parse_rate(args.optout_rate)
    terminal_rate = parse_rate(args.terminal_optout_rate, "--terminal-optout-rate")
    proxies = parse_proxies(args.trusted_proxy)
    workdir = args.workdir
    if workdir.exists() and any(workdir.iterdir()):
        raise CliError(f"--workdir {workdir} is not empty", "dev makes a fresh fleet: give a new or empty folder")
    workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
    state = new_state(workdir, servers.free_port(), tls=not args.no_tls)
    save_state(workdir, state)
    log = workdir / "nats.log"
    procs = {"nats": servers.start_nats(workdir / "nats.conf", state["nats_port"], log)}
    pg = servers.PgCluster(workdir, servers.free_port())
    try:
        state["db_url"] = pg.start()
        with locked(workdir):
            fresh = load_state(workdir)
            fresh["db_url"] = state["db_url"]
            fresh["web_url"] = f"http://{host}:{port}"
            save_state(workdir, fresh)
        db.migrate(state["db_url"])
        from .web import hash_password

        staff_pw = secrets.token_urlsafe(12)
        db.set_staff(state["db_url"], "manager", hash_password(staff_pw))
        natsconf.write_private(workdir / "staff.json", json.dumps({"username": "manager", "password": staff_pw}))

        async def supervise():  # a nats-server that dies is started again (the failure tests kill it)
            while True:
                await asyncio.sleep(0.2)
                if procs["nats"].poll() is not None:
                    _log.warning("nats-server exited (%s); starting it again", procs["nats"].returncode)
                    await asyncio.sleep(1.0)
                    procs["nats"] = await asyncio.to_thread(
                        servers.start_nats, workdir / "nats.conf", state["nats_port"], log)

        def ready():
            print(json.dumps({"web": f"http://{host}:{port}", "nats": public_nats_url(state),
                              "db": state["db_url"]}), flush=True)

        async def main():
            stop = asyncio.Event()
            _stop_on_signals(stop)
            await _run_backoffice(state["db_url"], admin_url(state), host, port, rate, stop, ready, supervise(),
                                  signing_key=load_signing_key(signing_key_path(workdir)), tls=nats_tls(state),
                                  terminal_rate=terminal_rate, trusted_proxies=proxies)

        asyncio.run(main())
    finally:
        # a second SIGTERM/Ctrl-C must not cut the clean-up short (the throwaway cluster's files go too)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            servers.stop_pid(procs["nats"].pid)
        finally:
            pg.stop()
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facepay-backoffice",
                                description="facepay back office: opt-outs fleet-wide, sales and consent records, "
                                            "terminal health (NATS JetStream + PostgreSQL)")
    p.add_argument("--workdir", type=Path, default=Path(os.environ.get("FACEPAY_BACKOFFICE_DIR", "backoffice-data")),
                   help="the fleet's state folder (default $FACEPAY_BACKOFFICE_DIR or ./backoffice-data)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    sp = sub.add_parser("migrate", help="create or update the PostgreSQL schema")
    sp.add_argument("--db", help="postgresql:// URL (default: the workdir's)")
    sp.set_defaults(func=cmd_migrate)

    sp = sub.add_parser("serve", help="run the back office: ingest, revocations, web pages")
    sp.add_argument("--db", required=True, help="postgresql://USER:PASSWORD@HOST:PORT/DB")
    sp.add_argument("--nats", required=True, help="nats://USER:PASSWORD@HOST:PORT of the back office's NATS user")
    sp.add_argument("--listen", required=True, help="HOST:PORT for the web pages")
    sp.add_argument("--optout-rate", default="10/60", help="opt-out requests allowed per client: COUNT/SECONDS")
    sp.add_argument("--terminal-optout-rate", default="10/3600",
                    help="opt-outs one terminal may start: COUNT/SECONDS; more wait their turn (default 10/3600)")
    sp.add_argument("--signing-key", type=Path, required=True,
                    help="the Ed25519 key that signs revocations (dev writes WORKDIR/revocation-signing.key)")
    sp.add_argument("--nats-ca", help="PEM file of the CA that signed nats-server's certificate (tls:// URLs)")
    sp.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                    help="a reverse proxy's IP address or network whose X-Forwarded-For/-Proto is believed "
                         "(repeatable; default: none, the client address is the connection's)")
    sp.set_defaults(func=cmd_serve)

    sp = sub.add_parser("provision", help="add a terminal: its NATS user, consumer, bucket and config file")
    sp.add_argument("--terminal-id", required=True)
    sp.add_argument("--out", required=True, help="the terminal's TOML config to write (mode 0600)")
    sp.add_argument("--max-staleness-s", type=float, default=300.0,
                    help="face pay pauses after this long without catching up with revocations")
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_provision)

    sp = sub.add_parser("dev", help="nats-server, a throwaway PostgreSQL cluster and the back office in the "
                                    "workdir; prints one JSON line when ready; stops all on SIGTERM")
    sp.add_argument("--listen", required=True, help="HOST:PORT for the web pages")
    sp.add_argument("--optout-rate", default="10/60", help="opt-out requests allowed per client: COUNT/SECONDS")
    sp.add_argument("--terminal-optout-rate", default="10/3600",
                    help="opt-outs one terminal may start: COUNT/SECONDS; more wait their turn (default 10/3600)")
    sp.add_argument("--no-tls", action="store_true", help="plain nats:// (default: TLS with a CA made in WORKDIR)")
    sp.add_argument("--trusted-proxy", action="append", metavar="ADDR",
                    help="a reverse proxy's IP address or network whose X-Forwarded-For/-Proto is believed "
                         "(repeatable; default: none, the client address is the connection's)")
    sp.set_defaults(func=cmd_dev)

    sp = sub.add_parser("staff", help="add a staff user (or set a new password)")
    sp.add_argument("staff_cmd", choices=["add"])
    sp.add_argument("--user", required=True)
    sp.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    sp.add_argument("--db", help="postgresql:// URL (default: the workdir's)")
    sp.set_defaults(func=cmd_staff)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except CliError as exc:
        print(f"facepay-backoffice {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except servers.ServerError as exc:
        print(f"facepay-backoffice {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
