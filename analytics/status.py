"""`tariff status`: one screen of what is live and how it is doing, as a report.

Cheap enough to refresh every few seconds: every figure comes from the catalog tables, subscriptions,
account balances, counters (promotion_usage) and the daily usage rollup (token_usage_daily, read for this
month's days only, through its day index) — never from the raw event tables (token_usage, token_entries,
token_requests, redemptions), whose size grows with traffic. tests/test_status.py holds it to that with
EXPLAIN.

Definitions (days and months in token_rules.timezone):
* active: subscriptions in status active or past_due; trials: status trialing.
* MRR: the price version each active subscription pays, per month (a cycle of N months counts 1/N of
  its price, a cycle of N days 30.4375/N: cycle_months() of migration 0012), per currency.
* conversion this month: of the trials that ended this month so far, the share now active or past_due.
* churn this month: of the subscriptions that existed and were not canceled at the start of the month,
  the share canceled since.
* allocated this month: plan allowances of the live (trialing, active, past_due) subscriptions, per month
  (an allowance every cycle of N months counts 1/N; a one-off allowance is not counted).
* outstanding: credits in customers' accounts not yet used (Σ token_accounts.balance).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics.model import Chart, Column, Report, Section
from database.connection import quote_schema

TOP = 5


@dataclass(frozen=True, slots=True)
class Drift:
    """Catalog rows changed outside Tariff since the last apply (from publishers/postgres/plan.py)."""

    changes: int
    keys: tuple[str, ...]


def _rows(conn: Connection, sql: str, params: dict[str, Any]) -> Sequence[sa.Row[Any]]:
    return conn.execute(sa.text(sql), params).all()


def _money(minor: int | Decimal | None, places: int) -> Decimal | None:
    if minor is None:
        return None
    return (Decimal(minor).scaleb(-places)).quantize(Decimal(1).scaleb(-places))


def _fraction(part: int, whole: int) -> Decimal | None:
    if whole == 0:
        return None
    return (Decimal(part) / Decimal(whole)).quantize(Decimal("0.0001"))


def _clock(conn: Connection, s: str, at: datetime) -> tuple[str, date, date, datetime]:
    row = conn.execute(
        sa.text(
            f"SELECT {s}.token_timezone() AS tz, "
            f"(CAST(:at AS timestamptz) AT TIME ZONE {s}.token_timezone())::date AS today"
        ),
        {"at": at},
    ).one()
    today: date = row.today
    month = today.replace(day=1)
    month_start = conn.execute(
        sa.text("SELECT CAST(:month AS timestamp) AT TIME ZONE :tz"), {"month": month, "tz": row.tz}
    ).scalar_one()
    return str(row.tz), today, month, month_start


def collect_status(
    conn: Connection,
    schema: str,
    at: datetime | None = None,
    *,
    drift: Drift | None = None,
    environment: str = "",
) -> Report:
    """Every figure of the status screen as of `at` (default: now)."""
    s = quote_schema(schema)
    at = at or datetime.now(UTC)
    timezone, today, month, month_start = _clock(conn, s, at)
    p = {"at": at, "today": today, "month": month, "month_start": month_start}
    sections = [
        _plans(conn, s, p),
        _prices(conn, s, p),
        _month(conn, s, p),
        _tokens(conn, s, p),
        _top_models(conn, s, p),
        _top_customers(conn, s, p),
        _promotions(conn, s, p),
        _operations(conn, s, p, drift),
    ]
    filters = {"timezone": timezone}
    if environment:
        filters["env"] = environment
    return Report(
        key="status",
        title="Tariff status",
        period_from=month,
        period_to=today,
        filters=filters,
        sections=tuple(sections),
        generated_at=at,
    )


# cycle_months() (migration 0012) is the revenue reports' normalisation: MRR here matches theirs.
def _monthly(s: str) -> str:
    return f"pv.amount_minor / {s}.cycle_months(c.every, c.unit)"


def _plans(conn: Connection, s: str, p: dict[str, Any]) -> Section:
    rows = _rows(
        conn,
        f"""
        WITH subs AS (
            SELECT sub.plan_id, sub.currency,
                   count(*) FILTER (WHERE sub.status IN ('active', 'past_due')) AS active,
                   count(*) FILTER (WHERE sub.status = 'trialing') AS trials,
                   count(*) FILTER (WHERE sub.status = 'past_due') AS past_due,
                   sum({_monthly(s)}) FILTER (WHERE sub.status IN ('active', 'past_due')) AS mrr
              FROM {s}.subscriptions sub
              JOIN {s}.price_versions pv ON pv.id = sub.price_version_id
              JOIN {s}.billing_cycles c ON c.id = sub.cycle
             WHERE sub.status IN ('active', 'past_due', 'trialing')
             GROUP BY 1, 2
        )
        SELECT pl.id, pl.name, pl.status, subs.currency, coalesce(subs.active, 0) AS active,
               coalesce(subs.trials, 0) AS trials, coalesce(subs.past_due, 0) AS past_due, subs.mrr,
               coalesce(cur.minor_units, 2) AS places
          FROM {s}.plans pl
          LEFT JOIN subs ON subs.plan_id = pl.id
          LEFT JOIN {s}.currencies cur ON cur.code = subs.currency
         WHERE pl.status <> 'retired' OR subs.plan_id IS NOT NULL
         ORDER BY pl.id, subs.currency
        """,
        p,
    )
    return Section(
        key="plans",
        title="Plans: subscribers and MRR",
        columns=(
            Column("plan", "Plan", "text"),
            Column("name", "Name", "text"),
            Column("status", "Status", "text"),
            Column("currency", "Currency", "text"),
            Column("active", "Active", "int"),
            Column("trials", "Trials", "int"),
            Column("past_due", "Past due", "int"),
            Column("mrr", "MRR", "money", currency_key="currency"),
        ),
        rows=tuple(
            (
                r.id,
                r.name,
                r.status,
                r.currency.strip() if r.currency else None,
                int(r.active),
                int(r.trials),
                int(r.past_due),
                _money(round(r.mrr) if r.mrr is not None else (0 if r.currency else None), r.places),
            )
            for r in rows
        ),
        chart=Chart("bar", "plan", ("active",), "Active subscribers by plan"),
        note="Active counts active and past-due subscriptions; MRR is what they pay per month, per currency.",
    )


def _prices(conn: Connection, s: str, p: dict[str, Any]) -> Section:
    rows = _rows(
        conn,
        f"""
        SELECT pv.plan_id, pv.cycle, coalesce(pv.region, 'base') AS region, pv.currency, pv.amount_minor,
               pv.valid_from, coalesce(cur.minor_units, 2) AS places
          FROM {s}.price_versions pv
          JOIN {s}.plans pl ON pl.id = pv.plan_id
          LEFT JOIN {s}.currencies cur ON cur.code = pv.currency
         WHERE pv.valid_to IS NULL AND pl.status <> 'retired'
         ORDER BY pv.plan_id, pv.cycle, pv.region NULLS FIRST, pv.currency
        """,
        p,
    )
    return Section(
        key="prices",
        title="Live prices by region",
        columns=(
            Column("plan", "Plan", "text"),
            Column("cycle", "Cycle", "text"),
            Column("region", "Region", "text"),
            Column("currency", "Currency", "text"),
            Column("price", "Price", "money", currency_key="currency"),
            Column("since", "Since", "datetime"),
        ),
        rows=tuple(
            (
                r.plan_id,
                r.cycle,
                r.region,
                r.currency.strip(),
                _money(r.amount_minor, r.places),
                r.valid_from,
            )
            for r in rows
        ),
    )


def _month(conn: Connection, s: str, p: dict[str, Any]) -> Section:
    row = conn.execute(
        sa.text(
            f"""
            SELECT count(*) FILTER (WHERE created_at >= :month_start AND created_at <= :at) AS new,
                   count(*) FILTER (WHERE trial_end >= :month_start AND trial_end <= :at) AS trials_ended,
                   count(*) FILTER (WHERE trial_end >= :month_start AND trial_end <= :at
                                      AND status IN ('active', 'past_due')) AS converted,
                   count(*) FILTER (WHERE created_at < :month_start
                                      AND (canceled_at IS NULL OR canceled_at >= :month_start)) AS base,
                   count(*) FILTER (WHERE created_at < :month_start
                                      AND canceled_at >= :month_start AND canceled_at <= :at) AS churned
              FROM {s}.subscriptions
            """
        ),
        p,
    ).one()
    return Section(
        key="month",
        title="This month",
        columns=(
            Column("new", "New subscriptions", "int"),
            Column("trials_ended", "Trials ended", "int"),
            Column("converted", "Converted", "int"),
            Column("conversion", "Conversion", "percent"),
            Column("base", "Subscribers at start", "int"),
            Column("churned", "Canceled", "int"),
            Column("churn", "Churn", "percent"),
        ),
        rows=(
            (
                int(row.new),
                int(row.trials_ended),
                int(row.converted),
                _fraction(row.converted, row.trials_ended),
                int(row.base),
                int(row.churned),
                _fraction(row.churned, row.base),
            ),
        ),
        note="Conversion: trials that ended this month and are now paying. Churn: subscriptions of the "
        "start of the month canceled since.",
    )


def _tokens(conn: Connection, s: str, p: dict[str, Any]) -> Section:
    usage = conn.execute(
        sa.text(
            f"SELECT coalesce(sum(credits) FILTER (WHERE day = :today), 0) AS today, "
            "coalesce(sum(credits), 0) AS month "
            f"FROM {s}.token_usage_daily WHERE day >= :month AND day <= :today"
        ),
        p,
    ).one()
    allocated = conn.execute(
        sa.text(
            f"""
            SELECT coalesce(round(sum(CASE pl.allowance_every
                        WHEN 'month' THEN pl.allowance_amount::numeric
                        WHEN 'cycle' THEN pl.allowance_amount / {s}.cycle_months(c.every, c.unit)
                        ELSE 0 END)), 0) AS allocated
              FROM {s}.subscriptions sub
              JOIN {s}.plans pl ON pl.id = sub.plan_id
              JOIN {s}.billing_cycles c ON c.id = sub.cycle
             WHERE sub.status IN ('trialing', 'active', 'past_due') AND pl.allowance_amount > 0
            """
        ),
        p,
    ).scalar_one()
    balance = conn.execute(
        sa.text(
            f"SELECT coalesce(sum(balance), 0) AS credits, count(*) FILTER (WHERE balance > 0) AS accounts "
            f"FROM {s}.token_accounts"
        ),
        p,
    ).one()
    month, allocated = int(usage.month), int(allocated)
    return Section(
        key="tokens",
        title="AI credits",
        columns=(
            Column("today", "Used today", "int"),
            Column("month", "Used this month", "int"),
            Column("allocated", "Allocated this month", "int"),
            Column("used", "Used of allocated", "percent"),
            Column("outstanding", "Outstanding balance", "int"),
            Column("accounts", "Accounts with credits", "int"),
        ),
        rows=(
            (
                int(usage.today),
                month,
                allocated,
                _fraction(month, allocated),
                int(balance.credits),
                int(balance.accounts),
            ),
        ),
        note="Allocated: the plans' allowances of live subscriptions for one month. Outstanding: credits "
        "granted and not yet used (allowances, packages, promotions, boosts).",
    )


def _top_models(conn: Connection, s: str, p: dict[str, Any]) -> Section:
    rows = _rows(
        conn,
        f"""
        SELECT model_id, sum(credits) AS credits, sum(requests) AS requests, cost_currency,
               round(sum(cost), 2) AS cost
          FROM {s}.token_usage_daily
         WHERE day >= :month AND day <= :today
         GROUP BY model_id, cost_currency
         ORDER BY 2 DESC, 1
         LIMIT {TOP}
        """,
        p,
    )
    return Section(
        key="top_models",
        title=f"Top models this month (up to {TOP})",
        columns=(
            Column("model", "Model", "text"),
            Column("credits", "Credits", "int"),
            Column("requests", "Requests", "int"),
            Column("currency", "Cost currency", "text"),
            Column("cost", "Provider cost", "money", currency_key="currency"),
        ),
        rows=tuple(
            (r.model_id, int(r.credits), int(r.requests), r.cost_currency.strip(), Decimal(r.cost))
            for r in rows
        ),
        chart=Chart("bar", "model", ("credits",), "Credits by model"),
    )


def _top_customers(conn: Connection, s: str, p: dict[str, Any]) -> Section:
    rows = _rows(
        conn,
        f"""
        SELECT u.customer_id, u.credits, u.requests,
               (SELECT sub.plan_id FROM {s}.subscriptions sub
                 WHERE sub.customer_id = u.customer_id AND sub.status IN ('trialing', 'active', 'past_due')
                 ORDER BY sub.created_at DESC LIMIT 1) AS plan
          FROM (SELECT customer_id, sum(credits) AS credits, sum(requests) AS requests
                  FROM {s}.token_usage_daily
                 WHERE day >= :month AND day <= :today
                 GROUP BY customer_id
                 ORDER BY 2 DESC, 1
                 LIMIT {TOP}) u
         ORDER BY u.credits DESC, u.customer_id
        """,
        p,
    )
    return Section(
        key="top_customers",
        title=f"Top customers this month (up to {TOP})",
        columns=(
            Column("customer", "Customer", "text"),
            Column("plan", "Plan", "text"),
            Column("credits", "Credits", "int"),
            Column("requests", "Requests", "int"),
        ),
        rows=tuple((r.customer_id, r.plan, int(r.credits), int(r.requests)) for r in rows),
        chart=Chart("bar", "customer", ("credits",), "Credits by customer"),
    )


def _promotions(conn: Connection, s: str, p: dict[str, Any]) -> Section:
    rows = _rows(
        conn,
        f"""
        SELECT pr.id, pr.name, CASE WHEN pr.starts_at > :at THEN 'scheduled' ELSE 'active' END AS state,
               pr.starts_at, pr.ends_at, coalesce(u.redeemed, 0) AS redeemed, pr.max_redemptions
          FROM {s}.promotions pr
          LEFT JOIN (SELECT promotion_id, sum(redeemed) AS redeemed FROM {s}.promotion_usage
                      GROUP BY promotion_id) u ON u.promotion_id = pr.id
         WHERE pr.status = 'active' AND (pr.ends_at IS NULL OR pr.ends_at > :at)
         ORDER BY state, pr.starts_at NULLS FIRST, pr.id
        """,
        p,
    )
    return Section(
        key="promotions",
        title="Active and scheduled promotions",
        columns=(
            Column("promotion", "Promotion", "text"),
            Column("name", "Name", "text"),
            Column("state", "State", "text"),
            Column("starts", "Starts", "datetime"),
            Column("ends", "Ends", "datetime"),
            Column("redeemed", "Redeemed", "int"),
            Column("limit", "Limit", "int"),
        ),
        rows=tuple(
            (r.id, r.name, r.state, r.starts_at, r.ends_at, int(r.redeemed), r.max_redemptions) for r in rows
        ),
    )


def _operations(conn: Connection, s: str, p: dict[str, Any], drift: Drift | None) -> Section:
    revision = conn.execute(
        sa.text(
            f"SELECT id, created_at, actor, git_commit, summary FROM {s}.revisions ORDER BY id DESC LIMIT 1"
        )
    ).one_or_none()
    migrations = conn.execute(
        sa.text(
            f"SELECT count(*) AS pending, min(effective_at) AS next FROM {s}.price_migrations "
            "WHERE status = 'scheduled'"
        )
    ).one()
    notifications = conn.execute(
        sa.text(
            f"SELECT count(*) FILTER (WHERE status = 'pending' AND next_attempt_at <= :at) AS due, "
            "count(*) FILTER (WHERE status = 'pending' AND next_attempt_at > :at) AS later, "
            "count(*) FILTER (WHERE status = 'failed') AS failed, "
            "min(created_at) FILTER (WHERE status = 'pending' AND next_attempt_at <= :at) AS oldest "
            f"FROM {s}.notifications WHERE status IN ('pending', 'failed')"
        ),
        p,
    ).one()
    if drift is None:
        drift_text = "not checked"
    elif drift.changes == 0:
        drift_text = "none"
    else:
        shown = ", ".join(drift.keys[:3]) + (" …" if len(drift.keys) > 3 else "")
        drift_text = f"{drift.changes} change(s): {shown}"
    return Section(
        key="operations",
        title="Operations",
        columns=(
            Column("revision", "Last revision", "int"),
            Column("applied_at", "Applied", "datetime"),
            Column("actor", "By", "text"),
            Column("commit", "Commit", "text"),
            Column("migrations", "Pending price migrations", "int"),
            Column("next_migration", "Next migration", "datetime"),
            Column("undelivered", "Undelivered notifications", "int"),
            Column("failed", "Failed notifications", "int"),
            Column("oldest", "Oldest undelivered", "datetime"),
            Column("drift", "Drift", "text"),
        ),
        rows=(
            (
                revision.id if revision else None,
                revision.created_at if revision else None,
                revision.actor if revision else None,
                (revision.git_commit or "")[:12] or None if revision else None,
                int(migrations.pending),
                migrations.next,
                int(notifications.due),
                int(notifications.failed),
                notifications.oldest,
                drift_text,
            ),
        ),
        note="Undelivered: notifications due and still pending. Drift: live catalog rows changed outside "
        "Tariff since the last apply (tariff plan shows them in full).",
    )
