"""The kiosk's languages: gettext catalogues read with Babel, and amounts formatted per locale.

Every word a shopper reads or hears comes from ``assets/locale/<lang>/LC_MESSAGES/facepay.po``
(English is the source language: its msgids are the English text).  The catalogues are read with
Babel and compiled in memory, so no build step can leave a stale ``.mo`` behind.

    from terminal import i18n
    i18n.activate("de")
    i18n._("Amount due")               # 'Zu zahlen'
    i18n.amount(420, "EUR")            # '4,20 €'   (English: '€4.20')

The state machine (terminal/checkout/) carries message ids ("no_match", "timed out" ...); the UI
renders them here, so the machine stays free of any language.
"""

from __future__ import annotations

import ast
import gettext
import io
import re
from decimal import Decimal
from functools import cache
from pathlib import Path

from .consent import ASSETS

LOCALE_DIR = ASSETS / "locale"
DOMAIN = "facepay"
# code -> (the language's own name, Babel locale for numbers and currency, espeak-ng voice)
LANGUAGES = {
    "en": ("English", "en_GB", "en-gb"),
    "de": ("Deutsch", "de_DE", "de"),
    "fr": ("Français", "fr_FR", "fr-fr"),
    "es": ("Español", "es_ES", "es"),
    "zh": ("简体中文", "zh_Hans_CN", "cmn"),
}
SOURCE = "en"

_active = SOURCE


def N_(msgid: str) -> str:
    """Mark a string for the catalogues without translating it now (it is translated when shown)."""
    return msgid


@cache
def translations(lang: str) -> gettext.NullTranslations:
    """The catalogue of ``lang``: English is the msgids themselves."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}: one of {', '.join(LANGUAGES)}")
    if lang == SOURCE:
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with open(po_path(lang), "rb") as f:
        cat = read_po(f, locale=LANGUAGES[lang][1])
    buf = io.BytesIO()
    write_mo(buf, cat)
    buf.seek(0)
    return gettext.GNUTranslations(buf)


def po_path(lang: str) -> Path:
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def activate(lang: str) -> None:
    global _active
    translations(lang)      # an unknown code fails here, before anything changes
    _active = lang


def active() -> str:
    return _active


def _(msgid: str, lang: str | None = None, **params) -> str:
    """``msgid`` in the active language (or ``lang``), with ``{name}`` fields filled from ``params``."""
    text = translations(lang or _active).gettext(msgid)
    return text.format(**params) if params else text


def locale_of(lang: str | None = None) -> str:
    return LANGUAGES[lang or _active][1]


def voice_of(lang: str | None = None) -> str:
    return LANGUAGES[lang or _active][2]


def amount(minor: int, currency: str, lang: str | None = None) -> str:
    """An amount in minor units as the shopper's language writes it (CLDR via Babel): '€4.20', '4,20 €'."""
    from babel.numbers import format_currency

    from .money import exponent

    major = Decimal(minor).scaleb(-exponent(currency))
    return format_currency(major, currency.upper(), locale=locale_of(lang))


def date(iso: str, lang: str | None = None) -> str:
    """An ISO date (or timestamp) as the language writes a medium date."""
    from datetime import date as _date

    from babel.dates import format_date

    return format_date(_date.fromisoformat(iso[:10]), format="medium", locale=locale_of(lang))


# -- extraction: what the catalogues must hold -------------------------------------------------
_LITERAL = r'"(?:[^"\\\n]|\\.)*"'
# a marker, then one string literal or several adjacent ones (Python joins them)
_MARKED = re.compile(r'(?:\bN?_\(|\bapp\.t\(\s*app\.lang\s*,)\s*(' + _LITERAL + r'(?:\s*' + _LITERAL + r')*)')


def extract(paths) -> list[str]:
    """Every msgid marked in these Python and kv files: ``_("...")``, ``N_("...")``, ``app.t(app.lang, "...")``."""
    seen: dict[str, None] = {}
    for p in paths:
        for m in _MARKED.finditer(Path(p).read_text(encoding="utf-8")):
            seen.setdefault(ast.literal_eval("(" + m.group(1) + ")"), None)
    return list(seen)


def sources() -> list[Path]:
    """The files whose marked strings make the catalogue: the kiosk's UI, its kv files, speech, and the
    English texts the UI shows from other modules (face guidance, the fleet's paused notice)."""
    root = Path(__file__).resolve().parent
    return sorted([*(root / "ui").glob("*.py"), *(ASSETS / "kv").glob("*.kv"), root / "speech.py"])


def borrowed() -> list[str]:
    """English sentences the kiosk shows that are written in other modules (translated here too)."""
    from .checkout import RANDOM_UID_SENTENCE
    from .face.gates import GUIDANCE
    from .fleet.link import PAUSED_MESSAGE

    return [*GUIDANCE.values(), PAUSED_MESSAGE, RANDOM_UID_SENTENCE]


def msgids() -> list[str]:
    out = dict.fromkeys(extract(sources()))
    out.update(dict.fromkeys(borrowed()))
    return list(out)


def fields(text: str) -> set[str]:
    """The ``{name}`` fields of a message: a translation must keep exactly these."""
    return set(re.findall(r"\{(\w+)\}", text))
