"""The nats-server configuration the back office generates: NATS accounts as the fleet's trust boundary.

- Account ``BACKOFFICE`` holds JetStream: every stream, consumer and key-value bucket, and the back office's
  own user.  Nothing from outside can publish into it except through the services it exports.
- Account ``T_<id>``, one per terminal, holds that terminal's user and no JetStream of its own.  It imports
  from ``BACKOFFICE`` exactly these services (nats.conf alone says what an account imports):

  ====================================================  ==============================================
  ``facepay.t.<id>.>``                                   its sale / ledger / enrol / optout / receipt /
                                                         hb events (JetStream stores them, the PubAck
                                                         comes back)
  ``$JS.API.CONSUMER.MSG.NEXT.REVOCATIONS.rev_<id>``     pull its own durable consumer (response: stream)
  ``$JS.API.CONSUMER.INFO.REVOCATIONS.rev_<id>``         ask it what waits
  ``$JS.ACK.REVOCATIONS.rev_<id>.>``                     acknowledge what it read
  ``$JS.API.STREAM.MSG.GET.KV_fleet_<id>``               read its mode and hold keys
  ``$JS.API.STREAM.MSG.GET.REVOKED``                     read the fleet's revoked card hashes
  ====================================================  ==============================================

  Why that is a boundary and not only a list of permissions: a request crossing a service import gets a
  fresh reply subject (``_R_...``) in ``BACKOFFICE`` that leads back into the terminal's own account, so a
  ``reply=`` naming a back-office subject lands in the terminal's account, where nothing listens (issue 19,
  attack 1a).  The terminal imports no ``CONSUMER.CREATE``: it cannot make a consumer at all, so it cannot
  choose a deliver subject (attack 1b); its one consumer is the pull consumer the back office made.
  Inside its account the terminal user may publish only on those imported subjects and subscribe only to
  its own inbox prefix.

Passwords are stored as bcrypt hashes (nats-server checks a ``$2a$`` password as bcrypt); the file is mode
0600 all the same.  With ``tls`` set, clients must connect over TLS with the fleet's CA.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from terminal.fleet import contract as c
from terminal.fleet.contract import local_subject, terminal_services

BACKOFFICE_ACCOUNT = "BACKOFFICE"
BCRYPT_COST = 11  # nats-server's own `nats server passwd` default
# A terminal sees the back office's JetStream API under JS_PREFIX (``nc.jetstream(prefix=JS_PREFIX)``): an
# account without JetStream answers ``$JS.API.*`` itself ("JetStream not enabled"), so imports are renamed.


def hash_password(password: str) -> str:
    """bcrypt, as nats-server expects it (Go's bcrypt reads the ``$2a$`` prefix; same algorithm as ``$2b$``)."""
    import bcrypt

    h = bcrypt.hashpw(password.encode(), bcrypt.gensalt(BCRYPT_COST)).decode()
    return "$2a$" + h[4:]


def account(tid: str) -> str:
    return f"T_{tid}"


def terminal_permissions(tid: str) -> dict:
    return {
        "publish": {"allow": [local_subject(s) for s, _ in terminal_services(tid)]},
        "subscribe": {"allow": [f"{c.inbox_prefix(tid)}.>"]},
    }


# What BACKOFFICE exports: fixed, whatever the terminals (a reload that changes an account's exports leaves
# newly added importers unserved, as nats-server 2.10-2.15 do), each with a per-terminal token wildcard.  An
# account can import only what nats.conf lists for it, and each terminal account lists only its own subjects.
EXPORTS = [
    (c.terminal_subject("*", ">"), False),
    (f"{c.JS_API}.CONSUMER.MSG.NEXT.{c.REVOCATIONS_STREAM}.*", True),
    (f"{c.JS_API}.CONSUMER.INFO.{c.REVOCATIONS_STREAM}.*", False),
    (f"{c.JS_ACK}.{c.REVOCATIONS_STREAM}.*.>", False),
    (c.msg_get_subject("*"), False),
]


def render(state: dict) -> str:
    accounts = {BACKOFFICE_ACCOUNT: {}}  # the exporter first
    for tid, pw_hash in sorted(state["terminals"].items()):
        imports = []
        for subj, _ in terminal_services(tid):
            imp = {"service": {"account": BACKOFFICE_ACCOUNT, "subject": subj}}
            if local_subject(subj) != subj:
                imp["to"] = local_subject(subj)
            imports.append(imp)
        accounts[account(tid)] = {"users": [{"user": c.terminal_user(tid), "password": pw_hash,
                                             "permissions": terminal_permissions(tid)}],
                                  "imports": imports}
    exports = [dict(service=s, **({"response_type": "stream"} if many else {})) for s, many in EXPORTS]
    accounts[BACKOFFICE_ACCOUNT] = {
        "jetstream": "enabled",
        "users": [{"user": state["admin_user"], "password": state["admin_password_hash"]}],
        "exports": exports,
    }
    conf = {
        "listen": f"127.0.0.1:{state['nats_port']}",
        "server_name": "facepay-backoffice",
        "pid_file": state["nats_pid_file"],
        "jetstream": {"store_dir": state["nats_store"]},
        "accounts": accounts,
    }
    if state.get("tls"):
        conf["tls"] = {"cert_file": state["tls"]["cert_file"], "key_file": state["tls"]["key_file"],
                       "timeout": 5}
    # nats-server reads JSON as its config syntax is a superset of it
    return json.dumps(conf, indent=2) + "\n"


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once, mode 0600: a temp file in the same folder, then a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write(path: Path, state: dict) -> None:
    write_private(path, render(state))
