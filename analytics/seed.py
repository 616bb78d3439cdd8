"""`tariff demo seed`: a realistic, deterministic history on the applied catalog, bulk-loaded set-based.

Customers sign up over the window (more towards the end: the product grows), start on Free or on a trial of
Pro/Premium, convert or fall back to Free, pick monthly or annual billing, upgrade, downgrade and churn.
Halfway through, Pro monthly's price rises 15 % → 17.6 % to today's price (new subscribers pay the new price,
earlier ones keep theirs), so pricing-change impact has something to measure. Paying customers redeem the
promotions that were running when they converted. AI usage follows each customer's plan and appetite
(light, normal and heavy users), with a daily rhythm (office and evening hours, quiet nights), a weekly one
(quieter weekends), capped by the plan's monthly allowance, and three injected anomalies: a provider retry
storm (one day of gpt-4o traffic tripled), a six-hour outage with no usage, and a handful of customers
with a one-day burst.

Every random choice is a hash of (customer, draw, seed): the same arguments give the same history on any
machine, whatever order PostgreSQL evaluates rows in. Nothing loops in Python: each step is one INSERT …
SELECT over generate_series, and the usage rollups are filled by the same queue and refresh the live
ledger uses (refresh_usage_rollups), so seeded and live data can never disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

PREFIX = "demo-"
PRICE_CHANGE_AT = 0.55  # fraction of the window at which Pro monthly's price rose


class SeedError(ValueError):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class SeedResult:
    customers: int
    subscriptions: int
    history_rows: int
    usage_records: int
    grants: int
    redemptions: int
    price_changes: int
    payments: int
    start: datetime
    end: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "subscriptions": self.subscriptions,
            "history_rows": self.history_rows,
            "usage_records": self.usage_records,
            "grants": self.grants,
            "redemptions": self.redemptions,
            "price_changes": self.price_changes,
            "payments": self.payments,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
        }


# rnd(i, k): a uniform draw in [0, 1) for entity i and draw number k under the seed.
_HELPERS = """
CREATE OR REPLACE FUNCTION pg_temp.rnd(i bigint, k bigint, s bigint) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ((hashint8extended(i * 1000003 + k, s) >> 11) & 4503599627370495)::double precision
             / 4503599627370496.0 $$
"""

_CUSTOMERS = """
CREATE TEMP TABLE seed_customers ON COMMIT DROP AS
WITH base AS (
    SELECT i, pg_temp.rnd(i, 1, :seed) AS r_signup, pg_temp.rnd(i, 2, :seed) AS r_region,
           pg_temp.rnd(i, 3, :seed) AS r_path, pg_temp.rnd(i, 4, :seed) AS r_plan,
           pg_temp.rnd(i, 5, :seed) AS r_convert, pg_temp.rnd(i, 6, :seed) AS r_free_wait,
           pg_temp.rnd(i, 7, :seed) AS r_cycle, pg_temp.rnd(i, 8, :seed) AS r_switch,
           pg_temp.rnd(i, 9, :seed) AS r_switch_wait, pg_temp.rnd(i, 10, :seed) AS r_churn,
           pg_temp.rnd(i, 11, :seed) AS r_appetite, pg_temp.rnd(i, 12, :seed) AS r_promo
      FROM generate_series(1, :customers) AS i
), shaped AS (
    SELECT b.*,
           -- A quarter were customers before the window opens; sign-ups then accelerate (the product grows).
           CASE WHEN r_signup < 0.25 THEN :start - interval '365 days' * (r_signup / 0.25)
                ELSE :start + (:end - :start) * sqrt((r_signup - 0.25) / 0.75) END AS signup_at,
           CASE WHEN r_region < 0.6 THEN 'IN' WHEN r_region < 0.9 THEN 'US' ELSE 'EU' END AS region,
           CASE WHEN r_path < 0.4 THEN 'free' ELSE 'trial' END AS path,
           CASE WHEN r_plan < 0.75 THEN 'pro' ELSE 'premium' END AS trial_plan,
           CASE WHEN r_cycle < 0.15 THEN 'annual' ELSE 'monthly' END AS paid_cycle,
           CASE WHEN r_appetite < 0.1 THEN 'heavy' WHEN r_appetite < 0.4 THEN 'light' ELSE 'normal' END
               AS appetite
      FROM base b
)
SELECT s.*,
       r.currency,
       CASE s.region WHEN 'IN' THEN 'IN' WHEN 'US' THEN 'US' ELSE 'DE' END AS country,
       s.signup_at + make_interval(days => p.trial_days) AS trial_end,
       CASE WHEN s.path = 'trial' AND s.r_convert < 0.55
                THEN s.signup_at + make_interval(days => p.trial_days)
            WHEN s.path = 'free' AND s.r_convert < 0.14
                THEN s.signup_at + interval '1 day' * (3 + 75 * s.r_free_wait) END AS paid_at,
       CASE WHEN s.path = 'trial' THEN s.trial_plan ELSE 'pro' END AS paid_plan
  FROM shaped s
  JOIN regions r ON r.code = s.region
  JOIN plans p ON p.id = s.trial_plan
