"""Realistic payloads for `tariff notify preview`, drawn from the catalog being previewed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from compiler.catalog import Catalog, Price
from publishers.notify.context import Recipient

SAMPLE_RECIPIENT = Recipient("cus_sample", "asha@example.com", None)


def sample_payload(catalog: Catalog, kind: str, now: datetime | None = None) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    region = catalog.regions.get(catalog.default_region)
    currency = region.currency if region is not None else next(iter(catalog.currencies), "USD")
    plan_id, price = _priced_plan(catalog, currency)
    minor_units = catalog.currencies[currency].minor_units if currency in catalog.currencies else 2
    old_minor = int(price.amount.scaleb(minor_units)) if price else 149900
    new_minor = int((Decimal(old_minor) * Decimal("1.2")).to_integral_value())
    in_30_days = (now + timedelta(days=30)).isoformat()
    promo_id = next(iter(catalog.promotions), "launch")
    match kind:
        case "price_change" | "grandfathering_executed":
            return {
                "items": [
                    {
                        "subscription": "sub_sample",
                        "plan": plan_id,
                        "cycle": price.cycle if price else "monthly",
                        "currency": currency,
                        "old_amount_minor": old_minor,
                        "new_amount_minor": new_minor,
                        "direction": "increase",
                        "effective_at": in_30_days if kind == "price_change" else now.isoformat(),
                    }
                ]
            }
        case "low_balance":
            return {"balance": 180, "allowance": 1000, "threshold_percent": 20}
        case "tokens_expired":
            return {"credits": 420, "expired_at": now.isoformat()}
        case "boost_ended":
            return {
                "grant": 1,
                "amount": 500,
                "unused": 120,
                "started_at": (now - timedelta(days=2)).isoformat(),
                "ended_at": now.isoformat(),
                "reason": "service outage on 12 March",
            }
        case "package_renewal_due":
            packages = list(catalog.packages.values())
            package = next((p for p in packages if p.auto_renew), packages[0] if packages else None)
            return {
                "order": 1,
                "package": package.id if package else "extra-500",
                "tokens": package.tokens if package else 500,
                "reason": "exhausted",
                "due_at": now.isoformat(),
            }
        case "usage_anomaly":
            return {
                "customer": "cus_sample",
                "model": next(iter(catalog.models), "gpt-4o"),
                "day": (now - timedelta(days=1)).date().isoformat(),
                "credits": 4800,
                "usual": 600,
                "history_days": 8,
                "ratio": 8,
                "score": 21.4,
            }
        case "promotion_started" | "promotion_ended":
            return {"promotion": promo_id, "starts_at": now.isoformat(), "ends_at": in_30_days}
        case "payment_failed":
            return {
                "amount_minor": old_minor,
                "currency": currency,
                "plan": plan_id,
                "reason": "card declined by the issuing bank",
                "retry_at": (now + timedelta(days=3)).isoformat(),
            }
    raise ValueError(f"unknown notification kind {kind!r}")


def _priced_plan(catalog: Catalog, currency: str) -> tuple[str, Price | None]:
    """The first plan with a non-zero price in `currency` (a paid plan reads like a real notice)."""
    for plan in catalog.plans.values():
        for price in plan.prices:
            if price.currency == currency and price.amount > 0 and price.region is None:
                return plan.id, price
    return next(iter(catalog.plans), "pro"), None
