"""Catalog → config files: the writing half of `tariff import` (live database → YAML).

Output is deterministic (schema key order, defaults omitted) and compiles back into an equal
catalog, so `import` followed by `plan` shows no changes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import yaml

from compiler.build_settings import BUILTIN_CYCLES
from compiler.catalog import (
    DEFAULT_ON_DECREASE,
    DEFAULT_ON_INCREASE,
    PACKAGE_CYCLE,
    AIModel,
    Approval,
    Catalog,
    Cta,
    DeliveryPolicy,
    GrandfatherRule,
    Page,
    Plan,
    Price,
    Promotion,
    TokenPackage,
)
from compiler.money import plain
from compiler.notification_templates import template_files
from compiler.timeutil import zone


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes Decimal as a plain number and never emits aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_decimal(dumper: yaml.SafeDumper, value: Decimal) -> yaml.ScalarNode:
    text = plain(value)
    # Tag by shape so the dumper writes the number bare (an int tag for "1499", float for "19.99").
    tag = "tag:yaml.org,2002:float" if "." in text else "tag:yaml.org,2002:int"
    return dumper.represent_scalar(tag, text)


_Dumper.add_representer(Decimal, _represent_decimal)


def _dump(header: str, schema: str, data: Mapping[str, Any]) -> str:
    body = yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return f"# yaml-language-server: $schema={schema}\n#\n{comment}\n{body}"


def _drop_empty(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v not in (None, {}, [], ())}


def _prices(prices: tuple[Price, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for price in prices:
        block = out.setdefault(price.cycle, {})
        if price.region is None:
            block[price.currency] = price.amount
        else:
            block.setdefault("by_region", {}).setdefault(price.region, {})[price.currency] = price.amount
    for block in out.values():
        if "by_region" in block:
            block["by_region"] = block.pop("by_region")  # keep overrides after the base amounts
    return out


def _approval(approval: Approval | None) -> dict[str, Any] | None:
    if approval is None:
        return None
    return _drop_empty(
        {
            "approved_by": approval.approved_by,
            "reason": approval.reason,
            "up_to_percent": approval.up_to_percent,
        }
    )


def _rule(rule: GrandfatherRule) -> dict[str, Any]:
    data: dict[str, Any] = {"policy": rule.policy}
    if rule.duration is not None:
        data["duration"] = str(rule.duration)
    if rule.notify_days_before:
        data["notify_days_before"] = rule.notify_days_before
    return data


def settings_file(catalog: Catalog) -> str:
    currencies = {
        code: _drop_empty(
            {"minor_units": c.minor_units, "rounding": c.rounding, "symbol": c.symbol, "usd_rate": c.usd_rate}
        )
        for code, c in catalog.currencies.items()
    }
    cycles = {
        cid: _drop_empty({"every": c.every, "unit": c.unit, "label": c.label})
        for cid, c in catalog.cycles.items()
        if cid not in BUILTIN_CYCLES
    }
    regions = {}
    for code, region in catalog.regions.items():
        tax = region.tax
        regions[code] = _drop_empty(
            {
                "name": region.name,
                "currency": region.currency,
                "countries": list(region.countries),
                "locale": region.locale,
                "fallback_currency": region.fallback_currency,
                "tax": {"name": tax.name, "percent": tax.percent, "inclusive": tax.inclusive}
                if tax
                else None,
            }
        )
        regions[code].setdefault("countries", [])
    data = _drop_empty(
        {
            "project": catalog.project,
            "name": catalog.name,
            "timezone": catalog.timezone,
            "currencies": currencies,
            "billing_cycles": cycles,
            "regions": regions,
            "default_region": catalog.default_region,
            "payments": _payments(catalog),
            **_settings(catalog),
        }
    )
    return _dump(
        "Project settings imported from the live database. Environments, policies and notification\n"
        "channels are not stored there: add them here.",
        "../schemas/tariff.schema.json",
        data,
    )


def _payments(catalog: Catalog) -> dict[str, Any]:
    rules = catalog.payment_rules
    return {
        "currencies": list(rules.currencies),
        "refunds": {"revoke_tokens": rules.revoke_tokens_on_refund},
        "invoices": {"prefix": rules.invoice_prefix},
        "dunning": {
            "retries": [str(d) for d in rules.dunning_retries],
            **_drop_empty(
                {
                    "grace_period": str(rules.dunning_grace),
                    "channel": rules.dunning_channel,
                    "after_grace": _drop_empty(
                        {
                            "status": rules.dunning_status,
                            "downgrade_to": rules.dunning_downgrade_to,
                            "suspend_tokens": rules.dunning_suspend_tokens,
                        }
                    ),
                }
            ),
        },
        "mandates": {
            "headroom_percent": rules.mandate_headroom_percent,
            "valid_for": str(rules.mandate_valid_for),
            "pre_debit_notice": str(rules.pre_debit_notice),
        },
    }


def _settings(catalog: Catalog) -> dict[str, Any]:
    """Environments, policies, suppressions and channels, when the catalog carries them (compiled config)."""
    settings = catalog.settings
    environments = {}
    for name, env in settings.environments.items():
        payu = env.payu
        environments[name] = _drop_empty(
            {
                "database_url_env": env.database_url_env,
                "schema": None if env.schema == "tariff" else env.schema,
                "protected": env.protected or None,
                "payu": _drop_empty(
                    {
                        k: getattr(payu, k)
                        for k in (
                            "mode",
                            "key_env",
                            "salt_env",
                            "checkout_url",
                            "api_url",
                            "success_url",
                            "failure_url",
                            "webhook_url",
                        )
                    }
                )
                if payu
                else None,
            }
        )
    policies: dict[str, Any] = {}
    for name, policy in settings.policies.items():
        entry: dict[str, Any] = {"severity": policy.severity}
        if policy.limit is not None:
            entry = {("min_ratio" if name == "cta_contrast" else "limit"): policy.limit, **entry}
        policies[name] = entry
    return _drop_empty(
        {
            "environments": environments,
            "policies": policies,
            "suppressions": [
                {"policy": s.policy, "target": s.target, "reason": s.reason} for s in settings.suppressions
            ],
            "notifications": _drop_empty(
                {
                    "admins": list(settings.admins),
                    "channels": {cid: {"type": c.type, **c.settings} for cid, c in settings.channels.items()},
                    "routes": {kind: list(ids) for kind, ids in settings.routes.items()},
                    "delivery": {
                        k: v
                        for k, v in dataclasses.asdict(settings.delivery).items()
                        if v != getattr(DeliveryPolicy(), k)
                    },
                }
            ),
        }
    )


def features_file(catalog: Catalog) -> str:
    features = {}
    for fid, f in catalog.features.items():
        features[fid] = _drop_empty(
            {
                "label": f.label,
                "description": f.description,
                "type": f.type,
                "unit": f.unit,
                "unlimited_allowed": None if f.unlimited_allowed else False,
                "values": list(f.values),
                "value_labels": dict(f.value_labels),
                "icon": f.icon,
                "status": None if f.status == "active" else f.status,
            }
        )
    return _dump(
        "The feature catalog, imported from the live database.",
        "../schemas/features.schema.json",
        {"features": features},
    )


def plan_file(plan: Plan) -> str:
    tokens = plan.tokens
    allowance = tokens.allowance
    rollover = tokens.rollover
    token_data = _drop_empty(
        {
            "allowance": _drop_empty(
                {
                    "amount": allowance.amount,
                    "every": allowance.every,
                    "expires_after": str(allowance.expires_after) if allowance.expires_after else None,
                }
            )
            if allowance
            else None,
            "rollover": _drop_empty(
                {
                    "max_percent": rollover.max_percent,
                    "max_tokens": rollover.max_tokens,
                    "expires_after": str(rollover.expires_after) if rollover.expires_after else None,
                }
            )
            if rollover
            else None,
            "limits": _drop_empty(
                {
                    "per_request": tokens.limits.per_request,
                    "daily": tokens.limits.daily,
                    "monthly": tokens.limits.monthly,
                }
            ),
            "throttle": _drop_empty(
                {
                    "requests_per_minute": tokens.throttle.requests_per_minute,
                    "tokens_per_minute": tokens.throttle.tokens_per_minute,
                }
            ),
        }
    )
    if allowance is not None and "allowance" in token_data:
        token_data["allowance"].setdefault("amount", allowance.amount)
    grandfathering = {}
    if plan.on_increase != DEFAULT_ON_INCREASE:
        grandfathering["on_increase"] = _rule(plan.on_increase)
    if plan.on_decrease != DEFAULT_ON_DECREASE:
        grandfathering["on_decrease"] = _rule(plan.on_decrease)
    payu = None
    if plan.payu is not None:
        mandate = plan.payu.mandate
        payu = _drop_empty(
            {
                "productinfo": plan.payu.productinfo,
                "mandate": _drop_empty(
                    {"billing_rule": mandate.billing_rule, "max_amount": dict(mandate.max_amount)}
                )
                if mandate
                else None,
            }
        )
    features = {k: list(v) if isinstance(v, tuple) else v for k, v in plan.features.items()}
    data = _drop_empty(
        {
            "id": plan.id,
            "name": plan.name,
            "description": plan.description,
            "status": plan.status,
            "trial_days": plan.trial_days or None,
            "features": features,
            "tokens": token_data,
            "prices": _prices(plan.prices),
            "grandfathering": grandfathering,
            "approval": _approval(plan.approval),
            "payu": payu,
            "meta": dict(plan.meta),
        }
    )
    return _dump(
        f"Plan {plan.name}, imported from the live database.", "../../schemas/plan.schema.json", data
    )


def _package(package: TokenPackage) -> dict[str, Any]:
    prices = _prices(package.prices).get(PACKAGE_CYCLE, {})
    renew = package.auto_renew
    return _drop_empty(
        {
            "name": package.name,
            "description": package.description,
            "status": package.status,
            "tokens": package.tokens,
            "prices": prices,
            "validity_days": package.validity_days,
            "purchasable_by": list(package.purchasable_by) if package.purchasable_by is not None else None,
            "priority": None if package.priority == 200 else package.priority,
            "auto_renew": _drop_empty({"when": renew.when, "max_per_month": renew.max_per_month})
            if renew
            else None,
            "approval": _approval(package.approval),
            "meta": dict(package.meta),
        }
    )


def _model(model: AIModel) -> dict[str, Any]:
    return _drop_empty(
        {
            "provider": model.provider,
            "label": model.label,
            "status": None if model.status == "active" else model.status,
            "cost": {
                "currency": model.cost_currency,
                "per_1k_input": model.cost_per_1k_input,
                "per_1k_output": model.cost_per_1k_output,
            },
            "credits": {
                "per_1k_input": model.credits_per_1k_input,
                "per_1k_output": model.credits_per_1k_output,
                "minimum": model.credits_minimum,
            },
            "plans": list(model.plans) if model.plans is not None else None,
        }
    )


def tokens_file(catalog: Catalog) -> str:
    rules = catalog.token_rules
    rules_data = _drop_empty(
        {
            "timezone": rules.timezone,
            "low_balance_alerts": _drop_empty(
                {
                    "thresholds_percent": list(rules.low_balance_thresholds),
                    "channels": list(rules.low_balance_channels),
                }
            )
            if rules.low_balance_thresholds
            else None,
            "rollover": _drop_empty({"max_tokens": rules.rollover_max_tokens}),
            "boosts": _drop_empty(
                {
                    "max_tokens": rules.boost_max_tokens,
                    "max_duration": str(rules.boost_max_duration) if rules.boost_max_duration else None,
                    "max_per_month": rules.boost_max_per_month,
                }
            ),
            "admin_grants": _drop_empty(
                {
                    "default_tokens": rules.admin_default_tokens,
                    "max_tokens": rules.admin_max_tokens,
                    "default_expiry": str(rules.admin_default_expiry) if rules.admin_default_expiry else None,
                }
            ),
            "reservations": {"expire_after": str(rules.reservation_expiry)},
            "admissions": {"commit": rules.admission_commit},
        }
    )
    pools = {
        pid: _drop_empty(
            {
                "name": p.name,
                "plans": list(p.plans),
                "max_members": p.max_members,
                "member_limits": _drop_empty({"daily": p.member_daily, "monthly": p.member_monthly}),
            }
        )
        for pid, p in catalog.pools.items()
    }
    data = _drop_empty(
        {
            "packages": {pid: _package(p) for pid, p in catalog.packages.items()},
            "models": {mid: _model(m) for mid, m in catalog.models.items()},
            "rules": rules_data,
            "pools": pools,
        }
    )
    return _dump(
        "Credit packages, AI models, rules and pools, imported from the live database.",
        "../../schemas/tokens.schema.json",
        data,
    )


def promotion_files(promo: Promotion) -> dict[str, str]:
    """The promotion's YAML, plus its customer list as CSV when it has one."""
    discount = promo.discount
    discount_value: Any = {
        "percent_off": discount.percent,
        "amount_off": dict(discount.amounts),
        "fixed_price": dict(discount.amounts),
        "extra_trial_days": discount.days,
        "bonus_tokens": discount.tokens,
    }[discount.kind]
    applies = promo.applies_to
    bundle = [
        _drop_empty(
            {
                "plan": i.plan,
                "cycle": i.cycle,
                "package": i.package,
                "quantity": None if i.quantity == 1 else i.quantity,
            }
        )
        for i in applies.bundle
    ]
    files: dict[str, str] = {}
    eligibility = promo.eligibility
    customers_file = None
    if eligibility.customer_ids:
        customers_file = eligibility.customers_file or f"promotions/{promo.id}-customers.csv"
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["customer_id"])
        writer.writerows([c] for c in eligibility.customer_ids)
        files[customers_file] = buffer.getvalue()
    schedule = promo.schedule
    duration: Any = promo.duration
    if promo.duration_cycles is not None:
        duration = {"cycles": promo.duration_cycles}
    batch = promo.code_batch
    codes: dict[str, Any] | None = None
    if promo.vanity_code:
        codes = {"vanity": promo.vanity_code}
    elif batch is not None:
        codes = {
            "generate": _drop_empty(
                {"prefix": batch.prefix or None, "count": batch.count, "length": batch.length}
            )
        }
    data = _drop_empty(
        {
            "id": promo.id,
            "name": promo.name,
            "description": promo.description,
            "status": promo.status,
            "discount": {discount.kind: discount_value},
            "applies_to": _drop_empty(
                {
                    "plans": list(applies.plans),
                    "cycles": list(applies.cycles),
                    "packages": list(applies.packages),
                    "bundle": bundle,
                }
            ),
            "eligibility": _drop_empty(
                {
                    "customers": None if eligibility.customers == "any" else eligibility.customers,
                    "regions": list(eligibility.regions),
                    "plans_held": list(eligibility.plans_held),
                    "segments": list(eligibility.segments),
                    "customers_file": customers_file,
                }
            ),
            "limits": _drop_empty(
                {"max_redemptions": promo.max_redemptions, "per_customer": promo.per_customer}
            ),
            "schedule": _drop_empty(
                {
                    "starts": _local(schedule.starts, schedule.timezone),
                    "ends": _local(schedule.ends, schedule.timezone),
                    "timezone": schedule.timezone,
                    "recurrence": "yearly" if schedule.yearly else None,
                }
            ),
            "duration": duration,
            "stacking": {"mode": "stackable", "priority": promo.priority} if promo.stackable else None,
            "codes": codes,
            "display": _drop_empty(
                {
                    "badge": promo.badge,
                    "strikethrough": None if promo.strikethrough else False,
                    "show_end_date": None if promo.show_end_date else False,
                }
            ),
            "approval": _approval(promo.approval),
            "meta": dict(promo.meta),
        }
    )
    files[f"promotions/{promo.id}.yaml"] = _dump(
        f"Promotion {promo.name}, imported from the live database.",
        "../../schemas/promotion.schema.json",
        data,
    )
    return files