"""

# Each customer's life as up to five states; states that would begin after the window are dropped.
_STATES = """
CREATE TEMP TABLE seed_states ON COMMIT DROP AS
WITH lives AS (
    SELECT c.*,
           CASE WHEN c.paid_at IS NOT NULL AND c.r_switch < 0.14 THEN
                c.paid_at + interval '1 day' * (20 + 120 * c.r_switch_wait) END AS switch_at,
           CASE WHEN c.paid_at IS NOT NULL THEN
                c.paid_at + interval '1 day' * (-ln(1 - c.r_churn) * 420) END AS churn_at
      FROM seed_customers c
), states AS (
    SELECT l.i, s.seq, s.at, s.plan_id, s.cycle, s.status
      FROM lives l
     CROSS JOIN LATERAL (VALUES
        (1, l.signup_at, CASE l.path WHEN 'free' THEN 'free' ELSE l.trial_plan END, 'monthly',
            CASE l.path WHEN 'free' THEN 'active' ELSE 'trialing' END),
        (2, CASE WHEN l.path = 'trial' AND l.paid_at IS NULL THEN l.trial_end END, 'free', 'monthly', 'active'),
        (3, l.paid_at, l.paid_plan, l.paid_cycle, 'active'),
        (4, CASE WHEN l.switch_at < l.churn_at THEN l.switch_at END,
            CASE l.paid_plan WHEN 'pro' THEN 'premium' ELSE 'pro' END, l.paid_cycle, 'active'),
        (5, l.churn_at, NULL, NULL, 'canceled')
     ) AS s (seq, at, plan_id, cycle, status)
     WHERE s.at IS NOT NULL AND s.at < :end
), filled AS (
    -- A cancellation keeps the plan and cycle it ended on.
    SELECT st.i, st.seq, st.at, st.status,
           coalesce(st.plan_id, lag(st.plan_id) OVER w) AS plan_id,
           coalesce(st.cycle, lag(st.cycle) OVER w) AS cycle,
           lead(st.at) OVER w AS until
      FROM states st
    WINDOW w AS (PARTITION BY st.i ORDER BY st.seq)
)
SELECT f.*, c.currency, c.region,
       'demo-' || lpad(f.i::text, 6, '0') AS customer_id,
       'demo-sub-' || lpad(f.i::text, 6, '0') AS subscription_id,
       -- A state that began paying before the price change pays the old price for as long as it lasts.
       coalesce(CASE WHEN f.at < :change_at THEN old.id END, cur.id) AS price_version_id,
       coalesce(CASE WHEN f.at < :change_at THEN old.amount_minor END, cur.amount_minor) AS amount_minor,
       cycle_months(bc.every, bc.unit) AS months
  FROM filled f
  JOIN seed_customers c ON c.i = f.i
  JOIN billing_cycles bc ON bc.id = f.cycle
  JOIN price_versions cur ON cur.plan_id = f.plan_id AND cur.cycle = f.cycle AND cur.currency = c.currency
                         AND cur.region IS NULL AND cur.valid_to IS NULL
  LEFT JOIN seed_old_prices old ON old.plan_id = f.plan_id AND old.cycle = f.cycle
                               AND old.currency = c.currency
"""

# Pro monthly cost 15 % less (rounded to whole units) until the change: a closed price version each.
_OLD_PRICES = """
CREATE TEMP TABLE seed_old_prices (id bigint, plan_id text, cycle text, currency text, amount_minor bigint)
    ON COMMIT DROP;
WITH revision AS (
    INSERT INTO revisions (created_at, actor, environment, config_fingerprint, plan, summary)
    SELECT :start - interval '400 days', 'tariff demo seed', 'demo', fingerprint, '{}'::jsonb,
           'Demo history: Pro monthly at its launch price'
      FROM catalog_state
    RETURNING id
), inserted AS (
INSERT INTO price_versions (plan_id, cycle, currency, region, amount_minor, valid_from, valid_to, revision_id)
SELECT pv.plan_id, pv.cycle, pv.currency, NULL,
       round(pv.amount_minor * 0.85 / 10 ^ cu.minor_units) * 10 ^ cu.minor_units,
       :start - interval '400 days', :change_at, (SELECT id FROM revision)
  FROM price_versions pv
  JOIN currencies cu ON cu.code = pv.currency
 WHERE pv.plan_id = 'pro' AND pv.cycle = 'monthly' AND pv.region IS NULL AND pv.valid_to IS NULL
   AND pv.amount_minor > 0
RETURNING id, plan_id, cycle, currency, amount_minor
)
INSERT INTO seed_old_prices SELECT * FROM inserted
"""

_INSERT_CUSTOMERS = """
INSERT INTO customers (id, email, region, country, segments, attributes, created_at, updated_at)
SELECT 'demo-' || lpad(i::text, 6, '0'), 'demo-' || lpad(i::text, 6, '0') || '@example.com', region,
       country, CASE WHEN r_promo < 0.05 THEN ARRAY['students'] ELSE '{}'::text[] END,
       jsonb_build_object('appetite', appetite, 'demo', true), signup_at, signup_at
  FROM seed_customers
