"""promotions/*.yaml → Promotion, with schedule, target and code checks."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from typing import Any

from compiler.build_plans import build_approval
from compiler.build_prices import check_amount
from compiler.build_settings import ProjectSettings, check_zone
from compiler.catalog import (
    AppliesTo,
    BundleItem,
    CodeBatch,
    Discount,
    Eligibility,
    Plan,
    Promotion,
    Schedule,
    TokenPackage,
)
from compiler.context import BuildContext, suggest
from compiler.money import plain
from compiler.timeutil import has_offset, parse_timestamp
from compiler.yaml_loader import LoadedDocument, PathKey, decode_text, read_config_bytes

CSV_ID_COLUMN = "customer_id"
# promotions.percent_off is numeric(5, 2).
PERCENT_QUANTUM = Decimal("0.01")


def build_promotion(ctx: BuildContext, doc: LoadedDocument, project: ProjectSettings) -> Promotion:
    data: dict[str, Any] = doc.data
    promo_id = data["id"]
    ctx.remember(f"promotion:{promo_id}", doc, ())
    discount = _discount(ctx, doc, data["discount"], project)
    applies = data.get("applies_to") or {}
    bundle = tuple(
        BundleItem(i.get("plan"), i.get("cycle"), i.get("package"), i.get("quantity", 1))
        for i in applies.get("bundle") or ()
    )
    applies_to = AppliesTo(
        tuple(applies.get("plans") or ()),
        tuple(applies.get("cycles") or ()),
        tuple(applies.get("packages") or ()),
        bundle,
    )
    if bundle and (applies_to.plans or applies_to.packages or applies_to.cycles):
        ctx.error(
            doc,
            ("applies_to", "bundle"),
            "promotion.bundle-mixed",
            "a bundle is sold on its own: remove plans/cycles/packages next to `bundle`",
            hint="create a separate promotion for discounts on single items",
        )
    if bundle and discount.kind != "fixed_price":
        ctx.error(
            doc,
            ("discount",),
            "promotion.bundle-price",
            "a bundle needs a `fixed_price` discount",
            hint="write discount: {fixed_price: {INR: …}}: the price of the whole bundle",
        )
    if not data.get("applies_to") and discount.kind not in ("bonus_tokens",):
        ctx.error(
            doc,
            (),
            "promotion.no-target",
            "the promotion does not say what it applies to",
            hint="add applies_to: {plans: [...]} or {packages: [...]} or {bundle: [...]}",
        )
    if discount.kind == "extra_trial_days" and (applies_to.packages or bundle):
        ctx.error(
            doc,
            ("discount", "extra_trial_days"),
            "promotion.trial-on-package",
            "extra trial days only apply to plans",
            hint="apply it to plans only",
        )
    if applies_to.cycles and not applies_to.plans:
        ctx.error(
            doc,
            ("applies_to", "cycles"),
            "promotion.cycles-without-plans",
            "`cycles` narrows `plans`, but no plans are listed",
            hint="add `plans:`",
        )

    eligibility = _eligibility(ctx, doc, data.get("eligibility") or {})
    schedule = _schedule(ctx, doc, data.get("schedule"), project)
    limits = data.get("limits") or {}
    if (
        limits.get("per_customer")
        and limits.get("max_redemptions")
        and limits["per_customer"] > limits["max_redemptions"]
    ):
        ctx.error(
            doc,
            ("limits", "per_customer"),
            "promotion.limits",
            "per_customer is larger than max_redemptions",
            hint="lower per_customer",
        )
    duration = data.get("duration", "once")
    if isinstance(duration, dict):
        duration = f"cycles:{duration['cycles']}"
    if duration != "once" and not applies_to.plans and not bundle:
        ctx.error(
            doc,
            ("duration",),
            "promotion.duration-on-package",
            "packages are one-off purchases: only `once` applies",
            hint="write duration: once",
        )
    stacking = data.get("stacking") or {"mode": "exclusive"}
    codes = data.get("codes") or {}
    batch_spec = codes.get("generate")
    batch = (
        CodeBatch(batch_spec["count"], batch_spec.get("length", 10), batch_spec.get("prefix", ""))
        if batch_spec
        else None
    )
    if batch and batch.prefix and any(c in batch.prefix for c in "0O1I"):
        ctx.warning(
            doc,
            ("codes", "generate", "prefix"),
            "codes.ambiguous-prefix",
            f"prefix {batch.prefix!r} contains characters customers confuse (0/O, 1/I)",
            hint="codes are read case-insensitively, but lookalikes cause support tickets",
        )
    display = data.get("display") or {}
    return Promotion(
        id=promo_id,
        name=data["name"],
        discount=discount,
        status=data.get("status", "active"),
        description=data.get("description"),
        applies_to=applies_to,
        eligibility=eligibility,
        max_redemptions=limits.get("max_redemptions"),
        per_customer=limits.get("per_customer"),
        schedule=schedule,
        duration=duration,
        stackable=stacking["mode"] == "stackable",
        priority=stacking.get("priority", 100),
        vanity_code=codes["vanity"].upper() if codes.get("vanity") else None,
        code_batch=batch,
        badge=display.get("badge"),
        strikethrough=display.get("strikethrough", True),
        show_end_date=display.get("show_end_date", True),
        approval=build_approval(data.get("approval")),
        meta=dict(data.get("meta") or {}),
    )


def _discount(
    ctx: BuildContext, doc: LoadedDocument, spec: dict[str, Any], project: ProjectSettings
) -> Discount:
    kind, value = next(iter(spec.items()))
    if kind == "percent_off":
        percent = Decimal(value)
        if percent != percent.quantize(PERCENT_QUANTUM, rounding=ROUND_DOWN):
            # The database keeps numeric(5, 2): a third decimal would be rounded away on apply, so the
            # live catalog would no longer read back as the config and apply would refuse late and vaguely.
            ctx.error(
                doc,
                ("discount", "percent_off"),
                "promotion.percent-precision",
                f"percent_off {plain(percent)} has more than two decimals",
                expected="a percentage with at most two decimals",
                hint="write at most two decimals, e.g. percent_off: "
                + plain(max(percent.quantize(PERCENT_QUANTUM, rounding=ROUND_HALF_UP), PERCENT_QUANTUM)),
            )
        return Discount("percent_off", percent=percent)
    if kind in ("amount_off", "fixed_price"):
        amounts: dict[str, Decimal] = {}
        for code, amount in value.items():
            checked = check_amount(ctx, doc, ("discount", kind, code), code, amount, project.currencies)
            if checked is not None:
                amounts[code] = checked
        return Discount("amount_off" if kind == "amount_off" else "fixed_price", amounts=amounts)
    if kind == "extra_trial_days":
        return Discount("extra_trial_days", days=value)
    return Discount("bonus_tokens", tokens=value)


def _eligibility(ctx: BuildContext, doc: LoadedDocument, spec: dict[str, Any]) -> Eligibility:
    customers_file = spec.get("customers_file")
    ids: tuple[str, ...] = ()
    if customers_file:
        # Sorted: a list's row order means nothing, and the database keeps no order either.
        ids = tuple(sorted(_read_customer_list(ctx, doc, customers_file)))
    return Eligibility(
        spec.get("customers", "any"),
        tuple(spec.get("regions") or ()),
        tuple(spec.get("plans_held") or ()),
        tuple(spec.get("segments") or ()),
        customers_file,
        ids,
    )


def _read_customer_list(ctx: BuildContext, doc: LoadedDocument, name: str) -> tuple[str, ...]:
    path: PathKey = ("eligibility", "customers_file")
    target = (ctx.root / name).resolve()
    if not target.is_relative_to(ctx.root.resolve()):
        ctx.error(
            doc,
            path,
            "promotion.customers-file",
            f"{name!r} is outside the config directory",
            hint="keep customer lists inside the config directory",
        )
        return ()
    if not target.exists():
        ctx.error(
            doc,
            path,
            "promotion.customers-file",
            f"customer list {name!r} does not exist",
            hint=f"create it (path relative to {ctx.root.name}/) with a `{CSV_ID_COLUMN}` column",
        )
        return ()
    try:
        text = decode_text(read_config_bytes(target, name), name)
    except Exception as exc:
        diagnostic = getattr(exc, "diagnostic", None)
        message = diagnostic.message if diagnostic else str(exc)
        ctx.error(doc, path, "promotion.customers-file", f"cannot read {name!r}: {message}")
        return ()
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or CSV_ID_COLUMN not in [f.strip() for f in reader.fieldnames]:
        ctx.error(
            doc,
            path,
            "promotion.customers-file",
            f"{name!r} has no `{CSV_ID_COLUMN}` column "
            f"(header: {', '.join(reader.fieldnames or []) or 'none'})",
            hint=f"the first line must be a header naming `{CSV_ID_COLUMN}`, e.g. customer_id,email",
        )
        return ()
    seen: dict[str, int] = {}
    problems = []
    for row_number, row in enumerate(reader, start=2):
        if None in row:
            problems.append(f"line {row_number}: more fields than the header")
            continue
        customer = (row.get(CSV_ID_COLUMN) or "").strip()
        if not customer:
            problems.append(f"line {row_number}: empty {CSV_ID_COLUMN}")
        elif customer in seen:
            problems.append(f"line {row_number}: {customer!r} repeats line {seen[customer]}")
        else:
            seen[customer] = row_number
    for problem in problems[:20]:
        ctx.error(
            doc,
            path,
            "promotion.customers-file",
            f"{name}: {problem}",
            hint="fix or remove the row; every row names one customer once",
        )
    if not seen and not problems:
        ctx.error(
            doc,
            path,
            "promotion.customers-file",
            f"{name!r} lists no customers",
            hint="add rows, or remove `customers_file`",
        )
    return tuple(seen)


def _schedule(
    ctx: BuildContext, doc: LoadedDocument, spec: dict[str, Any] | None, project: ProjectSettings
) -> Schedule:
    if not spec:
        return Schedule()
    timezone = spec.get("timezone")
    if timezone is not None and not check_zone(ctx, doc, ("schedule", "timezone"), timezone):
        return Schedule()
    parsed: dict[str, datetime] = {}
    for key in ("starts", "ends"):
        text = spec.get(key)
        if text is None:
            continue
        if not has_offset(text) and timezone is None:
            ctx.error(
                doc,
                ("schedule", key),
                "schedule.timezone",
                f"{key} {text!r} has no time zone",
                hint="add a UTC offset (e.g. +05:30) or `timezone: Asia/Kolkata` to the schedule",
            )
            continue
        try:
            parsed[key] = parse_timestamp(text, timezone)
        except ValueError as exc:
            ctx.error(
                doc,
                ("schedule", key),
                "schedule.timestamp",
                str(exc),
                hint="write e.g. 2026-10-20T00:00:00+05:30",
            )
    starts, ends = parsed.get("starts"), parsed.get("ends")
    if starts and ends and ends <= starts:
        ctx.error(
            doc,
            ("schedule", "ends"),
            "schedule.order",
            "the promotion ends before it starts",
            hint=f"`ends` must be after {starts.isoformat()}",
        )
    yearly = spec.get("recurrence") == "yearly"
    if yearly:
        if not (starts and ends):
            ctx.error(
                doc,
                ("schedule", "recurrence"),
                "schedule.recurrence",
                "a yearly window needs both `starts` and `ends`",
                hint="give the first year's window",
            )
        elif (ends - starts).days >= 365:
            ctx.error(
                doc,
                ("schedule", "recurrence"),
                "schedule.recurrence",
                "a yearly window must be shorter than a year",
                hint="shorten the window",
            )
    del project
    return Schedule(starts, ends, timezone, yearly)


def check_promotion_references(
    ctx: BuildContext,
    doc: LoadedDocument,
    promo: Promotion,
    plans: dict[str, Plan],
    packages: dict[str, TokenPackage],
    regions: set[str],
    cycles: set[str],
) -> None:
    applies = promo.applies_to
    for index, plan_id in enumerate(applies.plans):
        if plan_id not in plans:
            ctx.unknown(doc, ("applies_to", "plans", index), "plan", plan_id, plans, declared_in="plans/")
    for index, cycle in enumerate(applies.cycles):
        if cycle not in cycles:
            ctx.unknown(
                doc,
                ("applies_to", "cycles", index),
                "billing cycle",
                cycle,
                cycles,
                declared_in="tariff.yaml `billing_cycles`",
            )
        elif any(p in plans for p in applies.plans) and not any(
            cycle in plans[p].cycles for p in applies.plans if p in plans
        ):
            ctx.error(
                doc,
                ("applies_to", "cycles", index),
                "promotion.cycle-not-sold",
                f"none of the plans is sold {cycle}",
                hint="remove the cycle or add a price for it",
            )
    for index, package_id in enumerate(applies.packages):
        if package_id not in packages:
            ctx.unknown(
                doc,
                ("applies_to", "packages", index),
                "package",
                package_id,
                packages,
                declared_in="tokens/ `packages`",
            )
    for index, item in enumerate(applies.bundle):
        path: PathKey = ("applies_to", "bundle", index)
        if item.plan is not None:
            plan = plans.get(item.plan)
            if plan is None:
                ctx.unknown(doc, (*path, "plan"), "plan", item.plan, plans, declared_in="plans/")
            elif plan.status != "active" and promo.status == "active":
                ctx.error(
                    doc,
                    (*path, "plan"),
                    "promotion.bundle-unsellable",
                    f"plan {item.plan!r} is {plan.status}, so the bundle cannot be sold",
                )
            elif item.cycle not in plan.cycles:
                ctx.error(
                    doc,
                    (*path, "cycle"),
                    "promotion.bundle-cycle",
                    f"plan {item.plan!r} is not sold {item.cycle}",
                    hint=suggest(str(item.cycle), plan.cycles) or "use one of: " + ", ".join(plan.cycles),
                )
        if item.package is not None:
            package = packages.get(item.package)
            if package is None:
                ctx.unknown(
                    doc,
                    (*path, "package"),
                    "package",
                    item.package,
                    packages,
                    declared_in="tokens/ `packages`",
                )
            elif package.status != "active" and promo.status == "active":
                ctx.error(
                    doc,
                    (*path, "package"),
                    "promotion.bundle-unsellable",
                    f"package {item.package!r} is {package.status}, so the bundle cannot be sold",
                )
    for index, region in enumerate(promo.eligibility.regions):
        if region not in regions:
            ctx.unknown(
                doc,
                ("eligibility", "regions", index),
                "region",
                region,
                regions,
                declared_in="tariff.yaml `regions`",
            )
    for index, plan_id in enumerate(promo.eligibility.plans_held):
        if plan_id not in plans:
            ctx.unknown(
                doc, ("eligibility", "plans_held", index), "plan", plan_id, plans, declared_in="plans/"
            )
    if promo.status == "active":
        for index, plan_id in enumerate(applies.plans):
            plan = plans.get(plan_id)
            if plan is not None and plan.status == "retired":
                ctx.error(
                    doc,
                    ("applies_to", "plans", index),
                    "promotion.retired-plan",
                    f"plan {plan_id!r} is retired and no longer sold",
                    hint="remove it from the promotion",
                )
