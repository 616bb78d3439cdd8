"""tariff.yaml → currencies, billing cycles, regions and project settings."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from babel import Locale, UnknownLocaleError

from compiler.catalog import (
    BillingCycle,
    Channel,
    DeliveryPolicy,
    Environment,
    PayUSettings,
    Policy,
    Region,
    Settings,
    Suppression,
    Tax,
)
from compiler.context import BuildContext, suggest
from compiler.money import Currency
from compiler.timeutil import zone
from compiler.yaml_loader import LoadedDocument

DEFAULT_SEVERITY = {
    "max_discount_percent": "error",
    "max_price_increase_percent": "error",
    "promotion_without_end": "warning",
    "region_without_price": "error",
    "content_references_retired_plan": "error",
    "cta_contrast": "error",
}
BUILTIN_CYCLES = {
    "monthly": BillingCycle("monthly", 1, "month"),
    "annual": BillingCycle("annual", 12, "month"),
}


@dataclass(frozen=True)
class ProjectSettings:
    project: str
    name: str | None
    timezone: str
    currencies: dict[str, Currency]
    cycles: dict[str, BillingCycle]
    regions: dict[str, Region]
    default_region: str
    settings: Settings


def build_settings(ctx: BuildContext, doc: LoadedDocument) -> ProjectSettings:
    data: dict[str, Any] = doc.data
    timezone = data.get("timezone", "UTC")
    check_zone(ctx, doc, ("timezone",), timezone)

    currencies = {
        code: Currency(
            code,
            spec["minor_units"],
            spec.get("rounding", "half_up"),
            spec.get("symbol"),
            _decimal(spec.get("usd_rate")),
        )
        for code, spec in data["currencies"].items()
    }
    cycles = dict(BUILTIN_CYCLES)
    for cycle_id, spec in (data.get("billing_cycles") or {}).items():
        if cycle_id in BUILTIN_CYCLES:
            ctx.error(
                doc,
                ("billing_cycles", cycle_id),
                "settings.builtin-cycle",
                f"`{cycle_id}` is built in and cannot be redefined",
                hint="choose another id",
                key=True,
            )
            continue
        cycles[cycle_id] = BillingCycle(cycle_id, spec["every"], spec["unit"], spec.get("label"))

    regions: dict[str, Region] = {}
    seen_countries: dict[str, str] = {}
    for code, spec in data["regions"].items():
        path = ("regions", code)
        for field_name in ("currency", "fallback_currency"):
            value = spec.get(field_name)
            if value is not None and value not in currencies:
                ctx.unknown(
                    doc, (*path, field_name), "currency", value, currencies, declared_in="`currencies`"
                )
        if spec.get("fallback_currency") and spec.get("fallback_currency") == spec.get("currency"):
            ctx.error(
                doc,
                (*path, "fallback_currency"),
                "settings.fallback-same",
                "fallback_currency is the region's own currency",
                hint="remove `fallback_currency`",
            )
        for index, country in enumerate(spec["countries"]):
            if country in seen_countries:
                ctx.error(
                    doc,
                    (*path, "countries", index),
                    "settings.country-twice",
                    f"country {country} is already in region {seen_countries[country]}",
                    hint="each country belongs to exactly one region",
                )
            seen_countries[country] = code
        locale = spec.get("locale")
        if locale is not None:
            try:
                Locale.parse(locale)
            except (UnknownLocaleError, ValueError):
                ctx.error(
                    doc,
                    (*path, "locale"),
                    "settings.locale",
                    f"unknown locale {locale!r}",
                    hint="use a CLDR locale such as en_IN, en_US or de_DE",
                )
        tax_spec = spec.get("tax")
        tax = (
            Tax(tax_spec["name"], Decimal(tax_spec["percent"]), tax_spec.get("inclusive", False))
            if tax_spec
            else None
        )
        regions[code] = Region(
            code,
            spec["currency"],
            tuple(spec["countries"]),
            spec.get("name"),
            locale,
            spec.get("fallback_currency"),
            tax,
        )

    default_region = data["default_region"]
    if default_region not in regions:
        ctx.unknown(doc, ("default_region",), "region", default_region, regions, declared_in="`regions`")

    return ProjectSettings(
        project=data["project"],
        name=data.get("name"),
        timezone=timezone,
        currencies=currencies,
        cycles=cycles,
        regions=regions,
        default_region=default_region,
        settings=_settings(ctx, doc, data),
    )


def _settings(ctx: BuildContext, doc: LoadedDocument, data: dict[str, Any]) -> Settings:
    environments: dict[str, Environment] = {}
    for name, spec in (data.get("environments") or {}).items():
        payu_spec = spec.get("payu")
        payu = PayUSettings(**payu_spec) if payu_spec else None
        environments[name] = Environment(
            name,
            spec.get("database_url_env"),
            spec.get("schema", "tariff"),
            spec.get("protected", False),
            payu,
        )
    policies: dict[str, Policy] = {}
    configured = data.get("policies") or {}
    for name, default in DEFAULT_SEVERITY.items():
        spec = configured.get(name)
        if spec is None and name in ("max_discount_percent", "max_price_increase_percent"):
            continue  # a limit has no sensible default; unconfigured means unchecked
        spec = spec or {}
        limit = _decimal(spec.get("limit", spec.get("min_ratio")))
        policies[name] = Policy(name, spec.get("severity", default), limit)
    ctx.policies = policies
    suppressions = []
    for index, spec in enumerate(data.get("suppressions") or []):
        suppression = Suppression(spec["policy"], spec["target"], spec["reason"])
        suppressions.append(suppression)
        ctx.suppressions.append((suppression, doc, ("suppressions", index)))
    channels: dict[str, Channel] = {}
    notifications = data.get("notifications") or {}
    for channel_id, spec in (notifications.get("channels") or {}).items():
        settings = {k: v for k, v in spec.items() if k != "type"}
        channels[channel_id] = Channel(channel_id, spec["type"], settings)
    routes: dict[str, tuple[str, ...]] = {}
    for kind, ids in (notifications.get("routes") or {}).items():
        for index, channel_id in enumerate(ids):
            if channel_id not in channels:
                ctx.unknown(
                    doc,
                    ("notifications", "routes", kind, index),
                    "channel",
                    channel_id,
                    channels,
                    declared_in="tariff.yaml `notifications.channels`",
                )
        routes[kind] = tuple(ids)
    delivery = DeliveryPolicy(**(notifications.get("delivery") or {}))
    if delivery.max_backoff_seconds < delivery.backoff_seconds:
        ctx.error(
            doc,
            ("notifications", "delivery", "max_backoff_seconds"),
            "settings.backoff-cap",
            "max_backoff_seconds is below backoff_seconds",
            hint=f"raise it to at least {delivery.backoff_seconds}",
        )
    return Settings(
        environments,
        policies,
        tuple(suppressions),
        tuple(notifications.get("admins") or ()),
        channels,
        routes,
        delivery,
    )


def check_suppression_targets(ctx: BuildContext, known_targets: set[str]) -> None:
    for index, (suppression, doc, path) in enumerate(ctx.suppressions):
        if index not in ctx.used_suppressions:
            exists = any(_matches(suppression.target, t) for t in known_targets)
            message = (
                f"suppression of {suppression.policy!r} for {suppression.target!r} matches nothing"
                if not exists
                else f"suppression of {suppression.policy!r} for {suppression.target!r} is no longer needed"
            )
            hint = suggest(suppression.target, known_targets) if not exists else "remove it"
            ctx.warning(doc, path, "settings.unused-suppression", message, hint=hint)


def _matches(pattern: str, target: str) -> bool:
    return fnmatch.fnmatchcase(target, pattern)


def check_zone(ctx: BuildContext, doc: LoadedDocument, path: tuple[str | int, ...], name: Any) -> bool:
    if not isinstance(name, str):
        return False
    try:
        zone(name)
    except ValueError:
        ctx.error(
            doc,
            path,
            "ref.timezone",
            f"unknown time zone {name!r}",
            hint=suggest_zone(name) or "use an IANA name such as Asia/Kolkata, Europe/Berlin or UTC",
        )
        return False
    return True


def suggest_zone(name: str) -> str | None:
    from zoneinfo import available_timezones

    return suggest(name, available_timezones())


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)
