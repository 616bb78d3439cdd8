"""How one cell reads as text (terminal, CSV, HTML) and as JSON — the same figures in every format."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from analytics.model import Column, Section

_CENT = Decimal("0.01")
_PERCENT_PLACES = Decimal("0.1")
# Spreadsheets read a cell starting with one of these as a formula (tab and CR can hide a formula after
# them). Report text carries customer-controlled strings (ids, names), so such text must never become one.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def starts_like_formula(text: str) -> bool:
    return text.startswith(FORMULA_TRIGGERS)


def spreadsheet_text(text: str) -> str:
    """Text a spreadsheet opening a CSV shows as text: a leading apostrophe (OWASP's CSV-injection
    advice) defuses a cell that would otherwise be evaluated, e.g. `=HYPERLINK(…)` or `+91…`."""
    return f"'{text}" if starts_like_formula(text) else text


def plain(column: Column, value: object) -> str:
    """Machine-friendly text: CSV cells. Full precision for money, fraction for percent, ISO dates;
    text that a spreadsheet would evaluate as a formula is defused (numbers, even negative, stay as is)."""
    if value is None:
        return ""
    if column.kind == "money" and isinstance(value, Decimal | int):
        return str(Decimal(value).quantize(_CENT, ROUND_HALF_UP))
    if column.kind == "datetime" and isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return spreadsheet_text(value)
    return str(value)


def display(section: Section, column: Column, row: tuple[object, ...], value: object) -> str:
    """Human text: grouped thousands, money with its currency, percent as 12.5 %."""
    if value is None:
        return ""
    kind = column.kind
    if kind == "money" and isinstance(value, Decimal | int):
        amount = f"{Decimal(value).quantize(_CENT, ROUND_HALF_UP):,}"
        currency = section.currency_of(column, row)
        return f"{amount} {currency}" if currency else amount
    if kind == "percent" and isinstance(value, Decimal | int):
        return f"{(Decimal(value) * 100).quantize(_PERCENT_PLACES, ROUND_HALF_UP)} %"
    if kind == "int" and isinstance(value, int):
        return f"{value:,}"
    if kind == "decimal" and isinstance(value, Decimal):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}" if value else "0"
    if kind == "datetime" and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def to_json(column: Column, value: object) -> object:
    """JSON cell: numbers stay exact (Decimal as a string), dates ISO 8601."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return plain(column, value) if column.kind == "money" else str(value)
    if isinstance(value, int | str):
        return value
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def number(value: object) -> float:
    """A chart coordinate (drawing only; figures shown as text never go through float)."""
    if isinstance(value, Decimal | int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0
