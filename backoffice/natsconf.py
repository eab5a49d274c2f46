"""The nats-server configuration the back office generates: users, and what each may publish and read.

A terminal may publish only on ``facepay.t.<its id>.>`` and use only its own JetStream consumer of the
revocation stream and its own key-value bucket; it receives replies only on its own inbox prefix.
The back office's user may do everything.  Passwords are in this file, which is mode 0600.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def terminal_permissions(tid: str) -> dict:
    kv = f"KV_fleet_{tid}"
    return {
        "publish": {"allow": [
            f"facepay.t.{tid}.>",
            f"$JS.API.CONSUMER.INFO.REVOCATIONS.rev_{tid}",
            f"$JS.API.CONSUMER.MSG.NEXT.REVOCATIONS.rev_{tid}",
            f"$JS.ACK.REVOCATIONS.rev_{tid}.>",
            f"$JS.API.STREAM.INFO.{kv}",
            f"$JS.API.CONSUMER.CREATE.{kv}", f"$JS.API.CONSUMER.CREATE.{kv}.>",
            f"$JS.API.CONSUMER.INFO.{kv}.>", f"$JS.API.CONSUMER.DELETE.{kv}.>",
            f"$JS.API.DIRECT.GET.{kv}.>", f"$JS.API.STREAM.MSG.GET.{kv}", f"$JS.FC.{kv}.>",
        ]},
        "subscribe": {"allow": [f"_INBOX_{tid}.>"]},
    }


def render(state: dict) -> str:
    users = [{"user": state["admin_user"], "password": state["admin_password"]}]
    for tid, pw in sorted(state["terminals"].items()):
        users.append({"user": f"t-{tid}", "password": pw, "permissions": terminal_permissions(tid)})
    conf = {
        "listen": f"127.0.0.1:{state['nats_port']}",
        "server_name": "facepay-backoffice",
        "pid_file": state["nats_pid_file"],
        "jetstream": {"store_dir": state["nats_store"]},
        "authorization": {"users": users},
    }
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
