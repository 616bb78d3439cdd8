-- The rest of `tariff tick`: rollover of unused allowance, the end of boosts, low-balance alerts, package
-- auto-renewal orders, promotion start/end notices and due grandfathering migrations. Each step is one
-- function tick_<step>(p_at) -> jsonb summary; database/automation.py runs them in order in one transaction.
--
-- Every step is idempotent on its own: what it creates carries a key naming the thing it is about (the
-- rollover grant's reference names the allowance grant it carries over, a notification's idempotency key
-- names grant, period, threshold, promotion window or migration, a renewal order is unique per trigger
-- grant), so running tick again changes nothing more. Concurrent ticks serialise on tick_lock(), the same
-- transaction-scoped advisory lock tick_ledger() takes. Steps that move credits lock the accounts they touch
-- in id order first, like every multi-account statement of the ledger.

CREATE FUNCTION tick_lock() RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.tick_ledger'));
END
$$;

-- The channel of the notices tick writes: the first low-balance channel of token_rules, else 'email'
-- (the name of the customer e-mail channel when none is configured). Admin notices have customer_id NULL.
CREATE FUNCTION tick_channel() RETURNS text
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
BEGIN
    RETURN coalesce((SELECT low_balance_channels[1] FROM token_rules), 'email');
END
$$;

-- Lookups the steps below make on every run.
CREATE INDEX token_grants_package ON token_grants (account_id, package_id, created_at DESC, id DESC)
    WHERE source = 'package';
CREATE INDEX token_grants_boost_end ON token_grants (expires_at) WHERE source = 'boost';

-- ------------------------------------------------------------------------------------------- renewal

