"""An outbox row → the variables its template sees: money and dates formatted for the customer's locale.

Payload contract per kind (what writers store in notifications.payload; absent keys render empty):

  price_change, grandfathering_executed
      {"items": [{"plan", "cycle", "currency", "old_amount_minor", "new_amount_minor", "direction",
                  "effective_at"}, …]}
  low_balance        {"usable" (or "balance"), "allowance", "threshold_percent"}   (credits, integers)
  tokens_expired     {"credits", "expired_at"}
  boost_ended        {"grant", "amount", "unused", "started_at", "ended_at", "reason"}
  package_renewal_due  {"order", "package", "tokens", "reason", "due_at"}
  usage_anomaly      {"customer", "model", "day", "credits", "usual", "history_days", "ratio", "score"}
                     (to admins: "customer" is the customer whose usage is unusual, "day" a date)
  promotion_started, promotion_ended   {"promotion", "starts_at", "ends_at"}
  payment_failed     {"amount_minor" | "amount" (text in major units), "currency",
                      "plan" | "package" | "item", "error" (the provider's reason), "retry_at",
                      "grace_ends_at"}; settle_payment writes
                     txnid, amount, currency, item and error; dunning reminders reason (the case's, not the
                     provider's), reminder, plan, amount, currency and grace_ends_at; the last dunning
                     notice final, plan and what happened to the subscription (no amount)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
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
        # tick_low_balance stores the credits still usable as "usable"; "balance" is the older name.
        values["balance"] = fmt.number(payload.get("usable", payload.get("balance")))
        values["allowance"] = fmt.number(payload.get("allowance"))
        values["threshold_percent"] = fmt.number(payload.get("threshold_percent"))
    elif kind == "tokens_expired":
        values["credits"] = fmt.number(payload.get("credits"))
        values["expired_date"] = fmt.date(payload.get("expired_at"))
    elif kind == "boost_ended":
        values["credits"] = fmt.number(payload.get("amount"))
        values["unused"] = fmt.number(payload.get("unused"))
        values["started_date"] = fmt.date(payload.get("started_at"))
        values["ended_date"] = fmt.date(payload.get("ended_at"))
        values["reason"] = payload.get("reason") or None
    elif kind == "package_renewal_due":
        package_id = str(payload.get("package") or "")
        package = catalog.packages.get(package_id)
        values["package"] = package_id
        values["package_name"] = package.name if package is not None else package_id
        values["credits"] = fmt.number(payload.get("tokens"))
        values["reason"] = payload.get("reason") or None
        values["due_date"] = fmt.date(payload.get("due_at"))
    elif kind == "usage_anomaly":
        values["usage_customer"] = payload.get("customer")
        values["model"] = payload.get("model")
        values["day"] = fmt.day(payload.get("day"))
        values["credits"] = fmt.number(payload.get("credits"))
        values["usual"] = fmt.number(payload.get("usual"))
        values["ratio"] = fmt.number(payload.get("ratio"), places=1)
        values["history_days"] = payload.get("history_days")
    elif kind in ("promotion_started", "promotion_ended"):
        promo_id = str(payload.get("promotion") or "")
        promo = catalog.promotions.get(promo_id)
        values["promotion"] = promo_id
        values["promotion_name"] = promo.name if promo is not None and promo.name else promo_id
        values["starts_date"] = fmt.date(payload.get("starts_at"))
        values["ends_date"] = fmt.date(payload.get("ends_at"))
    elif kind == "payment_failed":
        if payload.get("amount_minor") is not None:
            values["amount"] = fmt.money(payload.get("amount_minor"), payload.get("currency"))
        else:
            values["amount"] = fmt.major_money(payload.get("amount"), payload.get("currency"))
        values["plan_name"] = fmt.product_name(payload) or payload.get("item") or None
        # A dunning notice's "reason" is its case's (payment_failed), not words from the provider.
        dunning = "reminder" in payload or "final" in payload
        values["reason"] = payload.get("error") or (None if dunning else payload.get("reason")) or None
        values["retry_date"] = fmt.date(payload.get("retry_at"))
        values["grace_date"] = fmt.date(payload.get("grace_ends_at"))
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

    def major_money(self, amount: Any, code: Any) -> str | None:
        """An amount written in major units as text ("1768.82", how PayU and the dunning notices carry it)."""
        if amount is None or amount == "" or not code:
            return None
        currency = self.catalog.currencies.get(str(code))
        units = currency.minor_units if currency is not None else 2
        return self.money(Decimal(str(amount)).scaleb(units).to_integral_value(), code)

    def number(self, value: Any, places: int | None = None) -> str | None:
        if value is None or isinstance(value, bool):
            return None
        amount = Decimal(str(value))
        if places is not None:
            # A ratio such as 5.333… reads as 5.3; credits are whole and keep every digit.
            amount = amount.quantize(Decimal(1).scaleb(-places))
        return format_number(amount, self.locale)

    def date(self, value: Any) -> str | None:
        if not value:
            return None
        at = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        local = at.astimezone(zone(self.catalog.timezone))
        text: str = format_date(local.date(), format="long", locale=date_locale(self.locale))
        return text

    def day(self, value: Any) -> str | None:
        """A calendar day (an anomaly's): already in the project's zone, so not shifted like a time."""
        if not value:
            return None
        when = value if isinstance(value, date) else date.fromisoformat(str(value)[:10])
        text: str = format_date(when, format="long", locale=date_locale(self.locale))
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
