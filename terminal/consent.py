"""The consent texts a shopper reads before enrolment, with their versions and hashes.

Each text lives in ``assets/consent/<lang>.md`` (package data ``terminal.assets``, found with
importlib.resources); its first line is ``version: ...``.  The SHA-256 of the whole file is recorded in the consent
ledger with every grant, so anyone can prove which words the shopper saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import InputError

ASSETS = Path(str(resources.files("terminal.assets")))   # the checkout's assets/, installed as terminal/assets/
LANGUAGES = {"en": "English", "de": "Deutsch", "fr": "Français", "es": "Español", "zh": "简体中文"}


@dataclass(frozen=True)
class ConsentText:
    lang: str
    version: str
    body: str
    sha256: str


def load(lang: str = "en", assets: Path = ASSETS) -> ConsentText:
    path = assets / "consent" / f"{lang}.md"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError("consent text is missing", str(path), "reinstall the terminal") from None
    text = raw.decode("utf-8")
    first, _, body = text.partition("\n")
    if not first.startswith("version:"):
        raise InputError("consent text has no 'version:' first line", str(path))
    return ConsentText(lang, first.split(":", 1)[1].strip(), body.strip(), hashlib.sha256(raw).hexdigest())
