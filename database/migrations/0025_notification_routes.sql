-- tariff.yaml `notifications.routes` for the notifications the database writes itself.
--
-- Python writers (apply's price_change notices, publishers.notify.outbox.enqueue) already wrote one outbox row
-- per routed channel, but the SQL writers did not know the routes: tick's notices all went to tick_channel()
-- (the first low-balance channel, else 'email'), dunning's to payment_rules.dunning_channel, anomaly alerts to
-- the caller's channel. A route such as `promotion_started: [ops-webhook]` was ignored for them, and delivery
-- then tried SMTP for rows that were meant for the webhook.
--
-- The routes now live in the database (notification_routes), so every caller of these functions, not only
-- `tariff tick`, writes where tariff.yaml says. `tariff apply` publishes them, and so does each `tariff tick`
-- from the config it runs with: settings are not part of the plan's diff, so a change to the routes alone
-- makes no revision and would otherwise never reach the database. Apps that keep their own config call
-- set_notification_routes() directly.
--
-- A kind with a route is written once per routed channel, in the route's order, with the idempotency keys
-- enqueue() uses: the first channel's row has the writer's key, each further channel's the key plus
-- ':<channel>'. An empty route turns the kind off. A kind without a route goes where it went before: the
-- writer's own default channel(s). low_balance keeps its keys, which have named their channel since 0009;
-- keying its first channel differently now would alert again for thresholds already reported.
--
-- Promotion, boost and anomaly notices are found again on every run (an ended promotion stays ended), so
-- their rows are written only while the event's own key is new: a channel added to a route later hears of
-- new events, not of every event that has ever happened.

CREATE TABLE notification_routes (
    kind       text PRIMARY KEY CHECK (kind <> ''),
    channels   text[] NOT NULL CHECK (array_position(channels, NULL) IS NULL AND '' <> ALL (channels)),
    updated_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE notification_routes IS
    'tariff.yaml notifications.routes: the channels each notification kind is written to, in order; '
    'an empty list turns the kind off, a kind with no row goes to its writer''s default channel.';

-- The channels a notification of p_kind is written to: its route, else p_default.
CREATE FUNCTION notification_channels(p_kind text, p_default text[]) RETURNS text[]
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT coalesce((SELECT channels FROM notification_routes WHERE kind = p_kind), p_default)
$$;

-- One row per channel with the suffix its idempotency key gets (the first channel none), as enqueue() does.
CREATE FUNCTION notification_targets(p_kind text, p_default text[])
RETURNS TABLE (channel text, key_suffix text, ord bigint)
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT c.channel, CASE WHEN c.ord = 1 THEN '' ELSE ':' || c.channel END, c.ord
      FROM unnest(notification_channels(p_kind, p_default)) WITH ORDINALITY AS c(channel, ord)
$$;

-- The stored routes as tariff.yaml spells them: {"kind": ["channel", …], …}.
CREATE FUNCTION notification_routes_json() RETURNS jsonb
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT coalesce(jsonb_object_agg(kind, to_jsonb(channels)), '{}') FROM notification_routes
$$;

-- Replace the stored routes with p_routes ({"kind": ["channel", …], …}); true when that changed them.
-- Unchanged routes (every tick's case) are compared without taking a lock, so ticks and applies do not wait
-- on each other for them; a change is written under a table lock that readers do not wait for.
CREATE FUNCTION set_notification_routes(p_routes jsonb) RETURNS boolean
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_bad text;
BEGIN
    IF p_routes IS NULL OR jsonb_typeof(p_routes) <> 'object' THEN
        RAISE EXCEPTION 'notification routes are a JSON object of kind → channels, not %',
            coalesce(jsonb_typeof(p_routes), 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. {"promotion_started": ["ops-webhook"]}';
    END IF;
    SELECT r.key INTO v_bad
      FROM jsonb_each(p_routes) r
     WHERE r.key = '' OR jsonb_typeof(r.value) <> 'array'
        OR EXISTS (SELECT 1 FROM jsonb_array_elements(r.value) c
                    WHERE jsonb_typeof(c) <> 'string' OR c #>> '{}' = '')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'the route of notification kind "%" is not a list of channel ids', v_bad
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'give each kind a JSON array of channel ids; [] turns the kind off';
    END IF;
    IF notification_routes_json() = p_routes THEN
        RETURN false;
    END IF;
    LOCK TABLE notification_routes IN SHARE ROW EXCLUSIVE MODE;
    -- A writer we waited for may have stored these very routes.
    IF notification_routes_json() = p_routes THEN
        RETURN false;
    END IF;
    DELETE FROM notification_routes;
    INSERT INTO notification_routes (kind, channels)
    SELECT r.key, ARRAY(SELECT c FROM jsonb_array_elements_text(r.value) WITH ORDINALITY AS e(c, n) ORDER BY n)
      FROM jsonb_each(p_routes) r;
    RETURN true;
END
$$;

-- ------------------------------------------------------------------------------------------- tick steps
-- The tick steps of 0009 unchanged but for where their notices go (and tick_boosts counting boosts, not rows).

CREATE OR REPLACE FUNCTION tick_boosts(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_count  bigint;
    v_unused bigint;
BEGIN
    PERFORM tick_lock();
    WITH targets AS (
        SELECT * FROM notification_targets('boost_ended', ARRAY[tick_channel()])
    ), ended AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'boost_ended', a.customer_id, t.channel,
               jsonb_build_object('grant', g.id, 'amount', g.amount, 'unused', g.remaining,
                                  'started_at', g.starts_at, 'ended_at', g.expires_at, 'reason', g.reason),
               'boost-ended:' || g.id || t.key_suffix, p_at, p_at
          FROM token_grants g JOIN token_accounts a ON a.id = g.account_id
         CROSS JOIN targets t
         WHERE g.source = 'boost' AND g.expires_at <= p_at AND a.customer_id IS NOT NULL
           AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.idempotency_key = 'boost-ended:' || g.id)
         ORDER BY g.id, t.ord
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING payload
    ), boosts AS (
        SELECT DISTINCT payload->>'grant' AS grant_id, (payload->>'unused')::bigint AS unused FROM ended
    )
    SELECT count(*), coalesce(sum(unused), 0) INTO v_count, v_unused FROM boosts;
    RETURN jsonb_build_object('boosts_ended', v_count, 'credits_unused', v_unused);
END
$$;

CREATE OR REPLACE FUNCTION tick_low_balance(p_at timestamptz DEFAULT now()) RETURNS jsonb
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
               notification_channels('low_balance',
                                     CASE WHEN cardinality(low_balance_channels) > 0 THEN low_balance_channels
                                          ELSE ARRAY['email'] END) AS channels
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
          CROSS JOIN LATERAL unnest(r.channels) WITH ORDINALITY c(channel, ord)
         WHERE coalesce(u.credits, 0) * 100 < t.threshold * p.amount
         ORDER BY a.id, t.threshold DESC, c.ord
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING customer_id
    )
    SELECT count(*), count(DISTINCT customer_id) INTO v_count, v_customers FROM alerts;
    RETURN jsonb_build_object('alerts', v_count, 'customers', v_customers);
END
$$;

CREATE OR REPLACE FUNCTION tick_package_renewals(p_at timestamptz DEFAULT now()) RETURNS jsonb
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
        SELECT 'package_renewal_due', q.customer_id, t.channel,
               jsonb_build_object('order', q.id, 'package', q.package_id, 'tokens', k.tokens,
                                  'reason', q.reason, 'due_at', q.due_at),
               'package-renewal:' || q.id || t.key_suffix, p_at, p_at
          FROM queued q JOIN token_packages k ON k.id = q.package_id
         CROSS JOIN notification_targets('package_renewal_due', ARRAY[tick_channel()]) t
        ON CONFLICT (idempotency_key) DO NOTHING
    )
    SELECT count(*) INTO v_count FROM queued;
    RETURN jsonb_build_object('orders_queued', v_count,
                              'orders_pending', (SELECT count(*) FROM token_renewal_orders
                                                  WHERE status = 'pending'));
END
$$;

CREATE OR REPLACE FUNCTION tick_promotions(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_result jsonb;
BEGIN
    PERFORM tick_lock();
    WITH targets AS (
        SELECT k.kind, t.*
          FROM unnest(ARRAY['promotion_started', 'promotion_ended']) k(kind)
         CROSS JOIN LATERAL notification_targets(k.kind, ARRAY[tick_channel()]) t
    ), events AS (
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
        SELECT r.kind, r.customer_id, t.channel,
               jsonb_build_object('promotion', r.promotion_id, 'name', r.name, 'discount', r.discount,
                                  'starts_at', r.window_starts, 'ends_at', r.window_ends),
               r.event_key || ':' || coalesce('customer:' || r.customer_id, 'admins') || t.key_suffix, p_at, p_at
          FROM recipients r JOIN targets t ON t.kind = r.kind
         WHERE NOT EXISTS (SELECT 1 FROM notifications n
                            WHERE n.idempotency_key = r.event_key || ':'
                                                      || coalesce('customer:' || r.customer_id, 'admins'))
         ORDER BY r.event_key, r.customer_id NULLS FIRST, t.ord
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

CREATE OR REPLACE FUNCTION tick_price_migrations(p_at timestamptz DEFAULT now()) RETURNS jsonb
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
        SELECT 'price_migrated', m.customer_id, t.channel,
               jsonb_build_object('migration', m.migration_id, 'subscription', m.id, 'plan', m.plan_id,
                                  'cycle', m.cycle, 'currency', m.currency,
                                  'old_amount_minor', f.amount_minor, 'new_amount_minor', t2.amount_minor,
                                  'reason', m.reason, 'effective_at', m.effective_at),
               'price-migrated:' || m.migration_id || t.key_suffix, p_at, p_at
          FROM moved m
          JOIN price_versions f ON f.id = m.from_version
          JOIN price_versions t2 ON t2.id = m.to_version
         CROSS JOIN notification_targets('price_migrated', ARRAY[tick_channel()]) t
        ON CONFLICT (idempotency_key) DO NOTHING
    )
    SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'canceled')
      INTO v_done, v_canceled FROM marked;
    DROP TABLE tick_due_migrations;
    RETURN jsonb_build_object('migrated', v_done, 'canceled', v_canceled);
END
$$;

-- ------------------------------------------------------------------------------------------- dunning
-- run_dunning() of 0011 unchanged but for where its payment_failed notices go (default: dunning_channel).

CREATE OR REPLACE FUNCTION run_dunning(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_rules     payment_rules;
    v_opened    bigint;
    v_reminded  bigint;
    v_lapsed    integer := 0;
    v_case      dunning_cases;
    v_sub       subscriptions;
    v_new       text;
    v_usable    bigint;
    v_account   bigint;
    v_actions   jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.run_dunning'));
    SELECT * INTO v_rules FROM payment_rules;

    -- Paid through PayU, period over, not renewed: dun it.
    WITH due AS (
        SELECT s.id, s.customer_id, s.current_period_end
          FROM subscriptions s JOIN price_versions pv ON pv.id = s.price_version_id
         WHERE s.status = 'active' AND NOT s.cancel_at_period_end AND s.current_period_end <= p_at
           AND pv.amount_minor > 0
           AND EXISTS (SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.paid_at IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM dunning_cases d WHERE d.subscription_id = s.id AND d.status = 'open')
           AND NOT EXISTS (SELECT 1 FROM dunning_cases d WHERE d.subscription_id = s.id
                            AND d.opened_at >= s.current_period_end)
    ), opened AS (
        INSERT INTO dunning_cases (subscription_id, customer_id, reason, next_reminder_at, grace_ends_at,
                                   opened_at, actions)
        SELECT id, customer_id, 'renewal_unpaid', current_period_end, current_period_end + v_rules.dunning_grace::interval,
               p_at, jsonb_build_array(jsonb_build_object('at', p_at, 'action', 'opened', 'period_end', current_period_end))
          FROM due
        ON CONFLICT (subscription_id) WHERE status = 'open' DO NOTHING
        RETURNING id
    )
    SELECT count(*) INTO v_opened FROM opened;

    -- Reminders due before grace ends.
    WITH due AS (
        SELECT d.id, d.customer_id, d.reminders_sent + 1 AS n, d.grace_ends_at, d.opened_at, d.reason,
               s.plan_id, pv.amount_minor, pv.currency
          FROM dunning_cases d JOIN subscriptions s ON s.id = d.subscription_id
          JOIN price_versions pv ON pv.id = s.price_version_id
         WHERE d.status = 'open' AND d.next_reminder_at <= p_at AND d.grace_ends_at > p_at
    ), sent AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key)
        SELECT 'payment_failed', due.customer_id, t.channel,
               jsonb_build_object('reason', due.reason, 'reminder', due.n, 'plan', due.plan_id,
                                  'amount', minor_text(due.amount_minor, c.minor_units), 'currency', due.currency,
                                  'grace_ends_at', due.grace_ends_at),
               'dunning:' || due.id || ':' || due.n || t.key_suffix
          FROM due JOIN currencies c ON c.code = due.currency
         CROSS JOIN notification_targets('payment_failed', ARRAY[v_rules.dunning_channel]) t
        ON CONFLICT (idempotency_key) DO NOTHING
    ), moved AS (
        UPDATE dunning_cases d
           SET reminders_sent = due.n,
               next_reminder_at = CASE WHEN due.n + 1 <= cardinality(v_rules.dunning_retries)
                                       THEN due.opened_at + v_rules.dunning_retries[due.n + 1]::interval END,
               actions = d.actions || jsonb_build_array(jsonb_build_object('at', p_at, 'action', 'reminded', 'reminder', due.n))
          FROM due WHERE d.id = due.id
        RETURNING d.id
    )
    SELECT count(*) INTO v_reminded FROM moved;

    FOR v_case IN SELECT * FROM dunning_cases WHERE status = 'open' AND grace_ends_at <= p_at ORDER BY id FOR UPDATE LOOP
        SELECT * INTO v_sub FROM subscriptions WHERE id = v_case.subscription_id FOR UPDATE;
        v_actions := jsonb_build_array(jsonb_build_object('at', p_at, 'action', v_rules.dunning_status));
        v_new := NULL;
        UPDATE subscriptions SET status = v_rules.dunning_status, updated_at = p_at,
                                 canceled_at = CASE WHEN v_rules.dunning_status = 'canceled' THEN p_at END
         WHERE id = v_sub.id AND status IN ('trialing', 'active', 'past_due');
        IF v_rules.dunning_suspend_tokens THEN
            SELECT id INTO v_account FROM token_accounts WHERE customer_id = v_case.customer_id;
            IF v_account IS NOT NULL THEN
                PERFORM 1 FROM lock_token_account(v_case.customer_id);
                v_usable := usable_credits(v_account, p_at);
                IF v_usable > 0 THEN
                    PERFORM revoke_tokens(v_case.customer_id, v_usable,
                                          'suspended: unpaid subscription ' || v_sub.id, 'tariff dunning', p_at);
                    UPDATE dunning_cases SET tokens_suspended = v_usable WHERE id = v_case.id;
                    v_actions := v_actions || jsonb_build_object('at', p_at, 'action', 'tokens_suspended',
                                                                 'credits', v_usable);
                END IF;
            END IF;
        END IF;
        IF v_rules.dunning_downgrade_to IS NOT NULL AND v_rules.dunning_downgrade_to <> v_sub.plan_id THEN
            UPDATE subscriptions SET status = 'canceled', canceled_at = p_at, updated_at = p_at WHERE id = v_sub.id;
            v_new := register_subscription(p_customer_id => v_sub.customer_id, p_plan_id => v_rules.dunning_downgrade_to,
                                           p_cycle => v_sub.cycle, p_status => 'active',
                                           p_current_period_start => p_at, p_region => v_sub.region)->>'id';
            v_actions := v_actions || jsonb_build_object('at', p_at, 'action', 'downgraded',
                                                         'plan', v_rules.dunning_downgrade_to, 'subscription', v_new);
        END IF;
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key)
        SELECT 'payment_failed', v_case.customer_id, t.channel,
               jsonb_build_object('reason', v_case.reason, 'final', true, 'plan', v_sub.plan_id,
                                  'status', v_rules.dunning_status, 'downgraded_to', v_rules.dunning_downgrade_to,
                                  'tokens_suspended', v_rules.dunning_suspend_tokens),
               'dunning:' || v_case.id || ':lapsed' || t.key_suffix
          FROM notification_targets('payment_failed', ARRAY[v_rules.dunning_channel]) t
        ON CONFLICT (idempotency_key) DO NOTHING;
        UPDATE dunning_cases SET status = 'lapsed', closed_at = p_at, downgraded_to = v_new,
                                 actions = actions || v_actions
         WHERE id = v_case.id;
        v_lapsed := v_lapsed + 1;
    END LOOP;

    RETURN jsonb_build_object('at', p_at, 'cases_opened', v_opened, 'reminders_sent', v_reminded,
                              'cases_lapsed', v_lapsed,
                              'open_cases', (SELECT count(*) FROM dunning_cases WHERE status = 'open'));
