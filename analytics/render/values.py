"""How one cell reads as text (terminal, CSV, HTML) and as JSON — the same figures in every format."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

from analytics.model import Column, Section

_CENT = Decimal("0.01")
_PERCENT_PLACES = Decimal("0.1")


def plain(column: Column, value: object) -> str:
    """Machine-friendly text: CSV cells. Full precision for money, fraction for percent, ISO dates."""
    if value is None:
        return ""
    if column.kind == "money" and isinstance(value, Decimal | int):
        return str(Decimal(value).quantize(_CENT, ROUND_HALF_UP))
    if column.kind == "datetime" and isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
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
