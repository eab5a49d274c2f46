"""Keys and ciphers: AES-GCM data keys wrapped by the master key, keyed hashes.

Each shopper's template is sealed with its own random 256-bit data key
(AES-GCM).  The data key is wrapped (AES-GCM again) under a key derived from
the terminal's master key and kept in ``keystore.db``, apart from the
templates.  Destroying the wrapped data key makes the template unreadable
everywhere, including in old copies of ``facepay.db``: crypto-shredding.

Card UIDs and phone digits are never stored: only HMAC-SHA256 values under
keys derived from the master key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12


def derive(master: bytes, purpose: str) -> bytes:
    """A 32-byte subkey of the master key for one purpose (HKDF-like, HMAC-SHA256)."""
    return hmac.new(master, b"facepay/" + purpose.encode(), hashlib.sha256).digest()


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt ``blob``; raises ``ValueError`` if it was altered or the key is wrong."""
    try:
        return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except (InvalidTag, ValueError):
        raise ValueError("sealed data failed authentication") from None


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def card_hash(master: bytes, uid: bytes) -> str:
    """The keyed hash under which a card UID is stored and looked up."""
    return hmac.new(derive(master, "card-uid"), uid, hashlib.sha256).hexdigest()


def phone_digest(master: bytes, salt: bytes, digits: str) -> str:
    return hmac.new(derive(master, "phone"), salt + digits.encode(), hashlib.sha256).hexdigest()


def parse_uid(text: str) -> bytes:
    """A card UID from hex (``04A1B2C3``, ``04:a1:b2:c3``); 4, 7 or 10 bytes."""
    cleaned = text.replace(":", "").replace(" ", "").replace("-", "")
    bad = [ch for ch in cleaned if ch not in "0123456789abcdefABCDEF"]
    if bad or not cleaned:
        raise ValueError(f"card UID {text!r} is not hexadecimal" + (f" ({bad[0]!r} is not a hex digit)" if bad else ""))
    if len(cleaned) % 2:
        raise ValueError(f"card UID {text!r} has an odd number of hex digits ({len(cleaned)}): each byte is two "
                         "digits, so a digit is missing or one too many")
    uid = bytes.fromhex(cleaned)
    if len(uid) not in (4, 7, 10):
        raise ValueError(f"card UID {text!r} has {len(uid)} bytes; ISO 14443A UIDs have 4, 7 or 10")
    return uid


def mask_uid(uid: bytes) -> str:
    """What a screen may show of a card: ``•••• B2C3``."""
    return "•••• " + uid[-2:].hex().upper()


def key_id(master: bytes) -> str:
    """A short public name for the master key (it reveals nothing of it), for the ledger's genesis entry."""
    return derive(master, "key-id")[:8].hex()
