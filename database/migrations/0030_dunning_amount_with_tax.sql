-- Dunning reminders name what paying the renewal costs. They named the price version's amount, which is the
-- price before tax: a subscriber in a region whose prices exclude tax (India: 18% GST on top) read ₹1,499 in
-- the reminder and was then charged ₹1,768.82 by the renewal checkout. The amount is now what
-- payment_checkout() charges for a renewal (0011): the price the subscriber pays, plus the tax of the
-- subscription's region (else the customer's) when that region's prices exclude it.

-- What a customer is charged for p_net in region p_region: the net amount, plus the region's tax when its
-- prices exclude tax (rounded by the currency's rule, as checkout rounds it). NULL for an unknown currency.
CREATE FUNCTION charged_minor(p_net bigint, p_region text, p_currency text) RETURNS bigint
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT p_net + CASE WHEN r.tax_percent > 0 AND NOT r.tax_inclusive
                        THEN round_minor(p_net * r.tax_percent / 100, c.rounding) ELSE 0 END
      FROM currencies c LEFT JOIN regions r ON r.code = p_region
     WHERE c.code = p_currency
$$;

-- run_dunning() of 0025 unchanged but for the amount its reminders name.

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
               s.plan_id, charged_minor(pv.amount_minor, coalesce(s.region, cu.region), pv.currency) AS amount_minor,
               pv.currency
          FROM dunning_cases d JOIN subscriptions s ON s.id = d.subscription_id
          JOIN price_versions pv ON pv.id = s.price_version_id
          JOIN customers cu ON cu.id = d.customer_id
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