"""

_INSERT_SUBSCRIPTIONS = """
INSERT INTO subscriptions (id, customer_id, plan_id, cycle, currency, region, price_version_id, status,
                           current_period_start, current_period_end, trial_end, cancel_at_period_end,
                           canceled_at, created_at, updated_at)
SELECT DISTINCT ON (s.i) s.subscription_id, s.customer_id, s.plan_id, s.cycle, s.currency, s.region,
       s.price_version_id, s.status, p.period_start,
       CASE WHEN s.status = 'trialing' THEN c.trial_end
            ELSE p.period_start + make_interval(months => s.months::integer) END,
       CASE WHEN s.status = 'trialing' THEN c.trial_end END, false,
       CASE WHEN s.status = 'canceled' THEN s.at END, c.signup_at, s.at
  FROM seed_states s
  JOIN seed_customers c ON c.i = s.i
 CROSS JOIN LATERAL (
    SELECT CASE WHEN s.status IN ('trialing', 'canceled') THEN s.at
                ELSE s.at + make_interval(months => (s.months::integer
                        * floor(extract(epoch FROM :end - s.at) / 86400 / 30.4375 / s.months))::integer) END
           AS period_start
 ) p
 ORDER BY s.i, s.seq DESC
"""

_INSERT_HISTORY = """
INSERT INTO subscription_history (subscription_id, customer_id, plan_id, cycle, currency, region,
                                  price_version_id, status, amount_minor, mrr_minor, valid_from, valid_to)
SELECT subscription_id, customer_id, plan_id, cycle, currency, region, price_version_id, status,
       amount_minor,
       CASE WHEN status IN ('active', 'past_due') THEN trim_scale(round(amount_minor / months, 4)) ELSE 0 END,
       at, until
  FROM seed_states