def _local(moment: datetime | None, timezone: str | None) -> str | None:
    """A schedule time as people wrote it: in the schedule's own time zone, with its offset."""
    if moment is None:
        return None
    return (moment.astimezone(zone(timezone)) if timezone else moment).isoformat()


def _cta(cta: Cta | None) -> dict[str, Any] | None:
    if cta is None:
        return None
    return _drop_empty(
        {
            "text": cta.text,
            "action": cta.action,
            "url": cta.url,
            "color": cta.color,
            "text_color": cta.text_color,
        }
    )


def page_file(page: Page) -> str:
    cards = []
    for card in page.cards:
        cards.append(
            _drop_empty(
                {
                    "plan": card.plan,
                    "tagline": card.tagline,
                    "description": card.description,
                    "badge": card.badge,
                    "recommended": card.recommended or None,
                    "callout": card.callout,
                    "highlights": [
                        _drop_empty(
                            {
                                "feature": h.feature,
                                "text": h.text,
                                "description": h.description,
                                "icon": h.icon,
                            }
                        )
                        for h in card.highlights
                    ],
                    "cta": _cta(card.cta),
                }
            )
        )
    display = page.display
    data = _drop_empty(
        {
            "id": page.id,
            "title": page.title,
            "headline": page.headline,
            "intro": page.intro,
            "theme": {
                "background": page.theme.background,
                "text": page.theme.text,
                "accent": page.theme.accent,
            },
            "display": {
                "cycles": list(display.cycles),
                "default_cycle": display.default_cycle,
                "savings": display.savings,
                "strikethrough": display.strikethrough,
                "decimals": display.decimals,
                "per_month_for_longer_cycles": display.per_month_for_longer_cycles,
            },
            "cards": cards,
            "default_cta": _cta(page.default_cta),
            "checkout_url": page.checkout_url,
            "contact_url": page.contact_url,
            "comparison": _drop_empty(
                {
                    "title": page.comparison_title,
                    "groups": [{"title": g.title, "features": list(g.features)} for g in page.comparison],
                }
            )
            if page.comparison
            else None,
            "faq": [{"question": f.question, "answer": f.answer} for f in page.faq],
            "footer": page.footer,
            "meta": dict(page.meta),
        }
    )
    return _dump(
        f"Pricing page {page.id!r}, imported from the live database (Markdown inline).",
        "../../schemas/content.schema.json",
        data,
    )


def catalog_files(catalog: Catalog) -> dict[str, str]:
    """Every config file for `catalog`, keyed by path relative to the config directory."""
    files = {"tariff.yaml": settings_file(catalog)}
    if catalog.features:
        files["features.yaml"] = features_file(catalog)
    for plan in catalog.plans.values():
        files[f"plans/{plan.id}.yaml"] = plan_file(plan)
    files["tokens/tokens.yaml"] = tokens_file(catalog)
    for promo in catalog.promotions.values():
        files.update(promotion_files(promo))
    for page in catalog.pages.values():
        files[f"content/{page.id}.yaml"] = page_file(page)
    files.update(template_files(catalog.settings.templates))
    return files
