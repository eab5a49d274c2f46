"""The fleet's contract: every name and format the terminals and the back office must agree on, written once.

Both sides import this module (the back office imports nothing else of the terminal but ``terminal.money``
and ``terminal.staff``'s hashing): NATS subjects, JetStream streams, consumers and key-value buckets, the
ids, the opt-out code and its hash, the signed revocation, the receipt states and the mode names.  It
imports nothing of the terminal but the mode names (``terminal.modes``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets

# The terminal's modes, the ones the back office may set (re-exported: one definition, in terminal.modes).
from ..modes import MODES as MODES
from ..modes import Mode as Mode

# -- ids --------------------------------------------------------------------------------------------
TERMINAL_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
REVOCATION_ID = re.compile(r"^rev_[0-9a-f]{16}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")  # a card hash or an opt-out code hash


def new_revocation_id() -> str:
    return "rev_" + secrets.token_hex(8)


def msg_id(tid: str, event_id: str) -> str:
    """``Nats-Msg-Id`` of an outbox event: the terminal's id first, so ids of two terminals never collide."""
    return f"{tid}:{event_id}"


# -- what a terminal publishes: facepay.t.<id>.<kind> ---------------------------------------------------
# The kinds of outbox rows: a settled sale, and what the consent stream keeps.
SALE, LEDGER, ENROL, OPTOUT, RECEIPT = "sale", "ledger", "enrol", "optout", "receipt"
CONSENT_KINDS = (LEDGER, ENROL, OPTOUT, RECEIPT)
HEARTBEAT = "hb"
RECEIPT_STATES = ("deleted", "none-held")  # a terminal's answer to a revocation


def terminal_subject(tid: str, kind: str) -> str:
    return f"facepay.t.{tid}.{kind}"


def parse_terminal_subject(subject: str) -> tuple[str, str]:
    """(terminal id, kind) of ``facepay.t.<id>.<kind>``: the id is the sending account's, never the payload's."""
    parts = subject.split(".")
    if len(parts) != 4 or parts[:2] != ["facepay", "t"]:
        raise ValueError(f"not a terminal subject: {subject!r}")
    return parts[2], parts[3]


# -- what the back office publishes ----------------------------------------------------------------
REVOCATIONS_SUBJECT = "facepay.revocations"


def revoked_subject(card_hash: str) -> str:
    return f"facepay.revoked.{card_hash}"


# -- streams: name -> the subjects it stores -----------------------------------------------------------
REVOCATIONS_STREAM = "REVOCATIONS"
SALES_STREAM = "SALES"
CONSENT_STREAM = "CONSENT"
HEARTBEATS_STREAM = "HEARTBEATS"
REVOKED_STREAM = "REVOKED"
STREAM_SUBJECTS = {
    REVOCATIONS_STREAM: [REVOCATIONS_SUBJECT],
    SALES_STREAM: [terminal_subject("*", SALE)],
    CONSENT_STREAM: [terminal_subject("*", k) for k in CONSENT_KINDS],
    HEARTBEATS_STREAM: [terminal_subject("*", HEARTBEAT)],
    REVOKED_STREAM: [revoked_subject("*")],
}

# -- consumers and key-value buckets -----------------------------------------------------------------
BACKOFFICE_CONSUMER = "backoffice"  # the back office's durable consumer on each stream it ingests
MODE_KEY, HOLD_KEY = "mode", "hold"  # a terminal's bucket: the mode the manager wants, a face-pay hold


def revocation_consumer(tid: str) -> str:
    """The terminal's own durable pull consumer on REVOCATIONS (the back office creates it)."""
    return f"rev_{tid}"


def kv_bucket(tid: str) -> str:
    return f"fleet_{tid}"


def kv_stream(tid: str) -> str:
    """The JetStream stream behind the terminal's bucket."""
    return f"KV_{kv_bucket(tid)}"


def kv_subject(tid: str, key: str) -> str:
    return f"$KV.{kv_bucket(tid)}.{key}"


