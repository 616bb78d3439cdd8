"""features.yaml and plans/*.yaml → Feature and Plan."""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from itertools import pairwise
from typing import Any

from compiler.build_prices import build_price_block, check_amount, missing_region_prices
from compiler.build_settings import ProjectSettings
from compiler.catalog import (
    DEFAULT_ON_DECREASE,
    DEFAULT_ON_INCREASE,
    UNLIMITED,
    Allowance,
    Approval,
    Feature,
    FeatureValue,
    GrandfatherRule,
    Mandate,
    Plan,
    PlanPayU,
    PlanTokens,
    Rollover,
    Throttle,
    TokenLimits,
)
from compiler.context import BuildContext, suggest
from compiler.money import plain
from compiler.timeutil import Duration
from compiler.yaml_loader import LoadedDocument, PathKey


def build_features(ctx: BuildContext, doc: LoadedDocument) -> dict[str, Feature]:
    features: dict[str, Feature] = {}
    for feature_id, spec in doc.data["features"].items():
        path = ("features", feature_id)
        kind = spec["type"]
        values = tuple(spec.get("values") or ())
        if kind in ("enum", "set") and not values:
            ctx.error(
                doc,
                path,
                "feature.values",
                f"{kind} feature {feature_id!r} needs `values`",
                hint="list the allowed values, e.g. values: [basic, premium]",
            )
        if kind in ("boolean", "number") and values:
            ctx.error(
                doc,
                (*path, "values"),
                "feature.values",
                f"a {kind} feature has no `values`",
                hint="remove `values`, or change `type` to enum or set",
            )
        for label_key in spec.get("value_labels") or {}:
            if label_key not in values:
                ctx.error(
                    doc,
                    (*path, "value_labels", label_key),
                    "feature.value-label",
                    f"label for {label_key!r}, which is not one of the values",
                    hint=suggest(label_key, values),
                    key=True,
                )
        ctx.remember(f"feature:{feature_id}", doc, path)
        features[feature_id] = Feature(
            feature_id,
            spec["label"],
            kind,
            spec.get("description"),
            spec.get("unit"),
            spec.get("unlimited_allowed", True),
            values,
            dict(spec.get("value_labels") or {}),
            spec.get("icon"),
            spec.get("status", "active"),
        )
    return features


def feature_value(
    ctx: BuildContext, doc: LoadedDocument, path: PathKey, feature: Feature, value: Any
) -> FeatureValue | None:
    """Check a plan's value against the feature's type; None when it does not fit."""

    def bad(expected: str, hint: str | None = None) -> None:
        ctx.error(
            doc,
            path,
            "feature.value",
            f"{value!r} is not a valid value for {feature.type} feature {feature.id!r}",
            expected=expected,
            hint=hint,
        )

    if feature.type == "boolean":
        if isinstance(value, bool):
            return value
        bad("true or false", "write true or false (yes/no/on/off are text in Tariff's YAML)")
    elif feature.type == "number":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if value == UNLIMITED and feature.unlimited_allowed:
            return UNLIMITED
        bad(
            "a whole number" + (" or `unlimited`" if feature.unlimited_allowed else ""),
            "write `unlimited` in lowercase" if str(value).lower() == UNLIMITED else None,
        )
    elif feature.type == "enum":
        if isinstance(value, str) and value in feature.values:
            return value
        bad("one of: " + ", ".join(feature.values), suggest(str(value), feature.values))
    else:
        items = value if isinstance(value, list) else None
        if items is not None and all(isinstance(v, str) and v in feature.values for v in items):
            return tuple(items)
        unknown = [v for v in items or [] if v not in feature.values]
        bad(
            "a list of: " + ", ".join(feature.values),
            suggest(str(unknown[0]), feature.values) if unknown else "write a list, e.g. [pine]",
        )
    return None


def build_plan(
    ctx: BuildContext, doc: LoadedDocument, project: ProjectSettings, features: dict[str, Feature]
) -> Plan:
    data: dict[str, Any] = doc.data
    plan_id = data["id"]
    status = data.get("status", "active")
    ctx.remember(f"plan:{plan_id}", doc, ())

    values: dict[str, FeatureValue] = {}
    for feature_id, raw in (data.get("features") or {}).items():
        path: PathKey = ("features", feature_id)
        feature = features.get(feature_id)
        if feature is None:
            ctx.unknown(doc, path, "feature", feature_id, features, declared_in="features.yaml")
            continue
        if feature.status == "retired" and status == "active":
            ctx.error(
                doc,
                path,
                "feature.retired",
                f"feature {feature_id!r} is retired",
                hint="remove it from this plan, or set the feature's status back to active",
            )
        value = feature_value(ctx, doc, path, feature, raw)
        if value is not None:
            values[feature_id] = value

    prices = []
    errors_before = len(ctx.diagnostics.errors)
    for cycle, block in data["prices"].items():
        if cycle not in project.cycles:
            ctx.unknown(
                doc,
                ("prices", cycle),
                "billing cycle",
                cycle,
                project.cycles,
                declared_in="tariff.yaml `billing_cycles`",
                key=True,
            )
            continue
        prices.extend(build_price_block(ctx, doc, ("prices", cycle), cycle, block, project))
        ctx.remember(f"price:{plan_id}/{cycle}", doc, ("prices", cycle))
    # A price already reported as wrong would only be reported again here as missing.
    if status == "active" and len(ctx.diagnostics.errors) == errors_before:
        gaps = missing_region_prices(prices, list(data["prices"]), project)
        if gaps:
            ctx.policy(
                "region_without_price",
                f"plan:{plan_id}",
                doc,
                ("prices",),
                f"plan {plan_id!r} has no price for " + "; ".join(gaps),
                hint="add the missing currencies, or give the region a `fallback_currency`",
            )

    tokens = _tokens(ctx, doc, data.get("tokens") or {})
    grandfathering = data.get("grandfathering") or {}
    on_increase = _rule(
        ctx, doc, ("grandfathering", "on_increase"), grandfathering.get("on_increase"), DEFAULT_ON_INCREASE
    )
    on_decrease = _rule(
        ctx, doc, ("grandfathering", "on_decrease"), grandfathering.get("on_decrease"), DEFAULT_ON_DECREASE
    )
    payu = None
    if "payu" in data:
        mandate_spec = data["payu"].get("mandate")
        mandate = None
        if mandate_spec is not None:
            amounts: dict[str, Decimal] = {}
            for code, amount in (mandate_spec.get("max_amount") or {}).items():
                ceiling = check_amount(
                    ctx, doc, ("payu", "mandate", "max_amount", code), code, amount, project.currencies
                )
                if ceiling is not None:
                    amounts[code] = ceiling
            mandate = Mandate(mandate_spec.get("billing_rule", "MAX"), amounts)
        payu = PlanPayU(data["payu"].get("productinfo"), mandate)

    return Plan(
        id=plan_id,
        name=data["name"],
        status=status,
        description=data.get("description"),
        trial_days=data.get("trial_days", 0),
        features=values,
        tokens=tokens,
        prices=tuple(prices),
        on_increase=on_increase,
        on_decrease=on_decrease,
        approval=build_approval(data.get("approval")),
        payu=payu,
        meta=dict(data.get("meta") or {}),
    )


