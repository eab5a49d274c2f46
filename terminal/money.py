"""Exact amounts: integer minor units, parsed and printed with Decimal, never float.

A currency's number of decimals comes from Babel (CLDR's currency data): EUR 2, JPY and XOF 0,
BHD 3.  For a few currencies (HUF, IQD, COP, IDR ...) CLDR gives the count used in practice,
which is below the ISO 4217 minor unit.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_SYMBOL = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CNY": "¥", "CHF": "CHF "}

MAX_MINOR = 10_000_000_00  # ten million in major units: anything above is a typo


def exponent(currency: str) -> int:
    """Decimals of ``currency`` (an ISO 4217 code the config has checked)."""
    from babel.numbers import get_currency_precision

    return get_currency_precision(currency.upper())


# What a person writes for an amount: digits with at most one decimal point ("12.50", "12", ".5");
# Decimal alone would also take "1e3", "NaN", "Infinity", "1_000" and " +5".
_PLAIN = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)")


def parse_amount(text: str, currency: str) -> int:
    """``"12.50"`` -> 1250 (for a 2-decimal currency).  Raises ValueError with the reason."""
    raw = str(text).strip()
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise ValueError(f"amount {text!r} is not a number") from None
    if not _PLAIN.fullmatch(raw):
        raise ValueError(f"amount {text!r} is not written as a plain amount: use digits and at most one decimal "
                         "point, e.g. 12.50 (no exponent, nan or inf)")
    if value <= 0:
        raise ValueError(f"amount {text!r} must be greater than zero")
    exp = exponent(currency)
    minor = value.scaleb(exp)
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {text!r} has more than {exp} decimal places for {currency}" if exp else
                         f"amount {text!r} has decimals, and {currency} has none: give a whole number")
    if minor > MAX_MINOR:
        raise ValueError(f"amount {text!r} is larger than this terminal accepts")
    return int(minor)


def format_amount(minor: int, currency: str) -> str:
    exp = exponent(currency)
    major = Decimal(minor).scaleb(-exp)
    text = f"{major:,.{exp}f}"
    sym = _SYMBOL.get(currency.upper())
    return f"{sym}{text}" if sym else f"{text} {currency.upper()}"


def to_decimal_str(minor: int, currency: str) -> str:
    exp = exponent(currency)
    return f"{Decimal(minor).scaleb(-exp):.{exp}f}"
