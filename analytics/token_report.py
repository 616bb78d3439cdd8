"""`tariff report tokens`: AI-credit consumption, peaks, utilisation, margin and hints, from the rollups.

Sources (never token_usage in bulk): usage_hourly for every plan/model/region/time view,
usage_customer_monthly for whole months per customer plus token_usage_daily for the partial months at the
period's edges, token_grants for allowances, token_accounts for balances. With --customer the hour-level
views read that customer's own token_usage rows (one index range). refresh_usage_rollups() runs first, so
the report includes everything committed before it started.

Money is in USD (provider costs are converted at currencies.usd_rate, like revenue). Percentages are
fractions (0.25 = 25 %).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from analytics.model import Chart, Column, Report, Section
from analytics.period import Period, generated_now

TokenGrouping = Literal["customer", "plan", "model", "region", "day", "hour"]
GROUPINGS: tuple[TokenGrouping, ...] = ("customer", "plan", "model", "region", "day", "hour")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
NEAR_LIMIT = Decimal("0.8")  # a month at ≥ 80 % of its allowance is "near the limit"
UNDERUSED = Decimal("0.35")  # a plan whose customers use < 35 % of their allowance
TOP = 20


@dataclass(frozen=True)
class TokenFilters:
    customer: str | None = None
    plan: str | None = None
    model: str | None = None

    def as_mapping(self) -> dict[str, str]:
        return {
            k: v for k, v in (("customer", self.customer), ("plan", self.plan), ("model", self.model)) if v
        }


def _full_months(period: Period) -> tuple[date, date]:
    """[first, until) of the calendar months wholly inside the period (empty: both = the day after it)."""
    first = (
        period.start
        if period.start.day == 1
        else (period.start.replace(day=1) + timedelta(days=32)).replace(day=1)
    )
    until = (period.end + timedelta(days=1)).replace(day=1)
    if first >= until:
        after = period.end + timedelta(days=1)
        return after, after
    return first, until


# Hour-level usage in the period: the rollup, or one customer's own rows.
_SRC_ROLLUP = """
src AS (
    SELECT u.local_hour, u.plan_id, u.model_id, u.region, u.requests, u.input_tokens, u.output_tokens, u.credits,
           u.cost / cu.usd_rate AS cost_usd
      FROM usage_hourly u JOIN currencies cu ON cu.code = u.cost_currency
     WHERE u.local_hour >= :from_day AND u.local_hour < :until_day
       AND (CAST(:plan AS text) IS NULL OR u.plan_id = :plan)
)"""
_SRC_CUSTOMER = """
src AS (
    SELECT date_trunc('hour', u.created_at AT TIME ZONE :tz) AS local_hour, coalesce(h.plan_id, '') AS plan_id,
           u.model_id::text AS model_id, coalesce(c.region::text, '') AS region, 1 AS requests, u.input_tokens,
           u.output_tokens, u.credits, u.cost / cu.usd_rate AS cost_usd
      FROM token_usage u
      JOIN currencies cu ON cu.code = u.cost_currency
      LEFT JOIN customers c ON c.id = u.customer_id
      LEFT JOIN LATERAL (
          SELECT h.plan_id FROM subscription_history h
           WHERE h.customer_id = u.customer_id AND h.valid_from <= u.created_at
             AND (h.valid_to IS NULL OR h.valid_to > u.created_at)
             AND h.status IN ('trialing', 'active', 'past_due')
           ORDER BY h.mrr_minor DESC, h.valid_from DESC LIMIT 1) h ON true
     WHERE u.customer_id = :customer
       AND u.created_at >= (CAST(:from_day AS timestamp) AT TIME ZONE :tz)
       AND u.created_at < (CAST(:until_day AS timestamp) AT TIME ZONE :tz)
       AND (CAST(:plan AS text) IS NULL OR coalesce(h.plan_id, '') = :plan)
)"""

# Customer-level usage in the period: whole months from the monthly rollup, edge days from the daily one.
# An edge day's usage belongs to the plan the customer was on that day (the highest-paying, then latest,
# subscription state valid during it). Most customers have a single state overlapping the edge days, and
# its plan is then found by one hash join per daily row; only customers with several (a change during the
# edge days) are resolved day by day. A lateral lookup per daily row cost seconds at 10,000 customers.
# `used`: the row had credits (a customer counts as having usage).
_CUST = """
edge_days AS (
    SELECT d.customer_id, d.day, d.requests, d.credits, d.cost / cu.usd_rate AS cost_usd
      FROM token_usage_daily d
      JOIN currencies cu ON cu.code = d.cost_currency
     WHERE ((CAST(:model AS text) IS NULL AND ((d.day >= :from_day AND d.day < :full_from)
                                           OR (d.day >= :full_until AND d.day <= :to_day)))
            OR (d.model_id = :model AND d.day >= :from_day AND d.day <= :to_day))
       AND (CAST(:customer AS text) IS NULL OR d.customer_id = :customer)
),
edge_states AS (
    SELECT h.customer_id, h.plan_id, h.mrr_minor, h.valid_from, h.valid_to,
           count(*) OVER (PARTITION BY h.customer_id) AS states
      FROM subscription_history h
     WHERE h.status IN ('trialing', 'active', 'past_due')
       AND (CAST(:customer AS text) IS NULL OR h.customer_id = :customer)
       AND ((h.valid_from < (CAST(:full_from AS timestamp) AT TIME ZONE :tz)
             AND (h.valid_to IS NULL OR h.valid_to > (CAST(:from_day AS timestamp) AT TIME ZONE :tz)))
            OR (h.valid_from < (CAST(:until_day AS timestamp) AT TIME ZONE :tz)
                AND (h.valid_to IS NULL OR h.valid_to > (CAST(:full_until AS timestamp) AT TIME ZONE :tz)))
            OR (CAST(:model AS text) IS NOT NULL
                AND h.valid_from < (CAST(:until_day AS timestamp) AT TIME ZONE :tz)
                AND (h.valid_to IS NULL OR h.valid_to > (CAST(:from_day AS timestamp) AT TIME ZONE :tz))))
),
changing_days AS (
    SELECT DISTINCT ON (e.customer_id, e.day) e.customer_id, e.day, h.plan_id
      FROM (SELECT DISTINCT customer_id, day FROM edge_days
             WHERE customer_id IN (SELECT customer_id FROM edge_states WHERE states > 1)) e
      JOIN edge_states h
        ON h.customer_id = e.customer_id AND h.states > 1
       AND h.valid_from < (CAST(e.day + 1 AS timestamp) AT TIME ZONE :tz)
       AND (h.valid_to IS NULL OR h.valid_to > (CAST(e.day AS timestamp) AT TIME ZONE :tz))
     ORDER BY e.customer_id, e.day, h.mrr_minor DESC, h.valid_from DESC
),
edge AS (
    SELECT e.customer_id, coalesce(one.plan_id, several.plan_id, '') AS plan_id, e.requests, e.credits,
           e.cost_usd
      FROM edge_days e
      LEFT JOIN edge_states one
             ON one.customer_id = e.customer_id AND one.states = 1
            AND one.valid_from < (CAST(e.day + 1 AS timestamp) AT TIME ZONE :tz)
            AND (one.valid_to IS NULL OR one.valid_to > (CAST(e.day AS timestamp) AT TIME ZONE :tz))
      LEFT JOIN changing_days several ON several.customer_id = e.customer_id AND several.day = e.day
),
cust AS (
    SELECT m.customer_id, m.plan_id, m.requests, m.credits, m.cost / cu.usd_rate AS cost_usd, m.credits > 0 AS used
      FROM usage_customer_monthly m JOIN currencies cu ON cu.code = m.cost_currency
     WHERE m.month >= :full_from AND m.month < :full_until AND CAST(:model AS text) IS NULL
       AND (CAST(:plan AS text) IS NULL OR m.plan_id = :plan)
       AND (CAST(:customer AS text) IS NULL OR m.customer_id = :customer)
    UNION ALL
    SELECT customer_id, plan_id, requests, credits, cost_usd, credits > 0
      FROM edge
     WHERE CAST(:plan AS text) IS NULL OR plan_id = :plan
)"""

# Allowance grants that start in the period, with the plan the customer was on when each was granted.
_GRANTS = """
grants AS (
    SELECT a.customer_id, coalesce(h.plan_id, '') AS plan_id, g.amount,
           date_trunc('month', g.starts_at AT TIME ZONE :tz)::date AS month
      FROM token_grants g
      JOIN token_accounts a ON a.id = g.account_id
      LEFT JOIN LATERAL (
          SELECT h.plan_id FROM subscription_history h
           WHERE h.customer_id = a.customer_id AND h.valid_from <= g.starts_at
             AND (h.valid_to IS NULL OR h.valid_to > g.starts_at)
           ORDER BY h.mrr_minor DESC, h.valid_from DESC LIMIT 1) h ON true
     WHERE g.source = 'allowance' AND a.customer_id IS NOT NULL
       AND g.starts_at >= (CAST(:from_day AS timestamp) AT TIME ZONE :tz)
       AND g.starts_at < (CAST(:until_day AS timestamp) AT TIME ZONE :tz)
       AND (CAST(:customer AS text) IS NULL OR a.customer_id = :customer)
       AND (CAST(:plan AS text) IS NULL OR coalesce(h.plan_id, '') = :plan)
)"""

_MODEL_OK = "(CAST(:model AS text) IS NULL OR model_id = :model)"


def _dec(value: Any, places: int = 2) -> Decimal:
    return Decimal(value or 0).quantize(Decimal(1).scaleb(-places))


def _ratio(part: Any, whole: Any) -> Decimal | None:
    if not whole:
        return None
    return (Decimal(part or 0) / Decimal(whole)).quantize(Decimal("0.0001"))


_CUST_T = "cust AS (SELECT * FROM pg_temp.token_report_cust)"
_GRANTS_T = "grants AS (SELECT * FROM pg_temp.token_report_grants)"


class TokenReportBuilder:
    def __init__(self, conn: Connection, period: Period, filters: TokenFilters) -> None:
        self.conn = conn
        self.period = period
        self.filters = filters
        full_from, full_until = _full_months(period)
        self.params: dict[str, Any] = {
            **period.params(),
            "full_from": full_from,
            "full_until": full_until,
            "customer": filters.customer,
            "plan": filters.plan,
            "model": filters.model,
        }
        self.src = _SRC_CUSTOMER if filters.customer else _SRC_ROLLUP
        self._materialise()

    def _materialise(self) -> None:
        """Customer usage and grants in the period, computed once for the sections that read them.

        Each of those sections used to recompute them (the edge days' plan lookups three times over).
        ON COMMIT DROP keeps them to the report's transaction. Hour-level usage is not materialised: each
        section's single pass over usage_hourly costs less than writing and re-reading a copy of it.
        """
        for name, sql in (
            (
                "token_report_cust",
                f"""WITH {_CUST} SELECT customer_id, plan_id, sum(requests) AS requests, sum(credits) AS credits,
                           sum(cost_usd) AS cost_usd, bool_or(used) AS used
                      FROM cust GROUP BY customer_id, plan_id""",
            ),
            ("token_report_grants", f"WITH {_GRANTS} SELECT * FROM grants"),
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
            f"WITH {self.src}, {_CUST_T}, {_GRANTS_T} SELECT "
            f"(SELECT coalesce(sum(requests), 0) FROM src WHERE {_MODEL_OK}), "
            f"(SELECT coalesce(sum(input_tokens + output_tokens), 0) FROM src WHERE {_MODEL_OK}), "
            f"(SELECT coalesce(sum(credits), 0) FROM src WHERE {_MODEL_OK}), "
            f"(SELECT sum(cost_usd) FROM src WHERE {_MODEL_OK}), "
            "(SELECT count(DISTINCT customer_id) FROM cust WHERE used), "
            "(SELECT coalesce(sum(amount), 0) FROM grants), "
            """(SELECT coalesce(sum(a.balance), 0) FROM token_accounts a
                 WHERE a.customer_id IS NOT NULL
                   AND (CAST(:customer AS text) IS NULL OR a.customer_id = :customer)
                   AND (CAST(:plan AS text) IS NULL OR EXISTS (
                        SELECT 1 FROM subscriptions s WHERE s.customer_id = a.customer_id AND s.plan_id = :plan
                           AND s.status IN ('trialing', 'active', 'past_due'))))"""
        )[0]
        requests, tokens, credits, cost, customers, granted, outstanding = row
        return Section(
            key="summary",
            title="Totals",
            columns=(
                Column("requests", "Requests", "int"),
                Column("tokens", "Tokens (in + out)", "int"),
                Column("credits", "Credits consumed", "int"),
                Column("granted", "Allowance granted", "int"),
                Column("outstanding", "Credits outstanding now", "int"),
                Column("customers", "Customers with usage", "int"),
                Column("cost", "Provider cost", "money"),
                Column("cost_per_1k", "Cost per 1,000 credits", "money"),
            ),
            rows=(
                (
                    int(requests),
                    int(tokens),
                    int(credits),
                    int(granted),
                    int(outstanding),
                    int(customers),
                    _dec(cost),
                    _dec(Decimal(cost) * 1000 / credits, 4) if credits and cost is not None else None,
                ),
            ),
            currency="USD",
            note="Outstanding: unspent credits in every account now (not limited to the period).",
        )

    def trend(self) -> Section:
        rows = self.rows(
            f"""WITH {self.src}, days AS (
                    SELECT d::date AS day FROM generate_series(CAST(:from_day AS timestamp),
                                                               CAST(:to_day AS timestamp), interval '1 day') d)
                SELECT days.day, coalesce(sum(s.requests), 0), coalesce(sum(s.credits), 0), sum(s.cost_usd)
                  FROM days LEFT JOIN src s ON s.local_hour::date = days.day AND {_MODEL_OK.replace("model_id", "s.model_id")}
                 GROUP BY days.day ORDER BY days.day"""
        )
        return Section(
            key="trend",
            title="Usage per day",
            columns=(
                Column("day", "Day", "date"),
                Column("requests", "Requests", "int"),
                Column("credits", "Credits", "int"),
                Column("cost", "Provider cost", "money"),
            ),
            rows=tuple((r[0], int(r[1]), int(r[2]), _dec(r[3])) for r in rows),
            chart=Chart("line", "day", ("credits",), "Credits consumed per day"),
            currency="USD",
        )

    def peaks(self) -> Section:
        # One group per weekday and hour, pivoted here: 24 filtered sums per row cost more than the scan.
        found: dict[int, list[int]] = {}
        for day, hour, requests in self.rows(
            f"WITH {self.src} SELECT extract(isodow FROM local_hour)::int, extract(hour FROM local_hour)::int, "
            f"sum(requests) FROM src WHERE {_MODEL_OK} GROUP BY 1, 2"
        ):
            found.setdefault(int(day), [0] * 24)[int(hour)] = int(requests)
        rows = tuple((WEEKDAYS[d - 1], *(int(v) for v in found.get(d, (0,) * 24))) for d in range(1, 8))
        return Section(
            key="peaks",
            title="Peak times (requests by local hour of week)",
            columns=(
                Column("weekday", "Weekday", "text"),
                *(Column(f"h{h:02d}", f"{h:02d}", "int") for h in range(24)),
            ),
            rows=rows,
            chart=Chart(
                "heatmap", "weekday", tuple(f"h{h:02d}" for h in range(24)), "Requests by hour of week"
            ),
            note=f"Hours in {self.period.timezone}.",
        )

    def breakdown(self, by: TokenGrouping) -> Section:
        if by == "customer":
            sql = (
                f"WITH {_CUST_T} SELECT customer_id, sum(requests), sum(credits), sum(cost_usd) FROM cust "
                "GROUP BY 1 ORDER BY 3 DESC, 1"
            )
        else:
            key = {
                "plan": "nullif(plan_id, '')",
                "model": "model_id",
                "region": "nullif(region, '')",
                "day": "local_hour::date",
                "hour": "extract(hour FROM local_hour)::int",
            }[by]
            order = "1" if by in {"day", "hour"} else "3 DESC, 1"
            sql = (
                f"WITH {self.src} SELECT {key}, sum(requests), sum(credits), sum(cost_usd) FROM src "
                f"WHERE {_MODEL_OK} GROUP BY 1 ORDER BY {order}"
            )
        rows = self.rows(sql)
        total = sum(int(r[2]) for r in rows)
        kind: Literal["text", "date", "int"] = "date" if by == "day" else "int" if by == "hour" else "text"
        shaped = tuple(
            (
                r[0] if r[0] is not None or kind != "text" else "(none)",
                int(r[1]),
                int(r[2]),
                _dec(r[3]),
                _ratio(r[2], total),
            )
            for r in rows
        )
        return Section(
            key="breakdown",
            title=f"Usage by {by}",
            columns=(
                Column(by, by.capitalize(), kind),
                Column("requests", "Requests", "int"),
                Column("credits", "Credits", "int"),
                Column("cost", "Provider cost", "money"),
                Column("share", "Share of credits", "percent"),
            ),
            rows=shaped,
            chart=Chart("line" if by == "day" else "bar", by, ("credits",), f"Credits by {by}"),
            currency="USD",
        )

    def utilisation(self) -> Section:
        rows = self.rows(
            f"""WITH {self.src}, {_GRANTS_T},
                used AS (SELECT plan_id, sum(credits) AS credits FROM src WHERE {_MODEL_OK} GROUP BY 1),
                allocated AS (SELECT plan_id, sum(amount) AS amount, count(*) AS grants,
                                     count(DISTINCT customer_id) AS customers FROM grants GROUP BY 1)
                SELECT coalesce(a.plan_id, u.plan_id), coalesce(a.customers, 0), coalesce(a.grants, 0),
                       coalesce(a.amount, 0), coalesce(u.credits, 0)
                  FROM allocated a FULL JOIN used u ON u.plan_id = a.plan_id
                 ORDER BY 1"""
        )
        return Section(
            key="utilisation",
            title="Utilisation per plan (consumed vs allocated)",
            columns=(
                Column("plan", "Plan", "text"),
                Column("customers", "Customers granted", "int"),
                Column("grants", "Monthly allowances", "int"),
                Column("allocated", "Credits allocated", "int"),
                Column("consumed", "Credits consumed", "int"),
                Column("utilisation", "Utilisation", "percent"),
            ),
            rows=tuple(
                (r[0] or "(none)", int(r[1]), int(r[2]), int(r[3]), int(r[4]), _ratio(r[4], r[3]))
                for r in rows
            ),
            chart=Chart("bar", "plan", ("allocated", "consumed"), "Allocated vs consumed credits"),
            note="Allocated: allowance grants starting in the period. Consumed: all credits used in it "
            "(allowance, packs and promotions alike), so utilisation can exceed 100 %.",
        )

    def customer_utilisation(self) -> Section:
        rows = self.rows(
            f"""WITH {_CUST_T}, {_GRANTS_T},
                used AS (SELECT customer_id, sum(credits) AS credits FROM cust GROUP BY 1),
                allocated AS (SELECT customer_id, max(plan_id) AS plan_id, sum(amount) AS amount
                                FROM grants GROUP BY 1)
                SELECT a.customer_id, a.plan_id, a.amount, coalesce(u.credits, 0)
                  FROM allocated a LEFT JOIN used u USING (customer_id)
                 ORDER BY coalesce(u.credits, 0)::numeric / a.amount DESC, a.customer_id
                 LIMIT {TOP}"""
        )
        return Section(
            key="customer_utilisation",
            title=f"Utilisation per customer (top {TOP})",
            columns=(
                Column("customer", "Customer", "text"),
                Column("plan", "Plan", "text"),
                Column("allocated", "Credits allocated", "int"),
                Column("consumed", "Credits consumed", "int"),
                Column("utilisation", "Utilisation", "percent"),
            ),
            rows=tuple((r[0], r[1] or "(none)", int(r[2]), int(r[3]), _ratio(r[3], r[2])) for r in rows),
        )

    def margin(self) -> Section:
        rows = self.rows(
            f"""WITH {self.src},
                bounds AS (SELECT CAST(:from_day AS timestamp) AT TIME ZONE :tz AS lo,
                                  CAST(:until_day AS timestamp) AT TIME ZONE :tz AS hi),
                revenue AS (
                    SELECT h.plan_id,
                           sum(h.mrr_minor / 10 ^ cu.minor_units / cu.usd_rate
                               * extract(epoch FROM least(coalesce(h.valid_to, 'infinity'), b.hi)
                                                    - greatest(h.valid_from, b.lo)) / 86400 / 30.4375) AS usd
                      FROM subscription_history h
                      JOIN currencies cu ON cu.code = h.currency
                     CROSS JOIN bounds b
                     WHERE h.mrr_minor > 0 AND h.valid_from < b.hi AND (h.valid_to IS NULL OR h.valid_to > b.lo)
                       AND (CAST(:customer AS text) IS NULL OR h.customer_id = :customer)
                       AND (CAST(:plan AS text) IS NULL OR h.plan_id = :plan)
                     GROUP BY h.plan_id),
                per_model AS (
                    SELECT plan_id, model_id, sum(requests) AS requests, sum(credits) AS credits,
                           sum(cost_usd) AS cost,
                           sum(sum(credits)) OVER (PARTITION BY plan_id) AS plan_credits
                      FROM src GROUP BY plan_id, model_id)
                SELECT p.plan_id, p.model_id, p.requests, p.credits, p.cost,
                       coalesce(r.usd, 0) * p.credits / nullif(p.plan_credits, 0) AS revenue
                  FROM per_model p LEFT JOIN revenue r ON r.plan_id = p.plan_id
                 WHERE {_MODEL_OK.replace("model_id", "p.model_id")}
                 ORDER BY p.plan_id, p.credits DESC"""
        )
        out = []
        for plan, model, requests, credits, cost, revenue in rows:
            cost_d, revenue_d = _dec(cost), _dec(revenue)
            out.append(
                (
                    plan or "(none)",
                    model,
                    int(requests),
                    int(credits),
                    cost_d,
                    revenue_d,
                    revenue_d - cost_d,
                    _ratio(revenue_d - cost_d, revenue_d),
                )
            )
        return Section(
            key="margin",
            title="Provider cost vs attributable revenue",
            columns=(
                Column("plan", "Plan", "text"),
                Column("model", "Model", "text"),
                Column("requests", "Requests", "int"),
                Column("credits", "Credits", "int"),
                Column("cost", "Provider cost", "money"),
                Column("revenue", "Attributable revenue", "money"),
                Column("margin", "Margin", "money"),
                Column("margin_pct", "Margin %", "percent"),
            ),
            rows=tuple(out),
            currency="USD",
            note="Attributable revenue: the plan's subscription revenue earned in the period (MRR × months, "
            "in USD), split between models by their share of the plan's credits.",
        )

    def top_consumers(self) -> Section:
        rows = self.rows(
            f"""WITH {_CUST_T},
                per AS (SELECT customer_id, plan_id, sum(credits) AS credits FROM cust GROUP BY 1, 2),
                main AS (SELECT DISTINCT ON (customer_id) customer_id, plan_id FROM per
                          ORDER BY customer_id, credits DESC, plan_id)
                SELECT c.customer_id, m.plan_id, sum(c.requests), sum(c.credits), sum(c.cost_usd),
                       sum(sum(c.credits)) OVER ()
                  FROM cust c JOIN main m USING (customer_id)
                 GROUP BY c.customer_id, m.plan_id
                 ORDER BY 4 DESC, 1 LIMIT {TOP}"""
        )
        return Section(
            key="top_consumers",
            title=f"Top {TOP} consumers",
            columns=(
                Column("customer", "Customer", "text"),
                Column("plan", "Plan", "text"),
                Column("requests", "Requests", "int"),
                Column("credits", "Credits", "int"),
                Column("cost", "Provider cost", "money"),
                Column("share", "Share of all credits", "percent"),
            ),
            rows=tuple(
                (r[0], r[1] or "(none)", int(r[2]), int(r[3]), _dec(r[4]), _ratio(r[3], r[5])) for r in rows
            ),
            chart=Chart("bar", "customer", ("credits",), "Top consumers"),
            currency="USD",
        )

    def hints(self, utilisation: Section) -> Section:
        rows = self.rows(
            f"""WITH {_GRANTS_T},
                monthly AS (
                    SELECT g.customer_id, g.month, max(g.plan_id) AS plan_id, sum(g.amount) AS allocated,
                           coalesce((SELECT sum(m.credits) FROM usage_customer_monthly m
                                      WHERE CAST(:model AS text) IS NULL
                                        AND m.customer_id = g.customer_id AND m.month = g.month),
                                    -- the monthly rollup has no model: one model's month comes from the
                                    -- daily rollup (one primary-key range per customer and month)
                                    (SELECT sum(d.credits) FROM token_usage_daily d
                                      WHERE d.model_id = :model AND d.customer_id = g.customer_id
                                        AND d.day >= g.month AND d.day < CAST(g.month + interval '1 month' AS date)),
                                    0) AS used
                      FROM grants g GROUP BY g.customer_id, g.month)
                SELECT customer_id, max(plan_id), count(*) AS months,
                       count(*) FILTER (WHERE used >= allocated * :near) AS near,
                       sum(used)::numeric / nullif(sum(allocated), 0) AS utilisation
                  FROM monthly GROUP BY customer_id
                HAVING count(*) FILTER (WHERE used >= allocated * :near) >= 2
                   AND count(*) FILTER (WHERE used >= allocated * :near) * 2 >= count(*)
                 ORDER BY 4 DESC, 5 DESC, 1 LIMIT {TOP}""".replace(":near", str(NEAR_LIMIT))
        )
        out: list[tuple[object, ...]] = [
            (
                "upsell",
                r[0],
                r[1] or "(none)",
                f"at ≥ {int(NEAR_LIMIT * 100)} % of the allowance in {r[3]} of {r[2]} months",
                _ratio(r[4], 1),
            )
            for r in rows
        ]
        for plan, _customers, _grants, allocated, _consumed, share in utilisation.rows:
            if isinstance(share, Decimal) and isinstance(allocated, int) and allocated and share < UNDERUSED:
                out.append(
                    (
                        "allowance mostly unused",
                        str(plan),
                        str(plan),
                        f"customers use {share * 100:.0f} % of the credits they are granted: "
                        "a smaller allowance or a cheaper tier would fit them",
                        share,
                    )
                )
        return Section(
            key="hints",
            title="Optimisation hints",
            columns=(
                Column("kind", "Hint", "text"),
                Column("subject", "Customer / plan", "text"),
                Column("plan", "Plan", "text"),
                Column("detail", "Why", "text"),
                Column("utilisation", "Utilisation", "percent"),
            ),
            rows=tuple(out),
            note="Upsell candidates: at least two months, and at least half of their months, at 80 % or more "
            "of the allowance. Underused plans: below 35 % utilisation.",
        )


def build_token_report(
    conn: Connection,
    period: Period,
    filters: TokenFilters,
    by: TokenGrouping = "day",
    *,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Refresh the rollups and build the report (search_path must point at the Tariff schema)."""
    step = progress or (lambda _name: None)
    conn.execute(sa.text("SELECT refresh_usage_rollups()"))
    step("rollups")
    builder = TokenReportBuilder(conn, period, filters)
    sections: list[Section] = []
    for name, make in (
        ("summary", builder.summary),
        ("trend", builder.trend),
        ("breakdown", lambda: builder.breakdown(by)),
        ("peaks", builder.peaks),
        ("utilisation", builder.utilisation),
        ("customer utilisation", builder.customer_utilisation),
        ("margin", builder.margin),
        ("top consumers", builder.top_consumers),
    ):
        sections.append(make())
        step(name)
    sections.append(builder.hints(sections[4]))
    step("hints")
    filters_map: Mapping[str, str] = {**filters.as_mapping(), "by": by}
    return Report(
        key="tokens",
        title="AI credits and token usage",
        period_from=period.start,
        period_to=period.end,
        filters=filters_map,
        sections=tuple(sections),
        generated_at=generated_now(conn),
    )


TOKEN_STEPS = 10
