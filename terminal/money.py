"""Exact amounts: integer minor units, parsed and printed with Decimal, never float."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# ISO 4217 minor-unit exponents that differ from 2.
_EXPONENT = {"JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0, "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3}
_SYMBOL = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥", "CNY": "¥", "CHF": "CHF "}

MAX_MINOR = 10_000_000_00  # ten million in major units: anything above is a typo


def exponent(currency: str) -> int:
    return _EXPONENT.get(currency.upper(), 2)


def parse_amount(text: str, currency: str) -> int:
    """``"12.50"`` -> 1250 (for a 2-decimal currency).  Raises ValueError with the reason."""
    try:
        value = Decimal(str(text).strip())
    except InvalidOperation:
        raise ValueError(f"amount {text!r} is not a number") from None
    if not value.is_finite() or value <= 0:
        raise ValueError(f"amount {text!r} must be greater than zero")
    exp = exponent(currency)
    minor = value.scaleb(exp)
    if minor != minor.to_integral_value():
        raise ValueError(f"amount {text!r} has more than {exp} decimal places for {currency}")
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
