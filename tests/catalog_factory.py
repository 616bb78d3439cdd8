"""Small hand-built Catalogs for tests that need one without YAML or the compiler."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal

from compiler.catalog import (
    AIModel,
    BillingCycle,
    Card,
    Catalog,
    Discount,
    Feature,
    FeatureValue,
    Page,
    Plan,
    Policy,
    PoolTemplate,
    Price,
    Promotion,
    Region,
    Settings,
    Suppression,
    TokenPackage,
)
from compiler.money import Currency


def prices(cycle: str, amounts: dict[str, int | str], region: str | None = None) -> tuple[Price, ...]:
    return tuple(Price(cycle, currency, Decimal(str(amount)), region) for currency, amount in amounts.items())


def plan(
    plan_id: str = "pro",
    *,
    name: str | None = None,
    price_list: Iterable[Price] | None = None,
    features: dict[str, FeatureValue] | None = None,
    **fields: Any,
) -> Plan:
    default_prices = (*prices("monthly", {"INR": 1499, "USD": 19}), *prices("annual", {"INR": 14990}))
    return Plan(
        plan_id,
        name or plan_id.title(),
        features=features if features is not None else {"ai_chat": True, "strategies": 50},
        prices=tuple(price_list) if price_list is not None else default_prices,
        **fields,
    )


def make_catalog(
    *,
    plans: Iterable[Plan] | None = None,
    packages: Iterable[TokenPackage] | None = None,
    promotions: Iterable[Promotion] = (),
    pages: Iterable[Page] | None = None,
    price_limit: str | None = "25",
    severity: Literal["error", "warning", "off"] = "error",
    suppressions: Iterable[Suppression] = (),
) -> Catalog:
    """A two-currency, two-region catalog with one plan, one package, one model, one pool and one page."""
    policies = {}
    if price_limit is not None:
        policies["max_price_increase_percent"] = Policy(
            "max_price_increase_percent", severity, Decimal(price_limit)
        )
    return Catalog(
        project="demo",
        currencies={"INR": Currency("INR"), "USD": Currency("USD"), "EUR": Currency("EUR")},
        cycles={
            "monthly": BillingCycle("monthly", 1, "month"),
            "annual": BillingCycle("annual", 12, "month"),
        },
        regions={
            "IN": Region("IN", "INR", ("IN",), name="India"),
            "US": Region("US", "USD", ("US",), name="International"),
            "EU": Region("EU", "EUR", ("DE", "FR"), name="Europe"),
        },
        default_region="US",
        features={
            "ai_chat": Feature("ai_chat", "AI chat", "boolean"),
            "strategies": Feature("strategies", "Strategies", "number"),
            "exports": Feature("exports", "Exports", "set", values=("pine", "json", "pdf")),
            "support": Feature("support", "Support", "enum", values=("community", "email", "priority")),
        },
        plans={p.id: p for p in (plans if plans is not None else [plan()])},
        packages={p.id: p for p in (packages if packages is not None else [package()])},
        models={
            "gpt-4": AIModel(
                "gpt-4", "openai", "USD", Decimal("0.03"), Decimal("0.06"), Decimal(10), Decimal(20)
            )
        },
        pools={"team": PoolTemplate("team", "Team pool", ("pro",), max_members=10)},
        promotions={p.id: p for p in promotions},
        pages={p.id: p for p in (pages if pages is not None else [page()])},
        settings=Settings(policies=policies, suppressions=tuple(suppressions)),
    )


def package(
    package_id: str = "extra-500", *, amounts: dict[str, int | str] | None = None, **fields: Any
) -> TokenPackage:
    return TokenPackage(
        package_id, "500 extra credits", 500, prices("once", amounts or {"INR": 499, "USD": 6}), **fields
    )


def promotion(promotion_id: str = "diwali-2026", **fields: Any) -> Promotion:
    return Promotion(promotion_id, "Diwali", Discount("percent_off", percent=Decimal(30)), **fields)


def page(page_id: str = "pricing", *, headline: str = "Build strategies with AI", **fields: Any) -> Page:
    return Page(page_id, headline, (Card("pro", tagline="For traders"),), **fields)


def with_plan(catalog: Catalog, plan_id: str = "pro", **changes: Any) -> Catalog:
    """`catalog` with fields of one plan replaced (fingerprint cleared so the diff recomputes it)."""
    updated = dataclasses.replace(catalog.plans[plan_id], **changes)
    return dataclasses.replace(catalog, plans={**catalog.plans, plan_id: updated}, fingerprint="")


def with_prices(catalog: Catalog, plan_id: str, *replacements: Price) -> Catalog:
    """Replace amounts of existing prices (same cycle/currency/region) or add new ones."""
    current = {p.key: p for p in catalog.plans[plan_id].prices}
    for price in replacements:
        current[price.key] = price
    return with_plan(catalog, plan_id, prices=tuple(current.values()))


def without_prices(catalog: Catalog, plan_id: str, *keys: str) -> Catalog:
    kept = tuple(p for p in catalog.plans[plan_id].prices if p.key not in keys)
    return with_plan(catalog, plan_id, prices=kept)


def replace(catalog: Catalog, **changes: Any) -> Catalog:
    return dataclasses.replace(catalog, fingerprint="", **changes)
