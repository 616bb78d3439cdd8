"""An outbox row → the variables its template sees: money and dates formatted for the customer's locale.

Payload contract per kind (what writers store in notifications.payload; absent keys render empty):

  price_change, grandfathering_executed
      {"items": [{"plan", "cycle", "currency", "old_amount_minor", "new_amount_minor", "direction",
                  "effective_at"}, …]}
  low_balance        {"balance", "allowance", "threshold_percent"}          (credits, integers)
  tokens_expired     {"credits", "expired_at"}
  promotion_started, promotion_ended   {"promotion", "starts_at", "ends_at"}
  payment_failed     {"amount_minor", "currency", "plan" | "package", "reason", "retry_at"}
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from babel.dates import format_date

from compiler.catalog import Catalog
from compiler.notification_kinds import KINDS, variables_of
from compiler.timeutil import zone
from publishers.site.formatting import date_locale, format_money, format_number

FALLBACK_LOCALE = "en_US"


@dataclass(frozen=True, slots=True)
class Recipient:
    customer_id: str | None
    email: str | None
    region: str | None


def locale_of(catalog: Catalog, recipient: Recipient, currency: str | None = None) -> str:
    """The customer's region locale; else that of a region selling in `currency`; else the default's."""
    regions = catalog.regions
    own = regions.get(recipient.region) if recipient.region else None
    if own is not None and own.locale:
        return own.locale
    for region in regions.values():
        if currency and region.currency == currency and region.locale:
            return region.locale
    default = regions.get(catalog.default_region)
    return default.locale if default is not None and default.locale else FALLBACK_LOCALE


def template_variables(
    catalog: Catalog, kind: str, payload: Mapping[str, Any], recipient: Recipient, notification_id: int
) -> dict[str, Any]:
    """Exactly the variables compiler.notification_kinds declares for `kind` (None where unknown)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    fmt = _Formatter(catalog, locale_of(catalog, recipient, _currency_of(payload)))
    values: dict[str, Any] = {
        "project_name": catalog.name or catalog.project,
        "customer": {"id": recipient.customer_id or "", "email": recipient.email or ""},
        "kind": kind,
        "notification_id": notification_id,
    }
    if kind in ("price_change", "grandfathering_executed"):
        items = [fmt.price_item(item) for item in payload.get("items") or [] if isinstance(item, Mapping)]
        first = items[0] if items else {}
        values["items"] = items
        for name in ("plan_name", "old_price", "new_price", "effective_date", "direction"):
            values[name] = first.get(name)
    elif kind == "low_balance":
        values["balance"] = fmt.number(payload.get("balance"))
        values["allowance"] = fmt.number(payload.get("allowance"))
        values["threshold_percent"] = fmt.number(payload.get("threshold_percent"))
    elif kind == "tokens_expired":
        values["credits"] = fmt.number(payload.get("credits"))
        values["expired_date"] = fmt.date(payload.get("expired_at"))
    elif kind in ("promotion_started", "promotion_ended"):
        promo_id = str(payload.get("promotion") or "")
        promo = catalog.promotions.get(promo_id)
        values["promotion"] = promo_id
        values["promotion_name"] = promo.name if promo is not None and promo.name else promo_id
        values["starts_date"] = fmt.date(payload.get("starts_at"))
        values["ends_date"] = fmt.date(payload.get("ends_at"))
    elif kind == "payment_failed":
        values["amount"] = fmt.money(payload.get("amount_minor"), payload.get("currency"))
        values["plan_name"] = fmt.product_name(payload)
        values["reason"] = payload.get("reason") or None
        values["retry_date"] = fmt.date(payload.get("retry_at"))
    declared = variables_of(kind)
    return {name: values.get(name) for name in declared}


def _currency_of(payload: Mapping[str, Any]) -> str | None:
    items = payload.get("items")
    if isinstance(items, list) and items and isinstance(items[0], Mapping):
        return str(items[0].get("currency") or "") or None
    currency = payload.get("currency")
    return str(currency) if currency else None


@dataclass(frozen=True, slots=True)
class _Formatter:
    catalog: Catalog
    locale: str

    def money(self, minor: Any, code: Any) -> str | None:
        if minor is None or not code:
            return None
        amount = Decimal(int(minor))
        currency = self.catalog.currencies.get(str(code))
        if currency is None:  # a currency the config no longer lists: plain but exact
            return f"{format_number(amount.scaleb(-2), self.locale)} {code}"
        return format_money(amount.scaleb(-currency.minor_units), currency, self.locale)

    def number(self, value: Any) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        return format_number(Decimal(str(value)), self.locale)

    def date(self, value: Any) -> str | None:
        if not value:
            return None
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        local = at.astimezone(zone(self.catalog.timezone))
        text: str = format_date(local.date(), format="long", locale=date_locale(self.locale))
        return text

    def plan_name(self, plan_id: Any) -> str | None:
        if not plan_id:
            return None
        plan = self.catalog.plans.get(str(plan_id))
        return plan.name if plan is not None else str(plan_id)

    def product_name(self, payload: Mapping[str, Any]) -> str | None:
        package = payload.get("package")
        if package:
            found = self.catalog.packages.get(str(package))
            return found.name if found is not None else str(package)
        return self.plan_name(payload.get("plan"))

    def price_item(self, item: Mapping[str, Any]) -> dict[str, Any]:
        code = item.get("currency")
        return {
            "plan": item.get("plan"),
            "plan_name": self.plan_name(item.get("plan")),
            "cycle": item.get("cycle"),
            "old_price": self.money(item.get("old_amount_minor"), code),
            "new_price": self.money(item.get("new_amount_minor"), code),
            "effective_date": self.date(item.get("effective_at")),
            "direction": item.get("direction"),
        }