"""

# Requests per customer and day while on a plan with AI credits (trialing or paying Pro/Premium).
_USAGE = """
CREATE TEMP TABLE seed_usage ON COMMIT DROP AS
WITH days AS (
    SELECT s.i, s.customer_id, s.plan_id, d::date AS day, s.at AS state_from, coalesce(s.until, :end) AS state_until,
           CASE c.appetite WHEN 'heavy' THEN 9.0 WHEN 'light' THEN 0.35 ELSE 1.6 END
           * CASE s.plan_id WHEN 'pro' THEN 1.6 ELSE 1.0 END
           * CASE WHEN extract(isodow FROM d) >= 6 THEN 0.55 ELSE 1.15 END
           * (1 + 0.25 * sin(2 * pi() * extract(doy FROM d) / 30.0))
           * (0.4 + 1.2 * pg_temp.rnd(s.i, 1000 + (d::date - DATE '2000-01-01'), :seed)) AS expected
      FROM seed_states s
      JOIN seed_customers c ON c.i = s.i
     CROSS JOIN LATERAL generate_series(
            date_trunc('day', (greatest(s.at, :start) AT TIME ZONE :tz)),
            date_trunc('day', (coalesce(s.until, :end) AT TIME ZONE :tz)) - interval '1 day',
            interval '1 day') AS d
     WHERE s.plan_id IN ('pro', 'premium') AND s.status IN ('trialing', 'active')
       AND coalesce(s.until, :end) > :start
), requests AS (
    SELECT d.*, n, pg_temp.rnd(d.i * 40000 + (d.day - DATE '2000-01-01'), n, :seed) AS r1,
           pg_temp.rnd(d.i * 40000 + (d.day - DATE '2000-01-01'), 100 + n, :seed) AS r2,
           pg_temp.rnd(d.i * 40000 + (d.day - DATE '2000-01-01'), 200 + n, :seed) AS r3,
           pg_temp.rnd(d.i * 40000 + (d.day - DATE '2000-01-01'), 300 + n, :seed) AS r4
      FROM days d
     CROSS JOIN LATERAL generate_series(1, floor(d.expected
            + pg_temp.rnd(d.i, 500000 + (d.day - DATE '2000-01-01'), :seed))::integer) AS n
), shaped AS (
    SELECT r.*,
           -- 70 %: a working-day bell around 15:00 local; 30 %: any hour.
           CASE WHEN r.r1 < 0.7 THEN 9 + floor(12 * (r.r2 + r.r3) / 2)::integer
                ELSE floor(24 * r.r2)::integer END AS hour,
           CASE WHEN r.plan_id = 'premium' THEN
                CASE WHEN r.r4 < 0.2 THEN 'gpt-4' WHEN r.r4 < 0.6 THEN 'gpt-4o'
                     WHEN r.r4 < 0.85 THEN 'claude-3-5-sonnet' ELSE 'gpt-3.5-turbo' END
                ELSE CASE WHEN r.r4 < 0.45 THEN 'gpt-4o' WHEN r.r4 < 0.75 THEN 'claude-3-5-sonnet'
                          ELSE 'gpt-3.5-turbo' END END AS model_id,
           200 + floor(3200 * r.r3 * r.r3)::integer AS input_tokens,
           80 + floor(1400 * r.r1)::integer AS output_tokens
      FROM requests r
), priced AS (
    SELECT s.customer_id, s.plan_id, s.model_id, s.input_tokens, s.output_tokens, s.state_from, s.state_until,
           s.day + make_interval(hours => s.hour, secs => floor(3600 * s.r4)::integer) AS local_at,
           CASE WHEN s.r2 < 0.6 THEN 'chat' ELSE 'generate' END AS request_type,
           greatest(ceil(s.input_tokens::numeric / 1000 * m.credits_per_1k_input
                         + s.output_tokens::numeric / 1000 * m.credits_per_1k_output), m.credits_minimum)::bigint
               AS credits,
           trim_scale(s.input_tokens::numeric / 1000 * m.cost_per_1k_input
                      + s.output_tokens::numeric / 1000 * m.cost_per_1k_output) AS cost,
           m.cost_currency
      FROM shaped s
      JOIN ai_models m ON m.id = s.model_id
), outage AS (
    SELECT (:outage_day + time '02:00') AT TIME ZONE :tz AS starts,
           (:outage_day + time '08:00') AT TIME ZONE :tz AS ends
)
SELECT p.customer_id, p.plan_id, p.model_id, p.input_tokens, p.output_tokens, p.local_at,
       p.created_at, p.request_type, p.credits, p.cost, p.cost_currency
  FROM (SELECT priced.*, priced.local_at AT TIME ZONE :tz AS created_at FROM priced) p, outage o
 WHERE p.created_at >= p.state_from AND p.created_at < p.state_until AND NOT (p.created_at >= o.starts AND p.created_at < o.ends)
"""

# Admission refuses what the monthly allowance cannot cover: keep each customer-month's requests in time
# order until the allowance is spent. The anomalies come after, as a provider's retries and bursts would.
_CAPPED = """
CREATE TEMP TABLE seed_usage_capped ON COMMIT DROP AS
SELECT u.*
  FROM (SELECT u.*, sum(u.credits) OVER (PARTITION BY u.customer_id, date_trunc('month', u.local_at)
                                          ORDER BY u.created_at ROWS UNBOUNDED PRECEDING) AS running
          FROM seed_usage u) u
  JOIN plans p ON p.id = u.plan_id
 WHERE u.running <= coalesce(p.allowance_amount, 0)
UNION ALL
-- Retry storm: every gpt-4o request of one day sent three times.
SELECT u.*, 0 FROM seed_usage u
 CROSS JOIN generate_series(1, 2) AS k
 WHERE u.model_id = 'gpt-4o' AND u.local_at::date = :storm_day
UNION ALL
-- Bursts: a few customers run a script for a day.
SELECT u.*, 0 FROM seed_usage u
 CROSS JOIN generate_series(1, 25) AS k
 WHERE u.local_at::date = :burst_day AND right(u.customer_id, 2) = '07'
"""

_INSERT_USAGE = """
INSERT INTO token_usage (customer_id, model_id, request_id, request_type, input_tokens, output_tokens, credits,
                         cost, cost_currency, created_at)
SELECT customer_id, model_id, 'demo-req-' || row_number() OVER (ORDER BY created_at, customer_id),
       request_type, input_tokens, output_tokens, credits, cost, cost_currency, created_at
  FROM seed_usage_capped
"""

_ANALYZE = """
ANALYZE customers, subscriptions, subscription_history, token_accounts, token_grants, token_entries, token_usage,
        token_usage_daily, usage_hourly, usage_customer_monthly, payments, refunds, redemptions,
        redemption_requests, promotion_customer_usage, price_versions
"""

# Every writer of token_usage queues its rows for the analytics rollups (see refresh_usage_rollups()).
_QUEUE_USAGE = """
INSERT INTO usage_rollup_queue (customer_id, model_id, local_hour, first_at, requests, input_tokens,
                                output_tokens, credits, cost, cost_currency)