# -- a terminal's NATS identity and what its account reaches -------------------------------------------
# A terminal's account has no JetStream of its own: it sees the back office's API under this prefix (the
# service imports nats.conf gives it, see backoffice/natsconf.py).
JS_API = "$JS.API"
JS_ACK = "$JS.ACK"
JS_PREFIX = "JS.BO.API"
MSG_NOT_FOUND = 10037  # JetStream's err_code for STREAM.MSG.GET of a subject with no message


def terminal_user(tid: str) -> str:
    return f"t-{tid}"


def inbox_prefix(tid: str) -> str:
    return f"_INBOX_{tid}"


def msg_get_subject(stream: str, prefix: str = JS_API) -> str:
    return f"{prefix}.STREAM.MSG.GET.{stream}"


def terminal_services(tid: str) -> list[tuple[str, bool]]:
    """(subject, streams many responses): what the back office exports to terminal ``tid`` alone, named in
    the back office's account; a terminal reaches each ``$JS.API`` one under JS_PREFIX."""
    consumer = f"{REVOCATIONS_STREAM}.{revocation_consumer(tid)}"
    return [
        (terminal_subject(tid, ">"), False),
        (f"{JS_API}.CONSUMER.MSG.NEXT.{consumer}", True),
        (f"{JS_API}.CONSUMER.INFO.{consumer}", False),
        (f"{JS_ACK}.{consumer}.>", False),
        (msg_get_subject(kv_stream(tid)), False),
        (msg_get_subject(REVOKED_STREAM), False),
    ]


def local_subject(subject: str) -> str:
    """The name an imported service has inside a terminal's account."""
    return JS_PREFIX + subject[len(JS_API):] if subject.startswith(JS_API + ".") else subject


# -- opt-out codes -------------------------------------------------------------------------------------
# Crockford's base32 (https://www.crockford.com/base32.html): digits and capitals without I, L, O and U,
# so no code holds both a 0 and an O, or a 1 and an I or L.  Typed back, case does not matter and the
# letters people confuse with a digit are read as that digit.
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CONFUSABLE = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_optout_code() -> str:
    """16 Crockford base32 characters (80 random bits) in groups of four: ``K7QM-3XPA-WD2R-9HNE``."""
    raw = "".join(secrets.choice(CROCKFORD) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def normalise_code(code: str) -> str:
    """A typed code as it was issued: capitals, spaces and dashes dropped, O read as 0 and I or L as 1."""
    return "".join(ch for ch in code.upper() if ch.isalnum()).translate(_CONFUSABLE)


def code_hash(code: str) -> str:
    """What the back office stores and looks a typed code up by (the code itself is never stored)."""
    return hashlib.sha256(b"facepay-optout:" + normalise_code(code).encode()).hexdigest()


# -- signed revocations ---------------------------------------------------------------------------
def revocation_signed_bytes(revocation_id: str, card_hash: str) -> bytes:
    return f"facepay-revocation:v1:{revocation_id}:{card_hash}".encode()


def signed_revocation(private_key, rid: str, card_hash: str) -> bytes:
    """The message the back office publishes: the revocation with its Ed25519 signature."""
    sig = private_key.sign(revocation_signed_bytes(rid, card_hash)).hex()
    return json.dumps({"revocation_id": rid, "card_hash": card_hash, "sig": sig}).encode()


def load_public_key(hex_key: str):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    raw = bytes.fromhex(hex_key)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


class BadRevocation(ValueError):
    """A message on the revocation stream that is not a revocation the back office signed."""


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


# -- connecting ------------------------------------------------------------------------------------
def tls_context(ca_pem: str):
    """A client TLS context that trusts only the fleet's CA (PEM text) and checks the server's name."""
    import ssl

    ctx = ssl.create_default_context(cadata=ca_pem)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


async def unsubscribe_quietly(sub) -> None:
    """Drop a NATS subscription that no longer delivers; it may already be gone with its connection."""
    try:
        await sub.unsubscribe()
    except Exception:
        pass
