-- Every notice tick writes is one delivery knows, and the notices the docs promise are really written.
--
-- tick_price_migrations() wrote `price_migrated`, a kind with no template, so `tariff notify send` failed each
-- such row for good ("unknown notification kind"). A scheduled price move that tick carries out is what the
-- `grandfathering_executed` kind and template are for: tick now writes that, with the payload of apply's
-- `price_change` (an `items` list of old and new amounts, direction and effective date), so the template
-- can show the prices. The idempotency key keeps its `price-migrated:<migration>` name: receivers that
-- de-duplicate on it, and rows written before, stay consistent.
--
-- Rows already queued as `price_migrated` are rewritten to `grandfathering_executed` with the payload
-- converted, rather than the old name being kept as an alias: an alias would have to stay a kind forever
-- (a template, a route key, a `notify list --kind`, a preview) for rows that only this migration can
-- still meet. Only unsent rows are touched, since sent ones are history; failed ones (all of them, as
-- delivery never knew the kind) stay failed, so nobody is mailed about an old move without an operator
-- choosing to with `tariff notify retry`.
--
-- tick_ledger() expired grants silently, although `tokens_expired` has a template and the docs say tick
-- writes it: it now writes one notice per customer and run for the credits that were really lost. An
-- allowance's credits that rolled over were not lost (tick_rollover, which runs first, granted them again),
-- and a boost's unused credits were already told in its `boost_ended` notice, so neither counts; a customer
-- who lost nothing hears nothing. The key names the customer and the first grant of the run
-- (`tokens-expired:<customer>:<grant id>`): a grant expires once, so a rerun or a concurrent tick (which
-- waits on the tick lock, then finds nothing left to expire) writes nothing twice.

-- ------------------------------------------------------------------------------------------- queued rows

UPDATE notifications
   SET kind = 'grandfathering_executed',
       payload = jsonb_build_object(
           'migration', payload->'migration', 'reason', payload->'reason',
           'items', jsonb_build_array(jsonb_build_object(
               'subscription', payload->'subscription', 'plan', payload->'plan', 'cycle', payload->'cycle',
               'currency', payload->'currency', 'old_amount_minor', payload->'old_amount_minor',
               'new_amount_minor', payload->'new_amount_minor',
               'direction', CASE WHEN (payload->>'new_amount_minor')::bigint > (payload->>'old_amount_minor')::bigint
                                 THEN 'increase'
                                 WHEN (payload->>'new_amount_minor')::bigint < (payload->>'old_amount_minor')::bigint
                                 THEN 'decrease' ELSE 'same' END,
               'effective_at', payload->'effective_at')))
 WHERE kind = 'price_migrated' AND status <> 'sent';

-- ------------------------------------------------------------------------------------------- expiry
-- tick_ledger() of 0009 unchanged but for the `tokens_expired` notices of the grants it expires.

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
        RETURNING g.id, g.account_id, d.remaining, g.source, g.reference, g.expires_at
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
    ), lost AS (
        -- The rollover grant of an allowance was made by an earlier statement of this tick, so it is seen.
        SELECT a.customer_id, min(e.id) AS first_grant, max(e.expires_at) AS expired_at,
               sum(greatest(e.remaining - coalesce(r.amount, 0), 0)) AS credits,
               jsonb_agg(e.id ORDER BY e.id) AS grants
          FROM expired e
          JOIN token_accounts a ON a.id = e.account_id AND a.customer_id IS NOT NULL
          LEFT JOIN token_grants r ON e.source = 'allowance' AND r.reference = 'rollover:' || e.reference
         WHERE e.source <> 'boost'
         GROUP BY a.customer_id
    ), notices AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'tokens_expired', l.customer_id, t.channel,
               jsonb_build_object('credits', l.credits, 'expired_at', l.expired_at, 'grants', l.grants),
               'tokens-expired:' || l.customer_id || ':' || l.first_grant || t.key_suffix, p_at, p_at
          FROM lost l
         CROSS JOIN notification_targets('tokens_expired', ARRAY[tick_channel()]) t
         WHERE l.credits > 0
         ORDER BY l.customer_id, t.ord
        ON CONFLICT (idempotency_key) DO NOTHING
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

-- ------------------------------------------------------------------------------------------- price moves
-- tick_price_migrations() of 0025 unchanged but for the kind and payload of its notices.

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
        SELECT 'grandfathering_executed', m.customer_id, t.channel,
               jsonb_build_object('migration', m.migration_id, 'reason', m.reason,
                                  'items', jsonb_build_array(jsonb_build_object(
                                      'subscription', m.id, 'plan', m.plan_id, 'cycle', m.cycle,
                                      'currency', m.currency, 'old_amount_minor', f.amount_minor,
                                      'new_amount_minor', t2.amount_minor,
                                      'direction', CASE WHEN t2.amount_minor > f.amount_minor THEN 'increase'
                                                        WHEN t2.amount_minor < f.amount_minor THEN 'decrease'
                                                        ELSE 'same' END,
                                      'effective_at', m.effective_at))),
               'price-migrated:' || m.migration_id || t.key_suffix, p_at, p_at
          FROM moved m
          JOIN price_versions f ON f.id = m.from_version
          JOIN price_versions t2 ON t2.id = m.to_version
         CROSS JOIN notification_targets('grandfathering_executed', ARRAY[tick_channel()]) t
        ON CONFLICT (idempotency_key) DO NOTHING
    )
    SELECT count(*) FILTER (WHERE status = 'done'), count(*) FILTER (WHERE status = 'canceled')
      INTO v_done, v_canceled FROM marked;
    DROP TABLE tick_due_migrations;
    RETURN jsonb_build_object('migrated', v_done, 'canceled', v_canceled);
END
$$;