SELECT customer_id, model_id, date_trunc('hour', local_at), min(created_at), count(*), sum(input_tokens),
       sum(output_tokens), sum(credits), sum(cost), cost_currency
  FROM seed_usage_capped
 GROUP BY customer_id, model_id, date_trunc('hour', local_at), cost_currency
"""

_INSERT_DAILY = """
INSERT INTO token_usage_daily AS d (day, customer_id, model_id, request_type, requests, input_tokens,
                                    output_tokens, credits, cost, cost_currency)
SELECT local_at::date, customer_id, model_id, request_type, count(*), sum(input_tokens),
       sum(output_tokens), sum(credits), sum(cost), cost_currency
  FROM seed_usage_capped
 GROUP BY 1, customer_id, model_id, request_type, cost_currency
ON CONFLICT (customer_id, day, model_id, request_type) DO UPDATE
   SET requests = d.requests + EXCLUDED.requests,
       input_tokens = d.input_tokens + EXCLUDED.input_tokens,
       output_tokens = d.output_tokens + EXCLUDED.output_tokens,
       credits = d.credits + EXCLUDED.credits,
       cost = d.cost + EXCLUDED.cost
"""

# Monthly allowance grants with the ledger's invariants: each grant's consumption is one 'consume' entry,
# past months' leftovers expire, balance = the open grants' remaining = Σ entries.
_GRANTS = """
CREATE TEMP TABLE seed_grants ON COMMIT DROP AS
WITH months AS (
    SELECT s.customer_id, s.plan_id, m::date AS month,
           greatest(m AT TIME ZONE :tz, s.at, :start) AS starts_at
      FROM seed_states s
     CROSS JOIN LATERAL generate_series(date_trunc('month', greatest(s.at, :start) AT TIME ZONE :tz),
                                        date_trunc('month', (coalesce(s.until, :end) AT TIME ZONE :tz)
                                                            - interval '1 second'),
                                        interval '1 month') AS m
     WHERE s.plan_id IN ('pro', 'premium') AND s.status IN ('trialing', 'active')
       AND coalesce(s.until, :end) > :start
), one_plan AS (
    SELECT DISTINCT ON (m.customer_id, m.month) m.customer_id, m.month, p.allowance_amount AS amount,
           m.starts_at
      FROM months m JOIN plans p ON p.id = m.plan_id
     WHERE p.allowance_amount > 0
     ORDER BY m.customer_id, m.month, m.starts_at, p.allowance_amount DESC
), used AS (
    SELECT customer_id, date_trunc('month', local_at)::date AS month, sum(credits) AS credits
      FROM seed_usage_capped GROUP BY 1, 2
)
SELECT o.customer_id, o.month, o.amount, least(o.amount, coalesce(u.credits, 0)) AS consumed,
       o.starts_at,
       ((o.month + interval '1 month') AT TIME ZONE :tz) AS expires_at
  FROM one_plan o LEFT JOIN used u USING (customer_id, month)
"""

_LEDGER = [
    """
INSERT INTO token_accounts (customer_id, balance, created_at, updated_at)
SELECT customer_id, 0, min(starts_at), :end FROM seed_grants GROUP BY customer_id
ON CONFLICT (customer_id) DO NOTHING
""",
    """
CREATE TEMP TABLE seed_grant_ids (id bigint, account_id bigint, amount bigint, remaining bigint,
                             starts_at timestamptz, expires_at timestamptz, reference text, consumed bigint)
    ON COMMIT DROP;
WITH inserted AS (
    INSERT INTO token_grants (account_id, source, amount, remaining, priority, starts_at, expires_at, reference,
                              reason, actor, created_at)
    SELECT a.id, 'allowance', g.amount,
           CASE WHEN g.expires_at > :end THEN g.amount - g.consumed ELSE 0 END, 100, g.starts_at, g.expires_at,
           'demo-allowance:' || g.customer_id || ':' || g.month, 'monthly allowance', 'tariff demo seed',
           g.starts_at
      FROM seed_grants g JOIN token_accounts a ON a.customer_id = g.customer_id
    RETURNING id, account_id, amount, remaining, starts_at, expires_at, reference
)
INSERT INTO seed_grant_ids
SELECT i.*, g.consumed FROM inserted i JOIN seed_grants g
    ON i.reference = 'demo-allowance:' || g.customer_id || ':' || g.month
""",
    """
