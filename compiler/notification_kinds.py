"""The notification kinds Tariff writes to its outbox: who reads each, and what its template may use.

The outbox row's payload is what the writer stored (apply, tick, the ledger, payments); delivery turns it
into these variables (publishers.notify.context), so templates never depend on a payload's raw shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from compiler.catalog import Catalog

Audience = Literal["customer", "admins"]

COMMON_VARIABLES: Mapping[str, str] = {
    "project_name": "The product's name (tariff.yaml `name`, else `project`).",
    "customer": "The customer: `customer.id`, `customer.email` (empty for admin notifications).",
    "kind": "The notification kind.",
    "notification_id": "The outbox row id.",
}
PRICE_ITEM = (
    "Each subscription concerned: `plan`, `plan_name`, `cycle`, `old_price`, `new_price`, "
    "`effective_date`, `direction` (`increase`, `decrease`)."
)
FIRST_ITEM = "Of the first subscription in `items` (most customers have one)."


@dataclass(frozen=True, slots=True)
class KindSpec:
    audience: Audience
    summary: str
    variables: Mapping[str, str]


KINDS: Mapping[str, KindSpec] = {
    "price_change": KindSpec(
        "customer",
        "A price the customer pays will change (written by apply's grandfathering).",
        {
            "items": PRICE_ITEM,
            "plan_name": FIRST_ITEM,
            "old_price": "The price paid now, formatted in the customer's locale. " + FIRST_ITEM,
            "new_price": "The price from the effective date, formatted. " + FIRST_ITEM,
            "effective_date": "The day the new price applies, spelled out. " + FIRST_ITEM,
            "direction": "`increase` or `decrease`. " + FIRST_ITEM,
        },
    ),
    "grandfathering_executed": KindSpec(
        "customer",
        "A scheduled price move has now been applied to the customer's subscription.",
        {
            "items": PRICE_ITEM,
            "plan_name": FIRST_ITEM,
            "old_price": "The price paid until now, formatted. " + FIRST_ITEM,
            "new_price": "The price paid from now on, formatted. " + FIRST_ITEM,
            "effective_date": "The day it applied, spelled out. " + FIRST_ITEM,
            "direction": "`increase` or `decrease`. " + FIRST_ITEM,
        },
    ),
    "low_balance": KindSpec(
        "customer",
        "The customer's AI-credit balance fell below a threshold of their allowance.",
        {
            "balance": "Credits left, formatted.",
            "allowance": "The period's allowance in credits, formatted.",
            "threshold_percent": "The threshold crossed, in percent.",
        },
    ),
    "tokens_expired": KindSpec(
        "customer",
        "Unused credits of a grant expired.",
        {
            "credits": "Credits that expired, formatted.",
            "expired_date": "When they expired, spelled out.",
        },
    ),
    "boost_ended": KindSpec(
        "customer",
        "A boost of extra credits ran out of time; its unused credits expired with it.",
        {
            "credits": "Credits the boost gave, formatted.",
            "unused": "Credits of it left unused (and now expired), formatted.",
            "started_date": "When the boost started, spelled out.",
            "ended_date": "When it ended, spelled out.",
            "reason": "Why the boost was given, as text (empty when none was recorded).",
        },
    ),
    "package_renewal_due": KindSpec(
        "customer",
        "An auto-renewing credit pack was used up or expired, so a renewal order was queued for it.",
        {
            "package": "The package id.",
            "package_name": "Its name (the id when the config no longer lists it).",
            "credits": "Credits the renewal adds, formatted.",
            "reason": "`exhausted` (used up) or `expiry` (expired).",
            "due_date": "When the renewal is due, spelled out.",
        },
    ),
    "usage_anomaly": KindSpec(
        "admins",
        "A customer used far more credits of a model in a day than on the same weekday before.",
        {
            "usage_customer": "The customer whose usage is unusual (the notice itself goes to admins).",
            "model": "The AI model id.",
            "day": "The day of the unusual usage, spelled out.",
            "credits": "Credits used that day, formatted.",
            "usual": "The usual credits of that weekday (median of the weeks before), formatted.",
            "ratio": "How many times the usual amount that is, formatted.",
            "history_days": "How many earlier weekdays the usual amount is drawn from.",
        },
    ),
    "promotion_started": KindSpec(
        "admins",
        "A promotion's window opened.",
        {
            "promotion": "The promotion id.",
            "promotion_name": "Its name (the id when it has none).",
            "starts_date": "When it started, spelled out.",
            "ends_date": "When it ends, spelled out (empty for no end).",
        },
    ),
    "promotion_ended": KindSpec(
        "admins",
        "A promotion's window closed.",
        {
            "promotion": "The promotion id.",
            "promotion_name": "Its name (the id when it has none).",
            "starts_date": "When it started, spelled out.",
            "ends_date": "When it ended, spelled out.",
        },
    ),
    "payment_failed": KindSpec(
        "customer",
        "A payment for the customer's subscription or package failed.",
        {
            "amount": "The amount that failed, formatted.",
            "plan_name": "The plan or package paid for (empty when unknown).",
            "reason": "The payment provider's reason, as text.",
            "retry_date": "When the payment is tried again, spelled out (empty for never).",
            "grace_date": "For a failed renewal: the day the subscription lapses unless it is paid, spelled "
            "out (empty otherwise).",
        },
    ),
}


def variables_of(kind: str) -> Mapping[str, str]:
    return {**COMMON_VARIABLES, **KINDS[kind].variables}


# The kinds `tariff tick` writes in SQL with tick_channel() as their default (migrations 0009, 0025, 0027).
TICK_DEFAULT_KINDS = frozenset(
    {
        "grandfathering_executed",
        "tokens_expired",
        "boost_ended",
        "package_renewal_due",
        "promotion_started",
        "promotion_ended",
    }
)


def channels_for(kind: str, catalog: Catalog) -> tuple[str, ...]:
    """The channel ids a notification of `kind` is written for: its route in tariff.yaml
    `notifications.routes`, else the default of the kind's writer in the database.

    Python writers and the database's own (tick, dunning, anomaly alerts) must agree, or the same kind
    would reach admins by webhook from one and by e-mail from the other. The defaults, as the schema's
    `notifications.routes` description states them:

    - price_change (apply): the first SMTP channel; `email` when no channel is configured at all (queued
      until one is), nowhere when channels exist but none is SMTP;
    - low_balance: the token rules' `low_balance_alerts.channels`, else `email`;
    - the other kinds tick writes: the first of those, else `email`;
    - payment_failed: `payments.dunning.channel`;
    - usage_anomaly: `email`.
    """
    routes = catalog.settings.routes
    if kind in routes:
        return tuple(routes[kind])
    low_balance = catalog.token_rules.low_balance_channels
    if kind == "price_change":
        channels = catalog.settings.channels
        smtp = [c.id for c in channels.values() if c.type == "smtp"]
        return tuple(smtp[:1]) if channels else ("email",)
    if kind == "low_balance":
        return tuple(low_balance) or ("email",)
    if kind in TICK_DEFAULT_KINDS:
        return (low_balance[0],) if low_balance else ("email",)
    if kind == "payment_failed":
        return (catalog.payment_rules.dunning_channel,)
    return ("email",)