-- allowances_due() of 0007, with the month count fixed at month ends: age() says Jan 31 → Feb 28 is 28 days,
-- not a month, so a subscription that began on the 31st got no allowance from Feb 28 (when January's ended)
-- until Mar 1. Period k is now the last k with start + k months <= p_at (start + k months clamps to the
-- month's last day, like billing does). The time zone of that arithmetic is the session's: tick pins it to
-- the token rules' zone.
CREATE OR REPLACE FUNCTION allowances_due(p_at timestamptz)
RETURNS TABLE (customer_id text, plan_id text, amount bigint, period_start timestamptz, expires_at timestamptz,
               reference text)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT d.* FROM (
        SELECT s.customer_id, p.id::text, p.allowance_amount, w.period_start,
               CASE WHEN p.allowance_expires_after IS NOT NULL
                    THEN w.period_start + p.allowance_expires_after::interval ELSE w.period_end END,
               'allowance:' || s.id || ':' || CASE p.allowance_every WHEN 'once' THEN 'once'
                   ELSE to_char(w.period_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END
          FROM subscriptions s
          JOIN plans p ON p.id = s.plan_id
          CROSS JOIN LATERAL (
              SELECT CASE WHEN s.current_period_start + make_interval(months => a.k + 1) <= p_at
                          THEN a.k + 1 ELSE a.k END AS k
                FROM (SELECT (extract(year FROM age(p_at, s.current_period_start)) * 12
                              + extract(month FROM age(p_at, s.current_period_start)))::integer AS k) a
          ) m
          CROSS JOIN LATERAL (
              SELECT CASE p.allowance_every WHEN 'month'
                          THEN s.current_period_start + make_interval(months => m.k)
                          ELSE s.current_period_start END AS period_start,
                     CASE p.allowance_every
                          WHEN 'month' THEN least(s.current_period_start + make_interval(months => m.k + 1),
                                                  s.current_period_end)
                          WHEN 'cycle' THEN s.current_period_end END AS period_end
          ) w
         WHERE s.status IN ('trialing', 'active', 'past_due')
           AND p.allowance_amount > 0
           AND s.current_period_start <= p_at AND p_at < s.current_period_end
    ) d (customer_id, plan_id, amount, period_start, expires_at, reference)
     WHERE (d.expires_at IS NULL OR d.expires_at > p_at)
       AND NOT EXISTS (SELECT 1 FROM token_grants g WHERE g.reference = d.reference)
$$;

-- tick_ledger() of 0007 unchanged but for one thing: allowances_due() is evaluated once into a temporary
-- table instead of once per statement (it joins every live subscription, so at 100,000 subscribers that
-- was most of an idle tick).
CREATE OR REPLACE FUNCTION tick_ledger(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_account      bigint;
    v_reservations integer := 0;
    v_expired      bigint := 0;
    v_expired_cr   bigint := 0;
    v_renewed      bigint := 0;
    v_renewed_cr   bigint := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.tick_ledger'));

    -- Reservations of idle accounts (active ones are released lazily by their next admission).
    FOR v_account IN
        SELECT DISTINCT account_id FROM token_requests WHERE status = 'open' AND expires_at <= p_at ORDER BY 1
    LOOP
        PERFORM 1 FROM token_accounts WHERE id = v_account FOR UPDATE;
        v_reservations := v_reservations + expire_reservations(v_account, p_at);
    END LOOP;

    -- Lock in id order (as every multi-account step does) so concurrent admissions wait instead of deadlocking;
    -- the statements after it run on a fresh snapshot that sees what those admissions committed.
    PERFORM 1 FROM token_accounts
     WHERE id IN (SELECT account_id FROM token_grants WHERE remaining > 0 AND expires_at <= p_at)
     ORDER BY id FOR UPDATE;
    WITH expired AS (
        UPDATE token_grants g SET remaining = 0
          FROM (SELECT id, remaining FROM token_grants WHERE remaining > 0 AND expires_at <= p_at) d
         WHERE g.id = d.id
        RETURNING g.id, g.account_id, d.remaining
    ), entries AS (
        INSERT INTO token_entries (account_id, kind, amount, balance_after, grant_id, actor, reason, created_at)
        SELECT e.account_id, 'expire', -e.remaining,
               a.balance - sum(e.remaining) OVER (PARTITION BY e.account_id ORDER BY e.id),
               e.id, 'tariff tick', 'grant expired', p_at
          FROM expired e JOIN token_accounts a ON a.id = e.account_id
         ORDER BY e.account_id, e.id
    ), totals AS (
        UPDATE token_accounts a SET balance = a.balance - t.credits, updated_at = p_at
          FROM (SELECT account_id, sum(remaining) AS credits FROM expired GROUP BY account_id) t
         WHERE a.id = t.account_id
    )
    SELECT count(*), coalesce(sum(remaining), 0) INTO v_expired, v_expired_cr FROM expired;

    -- What is due, computed once (0007 computed it in each of the three statements below).
    CREATE TEMP TABLE tick_allowances ON COMMIT DROP AS SELECT * FROM allowances_due(p_at);
    INSERT INTO token_accounts (customer_id) SELECT DISTINCT customer_id FROM tick_allowances ORDER BY 1
        ON CONFLICT (customer_id) DO NOTHING;
    PERFORM 1 FROM token_accounts WHERE customer_id IN (SELECT customer_id FROM tick_allowances)
     ORDER BY id FOR UPDATE;
    WITH granted AS (
        INSERT INTO token_grants (account_id, source, amount, remaining, priority, starts_at, expires_at,
                                  reference, reason, actor, created_at)
        SELECT a.id, 'allowance', d.amount, d.amount, 100, d.period_start, d.expires_at, d.reference,
               'plan ' || d.plan_id || ' allowance', 'tariff tick', p_at
          FROM tick_allowances d JOIN token_accounts a ON a.customer_id = d.customer_id
         ORDER BY a.id, d.reference
        ON CONFLICT (reference) WHERE reference IS NOT NULL DO NOTHING
        RETURNING id, account_id, amount, reason
    ), entries AS (
        INSERT INTO token_entries (account_id, kind, amount, balance_after, grant_id, actor, reason, created_at)
        SELECT g.account_id, 'grant', g.amount,
               a.balance + sum(g.amount) OVER (PARTITION BY g.account_id ORDER BY g.id),
               g.id, 'tariff tick', g.reason, p_at
          FROM granted g JOIN token_accounts a ON a.id = g.account_id
         ORDER BY g.account_id, g.id
    ), totals AS (
        UPDATE token_accounts a SET balance = a.balance + t.credits, updated_at = p_at
          FROM (SELECT account_id, sum(amount) AS credits FROM granted GROUP BY account_id) t
         WHERE a.id = t.account_id
    )
    SELECT count(*), coalesce(sum(amount), 0) INTO v_renewed, v_renewed_cr FROM granted;
    DROP TABLE tick_allowances;

    RETURN jsonb_build_object('at', p_at, 'reservations_released', v_reservations,
                              'grants_expired', v_expired, 'credits_expired', v_expired_cr,
                              'allowances_granted', v_renewed, 'credits_granted', v_renewed_cr);
END
$$;

-- ------------------------------------------------------------------------------------------- rollover

-- Allowance grants whose period is over with credits left, on a live subscription whose plan rolls over,
-- and not rolled over yet: what carries into the next period. The amount is the unused part, capped by the
-- plan's max_percent of the allowance, the plan's max_tokens and token_rules' rollover_max_tokens. Rolled
-- credits start when the old period ends and last the plan's rollover expires_after (default: one more
-- period of the same length). Runs before expiry, which then takes the old grant's remainder away.
CREATE FUNCTION rollovers_due(p_at timestamptz)
RETURNS TABLE (account_id bigint, customer_id text, plan_id text, from_grant bigint, amount bigint,
               starts_at timestamptz, expires_at timestamptz, reference text)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT g.account_id, s.customer_id, p.id::text, g.id, r.amount, g.expires_at,
           CASE WHEN p.rollover_expires_after IS NOT NULL THEN g.expires_at + p.rollover_expires_after::interval
                ELSE g.expires_at + (g.expires_at - g.starts_at) END,
           'rollover:' || g.reference
      FROM token_grants g
      -- allowance references are 'allowance:<subscription>:<period start>' (see allowances_due)
      JOIN subscriptions s
        ON s.id = substring(g.reference FROM '^allowance:(.*):(?:once|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$')
      JOIN plans p ON p.id = s.plan_id AND p.rollover
      CROSS JOIN LATERAL (
          SELECT least(g.remaining,
                       coalesce(floor(g.amount * p.rollover_max_percent / 100)::bigint, g.remaining),
                       coalesce(p.rollover_max_tokens, g.remaining),
                       coalesce((SELECT rollover_max_tokens FROM token_rules), g.remaining)) AS amount
      ) r
     WHERE g.source = 'allowance' AND g.remaining > 0 AND g.expires_at <= p_at
       AND s.status IN ('trialing', 'active', 'past_due')
       AND r.amount > 0
       AND NOT EXISTS (SELECT 1 FROM token_grants x WHERE x.reference = 'rollover:' || g.reference)
$$;

CREATE FUNCTION tick_rollover(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count   bigint;
    v_credits bigint;
BEGIN
    PERFORM tick_lock();
    CREATE TEMP TABLE tick_rollovers ON COMMIT DROP AS SELECT * FROM rollovers_due(p_at);
    PERFORM 1 FROM token_accounts WHERE id IN (SELECT account_id FROM tick_rollovers) ORDER BY id FOR UPDATE;
    WITH granted AS (
        INSERT INTO token_grants (account_id, source, amount, remaining, priority, starts_at, expires_at,
                                  reference, reason, actor, created_at)
        SELECT d.account_id, 'rollover', d.amount, d.amount, 50, d.starts_at, d.expires_at, d.reference,
               'plan ' || d.plan_id || ' rollover', 'tariff tick', p_at
          FROM tick_rollovers d
         ORDER BY d.account_id, d.from_grant
        ON CONFLICT (reference) WHERE reference IS NOT NULL DO NOTHING
        RETURNING id, account_id, amount, reason
    ), entries AS (
        INSERT INTO token_entries (account_id, kind, amount, balance_after, grant_id, actor, reason, created_at)
        SELECT g.account_id, 'grant', g.amount,
               a.balance + sum(g.amount) OVER (PARTITION BY g.account_id ORDER BY g.id),
               g.id, 'tariff tick', g.reason, p_at
          FROM granted g JOIN token_accounts a ON a.id = g.account_id
         ORDER BY g.account_id, g.id
    ), totals AS (
        UPDATE token_accounts a SET balance = a.balance + t.credits, updated_at = p_at
          FROM (SELECT account_id, sum(amount) AS credits FROM granted GROUP BY account_id) t
         WHERE a.id = t.account_id
    )
    SELECT count(*), coalesce(sum(amount), 0) INTO v_count, v_credits FROM granted;
    DROP TABLE tick_rollovers;
    RETURN jsonb_build_object('rolled_over', v_count, 'credits', v_credits);
END
$$;

-- ------------------------------------------------------------------------------------------- boosts

-- A boost ends when its time is up (its unused credits then expire with the other lapsed grants): tell the
-- customer once per boost. Runs before expiry so the notice can say how much went unused.
CREATE FUNCTION tick_boosts(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count  bigint;
    v_unused bigint;
BEGIN
    PERFORM tick_lock();
    WITH ended AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'boost_ended', a.customer_id, tick_channel(),
               jsonb_build_object('grant', g.id, 'amount', g.amount, 'unused', g.remaining,
                                  'started_at', g.starts_at, 'ended_at', g.expires_at, 'reason', g.reason),
               'boost-ended:' || g.id, p_at, p_at
          FROM token_grants g JOIN token_accounts a ON a.id = g.account_id
         WHERE g.source = 'boost' AND g.expires_at <= p_at AND a.customer_id IS NOT NULL
         ORDER BY g.id
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING payload
    )
    SELECT count(*), coalesce(sum((payload->>'unused')::bigint), 0) INTO v_count, v_unused FROM ended;
    RETURN jsonb_build_object('boosts_ended', v_count, 'credits_unused', v_unused);
END
$$;

-- ------------------------------------------------------------------------------------------- low balance

-- When what a customer can spend falls below a threshold (token_rules.low_balance_thresholds, in percent of
-- the allowance of the period they are in), one notice per threshold, channel and period. The period is the
-- live allowance grant, so alerts re-arm when the next allowance arrives. Thresholds crossed together are
-- all reported; a customer without a live allowance (no plan allowance) gets none.
-- Only accounts whose cached balance is below the highest threshold of the largest allowance are looked at:
-- after the ledger step has expired lapsed grants, what is usable is never more than the balance, so the
-- cut skips nobody and keeps a tick over many healthy accounts to one pass over token_accounts.
CREATE FUNCTION tick_low_balance(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count     bigint;
    v_customers bigint;
BEGIN
    PERFORM tick_lock();
    WITH rules AS (
        SELECT low_balance_thresholds AS thresholds,
               CASE WHEN cardinality(low_balance_channels) > 0 THEN low_balance_channels
                    ELSE ARRAY['email'] END AS channels
          FROM token_rules WHERE cardinality(low_balance_thresholds) > 0
    ), candidates AS (
        SELECT a.id FROM token_accounts a, rules r
         WHERE a.customer_id IS NOT NULL
           AND a.balance * 100 < (SELECT max(t) FROM unnest(r.thresholds) t)
                                 * (SELECT max(allowance_amount) FROM plans)
    ), period AS (
        SELECT DISTINCT ON (g.account_id) g.account_id, g.amount, g.reference, g.starts_at, g.expires_at
          FROM token_grants g
         WHERE g.account_id IN (SELECT id FROM candidates)
           AND g.source = 'allowance' AND g.starts_at <= p_at AND (g.expires_at IS NULL OR g.expires_at > p_at)
         ORDER BY g.account_id, g.starts_at DESC, g.id DESC
    ), usable AS (
        SELECT g.account_id, sum(g.remaining) AS credits
          FROM token_grants g
         WHERE g.remaining > 0 AND g.starts_at <= p_at AND (g.expires_at IS NULL OR g.expires_at > p_at)
           AND g.account_id IN (SELECT account_id FROM period)
         GROUP BY g.account_id
    ), alerts AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'low_balance', a.customer_id, c.channel,
               jsonb_build_object('threshold_percent', t.threshold, 'allowance', p.amount,
                                  'usable', coalesce(u.credits, 0), 'period_start', p.starts_at,
                                  'period_end', p.expires_at),
               'low-balance:' || p.reference || ':' || t.threshold || ':' || c.channel, p_at, p_at
          FROM period p
          JOIN token_accounts a ON a.id = p.account_id AND a.customer_id IS NOT NULL
          LEFT JOIN usable u ON u.account_id = p.account_id
          CROSS JOIN rules r
          CROSS JOIN LATERAL unnest(r.thresholds) t(threshold)
          CROSS JOIN LATERAL unnest(r.channels) c(channel)
         WHERE coalesce(u.credits, 0) * 100 < t.threshold * p.amount
         ORDER BY a.id, t.threshold DESC, c.channel
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING customer_id
    )
    SELECT count(*), count(DISTINCT customer_id) INTO v_count, v_customers FROM alerts;
    RETURN jsonb_build_object('alerts', v_count, 'customers', v_customers);
END
$$;

-- ------------------------------------------------------------------------------------------- auto-renewal

-- Package renewals tick has decided are due. The charge is not made here: the payment integration reads
-- pending orders (renewal_orders_due), charges the customer's mandate and calls purchase() with the payment
-- reference, which grants the package and fulfils the order; or it calls fail_renewal_order(). One order per
-- trigger: the package grant that ran out ('exhausted') or expired ('expiry').
CREATE TABLE token_renewal_orders (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id       text NOT NULL REFERENCES customers,
    package_id        catalog_id NOT NULL REFERENCES token_packages,
    reason            text NOT NULL CHECK (reason IN ('exhausted', 'expiry')),
    trigger_grant_id  bigint NOT NULL REFERENCES token_grants,
    due_at            timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'fulfilled', 'failed', 'cancelled')),
    payment_reference text,
    grant_id          bigint REFERENCES token_grants,
    failure_reason    text,
    created_at        timestamptz NOT NULL,
    settled_at        timestamptz,
    UNIQUE (customer_id, package_id, reason, trigger_grant_id),
    CHECK ((status = 'pending') = (settled_at IS NULL)),
    CHECK ((status = 'fulfilled') = (grant_id IS NOT NULL)),
    CHECK (status NOT IN ('failed', 'cancelled') OR failure_reason IS NOT NULL)
);
CREATE INDEX token_renewal_orders_due ON token_renewal_orders (due_at) WHERE status = 'pending';
CREATE INDEX token_renewal_orders_customer ON token_renewal_orders (customer_id, package_id, created_at);
-- At most one order waiting for payment per customer and package.
CREATE UNIQUE INDEX token_renewal_orders_one_pending ON token_renewal_orders (customer_id, package_id)
    WHERE status = 'pending';

-- Renewals to queue at p_at: per customer and auto-renewing package, the newest grant of it, when it is
-- used up before its expiry ('exhausted') or has expired ('expiry') and no other grant of that package is
-- still usable; only while the package is on sale to the customer's plan, nothing is pending for it, and
-- fewer than max_per_month orders (failed ones included, cancelled not) were made this calendar month in the
-- token time zone.
CREATE FUNCTION renewals_due(p_at timestamptz)
RETURNS TABLE (customer_id text, package_id text, reason text, trigger_grant_id bigint, due_at timestamptz)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    WITH latest AS (
        SELECT DISTINCT ON (g.account_id, g.package_id) g.*, a.customer_id
          FROM token_grants g
          JOIN token_accounts a ON a.id = g.account_id AND a.customer_id IS NOT NULL
         WHERE g.source = 'package'
           AND g.package_id IN (SELECT id FROM token_packages WHERE auto_renew_when IS NOT NULL)
         ORDER BY g.account_id, g.package_id, g.created_at DESC, g.id DESC
    ), month AS (
        SELECT date_trunc('month', p_at AT TIME ZONE token_timezone()) AT TIME ZONE token_timezone() AS start
    )
    SELECT l.customer_id, k.id::text, k.auto_renew_when, l.id,
           CASE k.auto_renew_when WHEN 'expiry' THEN l.expires_at ELSE p_at END
      FROM latest l
      JOIN token_packages k ON k.id = l.package_id
     WHERE k.status = 'active' AND l.starts_at <= p_at
       AND CASE k.auto_renew_when
               WHEN 'exhausted' THEN l.remaining = 0 AND (l.expires_at IS NULL OR l.expires_at > p_at)
               WHEN 'expiry' THEN l.expires_at <= p_at END
       AND NOT EXISTS (SELECT 1 FROM token_grants o
                        WHERE o.account_id = l.account_id AND o.package_id = l.package_id AND o.source = 'package'
                          AND o.remaining > 0 AND o.starts_at <= p_at
                          AND (o.expires_at IS NULL OR o.expires_at > p_at))
       AND NOT EXISTS (SELECT 1 FROM token_renewal_orders r
                        WHERE r.customer_id = l.customer_id AND r.package_id = l.package_id
                          AND (r.status = 'pending' OR r.trigger_grant_id = l.id))
       AND (k.auto_renew_max_per_month IS NULL
            OR (SELECT count(*) FROM token_renewal_orders r, month m
                 WHERE r.customer_id = l.customer_id AND r.package_id = l.package_id
                   AND r.status <> 'cancelled' AND r.created_at >= m.start) < k.auto_renew_max_per_month)
       AND (k.purchasable_by IS NULL
            OR coalesce(token_limits(l.customer_id, p_at)->>'plan', '') = ANY (k.purchasable_by))
$$;

CREATE FUNCTION tick_package_renewals(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count bigint;
BEGIN
    PERFORM tick_lock();
    WITH queued AS (
        INSERT INTO token_renewal_orders (customer_id, package_id, reason, trigger_grant_id, due_at, created_at)
        SELECT d.customer_id, d.package_id, d.reason, d.trigger_grant_id, d.due_at, p_at
          FROM renewals_due(p_at) d
         ORDER BY d.customer_id, d.package_id
        ON CONFLICT DO NOTHING
        RETURNING *
    ), notices AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'package_renewal_due', q.customer_id, tick_channel(),
               jsonb_build_object('order', q.id, 'package', q.package_id, 'tokens', k.tokens,
                                  'reason', q.reason, 'due_at', q.due_at),
               'package-renewal:' || q.id, p_at, p_at
          FROM queued q JOIN token_packages k ON k.id = q.package_id
        ON CONFLICT (idempotency_key) DO NOTHING
    )
    SELECT count(*) INTO v_count FROM queued;
    RETURN jsonb_build_object('orders_queued', v_count,
                              'orders_pending', (SELECT count(*) FROM token_renewal_orders
                                                  WHERE status = 'pending'));
END
$$;

-- What the payment integration charges: pending orders due at p_at, oldest first, with the package.
CREATE FUNCTION renewal_orders_due(p_at timestamptz DEFAULT now(), p_limit integer DEFAULT 1000)
RETURNS TABLE (order_id bigint, customer_id text, package_id text, tokens bigint, reason text,
               due_at timestamptz, created_at timestamptz)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT r.id, r.customer_id, r.package_id::text, k.tokens, r.reason, r.due_at, r.created_at
      FROM token_renewal_orders r JOIN token_packages k ON k.id = r.package_id
     WHERE r.status = 'pending' AND r.due_at <= p_at
     ORDER BY r.due_at, r.id
     LIMIT p_limit
$$;

-- purchase() of a package fulfils that customer's pending order for it: the grant is the renewal.
CREATE FUNCTION fulfil_renewal_order() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    UPDATE token_renewal_orders r
       SET status = 'fulfilled', grant_id = NEW.id, settled_at = NEW.created_at,
           payment_reference = CASE WHEN NEW.reference LIKE 'payment:%' THEN substr(NEW.reference, 9) END
     WHERE r.status = 'pending' AND r.package_id = NEW.package_id
       AND r.customer_id = (SELECT customer_id FROM token_accounts WHERE id = NEW.account_id);
    RETURN NULL;
END
$$;
CREATE TRIGGER token_grants_fulfil_renewal AFTER INSERT ON token_grants
    FOR EACH ROW WHEN (NEW.source = 'package' AND NEW.package_id IS NOT NULL)
    EXECUTE FUNCTION fulfil_renewal_order();

-- Settle a pending order without a purchase: 'failed' (the charge was declined) or 'cancelled'.
CREATE FUNCTION settle_renewal_order(
    p_order  bigint,
    p_status text,
    p_reason text,
    p_at     timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_order token_renewal_orders;
BEGIN
    IF p_status IS NULL OR p_status NOT IN ('failed', 'cancelled') THEN
        RAISE EXCEPTION 'a renewal order can be settled as failed or cancelled, not "%"', p_status
            USING ERRCODE = 'invalid_parameter_value', HINT = 'a purchase() fulfils an order';
    END IF;
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'settling a renewal order needs a reason' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'say why, e.g. the payment error';
    END IF;
    SELECT * INTO v_order FROM token_renewal_orders WHERE id = p_order FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'no renewal order %', p_order USING ERRCODE = 'no_data_found',
            HINT = 'renewal_orders_due() lists the pending ones';
    END IF;
    IF v_order.status = 'pending' THEN
        UPDATE token_renewal_orders SET status = p_status, failure_reason = btrim(p_reason), settled_at = p_at
         WHERE id = p_order RETURNING * INTO v_order;
    ELSIF v_order.status <> p_status THEN
        RAISE EXCEPTION 'renewal order % is already %', p_order, v_order.status
            USING ERRCODE = 'invalid_parameter_value', HINT = 'only pending orders can be settled';
    END IF;
    RETURN to_jsonb(v_order);
END
$$;

-- ------------------------------------------------------------------------------------------- promotions

-- Promotion start and end notices, once per promotion window (a yearly promotion has one a year): to admins
-- (customer_id NULL), and to each targeted customer when the promotion names customers (a list or file) or
-- segments. Promotions without a start (or end) have no start (or end) notice. A start is announced only
-- while the window is open: a window tick first sees after it closed gets its end notice alone.
CREATE FUNCTION promotion_events(p_at timestamptz)
RETURNS TABLE (promotion_id text, kind text, window_starts timestamptz, window_ends timestamptz,
               event_at timestamptz)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    WITH w AS (
        SELECT p.id, p.yearly, p.starts_at, p.schedule_timezone, pw.*
          FROM promotions p
          CROSS JOIN LATERAL promotion_window(p.starts_at, p.ends_at, p.yearly, p.schedule_timezone, p_at) pw
         WHERE p.status = 'active' AND (p.starts_at IS NOT NULL OR p.ends_at IS NOT NULL)
    )
    SELECT id::text, 'promotion_started', window_starts, window_ends, window_starts
      FROM w WHERE window_starts IS NOT NULL AND state = 'active'
    UNION ALL
    SELECT id::text, 'promotion_ended', window_starts, window_ends, window_ends
      FROM w WHERE window_ends IS NOT NULL AND state = 'ended'
    UNION ALL
    -- A yearly promotion between two windows: last year's window has ended.
    SELECT id::text, 'promotion_ended', l.s, l.e, l.e
      FROM w CROSS JOIN LATERAL (
          SELECT ((window_starts AT TIME ZONE coalesce(schedule_timezone, 'UTC')) - interval '1 year')
                     AT TIME ZONE coalesce(schedule_timezone, 'UTC') AS s,
                 ((window_ends AT TIME ZONE coalesce(schedule_timezone, 'UTC')) - interval '1 year')
                     AT TIME ZONE coalesce(schedule_timezone, 'UTC') AS e
      ) l
     WHERE yearly AND state = 'not_started' AND window_starts > starts_at AND l.e <= p_at
$$;

CREATE FUNCTION tick_promotions(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_result jsonb;
BEGIN
    PERFORM tick_lock();
    WITH events AS (
        SELECT e.*, p.name, p.kind AS discount, p.eligibility,
               e.kind || ':' || e.promotion_id || ':'
                   || to_char(coalesce(e.window_starts, e.window_ends) AT TIME ZONE 'UTC',
                              'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS event_key
          FROM promotion_events(p_at) e JOIN promotions p ON p.id = e.promotion_id
    ), recipients AS (
        SELECT e.*, NULL::text AS customer_id FROM events e
        UNION ALL
        SELECT e.*, pc.customer_id FROM events e
          JOIN promotion_customers pc ON pc.promotion_id = e.promotion_id
          JOIN customers c ON c.id = pc.customer_id
        UNION
        SELECT e.*, c.id FROM events e
          JOIN customers c
            ON jsonb_typeof(e.eligibility->'segments') = 'array'
           AND c.segments && ARRAY(SELECT jsonb_array_elements_text(e.eligibility->'segments'))
    ), sent AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT r.kind, r.customer_id, tick_channel(),
               jsonb_build_object('promotion', r.promotion_id, 'name', r.name, 'discount', r.discount,
                                  'starts_at', r.window_starts, 'ends_at', r.window_ends),
               r.event_key || ':' || coalesce('customer:' || r.customer_id, 'admins'), p_at, p_at
          FROM recipients r
         ORDER BY r.event_key, r.customer_id NULLS FIRST
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING kind, customer_id, payload->>'promotion' AS promotion_id
    )
    SELECT jsonb_build_object(
               'started', coalesce(jsonb_agg(DISTINCT promotion_id) FILTER (WHERE kind = 'promotion_started'
                                                                         AND customer_id IS NULL), '[]'),
               'ended', coalesce(jsonb_agg(DISTINCT promotion_id) FILTER (WHERE kind = 'promotion_ended'
                                                                       AND customer_id IS NULL), '[]'),
               'notifications', count(*),
               'customers_notified', count(DISTINCT customer_id))
      INTO v_result FROM sent;
    RETURN v_result;
END
$$;

-- ------------------------------------------------------------------------------------------- price migrations

-- Grandfathering moves that are due: each subscription moves to its new price version (set-based), the
-- migration is marked done and the customer is told. A migration whose subscription no longer pays the
-- version it was scheduled from, or is no longer live, is cancelled instead.
CREATE FUNCTION tick_price_migrations(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_done     bigint;
    v_canceled bigint;
BEGIN
    PERFORM tick_lock();
    CREATE TEMP TABLE tick_due_migrations ON COMMIT DROP AS
        SELECT pm.id, pm.subscription_id, pm.from_version, pm.to_version, pm.reason, pm.effective_at
          FROM price_migrations pm
         WHERE pm.status = 'scheduled' AND pm.effective_at <= p_at
         ORDER BY pm.id
           FOR UPDATE;
    WITH moved AS (
        UPDATE subscriptions s SET price_version_id = d.to_version, updated_at = p_at
          FROM tick_due_migrations d
         WHERE s.id = d.subscription_id AND s.price_version_id = d.from_version
           AND s.status IN ('trialing', 'active', 'past_due')
        RETURNING s.id, s.customer_id, s.plan_id, s.cycle, s.currency, d.id AS migration_id, d.from_version,
                  d.to_version, d.reason, d.effective_at
    ), marked AS (
        UPDATE price_migrations pm
           SET status = CASE WHEN m.migration_id IS NULL THEN 'canceled' ELSE 'done' END, completed_at = p_at
          FROM tick_due_migrations d LEFT JOIN moved m ON m.migration_id = d.id
         WHERE pm.id = d.id
        RETURNING pm.status
    ), notices AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'price_migrated', m.customer_id, tick_channel(),
               jsonb_build_object('migration', m.migration_id, 'subscription', m.id, 'plan', m.plan_id,
                                  'cycle', m.cycle, 'currency', m.currency,
                                  'old_amount_minor', f.amount_minor, 'new_amount_minor', t.amount_minor,
                                  'reason', m.reason, 'effective_at', m.effective_at),
               'price-migrated:' || m.migration_id, p_at, p_at
          FROM moved m
          JOIN price_versions f ON f.id = m.from_version
          JOIN price_versions t ON t.id = m.to_version
        ON CONFLICT (idempotency_key) DO NOTHING
    )
    SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'canceled')
      INTO v_done, v_canceled FROM marked;
    DROP TABLE tick_due_migrations;
    RETURN jsonb_build_object('migrated', v_done, 'canceled', v_canceled);
END
$$;