INSERT INTO token_entries (account_id, kind, amount, balance_after, grant_id, actor, reason, created_at)
SELECT account_id, kind, amount,
       sum(amount) OVER (PARTITION BY account_id ORDER BY at, ord ROWS UNBOUNDED PRECEDING),
       id, 'tariff demo seed', reason, at
  FROM (
    SELECT account_id, id, 'grant' AS kind, amount, starts_at AS at, 1 AS ord, 'monthly allowance' AS reason
      FROM seed_grant_ids
    UNION ALL
    SELECT account_id, id, 'consume', -consumed, least(expires_at, :end) - interval '1 second', 2,
           'demo usage of the month'
      FROM seed_grant_ids WHERE consumed > 0
    UNION ALL
    SELECT account_id, id, 'expire', -(amount - consumed), expires_at, 3, 'allowance expired'
      FROM seed_grant_ids WHERE expires_at <= :end AND amount > consumed
  ) e
""",
    """
UPDATE token_accounts a SET balance = b.remaining
  FROM (SELECT account_id, sum(remaining) AS remaining FROM seed_grant_ids GROUP BY account_id) b
 WHERE a.id = b.account_id
""",
]

# Converting customers who were offered a running promotion for their plan and cycle redeem it.
_REDEMPTIONS = [
    """
CREATE TEMP TABLE seed_redemptions ON COMMIT DROP AS
SELECT s.customer_id, s.plan_id, s.cycle, s.region, s.currency, s.amount_minor AS list_minor, s.at,
       pr.id AS promotion_id, pr.duration, pr.percent_off,
       least(s.amount_minor, CASE WHEN pr.kind = 'percent_off'
                                  THEN round(s.amount_minor * pr.percent_off / 100)
                                  ELSE coalesce(pa.amount_minor, 0) END)::bigint AS discount_minor,
       row_number() OVER (ORDER BY s.at, s.customer_id) AS n
  FROM seed_states s
  JOIN seed_customers c ON c.i = s.i
 CROSS JOIN LATERAL (
    SELECT p.* FROM promotions p
     WHERE p.kind IN ('percent_off', 'amount_off') AND p.status = 'active'
       AND (p.starts_at IS NULL OR p.starts_at <= s.at) AND (p.ends_at IS NULL OR p.ends_at > s.at)
       AND (p.applies_to -> 'plans' IS NULL OR p.applies_to -> 'plans' ? s.plan_id)
       AND (p.applies_to -> 'cycles' IS NULL OR p.applies_to -> 'cycles' ? s.cycle)
       AND (p.eligibility -> 'segments' IS NULL OR c.r_promo < 0.05)
       AND p.eligibility -> 'customers_file' IS NULL
     ORDER BY p.percent_off DESC NULLS LAST, p.id
     LIMIT 1
 ) pr
  LEFT JOIN promotion_amounts pa ON pa.promotion_id = pr.id AND pa.currency = s.currency
 WHERE s.seq = 3 AND (c.r_promo < 0.05 OR c.r_promo > 0.55)
""",
    """
INSERT INTO redemption_requests (idempotency_key, customer_id, request, response, created_at)
SELECT 'demo-checkout-' || customer_id, customer_id,
       jsonb_build_object('plan', plan_id, 'cycle', cycle, 'currency', currency),
       jsonb_build_object('demo', true), at
  FROM seed_redemptions
""",
    """
INSERT INTO redemptions (promotion_id, customer_id, item_kind, item_id, cycle, region, currency, list_minor,
                         position, discount_minor, usage_slot, final_minor, duration, idempotency_key,
                         redeemed_at, created_at)
SELECT promotion_id, customer_id, 'plan', plan_id, cycle, region, currency, list_minor, 1, discount_minor,
       (n % 16)::smallint, list_minor - discount_minor, duration, 'demo-checkout-' || customer_id, at, at
  FROM seed_redemptions
""",
    """
UPDATE promotion_usage u
   SET redeemed = u.redeemed + c.n, cap = CASE WHEN u.cap IS NULL THEN NULL ELSE greatest(u.cap, u.redeemed + c.n) END
  FROM (SELECT promotion_id, (n % 16)::smallint AS slot, count(*) AS n FROM seed_redemptions GROUP BY 1, 2) c
 WHERE u.promotion_id = c.promotion_id AND u.slot = c.slot
""",
    """
INSERT INTO promotion_customer_usage (promotion_id, customer_id, redeemed)
SELECT promotion_id, customer_id, 1 FROM seed_redemptions
""",
    "SELECT sync_promotion_usage(promotion_id) FROM (SELECT DISTINCT promotion_id FROM seed_redemptions) p",
]

# Every paying period is billed at its start: 93 % succeed first time, 5 % fail and succeed on a retry the
# next day, 2 % fail for good (the subscription lapses at that period's end only in the history's
# narrative: access is not modelled here); 1.5 % of successes are refunded in full within a week. The first
# payment carries the promotion redeemed at conversion. Tax follows the region (GST 18 % in India).
_PAYMENTS = [
    """
