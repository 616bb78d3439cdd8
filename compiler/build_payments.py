"""tariff.yaml `payments` → PaymentRules: PayU currencies, refunds, invoices, dunning and e-mandates."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import Any

from compiler.catalog import (
    DEFAULT_DUNNING_RETRIES,
    DEFAULT_MANDATE_HEADROOM_PERCENT,
    DEFAULT_MANDATE_VALID_FOR,
    DEFAULT_PRE_DEBIT_NOTICE,
    PaymentRules,
)
from compiler.context import BuildContext
from compiler.timeutil import Duration
from compiler.yaml_loader import LoadedDocument


def build_payment_rules(
    ctx: BuildContext,
    doc: LoadedDocument,
    currencies: Mapping[str, object],
    channels: Mapping[str, object],
) -> PaymentRules:
    data: dict[str, Any] = doc.data.get("payments") or {}
    for index, code in enumerate(data.get("currencies") or ()):
        if code not in currencies:
            ctx.unknown(
                doc,
                ("payments", "currencies", index),
                "currency",
                code,
                currencies,
                declared_in="`currencies`",
            )
    dunning = data.get("dunning") or {}
    after = dunning.get("after_grace") or {}
    channel = dunning.get("channel", "email")
    if "channel" in dunning and channels and channel not in channels:
        ctx.unknown(
            doc,
            ("payments", "dunning", "channel"),
            "notification channel",
            channel,
            channels,
            declared_in="`notifications.channels`",
        )
    retries = dunning.get("retries")
    mandates = data.get("mandates") or {}
    notice = Duration.parse(mandates["pre_debit_notice"]) if "pre_debit_notice" in mandates else None
    if notice is not None and notice.unit not in ("month", "year") and notice.fixed <= timedelta(hours=24):
        ctx.error(
            doc,
            ("payments", "mandates", "pre_debit_notice"),
            "payments.pre-debit-notice-too-short",
            f"pre_debit_notice {notice} leaves no time to send it: PayU needs the notice at least 24 hours "
            "before the debit",
            hint="use 2 days (the default) or more",
        )
    headroom = mandates.get("headroom_percent")
    return PaymentRules(
        currencies=tuple(data.get("currencies") or ("INR",)),
        revoke_tokens_on_refund=(data.get("refunds") or {}).get("revoke_tokens", True),
        invoice_prefix=(data.get("invoices") or {}).get("prefix", "INV-"),
        dunning_retries=DEFAULT_DUNNING_RETRIES
        if retries is None
        else tuple(Duration.parse(r) for r in retries),
        dunning_grace=Duration.parse(dunning.get("grace_period", "7 days")),
        dunning_channel=channel,
        dunning_status=after.get("status", "past_due"),
        dunning_downgrade_to=after.get("downgrade_to"),
        dunning_suspend_tokens=after.get("suspend_tokens", False),
        mandate_headroom_percent=DEFAULT_MANDATE_HEADROOM_PERCENT
        if headroom is None
        else Decimal(str(headroom)),
        mandate_valid_for=Duration.parse(mandates["valid_for"])
        if "valid_for" in mandates
        else DEFAULT_MANDATE_VALID_FOR,
        pre_debit_notice=notice or DEFAULT_PRE_DEBIT_NOTICE,
    )


def check_downgrade_plan(
    ctx: BuildContext, doc: LoadedDocument, rules: PaymentRules, plans: Mapping[str, Any]
) -> None:
    """The after-grace plan must exist and be on sale."""
    target = rules.dunning_downgrade_to
    if target is None:
        return
    path = ("payments", "dunning", "after_grace", "downgrade_to")
    if target not in plans:
        ctx.unknown(doc, path, "plan", target, plans, declared_in="plans/")
    elif getattr(plans[target], "status", "active") != "active":
        ctx.error(
            doc,
            path,
            "payments.downgrade-plan-not-active",
            f"plan {target!r} is {plans[target].status}, so nobody can be moved to it",
            hint="downgrade to an active plan, usually the free plan",
        )
