"""Who a price change reaches, and when: one SQL query shared by `plan` (to count) and `apply` (to schedule).

A change closes price version `old` and sells `new_minor` instead. Subscribers reached are those paying
`old`, and those already scheduled to move to `old` by an earlier change (their pending move is replaced).
For each, the plan's grandfathering rule for the direction of *their* change (their own price → the new
one) decides when the new price applies:

  keep_forever        never: they stay on the version they pay
  migrate_now         immediately
  migrate_at_renewal  at the first renewal that leaves them the notice period
  keep_for D          at the first renewal after D (or after the notice period, if that is longer)

Renewals are the subscription's period end plus whole billing cycles, so nobody is charged a new price
mid-period, and the notice (notify_days_before) is always given before the first charge at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compiler.catalog import GrandfatherRule

LIVE_STATUSES = ("trialing", "active", "past_due")


@dataclass(frozen=True, slots=True)
class PriceMove:
    """One price key whose amount changes, with the plan's rules (new_version is None before apply)."""

    old_version: int
    new_minor: int
    on_increase: GrandfatherRule
    on_decrease: GrandfatherRule
    new_version: int | None = None


def pin_zone(conn: Connection, zone: str) -> None:
    """Do this transaction's calendar arithmetic (renewals, whole days, notice) in the project's time zone.

    `timestamptz + interval` and date_trunc follow the session's TimeZone, which the server or the client
    (PGTZ) sets; without this, the same plan would move subscribers on other dates elsewhere.
    """
    conn.execute(sa.text("SELECT set_config('TimeZone', :zone, true)"), {"zone": zone})


def tune_for_subscribers(conn: Connection) -> None:
    """Session settings for this transaction's queries over every reached subscription.

    Sorting a few hundred thousand subscribers by version fits in memory with 64 MB instead of spilling to
    disk, and the planner's cost guesses for these queries can make JIT compile for longer than they run.
    """
    conn.execute(sa.text("SELECT set_config('work_mem', '64MB', true), set_config('jit', 'off', true)"))


def moves_params(moves: Sequence[PriceMove]) -> dict[str, Any]:
    return {
        "old_versions": [m.old_version for m in moves],
        "new_versions": [m.new_version for m in moves],
        "new_minors": [m.new_minor for m in moves],
        "inc_policy": [m.on_increase.policy for m in moves],
        "inc_duration": [str(m.on_increase.duration) if m.on_increase.duration else None for m in moves],
        "inc_notice": [m.on_increase.notify_days_before for m in moves],
        "dec_policy": [m.on_decrease.policy for m in moves],
        "dec_duration": [str(m.on_decrease.duration) if m.on_decrease.duration else None for m in moves],
        "dec_notice": [m.on_decrease.notify_days_before for m in moves],
    }


def month_number(moment: str) -> str:
    """SQL for the calendar month of `moment` (an SQL expression) in the session's time zone, counted
    from year 0: consecutive months differ by one, across years too.

    date_part, not extract: extract returns numeric, whose arithmetic made this the costliest expression
    per reached subscriber; the year and month are small integers either way.
    """
    return (
        f"(CAST(date_part('year', {moment}) AS integer) * 12 + CAST(date_part('month', {moment}) AS integer))"
    )


def renewal_sql(
    period_end: str,
    every: str,
    unit: str,
    not_before: str,
    *,
    period_end_month: str | None = None,
    not_before_month: str | None = None,
) -> str:
    """SQL for the first renewal `period_end + g × cycle` (g ≥ 0) that falls on or after `not_before`.

    Computed, not searched: in the session's time zone, the renewal g cycles after `period_end` lands in the
    calendar month (for day cycles: on the date) g × every months (days) after `period_end`'s, whatever the
    month-end clamping (31 Jan + 1 month = 28 Feb) does to its day. So a g with g × every smaller than the
    months (days) from `period_end` to `not_before` is too early, a larger one is late enough, and the
    answer is the smallest g ≥ 0 with g × every ≥ that distance, or the one after it when that renewal
    lands in `not_before`'s own month (day) but before it. The arguments are SQL expressions; the
    `…_month` ones are `month_number()` of `period_end` and `not_before` when the caller has them already
    (the expression below needs each twice, and `not_before` is the same for every subscriber of a price
    change, so a query over many subscribers computes them once).
    """
    step = (
        f"CASE WHEN {unit} = 'month' THEN make_interval(months => {every}) "
        f"ELSE make_interval(days => {every}) END"
    )
    target_month = not_before_month or month_number(not_before)
    elapsed = (
        f"CASE WHEN {unit} = 'month' THEN {target_month} - {period_end_month or month_number(period_end)} "
        f"ELSE CAST({not_before} AS date) - CAST({period_end} AS date) END"
    )
    # Integer division truncates towards zero; under greatest(0, …) this is ceil(elapsed / every).
    first = f"greatest(0, ({elapsed} + {every} - 1) / {every})"
    return (
        f"{period_end} + ({first} + "
        f"CASE WHEN {period_end} + {first} * {step} >= {not_before} THEN 0 ELSE 1 END) * {step}"
    )