CREATE TEMP TABLE seed_payments ON COMMIT DROP AS
SELECT s.i, s.customer_id, s.subscription_id, s.plan_id, s.cycle, s.price_version_id, s.region, s.currency,
       s.amount_minor AS list_minor, b.k, b.billed_at, s.seq,
       CASE WHEN b.k = 0 AND s.seq = 3 THEN coalesce(r.discount_minor, 0) ELSE 0 END AS discount_minor,
       rg.tax_name, rg.tax_percent, rg.tax_inclusive,
       pg_temp.rnd(s.i * 100 + s.seq, 9000 + b.k, :seed) AS r_outcome,
       pg_temp.rnd(s.i * 100 + s.seq, 19000 + b.k, :seed) AS r_refund
  FROM seed_states s
  JOIN regions rg ON rg.code = s.region
  LEFT JOIN seed_redemptions r ON r.customer_id = s.customer_id
 CROSS JOIN LATERAL (
    SELECT k, s.at + make_interval(months => (k * s.months)::integer) AS billed_at
      FROM generate_series(0, floor(extract(epoch FROM coalesce(s.until, :end) - s.at)
                                    / 86400 / 30.4375 / s.months)::integer) AS k
 ) b
 WHERE s.status = 'active' AND s.amount_minor > 0 AND b.billed_at < coalesce(s.until, :end)
""",
    """
CREATE TEMP TABLE seed_payment_rows ON COMMIT DROP AS
SELECT p.*, a.attempt, a.at, a.status,
       p.list_minor - p.discount_minor AS net_minor,
       CASE WHEN p.tax_percent IS NULL OR p.tax_inclusive THEN 0
            ELSE round((p.list_minor - p.discount_minor) * p.tax_percent / 100) END::bigint AS tax_minor,
       'DM' || lpad(p.i::text, 8, '0') || p.seq || lpad(p.k::text, 3, '0') || a.attempt AS txnid
  FROM seed_payments p
 CROSS JOIN LATERAL (VALUES
    (1, p.billed_at, CASE WHEN p.r_outcome < 0.93 THEN 'success' ELSE 'failure' END),
    (2, CASE WHEN p.r_outcome >= 0.93 AND p.r_outcome < 0.98 THEN p.billed_at + interval '1 day' END, 'success')
 ) AS a (attempt, at, status)
 WHERE a.at IS NOT NULL AND a.at < :end
""",
    """
INSERT INTO payments (txnid, mihpayid, environment, customer_id, kind, purpose, plan_id, cycle, price_version_id,
                      subscription_id, region, currency, list_minor, discount_minor, net_minor, tax_name,
                      tax_percent, tax_inclusive, tax_minor, amount_minor, amount_text, quote, redemption_key,
                      redemption_status, productinfo, status, refunded_minor, error_message, payment_mode, actor,
                      created_at, updated_at, paid_at, failed_at)
SELECT r.txnid, CASE WHEN r.status = 'success' THEN '40' || abs(hashtext(r.txnid)) END, 'demo', r.customer_id,
       'plan', CASE WHEN r.k = 0 THEN 'new' ELSE 'renewal' END, r.plan_id, r.cycle, r.price_version_id,
       r.subscription_id, r.region, r.currency, r.list_minor, r.discount_minor, r.net_minor, r.tax_name,
       r.tax_percent, r.tax_inclusive, r.tax_minor, r.net_minor + r.tax_minor,
       trim_scale(round((r.net_minor + r.tax_minor) / 100.0, 2))::text, '{}'::jsonb, 'demo-' || r.txnid,
       CASE WHEN r.discount_minor > 0 THEN 'redeemed' ELSE 'none' END,
       'PineGenie ' || initcap(r.plan_id) || ' subscription',
       CASE WHEN r.status = 'failure' THEN 'failure' WHEN r.r_refund < 0.015 THEN 'refunded' ELSE 'success' END,
       CASE WHEN r.status = 'success' AND r.r_refund < 0.015 THEN r.net_minor + r.tax_minor ELSE 0 END,
       CASE WHEN r.status = 'failure' THEN 'Bank was unable to authenticate' END,
       CASE WHEN r.r_refund < 0.5 THEN 'UPI' ELSE 'CC' END, 'tariff demo seed', r.at, r.at,
       CASE WHEN r.status = 'success' THEN r.at END, CASE WHEN r.status = 'failure' THEN r.at END
  FROM seed_payment_rows r
 WHERE r.net_minor + r.tax_minor > 0
""",
    """
INSERT INTO refunds (payment_id, token, request_id, amount_minor, currency, amount_text, reason, status, actor,
                     created_at, updated_at, settled_at)
SELECT id, 'DR' || substr(txnid, 3), 'demo-refund-' || txnid, refunded_minor, currency, amount_text,
       'customer asked for a refund', 'success', 'tariff demo seed', paid_at + interval '3 days',
       paid_at + interval '4 days', paid_at + interval '4 days'
  FROM payments WHERE status = 'refunded' AND actor = 'tariff demo seed'
