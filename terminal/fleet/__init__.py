"""The terminal's side of a fleet: the ``[fleet]`` config section, the outbox and the sync agent.

A terminal without ``[fleet]`` (empty ``nats_url``) works alone exactly as before: nothing here
runs, no outbox row is written, no network connection is opened.
"""

from __future__ import annotations

import json
import re
from typing import Annotated

from pydantic import ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass

from ..errors import ConfigError

TERMINAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A terminal's account has no JetStream of its own: it sees the back office's API under this prefix (the
# service imports nats.conf gives it, see backoffice/natsconf.py).
JS_PREFIX = "JS.BO.API"


Text = Annotated[str, Strict()]
Seconds = Annotated[float, Strict(), Field(gt=0, le=86400, allow_inf_nan=False)]


@dataclass(frozen=True, config=ConfigDict(extra="forbid", allow_inf_nan=False))
class FleetConfig:
    # nats://host:port of the fleet's NATS server; empty means this terminal works alone.
    nats_url: Text = ""
    # this terminal's own NATS credentials, written by `facepay-backoffice provision`
    user: Text = ""
    password: Text = ""
    # the fleet's key for the card hash that links one shopper's enrolments across terminals (hex, 32 bytes)
    card_key: Text = ""
    # the back office's public opt-out page (the enrolment-done screen's QR code points there)
    optout_url: Text = ""
    # the back office's Ed25519 public key (hex, 32 bytes): only revocations signed with it are obeyed
    revocation_key: Text = ""
    # the fleet's CA certificate (PEM) for a tls:// nats_url; empty: the system's trust store
    ca_pem: Text = ""
    # face pay pauses when the terminal has not caught up with the revocation stream for this long
    max_staleness_s: Seconds = 300.0
    heartbeat_s: Seconds = 10.0

    @property
    def enabled(self) -> bool:
        return bool(self.nats_url)


def validate(fleet: FleetConfig, terminal_id: str, source: str) -> None:
    """Called from terminal.config._validate: a half-filled [fleet] section is refused at start."""
    if not fleet.enabled:
        if fleet.user or fleet.password or fleet.card_key:
            raise ConfigError("'fleet.nats_url' is missing while other [fleet] keys are set", source,
                              "write the section with `facepay-backoffice provision`")
        return
    if not fleet.nats_url.startswith(("nats://", "tls://")):
        raise ConfigError(f"'fleet.nats_url' must start with nats:// or tls://, not {fleet.nats_url!r}", source)
    for key in ("user", "password", "card_key", "revocation_key"):
        if not getattr(fleet, key):
            raise ConfigError(f"'fleet.{key}' is required when 'fleet.nats_url' is set", source,
                              "write the section with `facepay-backoffice provision`")
    try:
        if len(bytes.fromhex(fleet.card_key)) != 32:
            raise ValueError
    except ValueError:
        raise ConfigError("'fleet.card_key' must be 64 hexadecimal digits", source) from None
    try:
        load_public_key(fleet.revocation_key)
    except ValueError:
        raise ConfigError("'fleet.revocation_key' must be 64 hexadecimal digits (an Ed25519 public key)", source,
                          "write the section with `facepay-backoffice provision`") from None
    if fleet.ca_pem:
        try:
            tls_context(fleet.ca_pem)
        except Exception:
            raise ConfigError("'fleet.ca_pem' is not a PEM certificate", source,
                              "write the section with `facepay-backoffice provision`") from None
    if not TERMINAL_ID_RE.match(terminal_id):
        raise ConfigError(f"'terminal_id' {terminal_id!r} cannot be used in a fleet: use letters, digits, - and _",
                          source)


async def unsubscribe_quietly(sub) -> None:
    """Drop a NATS subscription that no longer delivers; it may already be gone with its connection."""
    try:
        await sub.unsubscribe()
    except Exception:
        pass


def tls_context(ca_pem: str):
    """A client TLS context that trusts only the fleet's CA (PEM text) and checks the server's name."""
    import ssl

    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


# -- signed revocations ---------------------------------------------------------------------------
def revocation_signed_bytes(revocation_id: str, card_hash: str) -> bytes:
    return f"facepay-revocation:v1:{revocation_id}:{card_hash}".encode()


def load_public_key(hex_key: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = bytes.fromhex(hex_key)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


class BadRevocation(ValueError):
    """A message on the revocation stream that is not a revocation the back office signed."""


HEX64 = re.compile(r"^[0-9a-f]{64}$")
REVOCATION_ID = re.compile(r"^rev_[0-9a-f]{16}$")


def verify_revocation(public_key, data: bytes) -> tuple[str, str]:
    """(revocation id, card hash) of a signed revocation; BadRevocation for anything else."""
    from cryptography.exceptions import InvalidSignature

    try:
        d = json.loads(data)
        rid, card_hash, sig = d["revocation_id"], d["card_hash"], bytes.fromhex(d["sig"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadRevocation(f"malformed: {exc!r}") from None
    if not (isinstance(rid, str) and REVOCATION_ID.match(rid) and isinstance(card_hash, str)
            and HEX64.match(card_hash)):
        raise BadRevocation("malformed: no revocation id or card hash")
    try:
        public_key.verify(sig, revocation_signed_bytes(rid, card_hash))
    except InvalidSignature:
        raise BadRevocation("signature does not verify") from None
    return rid, card_hash