def affected_sql(s: str) -> str:
    """SELECT one row per reached subscription with its direction, rule, effective and notice dates.

    `s` is the quoted schema; parameters come from `moves_params` plus `:now`.
    """
    return f"""
WITH moves AS (
    -- One move per closed version, so a subscription paying it is reached once.
    SELECT DISTINCT ON (old_version) * FROM unnest(
        CAST(:old_versions AS bigint[]), CAST(:new_versions AS bigint[]), CAST(:new_minors AS bigint[]),
        CAST(:inc_policy AS text[]), CAST(:inc_duration AS text[]), CAST(:inc_notice AS int[]),
        CAST(:dec_policy AS text[]), CAST(:dec_duration AS text[]), CAST(:dec_notice AS int[])
    ) AS m(old_version, new_version, new_minor, inc_policy, inc_duration, inc_notice,
           dec_policy, dec_duration, dec_notice)
),
reached AS (
    SELECT sub.id AS subscription_id, sub.customer_id, sub.plan_id, sub.cycle, sub.currency,
           sub.price_version_id AS from_version, sub.current_period_end,
           {month_number("sub.current_period_end")} AS period_end_month, m.old_version
      FROM moves m
      JOIN {s}.subscriptions sub ON sub.price_version_id = m.old_version
     WHERE sub.status IN ('trialing', 'active', 'past_due')
    UNION ALL
    SELECT DISTINCT ON (sub.id) sub.id, sub.customer_id, sub.plan_id, sub.cycle, sub.currency,
           sub.price_version_id, sub.current_period_end, {month_number("sub.current_period_end")},
           m.old_version
      FROM moves m
      JOIN {s}.price_migrations pm ON pm.to_version = m.old_version AND pm.status = 'scheduled'
      JOIN {s}.subscriptions sub ON sub.id = pm.subscription_id
     WHERE sub.status IN ('trialing', 'active', 'past_due') AND sub.price_version_id <> m.old_version
),
-- Everything that depends only on the move and the version a subscriber pays, computed once per pair
-- rather than once per subscriber: those who pay the closed version, and those headed for it.
pairs AS (
    SELECT old_version, old_version AS from_version FROM moves
    UNION
    SELECT m.old_version, sub.price_version_id
      FROM moves m
      JOIN {s}.price_migrations pm ON pm.to_version = m.old_version AND pm.status = 'scheduled'
      JOIN {s}.subscriptions sub ON sub.id = pm.subscription_id
     WHERE sub.status IN ('trialing', 'active', 'past_due') AND sub.price_version_id <> m.old_version
),
ruled AS (
    SELECT m.*, p.from_version, pv.amount_minor AS from_minor,
           CASE WHEN m.new_minor > pv.amount_minor THEN 'increase'
                WHEN m.new_minor < pv.amount_minor THEN 'decrease' ELSE 'same' END AS direction,
           bc.every, bc.unit,
           CASE WHEN bc.unit = 'month' THEN bc.every::numeric ELSE bc.every / 30.4375 END AS cycle_months
      FROM pairs p
      JOIN moves m ON m.old_version = p.old_version
      JOIN {s}.price_versions pv ON pv.id = p.from_version
      JOIN {s}.billing_cycles bc ON bc.id = pv.cycle
),
chosen AS (
    SELECT ru.*,
           CASE ru.direction WHEN 'increase' THEN ru.inc_policy WHEN 'decrease' THEN ru.dec_policy END
               AS policy,
           CASE ru.direction WHEN 'increase' THEN ru.inc_duration WHEN 'decrease' THEN ru.dec_duration END
               AS keep_duration,
           CASE ru.direction WHEN 'increase' THEN ru.inc_notice WHEN 'decrease' THEN ru.dec_notice ELSE 0 END
               AS notice_days
      FROM ruled ru
),
dated AS (
    SELECT c.*,
           -- Whole days: a renewal on the anniversary counts, whatever its time of day.
           date_trunc('day', CAST(:now AS timestamptz)) + greatest(
               make_interval(days => c.notice_days),
               CASE WHEN c.policy = 'keep_for' THEN CAST(c.keep_duration AS interval) ELSE interval '0' END
           ) AS not_before
      FROM chosen c
),
rules AS MATERIALIZED (
    SELECT d.*, {month_number("d.not_before")} AS not_before_month FROM dated d
)
SELECT r.subscription_id, r.customer_id, r.plan_id, r.cycle, r.currency, r.from_version, u.old_version,
       u.new_version, u.from_minor, u.new_minor, u.direction, u.policy, u.cycle_months,
       CASE
         WHEN u.direction = 'same' OR u.policy = 'keep_forever' THEN NULL
         WHEN u.policy = 'migrate_now' THEN CAST(:now AS timestamptz)
         ELSE {
        renewal_sql(
            "r.current_period_end",
            "u.every",
            "u.unit",
            "u.not_before",
            period_end_month="r.period_end_month",
            not_before_month="u.not_before_month",
        )
    }
       END AS effective_at,
       u.notice_days
  FROM reached r
  JOIN rules u ON u.old_version = r.old_version AND u.from_version = r.from_version
"""


def blast_radius_sql(s: str) -> str:
    """Per closed version: subscribers reached, what the rule does, and monthly revenue impact."""
    return f"""
WITH affected AS ({affected_sql(s)})
SELECT old_version,
       count(*) AS subscribers,
       count(*) FILTER (WHERE policy = 'keep_forever' OR direction = 'same') AS kept,
       count(*) FILTER (WHERE policy = 'migrate_now') AS migrated_now,
       count(*) FILTER (WHERE effective_at IS NOT NULL AND policy <> 'migrate_now') AS scheduled,
       min(effective_at) FILTER (WHERE policy <> 'migrate_now') AS first_effective,
       max(effective_at) FILTER (WHERE policy <> 'migrate_now') AS last_effective,
       min(effective_at - make_interval(days => notice_days))
           FILTER (WHERE effective_at IS NOT NULL AND notice_days > 0) AS first_notice,
       count(DISTINCT customer_id) AS customers,
       coalesce(sum((new_minor - from_minor) / cycle_months) FILTER (WHERE policy = 'migrate_now'), 0)
           AS mrr_now_minor,
       coalesce(sum((new_minor - from_minor) / cycle_months) FILTER (WHERE effective_at IS NOT NULL), 0)
           AS mrr_after_minor
  FROM affected
 GROUP BY old_version
"""
