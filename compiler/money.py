"""Exact money: Decimal amounts, per-currency precision and rounding, integer minor units."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Decimal
from functools import cache

ROUNDING_MODES = {
    "half_up": ROUND_HALF_UP,
    "half_even": ROUND_HALF_EVEN,
    "down": ROUND_DOWN,
    "up": ROUND_UP,
}


@dataclass(frozen=True, slots=True)
class Currency:
    code: str
    minor_units: int = 2
    rounding: str = "half_up"
    symbol: str | None = None
    usd_rate: Decimal | None = None

    @property
    def quantum(self) -> Decimal:
        return _quantum(self.minor_units)

    def round(self, amount: Decimal) -> Decimal:
        """Round a computed amount to this currency's minor unit with its rounding rule."""
        return amount.quantize(self.quantum, rounding=ROUNDING_MODES[self.rounding])

    def fits(self, amount: Decimal) -> bool:
        """True when `amount` needs no more decimals than the currency has."""
        return amount == amount.quantize(self.quantum, rounding=ROUND_DOWN)

    def to_minor(self, amount: Decimal) -> int:
        if not self.fits(amount):
            raise ValueError(f"{amount} {self.code} has more than {self.minor_units} decimal places")
        return int(amount.scaleb(self.minor_units))

    def from_minor(self, minor: int) -> Decimal:
        return Decimal(minor).scaleb(-self.minor_units).quantize(self.quantum)


@cache
def _quantum(minor_units: int) -> Decimal:
    # Asked for every amount read or checked (tens of thousands in a large catalog); Decimals are immutable.
    return Decimal(1).scaleb(-minor_units)


def plain(amount: Decimal) -> str:
    """An amount as users write it: `1499`, `19.99`, never `1.499E+3`."""
    return format(amount.normalize(), "f")


def percent_change(old: Decimal, new: Decimal) -> Decimal | None:
    """Change from `old` to `new` in percent, one decimal; None when old is zero."""
    if old == 0:
        return None
    return ((new - old) / old * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