""",
]

_COUNTS = """
SELECT (SELECT count(*) FROM seed_customers) AS customers,
       (SELECT count(DISTINCT i) FROM seed_states) AS subscriptions,
       (SELECT count(*) FROM seed_states) AS history_rows,
       (SELECT count(*) FROM seed_usage_capped) AS usage_records,
       (SELECT count(*) FROM seed_grant_ids) AS grants,
       (SELECT count(*) FROM seed_redemptions) AS redemptions,
       (SELECT count(*) FROM seed_old_prices) AS price_changes,
       (SELECT count(*) FROM seed_payment_rows) AS payments
"""


def _window(end: datetime | None, days: int) -> tuple[datetime, datetime]:
    stop = (end or datetime.now(UTC)).astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return stop - timedelta(days=days), stop


def seed(
    conn: Connection,
    *,
    customers: int = 1000,
    days: int = 180,
    seed_value: int = 1,
    end: datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> SeedResult:
    """Load the demo history in the connection's transaction (search_path set to the Tariff schema)."""
    if customers < 1 or days < 14:
        raise SeedError("too small a history", fix="use --customers 1 or more and --days 14 or more")
    plans = set(conn.execute(sa.text("SELECT id FROM plans WHERE status = 'active'")).scalars())
    if not {"free", "pro", "premium"} <= plans:
        raise SeedError(
            "the demo history needs the plans free, pro and premium in the applied catalog",
            fix="apply the shipped pricing/ config first: tariff apply --config pricing",
        )
    # Seeded customers are demo-000001 …; other demo-… customers (the demo's own buyer) are not a history.
    if conn.execute(sa.text("SELECT EXISTS (SELECT 1 FROM customers WHERE id ~ '^demo-[0-9]{6}$')")).scalar():
        raise SeedError(
            "this database already holds a demo history (customers demo-…)",
            fix="seed a fresh database (tariff db …) — a history is generated once, never merged",
        )
    start, stop = _window(end, days)
    tz = conn.execute(sa.text("SELECT token_timezone()")).scalar_one()
    local_start = start.date()
    params: dict[str, Any] = {
        "customers": customers,
        "seed": seed_value,
        "start": start,
        "end": stop,
        "change_at": start + (stop - start) * PRICE_CHANGE_AT,
        "tz": tz,
        "storm_day": local_start + timedelta(days=int(days * 0.72)),
        "outage_day": local_start + timedelta(days=int(days * 0.41)),
        "burst_day": local_start + timedelta(days=int(days * 0.86)),
    }
    step = progress or (lambda _name: None)

    def run(statements: str) -> None:
        # One statement per execute: parameters go through the extended protocol, which takes one at a time.
        for statement in statements.split(";\n"):
            if statement.strip():
                names = {name for name in params if f":{name}" in statement}
                conn.execute(sa.text(statement), {k: v for k, v in params.items() if k in names})

    conn.execute(sa.text("SET LOCAL tariff.subscription_history = 'off'"))
    conn.execute(sa.text(_HELPERS))
    run(_OLD_PRICES)
    run(_CUSTOMERS)
    step("customers")
    run(_STATES)
    run(_INSERT_CUSTOMERS)
    run(_INSERT_SUBSCRIPTIONS)
    run(_INSERT_HISTORY)
    step("subscriptions")
    run(_USAGE)
    conn.execute(sa.text("ANALYZE seed_usage"))
    run(_CAPPED)
    conn.execute(sa.text("ANALYZE seed_usage_capped"))
    run(_INSERT_USAGE)
    run(_QUEUE_USAGE)
    run(_INSERT_DAILY)
    step("usage")
    run(_GRANTS)
    for statement in _LEDGER:
        run(statement)
    step("ledger")
    for statement in _REDEMPTIONS:
        run(statement)
    step("promotions")
    for statement in _PAYMENTS:
        run(statement)
    step("payments")
    conn.execute(sa.text("SELECT refresh_usage_rollups()"))
    step("rollups")
    # Fresh statistics for what was just loaded: a report run straight after the seed would otherwise plan
    # on empty-table estimates (a nested loop over every grant × customer took seconds).
    conn.execute(sa.text(_ANALYZE))
    step("statistics")
    conn.execute(sa.text("SET LOCAL tariff.subscription_history = 'on'"))
    counts = conn.execute(sa.text(_COUNTS)).mappings().one()
    return SeedResult(
        customers=counts["customers"],
        subscriptions=counts["subscriptions"],
        history_rows=counts["history_rows"],
        usage_records=counts["usage_records"],
        grants=counts["grants"],
        redemptions=counts["redemptions"],
        price_changes=counts["price_changes"],
        payments=counts["payments"],
        start=start,
        end=stop,
    )
