"""Price blocks shared by plans and packages: `{INR: 1499, by_region: {EU: {EUR: 18}}}` → Price rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from compiler.build_settings import ProjectSettings
from compiler.catalog import Price
from compiler.context import BuildContext
from compiler.money import MAX_MINOR, Currency, plain
from compiler.yaml_loader import LoadedDocument, PathKey


def check_amount(
    ctx: BuildContext,
    doc: LoadedDocument,
    path: PathKey,
    currency_code: str,
    amount: Any,
    currencies: dict[str, Currency],
) -> Decimal | None:
    currency = currencies.get(currency_code)
    if currency is None:
        ctx.unknown(doc, path, "currency", currency_code, currencies, declared_in="tariff.yaml `currencies`")
        return None
    value = Decimal(amount)
    # Before the precision check, whose suggested rounding cannot be computed for an amount this long.
    if not currency.in_range(value):
        ctx.error(
            doc,
            path,
            "money.range",
            f"{plain(value)} {currency_code} is more than the database can store",
            expected=f"at most {plain(currency.max_amount)} {currency_code} (amounts are stored as "
            f"{MAX_MINOR} minor units at most, a bigint)",
            hint=f"write at most {plain(currency.max_amount)} (a typo? count the digits)",
        )
        return None
    if not currency.fits(value):
        ctx.error(
            doc,
            path,
            "money.precision",
            f"{plain(value)} {currency_code} has more than {currency.minor_units} decimal place(s)",
            hint=f"{currency_code} amounts have {currency.minor_units} decimals: write "
            f"{currency.round(value)}",
        )
        return None
    return value


def build_price_block(
    ctx: BuildContext,
    doc: LoadedDocument,
    path: PathKey,
    cycle: str,
    block: dict[str, Any],
    project: ProjectSettings,
) -> list[Price]:
    prices: list[Price] = []
    for code, amount in block.items():
        if code == "by_region":
            continue
        value = check_amount(ctx, doc, (*path, code), code, amount, project.currencies)
        if value is not None:
            prices.append(Price(cycle, code, value))
    for region_code, amounts in (block.get("by_region") or {}).items():
        region = project.regions.get(region_code)
        if region is None:
            ctx.unknown(
                doc,
                (*path, "by_region", region_code),
                "region",
                region_code,
                project.regions,
                declared_in="tariff.yaml `regions`",
            )
            continue
        allowed = {region.currency, region.fallback_currency} - {None}
        for code, amount in amounts.items():
            where = (*path, "by_region", region_code, code)
            if code not in allowed:
                ctx.error(
                    doc,
                    where,
                    "price.region-currency",
                    f"region {region_code} is charged in {region.currency}, not {code}",
                    hint=f"give the {region_code} price in {region.currency}",
                )
                continue
            value = check_amount(ctx, doc, where, code, amount, project.currencies)
            if value is not None:
                prices.append(Price(cycle, code, value, region_code))
    return prices


def missing_region_prices(prices: list[Price], cycles: list[str], project: ProjectSettings) -> list[str]:
    """Regions × cycles with no price in the region's currency or its fallback currency."""
    missing = []
    priced = {(p.cycle, p.currency, p.region) for p in prices}  # one set, not a scan per region × cycle
    for cycle in cycles:
        for region in project.regions.values():

            def has(currency: str | None, cycle: str = cycle, region_code: str = region.code) -> bool:
                return (cycle, currency, None) in priced or (cycle, currency, region_code) in priced

            if not has(region.currency) and not (region.fallback_currency and has(region.fallback_currency)):
                missing.append(f"{cycle} in {region.code} ({region.currency})")
    return missing
