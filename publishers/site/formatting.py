"""Numbers, money, dates and billing periods as a page shows them, formatted by Babel for the page locale."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any, Literal

from babel import Locale
from babel.dates import format_date
from babel.numbers import format_decimal, parse_pattern

from compiler.catalog import BillingCycle
from compiler.money import Currency
from compiler.timeutil import zone


@cache
def locale_for(name: str) -> Locale:
    """A Babel locale; raises ValueError for a name CLDR does not know."""
    try:
        return Locale.parse(name)
    except Exception as exc:  # babel raises UnknownLocaleError or ValueError depending on the input
        raise ValueError(f"unknown locale {name!r}: use a CLDR locale such as en_IN, en_US or de_DE") from exc


@cache
def _currency_pattern(locale: str, fraction_digits: int) -> Any:
    # The locale's own currency pattern (symbol position, grouping: ₹1,49,900 vs 14.990 €) with the
    # number of decimals we choose, instead of Babel's default of the currency's ISO digits.
    pattern = copy.copy(parse_pattern(locale_for(locale).currency_formats["standard"].pattern))
    pattern.frac_prec = (fraction_digits, fraction_digits)
    return pattern


def format_money(
    amount: Decimal, currency: Currency, locale: str, decimals: Literal["auto", "always"] = "auto"
) -> str:
    """`₹1,499`, `18 €`, `$19.50`: `auto` hides the minor units on whole amounts, `always` shows them."""
    whole = amount == amount.to_integral_value()
    digits = 0 if decimals == "auto" and whole else currency.minor_units
    text: str = _currency_pattern(locale, digits).apply(
        amount, locale_for(locale), currency=currency.code, currency_digits=False
    )
    return text


def format_number(value: int | Decimal, locale: str) -> str:
    text: str = format_decimal(value, locale=locale_for(locale))
    return text


# The page's own words (`/ month`, `Until`, `2 months free`) are English, so dates spelled out in words
# use English with the locale's territory conventions (en_DE: `4 January 2028`), never a mix such as
# `Until 4. Januar 2028`. Numbers and money follow the page locale in full.
UI_LANGUAGE = "en"


@cache
def date_locale(locale: str) -> Locale:
    territory = locale_for(locale).territory
    if territory:
        try:
            return Locale.parse(f"{UI_LANGUAGE}_{territory}")
        except Exception:  # CLDR has no English for that territory: plain English
            pass
    return Locale.parse(UI_LANGUAGE)


def format_last_day(ends: datetime, zone_name: str, locale: str) -> str:
    """The last day a window covers, in `zone_name`: an end of `Nov 6 00:00` (exclusive) is Nov 5."""
    last = (ends - timedelta(microseconds=1)).astimezone(zone(zone_name))
    text: str = format_date(last.date(), format="long", locale=date_locale(locale))
    return text


def cycle_period(cycle: BillingCycle) -> str:
    """What one payment covers: `month`, `year`, `3 months`, `14 days`."""
    if cycle.unit == "month" and cycle.every % 12 == 0:
        years = cycle.every // 12
        return "year" if years == 1 else f"{years} years"
    if cycle.every == 1:
        return cycle.unit
    return f"{cycle.every} {cycle.unit}s"


def cycle_label(cycle: BillingCycle) -> str:
    """The toggle's wording: the configured label, else `Monthly` / `Annual` / `Every 3 months`."""
    if cycle.label:
        return cycle.label
    period = cycle_period(cycle)
    named = {"month": "Monthly", "year": "Annual", "day": "Daily"}
    return named.get(period, f"Every {period}")
