"""Checks across promotions: code clashes, stacking conflicts, and the discount and end-date policies."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from itertools import combinations

from compiler.build_settings import ProjectSettings
from compiler.catalog import Plan, Promotion, TokenPackage
from compiler.context import BuildContext
from compiler.money import plain
from compiler.yaml_loader import LoadedDocument

_FAR_PAST = datetime.fromisoformat("0001-01-02T00:00:00+00:00")
_FAR_FUTURE = datetime.fromisoformat("9999-12-30T00:00:00+00:00")


def check_promotions(
    ctx: BuildContext,
    promotions: dict[str, Promotion],
    docs: dict[str, LoadedDocument],
    plans: dict[str, Plan],
    packages: dict[str, TokenPackage],
    project: ProjectSettings,
) -> None:
    codes: dict[str, str] = {}
    for promo in promotions.values():
        doc = docs[promo.id]
        if promo.vanity_code:
            if promo.vanity_code in codes:
                ctx.error(
                    doc,
                    ("codes", "vanity"),
                    "codes.duplicate",
                    f"code {promo.vanity_code} is already used by promotion {codes[promo.vanity_code]!r}",
                    hint="codes are case-insensitive and unique across all promotions",
                )
            codes[promo.vanity_code] = promo.id
        if promo.status == "active":
            _special_price_below_list(ctx, doc, promo, plans, packages)
            _discount_policy(ctx, doc, promo, plans, packages)
            written_end = isinstance(doc.data.get("schedule"), dict) and "ends" in doc.data["schedule"]
            if promo.schedule.ends is None and not promo.schedule.yearly and not written_end:
                ctx.policy(
                    "promotion_without_end",
                    f"promotion:{promo.id}",
                    doc,
                    ("schedule",),
                    f"promotion {promo.id!r} has no end date",
                    hint="add schedule.ends, or suppress with a reason if it is meant to run forever",
                )
    prefixes = {
        p.id: p.code_batch.prefix for p in promotions.values() if p.code_batch and p.code_batch.prefix
    }
    for (first, first_prefix), (second, second_prefix) in combinations(sorted(prefixes.items()), 2):
        if first_prefix.startswith(second_prefix) or second_prefix.startswith(first_prefix):
            ctx.warning(
                docs[second],
                ("codes", "generate", "prefix"),
                "codes.prefix-overlap",
                f"prefix {second_prefix!r} overlaps {first_prefix!r} of promotion {first!r}",
                hint="codes stay unique either way, but distinct prefixes tell support which offer a "
                "code belongs to",
            )
    _stacking(ctx, [p for p in promotions.values() if p.status == "active"], docs, project)


def _list_prices(
    promo: Promotion, plans: dict[str, Plan], packages: dict[str, TokenPackage]
) -> dict[str, list[tuple[str, Decimal]]]:
    """The list prices the promotion's per-currency amounts act on: currency → [(what, amount)], where
    `what` names the item as a person reads it (`plan 'pro' monthly`, `package 'extra-500' in region EU`)."""
    discount = promo.discount
    list_prices: dict[str, list[tuple[str, Decimal]]] = {}
    if promo.is_bundle:
        for currency in discount.amounts:
            total = Decimal(0)
            for item in promo.applies_to.bundle:
                price = None
                if item.plan and item.plan in plans and item.cycle:
                    price = plans[item.plan].price(item.cycle, currency)
                elif item.package and item.package in packages:
                    price = packages[item.package].price(currency)
                if price is None:
                    break
                total += price.amount * item.quantity
            else:
                list_prices[currency] = [(f"bundle {promo.id!r} (its parts together)", total)]
        return list_prices
    for plan_id in promo.applies_to.plans:
        for price in plans[plan_id].prices if plan_id in plans else ():
            if not promo.applies_to.cycles or price.cycle in promo.applies_to.cycles:
                list_prices.setdefault(price.currency, []).append(
                    (f"plan {plan_id!r} {price.cycle}{_in_region(price.region)}", price.amount)
                )
    for package_id in promo.applies_to.packages:
        for price in packages[package_id].prices if package_id in packages else ():
            list_prices.setdefault(price.currency, []).append(
                (f"package {package_id!r}{_in_region(price.region)}", price.amount)
            )
    return list_prices


def _in_region(region: str | None) -> str:
    return f" in region {region}" if region else ""


def _max_percent(
    promo: Promotion, plans: dict[str, Plan], packages: dict[str, TokenPackage]
) -> Decimal | None:
    """The largest discount the promotion gives against any list price it applies to, in percent."""
    discount = promo.discount
    if discount.kind == "percent_off":
        return discount.percent
    if discount.kind not in ("amount_off", "fixed_price"):
        return None
    list_prices = _list_prices(promo, plans, packages)
    worst: Decimal | None = None
    for currency, amount in discount.amounts.items():
        for _what, listed in list_prices.get(currency, []):
            if listed <= 0:
                continue
            off = amount if discount.kind == "amount_off" else listed - amount
            # A special price at or above the list price counts as 0 % here; _special_price_below_list
            # reports it as the error it is.
            percent = max(Decimal(0), min(off, listed)) / listed * 100
            worst = percent if worst is None else max(worst, percent)
    return worst


def _special_price_below_list(
    ctx: BuildContext,
    doc: LoadedDocument,
    promo: Promotion,
    plans: dict[str, Plan],
    packages: dict[str, TokenPackage],
) -> None:
    """A `fixed_price` must be below every list price it replaces.

    An error, as for other targets the promotion can never discount (a cycle none of its plans is sold,
    a retired plan): at checkout such a price saves nothing, yet redeem() still records the redemption,
    so a customer uses up their `per_customer` place, a single-use code and a `max_redemptions` place
    for no saving.
    """
    if promo.discount.kind != "fixed_price":
        return
    list_prices = _list_prices(promo, plans, packages)
    for currency, special in promo.discount.amounts.items():
        not_below = [(what, listed) for what, listed in list_prices.get(currency, []) if special >= listed]
        if not not_below:
            continue
        where = ", ".join(f"{what} ({plain(listed)} {currency})" for what, listed in not_below)
        lowest = min(listed for _what, listed in not_below)
        ctx.error(
            doc,
            ("discount", "fixed_price", currency),
            "promotion.price-not-below-list",
            f"special price {plain(special)} {currency} is not below the list price of {where}",
            expected=f"a {currency} price below {plain(lowest)}",
            hint=f"lower the {currency} fixed_price below {plain(lowest)} {currency}"
            + ("" if promo.is_bundle else ", or narrow applies_to so it leaves out what it cannot discount"),
        )


def _discount_policy(
    ctx: BuildContext,
    doc: LoadedDocument,
    promo: Promotion,
    plans: dict[str, Plan],
    packages: dict[str, TokenPackage],
) -> None:
    policy = ctx.policies.get("max_discount_percent")
    if policy is None or policy.limit is None:
        return
    percent = _max_percent(promo, plans, packages)
    if percent is not None and percent > policy.limit:
        if promo.approval and (
            promo.approval.up_to_percent is None or promo.approval.up_to_percent >= percent
        ):
            return
        ctx.policy(
            "max_discount_percent",
            f"promotion:{promo.id}",
            doc,
            ("discount",),
            f"promotion {promo.id!r} gives up to {percent.quantize(Decimal('0.1'))}% off, above the "
            f"{policy.limit}% limit",
            hint="lower the discount, or add `approval:` with approved_by and reason",
        )


def _window(promo: Promotion) -> tuple[datetime, datetime]:
    return promo.schedule.starts or _FAR_PAST, promo.schedule.ends or _FAR_FUTURE


def _targets(promo: Promotion, plans: dict[str, Plan] | None = None) -> set[str]:
    del plans
    cycles = promo.applies_to.cycles or ("*",)
    items = {f"plan:{p}/{c}" for p in promo.applies_to.plans for c in cycles}
    items |= {f"package:{p}" for p in promo.applies_to.packages}
    return items


def _overlap(first: set[str], second: set[str]) -> set[str]:
    common = first & second
    for item in first:
        if item.endswith("/*"):
            base = item[:-1]
            common |= {other for other in second if other.startswith(base)}
    for item in second:
        if item.endswith("/*"):
            base = item[:-1]
            common |= {other for other in first if other.startswith(base)}
    return common


def _audiences_overlap(first: Promotion, second: Promotion) -> bool:
    """Whether one customer could be eligible for both; targeted offers count as reaching different people."""
    one, two = first.eligibility, second.eligibility
    if (
        one.segments
        or two.segments
        or one.customer_ids
        or two.customer_ids
        or one.plans_held
        or two.plans_held
    ):
        return False
    if {one.customers, two.customers} == {"new", "existing"}:
        return False
    regions_a, regions_b = set(one.regions), set(two.regions)
    return not regions_a or not regions_b or bool(regions_a & regions_b)


def _stacking(
    ctx: BuildContext, promotions: list[Promotion], docs: dict[str, LoadedDocument], project: ProjectSettings
) -> None:
    del project
    ordered = sorted(promotions, key=lambda p: p.id)
    # Only two auto-applied, non-bundle, non-yearly promotions that name the same plan or package can
    # conflict (recurring windows are compared at quote time, year by year). Pair up just those, in the
    # order of combinations(ordered, 2), instead of comparing every pair: thousands of promotions make
    # millions of pairs.
    targets: dict[int, set[str]] = {}
    by_owner: dict[str, set[int]] = {}
    for index, promo in enumerate(ordered):
        if promo.is_bundle or not promo.auto_applies or promo.schedule.yearly:
            continue
        targets[index] = _targets(promo)
        for item in targets[index]:
            by_owner.setdefault(item.split("/", 1)[0], set()).add(index)
    pairs = sorted({pair for owners in by_owner.values() for pair in combinations(sorted(owners), 2)})
    for first_index, second_index in pairs:
        first, second = ordered[first_index], ordered[second_index]
        start_a, end_a = _window(first)
        start_b, end_b = _window(second)
        if not (start_a < end_b and start_b < end_a) or not _audiences_overlap(first, second):
            continue
        common = _overlap(targets[first_index], targets[second_index])
        if not common:
            continue
        where = ", ".join(sorted(common))
        if first.stackable and second.stackable and first.priority == second.priority:
            ctx.warning(
                docs[second.id],
                ("stacking", "priority"),
                "promotion.stacking-order",
                f"stacks with {first.id!r} on {where} at the same priority {first.priority}: "
                "the order of the two discounts is ambiguous",
                hint="give them different priorities",
            )
        elif not (first.stackable and second.stackable):
            ctx.warning(
                docs[second.id],
                ("stacking",),
                "promotion.stacking-conflict",
                f"applies automatically to {where} at the same time as {first.id!r}, and at least one "
                "of them is exclusive: only the better offer for the customer applies",
                hint="make both stackable, narrow their targets, or separate their schedules",
            )
