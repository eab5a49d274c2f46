"""The staff PIN: hashed with scrypt (a slow KDF), with growing lock-out delays after failures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time

DEMO_PIN = "2580"
N, R, P = 2**14, 8, 1
FREE_TRIES = 3


def scrypt_hash(secret: str) -> str:
    """``scrypt$N$R$P$salt$key`` (base64), the format verify_pin checks; also the back office's staff passwords."""
    salt = os.urandom(16)
    dk = hashlib.scrypt(secret.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def hash_pin(pin: str) -> str:
    if not (pin.isdigit() and 4 <= len(pin) <= 8):
        raise ValueError("a staff PIN is 4 to 8 digits")
    return scrypt_hash(pin)


def verify_pin(pin: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, dk = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(pin.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32)
        return hmac.compare_digest(got, base64.b64decode(dk))
    except (ValueError, TypeError):
        return False


class PinGate:
    """Checks PINs; after ``FREE_TRIES`` failures each further try must wait 2^k seconds (up to 5 minutes).

    ``load``/``save`` keep the failure count and lock-out across restarts, so pulling the plug does
    not reset the count (the kiosk keeps them in facepay.db).
    """

    def __init__(self, stored_hash: str, clock=time.time, load=None, save=None):
        self._hash = stored_hash or hash_pin(DEMO_PIN)
        self.demo = not stored_hash
        self._clock = clock
        self._save = save
        state = load() if load else None
        self.failures = int(state.get("failures", 0)) if state else 0
        self.locked_until = float(state.get("locked_until", 0.0)) if state else 0.0

    def _persist(self) -> None:
        if self._save:
            self._save({"failures": self.failures, "locked_until": self.locked_until})

    def wait_seconds(self) -> float:
        return max(0.0, self.locked_until - self._clock())

    def check(self, pin: str) -> bool:
        if self.wait_seconds() > 0:
            return False
        if verify_pin(pin, self._hash):
            if self.failures:
                self.failures = 0
                self.locked_until = 0.0
                self._persist()
            return True
        self.failures += 1
        if self.failures >= FREE_TRIES:
            self.locked_until = self._clock() + min(300.0, 2.0 ** (self.failures - FREE_TRIES + 1))
        self._persist()
        return False
