"""`tariff report revenue`: MRR and its movements, conversion, flows, churn, cohorts, plans, payments,
pricing-change impact and promotion performance.

Subscription metrics come from subscription_history (one row per state a subscription was in); cash
metrics from payments and refunds. MRR is the monthly-normalised list price of every paying state (active
or past_due: trials, free plans and canceled subscriptions count 0), converted to USD at
currencies.usd_rate (the rates published from tariff.yaml), and per currency in its own money.
A customer's MRR at an instant is the sum over their subscriptions valid then. Movements compare each
customer's MRR at the start and end of each calendar month of the period (clipped to the period).
Money is Decimal in major units; percentages are fractions (0.25 = 25 %).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics.model import Chart, Column, Report, Section
from analytics.period import Period, generated_now

RevenueGrouping = Literal["plan", "region", "currency", "month"]
GROUPINGS: tuple[RevenueGrouping, ...] = ("plan", "region", "currency", "month")
IMPACT_WINDOW_DAYS = 30
COHORT_MONTHS = 6

_BASE = """
bounds AS (
    SELECT CAST(:from_day AS timestamp) AT TIME ZONE :tz AS lo, CAST(:until_day AS timestamp) AT TIME ZONE :tz AS hi
),
hist AS (
    SELECT h.id, h.subscription_id, h.customer_id, h.plan_id, h.cycle, h.currency::text AS currency,
           coalesce(h.region, c.region::text, '') AS region, h.status, h.amount_minor, h.mrr_minor,
           h.valid_from, h.valid_to,
           h.mrr_minor / 10 ^ cu.minor_units AS mrr_major,
           h.mrr_minor / 10 ^ cu.minor_units / cu.usd_rate AS mrr_usd
      FROM subscription_history h
      JOIN currencies cu ON cu.code = h.currency
      LEFT JOIN customers c ON c.id = h.customer_id
)"""

# The windows of each redeemed promotion within the period, cut to the period. A yearly promotion has one
# window per year, defined as SQL promotion_window() (migration 0006) defines them: the first year's local
# dates and times shifted by whole years in the promotion's zone (its own, else the catalog's). Only the
# years whose window can touch the period are generated: a window is shorter than a year, so it starts
# at most one local year before the period does.
_PROMOTION_WINDOWS = """
promo AS (
    SELECT p.id, p.starts_at, p.ends_at, p.yearly AND p.starts_at IS NOT NULL AND p.ends_at IS NOT NULL AS yearly,
           coalesce(p.schedule_timezone, (SELECT timezone FROM catalog_state), 'UTC') AS zone
      FROM promotions p
     WHERE p.id IN (SELECT promotion_id FROM red)
),
win AS (
    SELECT p.id, greatest(coalesce(p.starts_at, b.lo), b.lo) AS lo, least(coalesce(p.ends_at, b.hi), b.hi) AS hi
      FROM promo p, bounds b
     WHERE NOT p.yearly
    UNION ALL
    SELECT p.id, greatest(y.lo, b.lo), least(y.hi, b.hi)
      FROM promo p, bounds b,
           LATERAL generate_series(
               greatest(0, extract(year FROM b.lo AT TIME ZONE p.zone)::integer
                           - extract(year FROM p.starts_at AT TIME ZONE p.zone)::integer - 1),
               extract(year FROM b.hi AT TIME ZONE p.zone)::integer
                   - extract(year FROM p.starts_at AT TIME ZONE p.zone)::integer) AS n,
           LATERAL (SELECT (p.starts_at AT TIME ZONE p.zone + make_interval(years => n)) AT TIME ZONE p.zone AS lo,
                           (p.ends_at AT TIME ZONE p.zone + make_interval(years => n)) AT TIME ZONE p.zone AS hi) y
     WHERE p.yearly
)"""

# Month segments of the period.
_SEGS = """
segs AS (
    SELECT greatest(m, CAST(:from_day AS timestamp))::date AS seg_from,
           least(m + interval '1 month', CAST(:until_day AS timestamp))::date AS seg_until
      FROM generate_series(date_trunc('month', CAST(:from_day AS timestamp)), CAST(:to_day AS timestamp),
                           interval '1 month') AS m
)"""

# Each customer's MRR at every segment boundary.
_SNAP = """
points AS (
    SELECT DISTINCT d AS day, CAST(d AS timestamp) AT TIME ZONE :tz AS at
      FROM (SELECT seg_from AS d FROM segs UNION SELECT seg_until FROM segs) x
),
snap AS (
    SELECT p.day, h.customer_id, sum(h.mrr_usd) AS mrr,
           (array_agg(h.plan_id ORDER BY h.mrr_usd DESC, h.id))[1] AS plan_id,
           (array_agg(h.region ORDER BY h.mrr_usd DESC, h.id))[1] AS region,
           (array_agg(h.currency ORDER BY h.mrr_usd DESC, h.id))[1] AS currency
      FROM points p
      JOIN hist h ON h.mrr_minor > 0 AND h.valid_from <= p.at AND (h.valid_to IS NULL OR h.valid_to > p.at)
     GROUP BY p.day, h.customer_id
)"""

# Each customer's MRR at the start and end of every segment, classified.
_MOVES = """
pairs AS (
    SELECT s.seg_from, s.seg_until, x.customer_id,
           coalesce(sum(x.mrr) FILTER (WHERE x.day = s.seg_from), 0) AS start_mrr,
           coalesce(sum(x.mrr) FILTER (WHERE x.day = s.seg_until), 0) AS end_mrr,
           coalesce(max(x.plan_id) FILTER (WHERE x.day = s.seg_until), max(x.plan_id)) AS plan_id,
           coalesce(max(x.region) FILTER (WHERE x.day = s.seg_until), max(x.region)) AS region,
           coalesce(max(x.currency) FILTER (WHERE x.day = s.seg_until), max(x.currency)) AS currency
      FROM segs s JOIN snap x ON x.day IN (s.seg_from, s.seg_until)
     GROUP BY 1, 2, 3
),
first_paid AS (
    SELECT customer_id, min(valid_from) AS at FROM hist WHERE mrr_minor > 0 GROUP BY customer_id
),
moves AS (
    SELECT p.*,
           CASE WHEN p.start_mrr = 0 AND p.end_mrr > 0 THEN
                     CASE WHEN f.at < CAST(p.seg_from AS timestamp) AT TIME ZONE :tz
                          THEN 'reactivation' ELSE 'new' END
                WHEN p.start_mrr > 0 AND p.end_mrr = 0 THEN 'churned'
                WHEN p.end_mrr > p.start_mrr THEN 'expansion'
                WHEN p.end_mrr < p.start_mrr THEN 'contraction'
                ELSE 'retained' END AS movement
      FROM pairs p LEFT JOIN first_paid f ON f.customer_id = p.customer_id
)"""


# What the sections read: the snapshots, movements and payment sums built once per report (_materialise).
_SNAPSHOTS_T = f"""{_SEGS},
snap AS (SELECT * FROM pg_temp.revenue_snap),
moves AS (SELECT * FROM pg_temp.revenue_moves)"""
_PAY_T = "pay AS (SELECT * FROM pg_temp.revenue_pay)"

_PAYMENTS = """
pay AS (
    SELECT p.id, p.customer_id, p.plan_id, p.currency::text AS currency, coalesce(p.region::text, '') AS region,
           p.status, coalesce(p.paid_at, p.failed_at, p.created_at) AS at, p.paid_at,
           CASE WHEN p.paid_at IS NOT NULL THEN p.net_minor / 10 ^ cu.minor_units / cu.usd_rate ELSE 0 END
               AS net_usd,
           CASE WHEN p.amount_minor > 0 THEN p.refunded_minor::numeric * p.net_minor / p.amount_minor
                                             / 10 ^ cu.minor_units / cu.usd_rate ELSE 0 END AS refunded_usd,
           p.discount_minor / 10 ^ cu.minor_units / cu.usd_rate AS discount_usd
      FROM payments p JOIN currencies cu ON cu.code = p.currency
     WHERE coalesce(p.paid_at, p.failed_at, p.created_at) >= CAST(:from_day AS timestamp) AT TIME ZONE :tz
       AND coalesce(p.paid_at, p.failed_at, p.created_at) < CAST(:until_day AS timestamp) AT TIME ZONE :tz
)"""

# The period's payments summed per local month, plan, currency and region, built once per report: every
# section but promotions needs only these sums, and a pass over payments is the report's largest cost.
# Amounts are summed in minor units and converted once per group (the currency is part of the group), and
# a refund's share is computed only for refunded payments: per-row numeric arithmetic dominated the pass.
# Every payment read here lies in the period, so its local month is also its segment of _SEGS.
_PAY_MONTHLY = """
WITH sums AS (
    SELECT date_trunc('month', coalesce(p.paid_at, p.failed_at, p.created_at) AT TIME ZONE :tz)::date AS month,
           p.plan_id, p.currency::text AS currency, coalesce(p.region::text, '') AS region, count(*) AS attempts,
           count(p.paid_at) AS paid, count(*) FILTER (WHERE p.status = 'failure') AS failed,
           count(*) FILTER (WHERE p.amount_minor > 0 AND sign(p.refunded_minor) * sign(p.net_minor) > 0)
               AS refunds,
           coalesce(sum(p.net_minor) FILTER (WHERE p.paid_at IS NOT NULL), 0) AS net_minor,
           coalesce(sum(p.refunded_minor::numeric * p.net_minor / p.amount_minor)
                        FILTER (WHERE p.amount_minor > 0 AND p.refunded_minor <> 0), 0) AS refunded_minor,
           sum(p.discount_minor) AS discount_minor
      FROM payments p
     WHERE coalesce(p.paid_at, p.failed_at, p.created_at) >= CAST(:from_day AS timestamp) AT TIME ZONE :tz
       AND coalesce(p.paid_at, p.failed_at, p.created_at) < CAST(:until_day AS timestamp) AT TIME ZONE :tz
     GROUP BY 1, 2, 3, 4
)
SELECT s.month, s.plan_id, s.currency, s.region, s.attempts, s.paid, s.failed, s.refunds,
       s.net_minor / 10 ^ cu.minor_units / cu.usd_rate AS net_usd,
       s.refunded_minor / 10 ^ cu.minor_units / cu.usd_rate AS refunded_usd,
       (s.net_minor - s.refunded_minor) / 10 ^ cu.minor_units / cu.usd_rate AS net_less_refunded,
       s.discount_minor / 10 ^ cu.minor_units / cu.usd_rate AS discount_usd
  FROM sums s JOIN currencies cu ON cu.code = s.currency"""


def _usd(value: Any) -> Decimal:
    return Decimal(value or 0).quantize(Decimal("0.01"))


def _ratio(part: Any, whole: Any) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part or 0) / Decimal(whole)).quantize(Decimal("0.0001"))


class RevenueReportBuilder:
    def __init__(self, conn: Connection, period: Period) -> None:
        self.conn = conn
        self.period = period
        self.params: dict[str, Any] = {**period.params(), "window": IMPACT_WINDOW_DAYS}
        self._materialise()

    def _materialise(self) -> None:
        """Snapshots, movements and the payments' sums, computed once for the sections that read them
        (each used to recompute them); ON COMMIT DROP keeps them to the report's transaction."""
        for name, sql in (
            ("revenue_snap", f"WITH {_BASE}, {_SEGS}, {_SNAP} SELECT * FROM snap"),
            (
                "revenue_moves",
                f"WITH {_BASE}, {_SEGS}, snap AS (SELECT * FROM pg_temp.revenue_snap), {_MOVES} "
                "SELECT * FROM moves",
            ),
            ("revenue_pay", _PAY_MONTHLY),
        ):
            self.conn.execute(sa.text(f"DROP TABLE IF EXISTS pg_temp.{name}"))
            used = {k: v for k, v in self.params.items() if f":{k}" in sql}
            self.conn.execute(sa.text(f"CREATE TEMP TABLE {name} ON COMMIT DROP AS {sql}"), used)
            self.conn.execute(sa.text(f"ANALYZE pg_temp.{name}"))

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        used = {k: v for k, v in self.params.items() if f":{k}" in sql}
        return [tuple(row) for row in self.conn.execute(sa.text(sql), used)]

    def summary(self) -> Section:
        row = self.rows(
            f"""WITH {_BASE}, {_SNAPSHOTS_T}, {_PAY_T},
                first_last AS (
                    SELECT customer_id,
                           coalesce(sum(mrr) FILTER (WHERE day = CAST(:from_day AS date)), 0) AS s0,
                           coalesce(sum(mrr) FILTER (WHERE day = CAST(:until_day AS date)), 0) AS s1
                      FROM snap GROUP BY customer_id)
                SELECT (SELECT sum(s0) FROM first_last), (SELECT sum(s1) FROM first_last),
                       (SELECT count(*) FROM first_last WHERE s0 > 0), (SELECT count(*) FROM first_last WHERE s1 > 0),
                       (SELECT count(*) FROM first_last WHERE s0 > 0 AND s1 = 0),
                       (SELECT sum(s0 - s1) FILTER (WHERE s1 < s0) FROM first_last WHERE s0 > 0),
                       (SELECT sum(s1) FROM first_last WHERE s0 > 0),
                       (SELECT sum(end_mrr) FILTER (WHERE movement IN ('new', 'reactivation')) FROM moves),
                       (SELECT sum(end_mrr - start_mrr) FILTER (WHERE movement = 'expansion') FROM moves),
                       (SELECT sum(start_mrr - end_mrr) FILTER (WHERE movement = 'contraction') FROM moves),
                       (SELECT sum(start_mrr) FILTER (WHERE movement = 'churned') FROM moves),
                       (SELECT sum(net_usd) FROM pay), (SELECT sum(refunded_usd) FROM pay),
                       (SELECT coalesce(sum(failed), 0) FROM pay),
                       (SELECT coalesce(sum(attempts), 0) FROM pay)"""
        )[0]
        (
            s0,
            s1,
            c0,
            c1,
            lost,
            shrink,
            kept,
            new,
            expansion,
            contraction,
            churned,
            collected,
            refunded,
            failed,
            attempts,
        ) = row
        return Section(
            key="summary",
            title="Summary (USD)",
            columns=(
                Column("mrr_start", "MRR at start", "money"),
                Column("mrr", "MRR at end", "money"),
                Column("arr", "ARR at end", "money"),
                Column("paying", "Paying customers", "int"),
                Column("arpu", "ARPU (monthly)", "money"),
                Column("new", "New MRR", "money"),
                Column("expansion", "Expansion MRR", "money"),
                Column("contraction", "Contraction MRR", "money"),
                Column("churned", "Churned MRR", "money"),
                Column("logo_churn", "Logo churn", "percent"),
                Column("revenue_churn", "Revenue churn", "percent"),
                Column("nrr", "Net revenue retention", "percent"),
                Column("collected", "Collected (net of tax)", "money"),
                Column("refunded", "Refunded", "money"),
                Column("failure_rate", "Payment failure rate", "percent"),
            ),
            rows=(
                (
                    _usd(s0),
                    _usd(s1),
                    _usd(Decimal(s1 or 0) * 12),
                    int(c1 or 0),
                    _usd(Decimal(s1) / c1) if c1 else None,
                    _usd(new),
                    _usd(expansion),
                    _usd(contraction),
                    _usd(churned),
                    _ratio(lost, c0),
                    _ratio(Decimal(shrink or 0), s0),
                    _ratio(kept, s0),
                    _usd(collected),
                    _usd(refunded),
                    _ratio(failed, attempts),
                ),
            ),
            currency="USD",
            note="Logo churn: customers paying at the start who pay nothing at the end. Revenue churn: MRR "
            "lost from those customers (churn + contraction, start vs end). NRR: their MRR at the end over "
            "their MRR at the start.",
        )

    def by_currency(self) -> Section:
        rows = self.rows(
            f"""WITH {_BASE}
                SELECT h.currency, count(DISTINCT h.customer_id), sum(h.mrr_major), sum(h.mrr_usd)
                  FROM hist h, bounds b
                 WHERE h.mrr_minor > 0 AND h.valid_from <= b.hi AND (h.valid_to IS NULL OR h.valid_to > b.hi)
                 GROUP BY 1 ORDER BY 4 DESC"""
        )
        total = sum(Decimal(r[3]) for r in rows)
        return Section(
            key="currencies",
            title="MRR per currency at the end of the period",
            columns=(
                Column("currency", "Currency", "text"),
                Column("paying", "Paying customers", "int"),
                Column("mrr_native", "MRR", "money", currency_key="currency"),
                Column("arr_native", "ARR", "money", currency_key="currency"),
                Column("mrr_usd", "MRR (USD)", "money"),
                Column("share", "Share", "percent"),
            ),
            rows=tuple(
                (r[0], int(r[1]), _usd(r[2]), _usd(Decimal(r[2]) * 12), _usd(r[3]), _ratio(r[3], total))
                for r in rows
            ),
            currency="USD",
        )

    def movements(self) -> Section:
        rows = self.rows(
            f"""WITH {_BASE}, {_SNAPSHOTS_T}
                SELECT s.seg_from,
                       coalesce(sum(m.start_mrr), 0), coalesce(sum(m.end_mrr) FILTER (WHERE movement = 'new'), 0),
                       coalesce(sum(m.end_mrr) FILTER (WHERE movement = 'reactivation'), 0),
                       coalesce(sum(m.end_mrr - m.start_mrr) FILTER (WHERE movement = 'expansion'), 0),
                       coalesce(sum(m.start_mrr - m.end_mrr) FILTER (WHERE movement = 'contraction'), 0),
                       coalesce(sum(m.start_mrr) FILTER (WHERE movement = 'churned'), 0),
                       coalesce(sum(m.end_mrr), 0),
                       count(*) FILTER (WHERE m.end_mrr > 0),
                       count(*) FILTER (WHERE movement = 'churned')
                  FROM segs s LEFT JOIN moves m ON m.seg_from = s.seg_from
                 GROUP BY s.seg_from ORDER BY s.seg_from"""
        )
        return Section(
            key="movements",
            title="MRR movements per month (USD)",
            columns=(
                Column("month", "Month from", "date"),
                Column("start", "MRR at start", "money"),
                Column("new", "New", "money"),
                Column("reactivation", "Reactivation", "money"),
                Column("expansion", "Expansion", "money"),
                Column("contraction", "Contraction", "money"),
                Column("churned", "Churned", "money"),
                Column("end", "MRR at end", "money"),
                Column("net_new", "Net new MRR", "money"),
                Column("paying", "Paying customers", "int"),
                Column("churned_customers", "Churned customers", "int"),
            ),
            rows=tuple(
                (
                    r[0],
                    *(_usd(v) for v in r[1:8]),
                    _usd(Decimal(r[7]) - Decimal(r[1])),
                    int(r[8]),
                    int(r[9]),
                )
                for r in rows
            ),
            chart=Chart("line", "month", ("end",), "MRR at the end of each month (USD)"),
            currency="USD",
        )

    def breakdown(self, by: RevenueGrouping) -> Section:
        if by == "month":
            rows = self.rows(
                f"""WITH {_BASE}, {_SNAPSHOTS_T}, {_PAY_T}
                    SELECT s.seg_from::text,
                           (SELECT count(*) FROM snap x WHERE x.day = s.seg_until),
                           (SELECT coalesce(sum(mrr), 0) FROM snap x WHERE x.day = s.seg_until),
                           (SELECT coalesce(sum(end_mrr), 0) FROM moves m
                             WHERE m.seg_from = s.seg_from AND movement IN ('new', 'reactivation')),
                           (SELECT coalesce(sum(start_mrr), 0) FROM moves m
                             WHERE m.seg_from = s.seg_from AND movement = 'churned'),
                           (SELECT coalesce(sum(net_less_refunded), 0) FROM pay
                             WHERE pay.month = date_trunc('month', CAST(s.seg_from AS timestamp))::date)
                      FROM segs s ORDER BY s.seg_from"""
            )
        else:
            column = {"plan": "plan_id", "region": "region", "currency": "currency"}[by]
            rows = self.rows(
                f"""WITH {_BASE}, {_SNAPSHOTS_T}, {_PAY_T},
                    ends AS (SELECT {column} AS k, count(*) AS n, sum(mrr) AS mrr FROM snap
                              WHERE day = CAST(:until_day AS date) GROUP BY 1),
                    flows AS (SELECT {column} AS k,
                                     sum(end_mrr) FILTER (WHERE movement IN ('new', 'reactivation')) AS new,
                                     sum(start_mrr) FILTER (WHERE movement = 'churned') AS churned
                                FROM moves GROUP BY 1),
                    cash AS (SELECT {column} AS k, sum(net_less_refunded) AS net FROM pay GROUP BY 1),
                    keys AS (SELECT k FROM ends UNION SELECT k FROM flows UNION SELECT k FROM cash)
                    SELECT keys.k, coalesce(ends.n, 0), coalesce(ends.mrr, 0), coalesce(flows.new, 0),
                           coalesce(flows.churned, 0), coalesce(cash.net, 0)
                      FROM keys LEFT JOIN ends USING (k) LEFT JOIN flows USING (k) LEFT JOIN cash USING (k)
                     WHERE keys.k IS NOT NULL
                     ORDER BY 3 DESC, 1"""
            )
        total = sum(Decimal(r[2]) for r in rows) if by != "month" else None
        return Section(
            key="breakdown",
            title=f"Revenue by {by} (USD)",
            columns=(
                Column(by, by.capitalize(), "text"),
                Column("paying", "Paying customers at end", "int"),
                Column("mrr", "MRR at end", "money"),
                Column("arpu", "ARPU", "money"),
                Column("new", "New MRR", "money"),
                Column("churned", "Churned MRR", "money"),
                Column("collected", "Collected net of refunds", "money"),
                Column("share", "Share of MRR", "percent"),
            ),
            rows=tuple(
                (
                    str(r[0]) or "(none)",
                    int(r[1]),
                    _usd(r[2]),
                    _usd(Decimal(r[2]) / r[1]) if r[1] else None,
                    _usd(r[3]),
                    _usd(r[4]),
                    _usd(r[5]),
                    _ratio(r[2], total) if total is not None else None,
                )
                for r in rows
            ),
            chart=Chart("line" if by == "month" else "bar", by, ("mrr",), f"MRR by {by}"),
            currency="USD",
        )

    def conversion(self) -> Section:
        rows = self.rows(
            f"""WITH {_BASE},
                firsts AS (SELECT DISTINCT ON (customer_id) customer_id, valid_from, status, amount_minor
                             FROM hist ORDER BY customer_id, valid_from, id),
                first_paid AS (SELECT customer_id, min(valid_from) AS at FROM hist
                                 WHERE mrr_minor > 0 AND valid_from < (SELECT hi FROM bounds) GROUP BY 1),
                starts AS (SELECT f.*, CASE WHEN f.status = 'trialing' THEN 'trial' ELSE 'free' END AS path,
                                  p.at AS paid_at
                             FROM firsts f LEFT JOIN first_paid p USING (customer_id), bounds b
                            WHERE (f.status = 'trialing' OR f.amount_minor = 0)
                              AND f.valid_from >= b.lo AND f.valid_from < b.hi)
                SELECT date_trunc('month', valid_from AT TIME ZONE :tz)::date,
                       count(*) FILTER (WHERE path = 'trial'),
                       count(*) FILTER (WHERE path = 'trial' AND paid_at IS NOT NULL),
                       count(*) FILTER (WHERE path = 'free'),
                       count(*) FILTER (WHERE path = 'free' AND paid_at IS NOT NULL),
                       avg(extract(epoch FROM paid_at - valid_from) / 86400) FILTER (WHERE paid_at IS NOT NULL)
                  FROM starts GROUP BY 1 ORDER BY 1"""
        )
        out = [
            (
                r[0],
                int(r[1]),
                int(r[2]),
                _ratio(r[2], r[1]),
                int(r[3]),
                int(r[4]),
                _ratio(r[4], r[3]),
                Decimal(r[5]).quantize(Decimal("0.1")) if r[5] is not None else None,
            )
            for r in rows
        ]
        return Section(
            key="conversion",
            title="Free → paid and trial conversion by sign-up month",
            columns=(
                Column("month", "Sign-up month", "date"),
                Column("trials", "Trials started", "int"),
                Column("trials_converted", "Trials converted", "int"),
                Column("trial_rate", "Trial conversion", "percent"),
                Column("free", "Free sign-ups", "int"),
                Column("free_converted", "Free → paid", "int"),
                Column("free_rate", "Free → paid rate", "percent"),
                Column("days", "Days to convert (avg)", "decimal"),
            ),
            rows=tuple(out),
            chart=Chart(
                "bar", "month", ("trials_converted", "free_converted"), "Conversions by sign-up month"
            ),
            note="Customers whose first subscription started in the period on a trial or a free plan; "
            "converted = paying for any plan before the period ends.",
        )

    def flows(self) -> Section:
        rows = self.rows(
            f"""WITH {_BASE},
                seq AS (SELECT h.*, lag(h.plan_id) OVER w AS prev_plan, lag(h.mrr_usd) OVER w AS prev_mrr,
                               lag(h.mrr_minor) OVER w AS prev_minor
                          FROM hist h WINDOW w AS (PARTITION BY h.subscription_id ORDER BY h.valid_from, h.id))
                SELECT prev_plan, plan_id, count(*), sum(mrr_usd - prev_mrr)
                  FROM seq, bounds b
                 WHERE valid_from >= b.lo AND valid_from < b.hi AND prev_plan IS NOT NULL
                   AND prev_plan <> plan_id AND prev_minor > 0 AND mrr_minor > 0
                 GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2"""
        )
        return Section(
            key="flows",
            title="Upgrades and downgrades",
            columns=(
                Column("from", "From plan", "text"),
                Column("to", "To plan", "text"),
                Column("direction", "Direction", "text"),
                Column("moves", "Subscriptions", "int"),
                Column("mrr_delta", "MRR change", "money"),
            ),
            rows=tuple(
                (r[0], r[1], "upgrade" if Decimal(r[3]) > 0 else "downgrade", int(r[2]), _usd(r[3]))
                for r in rows
            ),
            currency="USD",
        )

    def cohorts(self) -> Section:
        offsets = ", ".join(f"max(rate) FILTER (WHERE k = {k})" for k in range(COHORT_MONTHS))
        rows = self.rows(
            f"""WITH {_BASE},
                firsts AS (SELECT customer_id, date_trunc('month', min(valid_from) AT TIME ZONE :tz)::date AS cohort
                             FROM hist WHERE mrr_minor > 0 GROUP BY 1),
                members AS (SELECT f.* FROM firsts f
                             WHERE f.cohort >= date_trunc('month', CAST(:from_day AS timestamp))
                               AND f.cohort <= :to_day),
                sizes AS (SELECT cohort, count(*) AS size FROM members GROUP BY 1),
                grid AS (SELECT s.cohort, s.size, k,
                                least(CAST(s.cohort + make_interval(months => k + 1) AS timestamp) AT TIME ZONE :tz,
                                      b.hi) AS at,
                                CAST(s.cohort + make_interval(months => k) AS timestamp) AT TIME ZONE :tz < b.hi AS seen
                           FROM sizes s, bounds b, generate_series(0, {COHORT_MONTHS - 1}) AS k),
                alive AS (SELECT g.cohort, g.k, count(DISTINCT m.customer_id) AS n
                            FROM grid g
                            JOIN members m ON m.cohort = g.cohort
                            JOIN hist h ON h.customer_id = m.customer_id AND h.mrr_minor > 0
                                       AND h.valid_from <= g.at AND (h.valid_to IS NULL OR h.valid_to > g.at)
                           GROUP BY g.cohort, g.k),
                rates AS (SELECT g.cohort, g.size, g.k,
                                 CASE WHEN g.seen THEN coalesce(a.n, 0)::numeric / g.size END AS rate
                            FROM grid g LEFT JOIN alive a ON a.cohort = g.cohort AND a.k = g.k)
                SELECT cohort, max(size), {offsets} FROM rates GROUP BY cohort ORDER BY cohort"""
        )
        month_cols = tuple(Column(f"m{k}", f"Month {k}", "percent") for k in range(COHORT_MONTHS))
        return Section(
            key="cohorts",
            title="Cohort retention (share of each first-payment cohort still paying)",
            columns=(Column("cohort", "Cohort", "text"), Column("size", "Customers", "int"), *month_cols),
            rows=tuple(
                (
                    r[0].strftime("%Y-%m"),
                    int(r[1]),
                    *(Decimal(v).quantize(Decimal("0.0001")) if v is not None else None for v in r[2:]),
                )
                for r in rows
            ),
            chart=Chart("heatmap", "cohort", tuple(c.key for c in month_cols), "Cohort retention"),
            note="Month k: paying at the end of the k-th month after the first payment (at the period end "
            "for a month still running); empty where that month has not begun.",
        )

    def plans(self) -> Section:
        rows = self.rows(
            f"""WITH {_BASE}, {_SNAPSHOTS_T}, {_PAY_T},
                ends AS (SELECT plan_id, count(*) AS n, sum(mrr) AS mrr FROM snap
                          WHERE day = CAST(:until_day AS date) GROUP BY 1),
                flows AS (SELECT plan_id, count(*) FILTER (WHERE movement IN ('new', 'reactivation')) AS won,
                                 count(*) FILTER (WHERE movement = 'churned') AS lost,
                                 sum(start_mrr) FILTER (WHERE movement = 'churned') AS lost_mrr
                            FROM moves GROUP BY 1),
                starts AS (SELECT plan_id, count(*) AS n FROM snap WHERE day = CAST(:from_day AS date) GROUP BY 1),
                cash AS (SELECT plan_id, sum(net_less_refunded) AS net, sum(discount_usd) AS discount
                           FROM pay GROUP BY 1),
                keys AS (SELECT plan_id FROM ends UNION SELECT plan_id FROM flows UNION SELECT plan_id FROM cash)
                SELECT k.plan_id, coalesce(e.n, 0), coalesce(e.mrr, 0), coalesce(f.won, 0), coalesce(f.lost, 0),
                       coalesce(s.n, 0), coalesce(c.net, 0), coalesce(c.discount, 0)
                  FROM keys k LEFT JOIN ends e USING (plan_id) LEFT JOIN flows f USING (plan_id)
                  LEFT JOIN starts s USING (plan_id) LEFT JOIN cash c USING (plan_id)
                 WHERE k.plan_id IS NOT NULL ORDER BY 3 DESC, 1"""
        )
        total = sum(Decimal(r[2]) for r in rows)
        return Section(
            key="plans",
            title="Plan performance (USD)",
            columns=(
                Column("plan", "Plan", "text"),
                Column("paying", "Paying at end", "int"),
                Column("mrr", "MRR at end", "money"),
                Column("share", "Share of MRR", "percent"),
                Column("arpu", "ARPU", "money"),
                Column("won", "New customers", "int"),
                Column("lost", "Churned customers", "int"),
                Column("churn", "Logo churn", "percent"),
                Column("collected", "Collected net of refunds", "money"),
                Column("discounts", "Discounts given", "money"),
            ),
            rows=tuple(
                (
                    r[0],
                    int(r[1]),
                    _usd(r[2]),
                    _ratio(r[2], total),
                    _usd(Decimal(r[2]) / r[1]) if r[1] else None,
                    int(r[3]),
                    int(r[4]),
                    _ratio(r[4], r[5]),
                    _usd(r[6]),
                    _usd(r[7]),
                )
                for r in rows
            ),
            chart=Chart("bar", "plan", ("mrr",), "MRR by plan"),
            currency="USD",
            note="Logo churn here: customers churned during the period over those paying on the plan at its start.",
        )

    def payments(self) -> Section:
        rows = self.rows(
            f"""WITH {_PAY_T}
                SELECT month, sum(attempts), sum(paid), sum(failed), sum(refunds),
                       sum(net_usd), sum(refunded_usd)
                  FROM pay GROUP BY 1 ORDER BY 1"""
        )
        return Section(
            key="payments",
            title="Payments (USD, net of tax)",
            columns=(
                Column("month", "Month", "date"),
                Column("attempts", "Attempts", "int"),
                Column("successes", "Successful", "int"),
                Column("failures", "Failed", "int"),
                Column("failure_rate", "Failure rate", "percent"),
                Column("refunds", "Refunded payments", "int"),
                Column("collected", "Collected", "money"),
                Column("refunded", "Refunded", "money"),
                Column("net", "Net revenue", "money"),
            ),
            rows=tuple(
                (
                    r[0],
                    int(r[1]),
                    int(r[2]),
                    int(r[3]),
                    _ratio(r[3], r[1]),
                    int(r[4]),
                    _usd(r[5]),
                    _usd(r[6]),
                    _usd(Decimal(r[5] or 0) - Decimal(r[6] or 0)),
                )
                for r in rows
            ),
            chart=Chart("bar", "month", ("net",), "Net revenue per month"),
            currency="USD",
        )

    def price_changes(self) -> Section:
        rows = self.rows(
            f"""WITH {_BASE},
                changes AS (
                    SELECT o.plan_id, o.cycle, o.currency::text AS currency, o.amount_minor AS old_minor,
                           n.amount_minor AS new_minor, o.valid_to AS at, n.revision_id,
                           cu.minor_units,
                           least(interval '1 day' * :window, b.hi - o.valid_to) AS win
                      FROM price_versions o
                      JOIN currencies cu ON cu.code = o.currency
                     CROSS JOIN bounds b
                     CROSS JOIN LATERAL (
                        SELECT n.* FROM price_versions n
                         WHERE n.plan_id = o.plan_id AND n.cycle = o.cycle AND n.currency = o.currency
                           AND n.region IS NOT DISTINCT FROM o.region AND n.id <> o.id AND n.valid_from >= o.valid_to
                         ORDER BY n.valid_from, n.id LIMIT 1) n
                     WHERE o.valid_to IS NOT NULL AND o.amount_minor <> n.amount_minor
                       AND o.valid_to >= b.lo AND o.valid_to < b.hi),
                seq AS (SELECT h.*, lag(h.mrr_minor) OVER w AS prev_minor, lead(h.mrr_minor) OVER w AS next_minor
                          FROM hist h WINDOW w AS (PARTITION BY h.subscription_id ORDER BY h.valid_from, h.id)),
                measured AS (
                    SELECT c.*, side,
                           (SELECT count(*) FROM seq s
                             WHERE s.plan_id = c.plan_id AND s.cycle = c.cycle AND s.currency = c.currency
                               AND s.mrr_minor > 0 AND coalesce(s.prev_minor, 0) = 0
                               AND s.valid_from >= w.lo AND s.valid_from < w.hi) AS new_subs,
                           (SELECT sum(s.mrr_major) FROM seq s
                             WHERE s.plan_id = c.plan_id AND s.cycle = c.cycle AND s.currency = c.currency
                               AND s.mrr_minor > 0 AND coalesce(s.prev_minor, 0) = 0
                               AND s.valid_from >= w.lo AND s.valid_from < w.hi) AS new_mrr,
                           (SELECT count(*) FROM seq s
                             WHERE s.plan_id = c.plan_id AND s.currency = c.currency AND s.status = 'trialing'
                               AND s.valid_to >= w.lo AND s.valid_to < w.hi) AS trials,
                           (SELECT count(*) FROM seq s
                             WHERE s.plan_id = c.plan_id AND s.currency = c.currency AND s.status = 'trialing'
                               AND s.valid_to >= w.lo AND s.valid_to < w.hi AND s.next_minor > 0) AS converted,
                           (SELECT count(*) FROM seq s
                             WHERE s.plan_id = c.plan_id AND s.cycle = c.cycle AND s.currency = c.currency
                               AND s.mrr_minor > 0 AND s.valid_to >= w.lo AND s.valid_to < w.hi
                               AND coalesce(s.next_minor, 0) = 0) AS churned
                      FROM changes c
                     CROSS JOIN LATERAL (VALUES ('before', c.at - c.win, c.at), ('after', c.at, c.at + c.win))
                           AS w (side, lo, hi))
                SELECT revision_id, plan_id, cycle, currency, old_minor / 10 ^ minor_units,
                       new_minor / 10 ^ minor_units, at, extract(epoch FROM win) / 86400,
                       max(new_subs) FILTER (WHERE side = 'before'), max(new_subs) FILTER (WHERE side = 'after'),
                       max(trials) FILTER (WHERE side = 'before'), max(converted) FILTER (WHERE side = 'before'),
                       max(trials) FILTER (WHERE side = 'after'), max(converted) FILTER (WHERE side = 'after'),
                       max(churned) FILTER (WHERE side = 'before'), max(churned) FILTER (WHERE side = 'after'),
                       max(new_mrr) FILTER (WHERE side = 'before'), max(new_mrr) FILTER (WHERE side = 'after')
                  FROM measured
                 GROUP BY revision_id, plan_id, cycle, currency, old_minor, new_minor, minor_units, at, win
                 ORDER BY at, plan_id, cycle, currency"""
        )
        out = []
        for r in rows:
            old, new = Decimal(r[4]), Decimal(r[5])
            at: datetime = r[6]
            out.append(
                (
                    f"#{r[0]}" if r[0] is not None else "",
                    r[1],
                    r[2],
                    r[3],
                    _usd(old),
                    _usd(new),
                    _ratio(new - old, old),
                    at,
                    Decimal(r[7]).quantize(Decimal("0.1")),
                    int(r[8] or 0),
                    int(r[9] or 0),
                    _ratio(r[11], r[10]),
                    _ratio(r[13], r[12]),
                    int(r[14] or 0),
                    int(r[15] or 0),
                    _usd(r[16]),
                    _usd(r[17]),
                )
            )
        return Section(
            key="price_changes",
            title="Pricing-change impact (equal windows before and after)",
            columns=(
                Column("revision", "Revision", "text"),
                Column("plan", "Plan", "text"),
                Column("cycle", "Cycle", "text"),
                Column("currency", "Currency", "text"),
                Column("old_price", "Old price", "money", currency_key="currency"),
                Column("new_price", "New price", "money", currency_key="currency"),
                Column("change", "Change", "percent"),
                Column("at", "Changed at", "datetime"),
                Column("window_days", "Window (days)", "decimal"),
                Column("new_before", "New subs before", "int"),
                Column("new_after", "New subs after", "int"),
                Column("trial_before", "Trial conversion before", "percent"),
                Column("trial_after", "Trial conversion after", "percent"),
                Column("churn_before", "Churned before", "int"),
                Column("churn_after", "Churned after", "int"),
                Column("mrr_before", "New MRR before", "money", currency_key="currency"),
                Column("mrr_after", "New MRR after", "money", currency_key="currency"),
            ),
            rows=tuple(out),
            note=f"Each price change in the period (a price version closed and followed by a different amount "
            f"for the same plan, cycle, currency and region), measured over {IMPACT_WINDOW_DAYS} days before and "
            "after, or as many days as the period has after the change (the same length on both sides).",
        )

    def promotions(self) -> Section:
        rows = self.rows(
            f"""WITH {_BASE}, {_PAYMENTS},
                red AS (SELECT r.*, r.discount_minor / 10 ^ cu.minor_units / cu.usd_rate AS discount_usd
                          FROM redemptions r JOIN currencies cu ON cu.code = r.currency, bounds b
                         WHERE r.redeemed_at >= b.lo AND r.redeemed_at < b.hi
                           -- A PayU checkout holds its places from the start (migration 0024); that is a
                           -- redemption once the payment is paid, and under the key the payment ended with.
                           AND NOT EXISTS (
                               SELECT 1 FROM payments p
                                WHERE p.id = substring(r.idempotency_key FROM '^payment:(pay_[0-9a-f]+)')
                                  AND (p.status NOT IN ('success', 'partially_refunded', 'refunded')
                                       OR p.redemption_key <> r.idempotency_key))),
                firsts AS (SELECT DISTINCT ON (promotion_id, customer_id) promotion_id, customer_id, redeemed_at
                             FROM red WHERE status = 'redeemed' ORDER BY promotion_id, customer_id, redeemed_at),
                {_PROMOTION_WINDOWS},
                prospects AS (
                    SELECT DISTINCT w.id, w.lo, w.hi, h.customer_id
                      FROM win w JOIN hist h ON h.mrr_minor = 0 AND h.status IN ('trialing', 'active')
                       AND h.valid_from < w.hi AND (h.valid_to IS NULL OR h.valid_to > w.lo)
                     WHERE w.lo < w.hi),
                converted AS (
                    SELECT DISTINCT p.id, p.customer_id
                      FROM prospects p JOIN hist h ON h.customer_id = p.customer_id AND h.mrr_minor > 0
                       AND h.valid_from >= p.lo AND h.valid_from < p.hi),
                -- A customer eligible in two yearly windows of a long period counts once.
                eligible AS (
                    SELECT p.id, count(DISTINCT p.customer_id) AS n, count(DISTINCT c.customer_id) AS converted
                      FROM prospects p LEFT JOIN converted c ON c.id = p.id AND c.customer_id = p.customer_id
                     GROUP BY p.id),
                stats AS (SELECT promotion_id, count(*) FILTER (WHERE status = 'redeemed') AS redeemed,
                                 count(*) FILTER (WHERE status = 'reversed') AS reversed,
                                 count(DISTINCT customer_id) AS customers,
                                 sum(discount_usd) FILTER (WHERE status = 'redeemed') AS discount
                            FROM red GROUP BY 1),
                checked AS (SELECT f.*, least(f.redeemed_at + interval '30 days', b.hi) AS at
                              FROM firsts f, bounds b),
                retained AS (SELECT c.promotion_id, count(DISTINCT c.customer_id) AS n
                               FROM checked c JOIN hist h ON h.customer_id = c.customer_id AND h.mrr_minor > 0
                                AND h.valid_from <= c.at AND (h.valid_to IS NULL OR h.valid_to > c.at)
                              GROUP BY 1),
                earned AS (SELECT f.promotion_id, sum(p.net_usd - p.refunded_usd) AS usd
                             FROM firsts f JOIN pay p ON p.customer_id = f.customer_id AND p.paid_at >= f.redeemed_at
                            GROUP BY 1)
                SELECT s.promotion_id, pr.kind, s.redeemed, s.reversed, s.customers, coalesce(e.n, 0),
                       coalesce(e.converted, 0), coalesce(rt.n, 0), s.discount, er.usd
                  FROM stats s JOIN promotions pr ON pr.id = s.promotion_id
                  LEFT JOIN eligible e ON e.id = s.promotion_id
                  LEFT JOIN retained rt ON rt.promotion_id = s.promotion_id
                  LEFT JOIN earned er ON er.promotion_id = s.promotion_id
                 ORDER BY s.redeemed DESC, 1"""
        )
        out = []
        for r in rows:
            discount, revenue = _usd(r[8]), _usd(r[9])
            out.append(
                (
                    r[0],
                    r[1],
                    int(r[2]),
                    int(r[3]),
                    int(r[5]),
                    _ratio(r[6], r[5]),
                    _ratio(r[7], r[4]),
                    discount,
                    revenue,
                    _ratio(revenue - discount, discount),
                )
            )
        return Section(
            key="promotions",
            title="Promotion performance (USD)",
            columns=(
                Column("promotion", "Promotion", "text"),
                Column("kind", "Kind", "text"),
                Column("redemptions", "Redemptions", "int"),
                Column("reversed", "Reversed", "int"),
                Column("eligible", "Eligible customers", "int"),
                Column("eligible_conversion", "Conversion among eligible", "percent"),
                Column("retained", "Redeemers paying after 30 days", "percent"),
                Column("discount", "Discount given", "money"),
                Column("revenue", "Revenue from promoted customers", "money"),
                Column("roi", "ROI", "percent"),
            ),
            rows=tuple(out),
            currency="USD",
            note="Eligible: customers not paying (trial or free) at some time in the promotion's window within "
            "the period (each year's window for a yearly promotion); their conversion = those who started "
            "paying in such a window. Revenue: payments of "
            "redeemers from their redemption on, net of tax and refunds. ROI = (revenue − discount) / discount.",
        )


def build_revenue_report(
    conn: Connection,
    period: Period,
    by: RevenueGrouping = "plan",
    *,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Build the revenue report (search_path must point at the Tariff schema)."""
    step = progress or (lambda _name: None)
    builder = RevenueReportBuilder(conn, period)
    sections: list[Section] = []
    for name, make in (
        ("summary", builder.summary),
        ("currencies", builder.by_currency),
        ("movements", builder.movements),
        ("breakdown", lambda: builder.breakdown(by)),
        ("conversion", builder.conversion),
        ("flows", builder.flows),
        ("cohorts", builder.cohorts),
        ("plans", builder.plans),
        ("payments", builder.payments),
        ("price changes", builder.price_changes),
        ("promotions", builder.promotions),
    ):
        sections.append(make())
        step(name)
    return Report(
        key="revenue",
        title="Revenue",
        period_from=period.start,
        period_to=period.end,
        filters={"by": by},
        sections=tuple(sections),
        generated_at=generated_now(conn),
    )


REVENUE_STEPS = 11