END
$$;

-- ------------------------------------------------------------------------------------------- anomalies
-- raise_anomaly_alerts() of 0013 unchanged but for where its alerts go (default: p_channel).

CREATE OR REPLACE FUNCTION raise_anomaly_alerts(
    p_at      timestamptz DEFAULT now(),
    p_channel text DEFAULT 'email'
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_today   date := (p_at AT TIME ZONE token_timezone())::date;
    v_found   integer;
    v_written integer;
BEGIN
    IF coalesce(btrim(p_channel), '') = '' THEN
        RAISE EXCEPTION 'anomaly alerts need a notification channel' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'name a channel from tariff.yaml notifications.channels, e.g. email';
    END IF;
    WITH found AS (
        SELECT * FROM usage_anomalies(v_today - 1, v_today)
    ), written AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'usage_anomaly', NULL, t.channel,
               jsonb_build_object('customer', f.customer_id, 'model', f.model_id, 'day', f.day,
                                  'credits', f.credits, 'usual', f.usual, 'history_days', f.history,
                                  'ratio', f.ratio, 'score', f.score),
               'usage-anomaly:' || f.customer_id || ':' || f.model_id || ':' || f.day || t.key_suffix,
               p_at, p_at
          FROM found f
         CROSS JOIN notification_targets('usage_anomaly', ARRAY[p_channel]) t
         WHERE NOT EXISTS (SELECT 1 FROM notifications n
                            WHERE n.idempotency_key = 'usage-anomaly:' || f.customer_id || ':' || f.model_id
                                                      || ':' || f.day)
         ORDER BY f.score DESC
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM found), (SELECT count(*) FROM written) INTO v_found, v_written;
    RETURN jsonb_build_object('at', p_at, 'days', jsonb_build_array(v_today - 1, v_today),
                              'anomalies', v_found, 'alerts_written', v_written);
END
$$;