def build_approval(spec: dict[str, Any] | None) -> Approval | None:
    if not spec:
        return None
    limit = spec.get("up_to_percent")
    return Approval(spec["approved_by"], spec["reason"], None if limit is None else Decimal(limit))


def _duration(spec: dict[str, Any], key: str) -> Duration | None:
    text = spec.get(key)
    return Duration.parse(text) if text else None


def _tokens(ctx: BuildContext, doc: LoadedDocument, spec: dict[str, Any]) -> PlanTokens:
    allowance_spec = spec.get("allowance")
    allowance = (
        Allowance(
            allowance_spec["amount"],
            allowance_spec.get("every", "cycle"),
            _duration(allowance_spec, "expires_after"),
        )
        if allowance_spec
        else None
    )
    rollover_spec = spec.get("rollover")
    rollover = None
    if rollover_spec is not None:
        if allowance is None:
            ctx.error(
                doc,
                ("tokens", "rollover"),
                "tokens.rollover-without-allowance",
                "rollover needs a token allowance to roll over",
                hint="add tokens.allowance, or remove rollover",
            )
        percent = rollover_spec.get("max_percent")
        if percent is not None and Decimal(percent) != Decimal(percent).quantize(Decimal("0.01"), ROUND_DOWN):
            # plans.rollover_max_percent is numeric(5, 2): a third decimal would be rounded away on apply,
            # and the live plan would no longer read back as the config.
            ctx.error(
                doc,
                ("tokens", "rollover", "max_percent"),
                "tokens.rollover-percent-precision",
                f"rollover max_percent {plain(Decimal(percent))} has more than two decimals",
                expected="a percentage with at most two decimals",
                hint="write at most two decimals, e.g. max_percent: "
                + plain(Decimal(percent).quantize(Decimal("0.01"), ROUND_HALF_UP)),
            )
        rollover = Rollover(
            None if percent is None else Decimal(percent),
            rollover_spec.get("max_tokens"),
            _duration(rollover_spec, "expires_after"),
        )
    limits_spec = spec.get("limits") or {}
    limits = TokenLimits(limits_spec.get("per_request"), limits_spec.get("daily"), limits_spec.get("monthly"))
    ordered = [(name, getattr(limits, name)) for name in ("per_request", "daily", "monthly")]
    present = [(name, value) for name, value in ordered if value is not None]
    for (small_name, small), (big_name, big) in pairwise(present):
        if small > big:
            ctx.error(
                doc,
                ("tokens", "limits", small_name),
                "tokens.limits-order",
                f"{small_name} limit {small} is larger than the {big_name} limit {big}",
                hint=f"{small_name} ≤ {big_name}; lower it or raise {big_name}",
            )
    if (
        allowance
        and limits.monthly is not None
        and allowance.every != "once"
        and limits.monthly < allowance.amount
    ):
        ctx.warning(
            doc,
            ("tokens", "limits", "monthly"),
            "tokens.limit-below-allowance",
            f"monthly limit {limits.monthly} is below the allowance {allowance.amount}: "
            "part of the allowance can never be used",
        )
    throttle_spec = spec.get("throttle") or {}
    throttle = Throttle(throttle_spec.get("requests_per_minute"), throttle_spec.get("tokens_per_minute"))
    return PlanTokens(allowance, rollover, limits, throttle)


def _rule(
    ctx: BuildContext,
    doc: LoadedDocument,
    path: PathKey,
    spec: dict[str, Any] | None,
    default: GrandfatherRule,
) -> GrandfatherRule:
    if spec is None:
        return default
    policy = spec["policy"]
    duration = _duration(spec, "duration")
    if policy == "keep_for" and duration is None:
        ctx.error(
            doc,
            path,
            "grandfathering.duration",
            "`keep_for` needs a `duration`",
            hint="add e.g. duration: 12 months",
        )
    if policy != "keep_for" and duration is not None:
        ctx.error(
            doc,
            (*path, "duration"),
            "grandfathering.duration",
            f"`duration` only applies to keep_for, not {policy}",
            hint="remove `duration`",
        )
        duration = None
    return GrandfatherRule(policy, duration, spec.get("notify_days_before", 0))
