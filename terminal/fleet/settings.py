"""The ``[fleet]`` config section and its checks (read by terminal.config)."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, Strict
from pydantic.dataclasses import dataclass

from ..errors import ConfigError
from .contract import TERMINAL_ID_RE, load_public_key, tls_context

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
