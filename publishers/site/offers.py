"""Which promotions a public pricing page shows, and the prices they give.

A public page is seen by anonymous visitors, so only promotions anyone could get count: no code to
enter, no segment, customer list or plan held, open to new customers, in the page's region, and running
at the preview moment (yearly windows recur in their own time zone).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from decimal import Decimal

from compiler.catalog import Discount, Promotion, Schedule
from compiler.money import Currency
from compiler.timeutil import zone

PRICE_KINDS = ("percent_off", "amount_off", "fixed_price")


@dataclass(frozen=True, slots=True)
class ActiveOffer:
    """A promotion running now, with the window it runs in (this year's window for yearly ones)."""

    promotion: Promotion
    starts: datetime | None
    ends: datetime | None


def _shift_years(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February in a year without one; PostgreSQL's `+ interval` also gives the 28th
        return moment.replace(year=moment.year + years, day=28)


def _wall_clock(moment: datetime, local: tzinfo) -> datetime:
    """`moment AT TIME ZONE local` in PostgreSQL: the naive local date and time."""
    return moment.astimezone(local).replace(tzinfo=None)


def _instant(wall: datetime, local: tzinfo) -> datetime:
    """`wall AT TIME ZONE local` in PostgreSQL: a local time read as an instant the way the server does.

    A time repeated when clocks go back takes the offset after the change (fold=1); a time skipped when
    they go forward takes the offset before it (fold=0). Python's default (fold=0) differs in the first
    case, and then the page would open or close an hour away from checkout.
    """
    earlier, later = wall.replace(tzinfo=local, fold=0), wall.replace(tzinfo=local, fold=1)
    # Through UTC: astimezone() into the datetime's own zone returns it unchanged, even in a gap.
    repeated = earlier.utcoffset() != later.utcoffset() and _wall_clock(later.astimezone(UTC), local) == wall
    # Back through UTC so the result carries the fold that matches its offset.
    return (later if repeated else earlier).astimezone(UTC).astimezone(local)


def current_window(
    schedule: Schedule, at: datetime, default_zone: str
) -> tuple[datetime | None, datetime | None] | None:
    """The window of `schedule` that contains `at` (starts inclusive, ends exclusive), or None.

    Yearly windows follow SQL promotion_window() (migration 0006) step by step, so the page shows an offer
    exactly when checkout gives it: the years are counted on the promotion's local calendar, a window
    crossing New Year belongs to the year it starts in, and the dates shift in local time (a DST change
    between years moves the UTC instant, not the wall-clock time).
    """
    starts, ends = schedule.starts, schedule.ends
    if schedule.yearly and starts is not None and ends is not None:
        local = zone(schedule.timezone or default_zone)
        first_start, first_end = _wall_clock(starts, local), _wall_clock(ends, local)
        now = _wall_clock(at, local)
        years = now.year - first_start.year
        # The first of last year's, this year's and next year's windows that has not ended yet.
        for offset in (years - 1, years, years + 1):
            if offset < 0 or now >= _shift_years(first_end, offset):
                continue
            starts = _instant(_shift_years(first_start, offset), local)
            ends = _instant(_shift_years(first_end, offset), local)
            break
    if (starts is not None and at < starts) or (ends is not None and at >= ends):
        return None
    return starts, ends


def is_public(promotion: Promotion, region: str) -> bool:
    """Whether any visitor in `region` gets the promotion without a code or being on a list."""
    rules = promotion.eligibility
    return (
        promotion.status == "active"
        and promotion.auto_applies
        and not promotion.is_bundle
        and rules.customers in ("new", "any")
        and not (rules.segments or rules.customers_file or rules.customer_ids or rules.plans_held)
        and (not rules.regions or region in rules.regions)
    )


def public_offers(
    promotions: Mapping[str, Promotion], region: str, at: datetime, default_zone: str
) -> tuple[ActiveOffer, ...]:
    """The public promotions running at `at` in `region`, by id."""
    offers = []
    for promotion in sorted(promotions.values(), key=lambda p: p.id):
        if not is_public(promotion, region):
            continue
        window = current_window(promotion.schedule, at, default_zone)
        if window is not None:
            offers.append(ActiveOffer(promotion, *window))
    return tuple(offers)


def covers(promotion: Promotion, plan: str, cycle: str | None) -> bool:
    target = promotion.applies_to
    return plan in target.plans and (cycle is None or not target.cycles or cycle in target.cycles)


def apply_discount(amount: Decimal, discount: Discount, currency: Currency) -> Decimal | None:
    """The price after `discount`, never below zero; None when it gives nothing.

    Computed as checkout's SQL quote() (migration 0006) computes a discount step, so the page never shows
    a price one minor unit away from the charge: the amount taken off is what gets rounded, with the
    currency's rule, and then subtracted (rounding the final price instead differs at exactly half a
    minor unit: INR 1499 at 12.5 % off is 1311.62, not 1311.63).
    """
    if discount.kind == "percent_off" and discount.percent is not None:
        off = min(currency.round(amount * discount.percent / Decimal(100)), amount)
    elif discount.kind == "amount_off" and currency.code in discount.amounts:
        off = min(discount.amounts[currency.code], amount)
    elif discount.kind == "fixed_price" and currency.code in discount.amounts:
        off = max(amount - discount.amounts[currency.code], Decimal(0))
    else:
        return None  # not a price discount, or none configured in this currency
    return currency.round(amount - off) if off > 0 else None


def best_price(
    amount: Decimal, currency: Currency, offers: tuple[ActiveOffer, ...]
) -> tuple[Decimal, tuple[ActiveOffer, ...]]:
    """The lowest price the offers give and the offers that give it (empty: the list price stands).

    Stackable offers apply in ascending priority, each on the price the previous one left; an exclusive
    offer applies alone. The customer gets whichever of these options is cheapest.
    """
    options: list[tuple[Decimal, tuple[ActiveOffer, ...]]] = []
    price, stacked = amount, []
    for offer in sorted(
        (o for o in offers if o.promotion.stackable), key=lambda o: (o.promotion.priority, o.promotion.id)
    ):
        reduced = apply_discount(price, offer.promotion.discount, currency)
        if reduced is not None:
            price = reduced
            stacked.append(offer)
    if stacked:
        options.append((price, tuple(stacked)))
    for offer in offers:
        if offer.promotion.stackable:
            continue
        reduced = apply_discount(amount, offer.promotion.discount, currency)
        if reduced is not None:
            options.append((reduced, (offer,)))
    if not options:
        return amount, ()
    # Ties go to fewer promotions, then to the first ids: the same input always shows the same badge.
    return min(options, key=lambda o: (o[0], len(o[1]), [x.promotion.id for x in o[1]]))


def extra_trial_days(offers: tuple[ActiveOffer, ...], plan: str) -> int:
    """The longest public trial extension running for `plan` (trial offers do not add up)."""
    return max(
        (
            o.promotion.discount.days or 0
            for o in offers
            if o.promotion.discount.kind == "extra_trial_days" and covers(o.promotion, plan, None)
        ),
        default=0,
    )
