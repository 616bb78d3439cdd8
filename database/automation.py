"""`tariff tick`: the scheduled automation, as an ordered list of named steps.

A step is `fn(conn, schema, at) -> dict`: it does one job as of `at` (set-based, in SQL) and returns a
summary of what it did. `run_tick` runs every step in order on the caller's transaction, after taking the
tick lock, so a run is all or nothing and concurrent runs wait for each other; each step is idempotent, so
running tick again at the same time (or any earlier one) changes nothing more.

Adding a job is one line in `STEPS`, e.g. `("notifications", deliver_notifications)` with
`def deliver_notifications(conn: Connection, schema: str, at: datetime) -> dict[str, Any]`. The order
matters where steps feed each other: rollover reads what the ledger step's expiry takes away, boosts report
their unused credits before expiry, alerts and renewal orders look at balances after renewal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from database.connection import quote_schema
from database.ledger import translate_error
from database.payments import run_dunning

Summary = dict[str, Any]
TickStep = Callable[[Connection, str, datetime], Summary]


def sql_step(function: str) -> TickStep:
    """A step that is one SQL function `function(p_at timestamptz) -> jsonb` of the Tariff schema."""

    def run(conn: Connection, schema: str, at: datetime) -> Summary:
        try:
            result = conn.execute(sa.text(f"SELECT {quote_schema(schema)}.{function}(:at)"), {"at": at})
        except DBAPIError as exc:
            raise translate_error(exc) from exc
        return cast(Summary, result.scalar_one())

    run.__name__ = function
    return run


STEPS: tuple[tuple[str, TickStep], ...] = (
    # unused allowance of the period that ended → rollover grant (before expiry takes it away)
    ("rollover", sql_step("tick_rollover")),
    # boosts whose time is up → one `boost_ended` notice each
    ("boosts", sql_step("tick_boosts")),
    # overdue reservations released, lapsed grants expired (`tokens_expired` notices), plan allowances renewed
    ("ledger", sql_step("tick_ledger")),
    # balance below a threshold of the period's allowance → one `low_balance` notice per threshold and period
    ("low_balance", sql_step("tick_low_balance")),
    # auto-renewing packages used up or expired → renewal order + `package_renewal_due` notice
    ("package_renewals", sql_step("tick_package_renewals")),
    # promotion windows opening and closing → `promotion_started` / `promotion_ended` notices
    ("promotions", sql_step("tick_promotions")),
    # due grandfathering moves → subscription on its new price version + `grandfathering_executed` notice
    ("price_migrations", sql_step("tick_price_migrations")),
    # failed payments due a reminder → `payment_failed` notice; lapsed grace → past_due, downgrade
    ("dunning", run_dunning),
)


def run_tick(
    conn: Connection, schema: str, at: datetime | None = None, steps: Sequence[tuple[str, TickStep]] = STEPS
) -> Summary:
    """Run every step as of `at` (default: the database's clock) in the caller's transaction.

    The transaction's TimeZone is the token rules' zone from here on. Returns {"at": ISO time in UTC,
    "steps": {name: step summary, ...}} in step order.
    """
    s = quote_schema(schema)
    conn.execute(sa.text(f"SELECT {s}.tick_lock()"))
    # Calendar arithmetic (a subscription's monthly allowance periods, "this month") follows the session's
    # TimeZone, which the server or the client (PGTZ) sets: pin it to the token rules' zone for this
    # transaction, so the same subscription renews at the same instant wherever tick runs.
    conn.execute(sa.text(f"SELECT set_config('TimeZone', {s}.token_timezone(), true)"))
    # One clock for every step: the database's, read after the lock so a waiting run does not act in the past.
    when = at if at is not None else conn.execute(sa.text("SELECT clock_timestamp()")).scalar_one()
    summaries: dict[str, Summary] = {}
    for name, step in steps:
        summaries[name] = step(conn, schema, when)
    return {"at": when.astimezone(UTC).isoformat(), "steps": summaries}


def describe(summary: Summary) -> list[str]:
    """One line per step for people (the text output of `tariff tick`)."""
    steps = summary["steps"]
    lines = [f"tick at {summary['at']}"]
    for name, result in steps.items():
        text = _LINES.get(name)
        lines.append(f"  {name:<17} " + (text(result) if text else _generic(result)))
    return lines


def _generic(result: Summary) -> str:
    parts = [f"{key} {value}" for key, value in result.items() if key != "errors"]
    errors = result.get("errors")
    if errors:
        parts.append("errors: " + _grouped(errors))
    return ", ".join(parts)


def _grouped(errors: list[Any]) -> str:
    """The same failure a hundred times is one line with a count (every error stays in --format json)."""
    counts: dict[str, int] = {}
    for error in errors:
        message = str(error.get("error", error)) if isinstance(error, dict) else str(error)
        counts[message] = counts.get(message, 0) + 1
    shown = [f"{n}× {message}" if n > 1 else message for message, n in list(counts.items())[:3]]
    more = len(counts) - len(shown)
    return "; ".join(shown) + (f"; and {more} other error(s)" if more else "")


def _ledger(r: Summary) -> str:
    return (
        f"{r['allowances_granted']} allowance(s) renewed ({r['credits_granted']} credits), "
        f"{r['grants_expired']} grant(s) expired ({r['credits_expired']} credits), "
        f"{r['reservations_released']} reservation(s) released"
    )


def _promotions(r: Summary) -> str:
    started = ", ".join(r["started"]) or "none"
    ended = ", ".join(r["ended"]) or "none"
    return (
        f"started: {started}; ended: {ended}; {r['notifications']} notice(s), to admins and "
        f"{r['customers_notified']} targeted customer(s)"
    )


_LINES: dict[str, Callable[[Summary], str]] = {
    "rollover": lambda r: f"{r['rolled_over']} allowance(s) rolled over ({r['credits']} credits)",
    "boosts": lambda r: f"{r['boosts_ended']} boost(s) ended ({r['credits_unused']} credits unused)",
    "ledger": _ledger,
    "low_balance": lambda r: f"{r['alerts']} alert(s) to {r['customers']} customer(s)",
    "package_renewals": lambda r: (
        f"{r['orders_queued']} renewal order(s) queued, {r['orders_pending']} pending"
    ),
    "promotions": _promotions,
    "price_migrations": lambda r: (
        f"{r['migrated']} subscription(s) moved to their new price, {r['canceled']} migration(s) cancelled"
    ),
    "pre_debits": lambda r: (
        f"{r['pending']} PayU pre-debit notice(s) pending, not sent: {r['not_sent']}"
        if "not_sent" in r
        else f"{r['sent']} PayU pre-debit notice(s) sent, {r['failed']} failed (retried on a later tick), "
        f"{r['expired']} too late, {r['skipped']} no longer needed; {r['pending']} pending"
    ),
}
