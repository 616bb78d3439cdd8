"""Exact money: Decimal amounts, per-currency precision and rounding, integer minor units."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, ROUND_HALF_EVEN, ROUND_HALF_UP, ROUND_UP, Context, Decimal
from functools import cache

# The database keeps every amount as integer minor units in a bigint column.
MAX_MINOR = 2**63 - 1

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

    @property
    def max_amount(self) -> Decimal:
        """The largest amount the database can store in this currency (MAX_MINOR minor units)."""
        return _max_amount(self.minor_units)

    def in_range(self, amount: Decimal) -> bool:
        """True when `amount` in minor units fits the database's bigint (`fits` is checked separately)."""
        # Decimal comparison is exact at any length, so this is safe before anything quantizes `amount`.
        return abs(amount) <= self.max_amount

    def fits(self, amount: Decimal) -> bool:
        """True when `amount` needs no more decimals than the currency has."""
        if not amount.is_finite():
            return False
        # Counted on the digits themselves: quantize raises InvalidOperation once the result would need
        # more digits than the decimal context's precision (28), as a 32-digit amount does.
        _sign, digits, exponent = amount.as_tuple()
        assert isinstance(exponent, int)  # finite, so not 'n', 'N' or 'F'
        significant = len(digits)
        while significant > 1 and digits[significant - 1] == 0:
            significant -= 1
        # 19.990 is 19990 × 10^-3: past its trailing zero two decimals matter, so it fits 2 minor units.
        return exponent + (len(digits) - significant) >= -self.minor_units or not any(digits)

    def to_minor(self, amount: Decimal) -> int:
        if not self.fits(amount):
            raise ValueError(f"{amount} {self.code} has more than {self.minor_units} decimal places")
        if not self.in_range(amount):
            raise ValueError(f"{amount} {self.code} is above the largest storable amount {self.max_amount}")
        return int(amount.scaleb(self.minor_units, _EXACT))

    def from_minor(self, minor: int) -> Decimal:
        return Decimal(minor).scaleb(-self.minor_units).quantize(self.quantum)


# Enough digits for any amount in range at any minor_units (19 digits of MAX_MINOR), so scaling is exact.
_EXACT = Context(prec=40)


@cache
def _max_amount(minor_units: int) -> Decimal:
    return Decimal(MAX_MINOR).scaleb(-minor_units, _EXACT)


@cache
def _quantum(minor_units: int) -> Decimal:
    # Asked for every amount read or checked (tens of thousands in a large catalog); Decimals are immutable.
    return Decimal(1).scaleb(-minor_units)


def plain(amount: Decimal) -> str:
    """An amount as users write it: `1499`, `19.99`, never `1.499E+3`."""
    # normalize() rounds to its context's precision; one as long as the amount keeps every digit.
    exact = Context(prec=max(1, len(amount.as_tuple().digits)))
    return format(amount.normalize(exact), "f")


def percent_change(old: Decimal, new: Decimal) -> Decimal | None:
    """Change from `old` to `new` in percent, one decimal; None when old is zero."""
    if old == 0:
        return None
    return ((new - old) / old * 100).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)
