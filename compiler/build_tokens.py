"""tokens/*.yaml → token packages, AI models, automation rules and pool templates."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from compiler.build_plans import build_approval
from compiler.build_prices import build_price_block, missing_region_prices
from compiler.build_settings import ProjectSettings, check_zone
from compiler.catalog import PACKAGE_CYCLE, AIModel, AutoRenew, PoolTemplate, TokenPackage, TokenRules
from compiler.context import BuildContext
from compiler.timeutil import Duration
from compiler.yaml_loader import LoadedDocument


@dataclass
class TokenSections:
    packages: dict[str, TokenPackage] = field(default_factory=dict)
    models: dict[str, AIModel] = field(default_factory=dict)
    pools: dict[str, PoolTemplate] = field(default_factory=dict)
    rules: TokenRules | None = None
    rules_file: str | None = None
    # Where each id was defined, so references can be checked once every file is read.
    package_docs: dict[str, LoadedDocument] = field(default_factory=dict)
    model_docs: dict[str, LoadedDocument] = field(default_factory=dict)
    pool_docs: dict[str, LoadedDocument] = field(default_factory=dict)


def add_tokens_document(
    ctx: BuildContext, doc: LoadedDocument, project: ProjectSettings, sections: TokenSections
) -> None:
    data: dict[str, Any] = doc.data
    for package_id, spec in (data.get("packages") or {}).items():
        if _duplicate(ctx, doc, "packages", package_id, sections.package_docs):
            continue
        path = ("packages", package_id)
        errors_before = len(ctx.diagnostics.errors)
        prices = build_price_block(ctx, doc, (*path, "prices"), PACKAGE_CYCLE, spec["prices"], project)
        status = spec.get("status", "active")
        if status == "active" and len(ctx.diagnostics.errors) == errors_before:
            gaps = missing_region_prices(prices, [PACKAGE_CYCLE], project)
            if gaps:
                ctx.policy(
                    "region_without_price",
                    f"package:{package_id}",
                    doc,
                    (*path, "prices"),
                    f"package {package_id!r} has no price for "
                    + "; ".join(g.replace(f"{PACKAGE_CYCLE} in ", "") for g in gaps),
                    hint="add the missing currencies, or give the region a `fallback_currency`",
                )
        renew = spec.get("auto_renew")
        sections.packages[package_id] = TokenPackage(
            id=package_id,
            name=spec["name"],
            tokens=spec["tokens"],
            prices=tuple(prices),
            status=status,
            description=spec.get("description"),
            validity_days=spec.get("validity_days"),
            purchasable_by=tuple(spec["purchasable_by"]) if "purchasable_by" in spec else None,
            priority=spec.get("priority", 200),
            auto_renew=AutoRenew(renew["when"], renew.get("max_per_month")) if renew else None,
            approval=build_approval(spec.get("approval")),
            meta=dict(spec.get("meta") or {}),
        )
        sections.package_docs[package_id] = doc
        ctx.remember(f"package:{package_id}", doc, path)

    for model_id, spec in (data.get("models") or {}).items():
        if _duplicate(ctx, doc, "models", model_id, sections.model_docs):
            continue
        cost = spec["cost"]
        if cost["currency"] not in project.currencies:
            ctx.unknown(
                doc,
                ("models", model_id, "cost", "currency"),
                "currency",
                cost["currency"],
                project.currencies,
                declared_in="tariff.yaml `currencies`",
            )
        credits = spec["credits"]
        sections.models[model_id] = AIModel(
            id=model_id,
            provider=spec["provider"],
            cost_currency=cost["currency"],
            cost_per_1k_input=Decimal(cost["per_1k_input"]),
            cost_per_1k_output=Decimal(cost["per_1k_output"]),
            credits_per_1k_input=Decimal(credits["per_1k_input"]),
            credits_per_1k_output=Decimal(credits["per_1k_output"]),
            credits_minimum=credits.get("minimum", 1),
            label=spec.get("label"),
            status=spec.get("status", "active"),
            plans=tuple(spec["plans"]) if "plans" in spec else None,
        )
        sections.model_docs[model_id] = doc
        ctx.remember(f"model:{model_id}", doc, ("models", model_id))

    for pool_id, spec in (data.get("pools") or {}).items():
        if _duplicate(ctx, doc, "pools", pool_id, sections.pool_docs):
            continue
        limits = spec.get("member_limits") or {}
        sections.pools[pool_id] = PoolTemplate(
            pool_id,
            spec.get("name"),
            tuple(spec.get("plans") or ()),
            spec.get("max_members"),
            limits.get("daily"),
            limits.get("monthly"),
        )
        sections.pool_docs[pool_id] = doc
        ctx.remember(f"pool:{pool_id}", doc, ("pools", pool_id))

    if "rules" in data:
        if sections.rules_file is not None:
            ctx.error(
                doc,
                ("rules",),
                "tokens.rules-twice",
                f"token rules are already defined in {sections.rules_file}",
                hint="keep one `rules:` section",
                key=True,
            )
            return
        sections.rules_file = doc.file
        sections.rules = _rules(ctx, doc, data["rules"], project)
        ctx.remember("token-rules", doc, ("rules",))


def _duplicate(
    ctx: BuildContext, doc: LoadedDocument, section: str, item_id: str, seen: dict[str, LoadedDocument]
) -> bool:
    if item_id in seen:
        ctx.error(
            doc,
            (section, item_id),
            "id.duplicate",
            f"{section[:-1]} {item_id!r} is already defined in {seen[item_id].file}",
            hint="ids must be unique across all token files",
            key=True,
        )
        return True
    return False


def _rules(
    ctx: BuildContext, doc: LoadedDocument, spec: dict[str, Any], project: ProjectSettings
) -> TokenRules:
    timezone = spec.get("timezone", project.timezone)
    check_zone(ctx, doc, ("rules", "timezone"), timezone)
    alerts = spec.get("low_balance_alerts") or {}
    for index, channel in enumerate(alerts.get("channels") or []):
        if channel not in project.settings.channels:
            ctx.unknown(
                doc,
                ("rules", "low_balance_alerts", "channels", index),
                "channel",
                channel,
                project.settings.channels,
                declared_in="tariff.yaml `notifications.channels`",
            )
    boosts = spec.get("boosts") or {}
    grants = spec.get("admin_grants") or {}
    if (
        grants.get("default_tokens")
        and grants.get("max_tokens")
        and grants["default_tokens"] > grants["max_tokens"]
    ):
        ctx.error(
            doc,
            ("rules", "admin_grants", "default_tokens"),
            "tokens.grant-default",
            "default_tokens is larger than max_tokens",
            hint="lower default_tokens",
        )

    def duration(section: dict[str, Any], key: str) -> Duration | None:
        return Duration.parse(section[key]) if section.get(key) else None

    return TokenRules(
        timezone=timezone,
        low_balance_thresholds=tuple(
            sorted((Decimal(t) for t in alerts.get("thresholds_percent") or ()), reverse=True)
        ),
        low_balance_channels=tuple(alerts.get("channels") or ()),
        rollover_max_tokens=(spec.get("rollover") or {}).get("max_tokens"),
        boost_max_tokens=boosts.get("max_tokens"),
        boost_max_duration=duration(boosts, "max_duration"),
        boost_max_per_month=boosts.get("max_per_month"),
        admin_default_tokens=grants.get("default_tokens", 1000),
        admin_max_tokens=grants.get("max_tokens"),
        admin_default_expiry=duration(grants, "default_expiry"),
        reservation_expiry=duration(spec.get("reservations") or {}, "expire_after") or Duration(15, "minute"),
        admission_commit=(spec.get("admissions") or {}).get("commit", "synchronous"),
    )


def check_token_references(ctx: BuildContext, sections: TokenSections, plans: set[str]) -> None:
    def check(doc: LoadedDocument, path: tuple[str | int, ...], plan_ids: tuple[str, ...] | None) -> None:
        for index, plan_id in enumerate(plan_ids or ()):
            if plan_id not in plans:
                ctx.unknown(doc, (*path, index), "plan", plan_id, plans, declared_in="plans/")

    for package_id, package in sections.packages.items():
        check(
            sections.package_docs[package_id],
            ("packages", package_id, "purchasable_by"),
            package.purchasable_by,
        )
    for model_id, model in sections.models.items():
        check(sections.model_docs[model_id], ("models", model_id, "plans"), model.plans)
    for pool_id, pool in sections.pools.items():
        check(sections.pool_docs[pool_id], ("pools", pool_id, "plans"), pool.plans)
