-- A checkout holds its promotions' places: single-use codes, max_redemptions and per_customer limits are
-- taken when the payment is created, not when it succeeds.
--
-- Before, payment_checkout() only quoted: two pending checkouts could carry the same single-use code (or the
-- last place under a limit), both customers paid the discounted price, and the second redemption was refused
-- after the money was taken. Now:
--   checkout  redeem() under the payment's redemption_key, in the same transaction as the pending payment;
--             when the last place went to someone else since the quote, the checkout is refused and nothing
--             is recorded. The customer's own earlier pending checkouts of the same item or with the same
--             code give their places back first (a customer who closed the PayU page and checks out again).
--   failure   a pending payment that fails, or expires (expire_payment(), used by reconcile), gives its
--             places back: its redemptions are reversed ("payment failed", "payment expired").
--   success   the held redemption is the payment's; if it was given back (PayU reports a success after a
--             failure), the places are taken again under a new key; if that is refused now, the payment
--             records redemption_status 'refused' and reconcile reports it (discount_not_redeemed).
-- A passing database failure inside fulfilment (deadlock, serialization failure, lock or statement timeout)
-- now fails the whole settle_payment() call, so the webhook's sender retries it, instead of being recorded
-- as a permanent fulfilment error; retry_fulfilment() runs a recorded one again (reconcile --fix).

ALTER FUNCTION payment_checkout(text, jsonb, text, text[], text, text, text, text, timestamptz)
    RENAME TO price_checkout;
ALTER FUNCTION fulfil_payment(payments, timestamptz) RENAME TO fulfil_payment_steps;

-- Give back the places a payment's redemption holds (a pending payment that failed, expired or was replaced
-- by a new checkout of the same customer); a payment holding none is left as it is.
CREATE FUNCTION release_payment_redemption(p_payment payments, p_reason text) RETURNS void
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF p_payment.redemption_status = 'redeemed' THEN
        PERFORM reverse_redemptions(p_payment.redemption_key, p_reason);
        UPDATE payments SET redemption_status = 'reversed' WHERE id = p_payment.id;
    END IF;
END
$$;

CREATE FUNCTION payment_checkout(
    p_customer_id text,
    p_item        jsonb,
    p_region      text DEFAULT NULL,
    p_codes       text[] DEFAULT NULL,
    p_txnid       text DEFAULT NULL,
    p_productinfo text DEFAULT NULL,
    p_environment text DEFAULT NULL,
    p_actor       text DEFAULT NULL,
    p_at          timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_result  jsonb;
    v_payment payments;
    v_earlier payments;
    v_redeem  jsonb;
    v_codes   text[] := ARRAY(SELECT DISTINCT upper(btrim(c)) FROM unnest(coalesce(p_codes, '{}')) c
                              WHERE btrim(c) <> '');
BEGIN
    -- First the customer's own earlier checkouts of the same item or with the same code give their places
    -- back (before pricing, which would otherwise find the code used): the customer closed the PayU page and
    -- checks out again. Should an earlier one still be paid, fulfil_payment takes its places again.
    FOR v_earlier IN
        SELECT * FROM payments
         WHERE customer_id = p_customer_id AND status = 'pending' AND redemption_status = 'redeemed'
           AND (codes && v_codes
                OR (plan_id = p_item->>'plan' AND cycle = p_item->>'cycle')
                OR package_id = p_item->>'package' OR bundle_id = p_item->>'bundle')
         ORDER BY id FOR UPDATE
    LOOP
        PERFORM release_payment_redemption(v_earlier, 'released: the customer checked out again');
    END LOOP;
    v_result := price_checkout(p_customer_id, p_item, p_region, p_codes, p_txnid, p_productinfo, p_environment,
                               p_actor, p_at);
    SELECT * INTO v_payment FROM payments WHERE id = v_result->>'id';
    IF cardinality(v_payment.promotion_ids) = 0 OR v_payment.purpose <> 'new' THEN
        RETURN v_result;
    END IF;
    v_redeem := redeem(v_payment.customer_id,
                       ((v_payment.quote->'item') - 'kind') || jsonb_build_object('currency', v_payment.currency),
                       v_payment.region, v_payment.codes, v_payment.redemption_key, v_payment.created_at);
    IF v_redeem->>'status' <> 'redeemed' THEN
        RAISE EXCEPTION '% can no longer be redeemed: %', coalesce('code ' || (v_redeem->'reasons'->0->>'code'),
                            'promotion ' || (v_redeem->'reasons'->0->>'promotion')),
            concat_ws(' — ', v_redeem->'reasons'->0->>'reason', v_redeem->'reasons'->0->>'detail')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'its last place went to another checkout a moment ago; check out without it';
    END IF;
    IF (v_redeem->>'final_minor')::bigint <> v_payment.net_minor THEN
        -- An automatic promotion's last place went elsewhere between the quote and the redemption.
        RAISE EXCEPTION 'the price of % changed while checking out', v_payment.productinfo
            USING ERRCODE = 'serialization_failure', HINT = 'check out again for the current price';
    END IF;
    UPDATE payments SET redemption_status = 'redeemed' WHERE id = v_payment.id;
    RETURN v_result || jsonb_build_object('redemption_status', 'redeemed');
END
$$;

-- What a paid payment delivers (fulfil_payment_steps), with its promotions' places: still held from the
-- checkout, or, when they were given back (a failure or expiry before the success), taken again under a new
-- key; refused then, the payment keeps its price and records redemption_status 'refused'.
CREATE FUNCTION fulfil_payment(p_payment payments, p_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_payment payments := p_payment;
    v_key     text;
BEGIN
    IF v_payment.redemption_status = 'reversed' AND v_payment.refunded_minor = 0
       AND cardinality(v_payment.promotion_ids) > 0 AND v_payment.purpose = 'new' THEN
        v_key := 'payment:' || v_payment.id || ':paid';
        UPDATE payments SET redemption_key = v_key, redemption_status = NULL WHERE id = v_payment.id
        RETURNING * INTO v_payment;
    END IF;
    RETURN fulfil_payment_steps(v_payment, p_at);
END
$$;

-- Mark a pending payment PayU never saw as expired, giving back the places its promotions hold; "expired":
-- false when it was no longer pending (nothing changes).
CREATE FUNCTION expire_payment(p_txnid text, p_at timestamptz DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_payment payments;
BEGIN
    UPDATE payments SET status = 'expired', updated_at = coalesce(p_at, now())
     WHERE txnid = p_txnid AND status = 'pending'
    RETURNING * INTO v_payment;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('txnid', p_txnid, 'expired', false);
    END IF;
    PERFORM release_payment_redemption(v_payment, 'payment expired');
    RETURN jsonb_build_object('txnid', p_txnid, 'expired', true);
END
$$;

-- Run a paid payment's fulfilment again after it failed (payments.fulfilment_error): each step is keyed by
-- the payment, and a failed run left nothing behind. Returns what fulfil_payment returns, plus "outcome":
-- applied, or fulfilment_failed with the error (kept on the payment), or not_needed.
CREATE FUNCTION retry_fulfilment(p_txnid text, p_at timestamptz DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_payment payments;
    v_result  jsonb;
    v_message text;
BEGIN
    SELECT * INTO v_payment FROM payments WHERE txnid = p_txnid FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown txnid "%"', p_txnid USING ERRCODE = 'no_data_found',
            HINT = 'list payments with tariff payments list';
    END IF;
    IF v_payment.status <> 'success' OR v_payment.fulfilment_error IS NULL THEN
        RETURN jsonb_build_object('txnid', p_txnid, 'outcome', 'not_needed', 'payment_status', v_payment.status);
    END IF;
    BEGIN
        v_result := fulfil_payment(v_payment, coalesce(p_at, now()));
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT;
        UPDATE payments SET fulfilment_error = v_message, updated_at = coalesce(p_at, now()) WHERE id = v_payment.id;
        RETURN jsonb_build_object('txnid', p_txnid, 'outcome', 'fulfilment_failed', 'detail', v_message);
    END;
    RETURN v_result || jsonb_build_object('txnid', p_txnid, 'outcome', 'applied');
END
$$;

CREATE OR REPLACE FUNCTION settle_payment(
    p_txnid    text,
    p_status   text,
    p_mihpayid text DEFAULT NULL,
    p_amount   text DEFAULT NULL,
    p_source   text DEFAULT 'webhook',
    p_payload  jsonb DEFAULT '{}',
    p_verified boolean DEFAULT false,
    p_error    text DEFAULT NULL,
    p_mode     text DEFAULT NULL,
    p_at       timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_at      timestamptz := coalesce(p_at, now());
    v_status  text := lower(btrim(p_status));
    v_payment payments;
    v_event   bigint;
    v_outcome text;
    v_detail  text;
    v_result  jsonb := '{}';
    v_units   integer;
    v_message text;
    v_sub     subscriptions;
    v_rules   payment_rules;
    v_state   text;
BEGIN
    IF v_status IS NULL OR v_status NOT IN ('success', 'failure', 'pending') THEN
        RAISE EXCEPTION 'unknown payment status "%" for txnid %', p_status, p_txnid
            USING ERRCODE = 'invalid_parameter_value', HINT = 'PayU reports success, failure or pending';
    END IF;
    IF p_source NOT IN ('webhook', 'browser', 'ingest', 'reconcile') THEN
        RAISE EXCEPTION 'unknown event source "%"', p_source USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_payment FROM payments WHERE txnid = p_txnid FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO payment_events (dedupe_key, kind, txnid, status, mihpayid, amount_text, source, verified,
                                    outcome, detail, payload, received_at)
        VALUES ('payment:' || p_txnid || ':' || v_status, 'payment', p_txnid, v_status, p_mihpayid, p_amount,
                p_source, p_verified, 'unknown_txnid', 'Tariff issued no payment with this txnid',
                coalesce(p_payload, '{}'), v_at)
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id INTO v_event;
        RETURN jsonb_build_object('txnid', p_txnid, 'status', v_status, 'outcome', 'unknown_txnid',
                                  'duplicate', v_event IS NULL, 'event_id', v_event);
    END IF;
    IF p_amount IS NOT NULL THEN
        SELECT minor_units INTO v_units FROM currencies WHERE code = v_payment.currency;
        IF p_amount !~ '^\s*[0-9]+(\.[0-9]+)?\s*$'
           OR p_amount::numeric * (10::numeric ^ v_units) <> v_payment.amount_minor THEN
            RAISE EXCEPTION 'amount mismatch for txnid %: PayU reports %, Tariff charged %', p_txnid, p_amount,
                v_payment.amount_text
                USING ERRCODE = 'data_exception',
                      HINT = 'nothing was recorded; compare the payment in PayU''s dashboard (tariff payu reconcile)';
        END IF;
    END IF;
    IF v_status = 'success' AND NOT coalesce(p_verified, false) THEN
        RAISE EXCEPTION 'success of txnid % is not confirmed with PayU', p_txnid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'confirm it with verify_payment first; a browser redirect alone is never trusted';
    END IF;

    INSERT INTO payment_events (dedupe_key, kind, txnid, payment_id, status, mihpayid, amount_text, source,
                                verified, outcome, payload, received_at)
    VALUES ('payment:' || p_txnid || ':' || v_status, 'payment', p_txnid, v_payment.id, v_status, p_mihpayid,
            p_amount, p_source, coalesce(p_verified, false), 'ignored', coalesce(p_payload, '{}'), v_at)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id INTO v_event;
    IF v_event IS NULL THEN
        RETURN jsonb_build_object('txnid', p_txnid, 'status', v_status, 'payment_status', v_payment.status,
                                  'outcome', 'duplicate', 'duplicate', true, 'payment_id', v_payment.id);
    END IF;

    IF v_status = 'success' AND v_payment.status IN ('pending', 'failure', 'expired') THEN
        UPDATE payments SET status = 'success', paid_at = v_at, failed_at = NULL, error_message = NULL,
                            mihpayid = coalesce(p_mihpayid, mihpayid), payment_mode = coalesce(p_mode, payment_mode),
                            updated_at = v_at
         WHERE id = v_payment.id
        RETURNING * INTO v_payment;
        BEGIN
            v_result := fulfil_payment(v_payment, v_at);
            v_outcome := 'applied';
        EXCEPTION WHEN OTHERS THEN
            -- A passing failure (deadlock, serialization, lock or statement timeout, shutdown) fails the whole
            -- call, nothing recorded, so the sender retries it (the webhook answers 503); recorded as a
            -- fulfilment failure, PayU's retry would only be a duplicate.
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE;
            IF v_state LIKE '40%' OR v_state IN ('55P03', '57014') OR v_state LIKE '57P%' THEN
                RAISE;
            END IF;
            -- Paid but not delivered: keep the money's record and say what failed; reconcile --fix retries.
            GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT;
            UPDATE payments SET fulfilment_error = v_message WHERE id = v_payment.id;
            v_outcome := 'fulfilment_failed';
            v_detail := v_message;
        END;
    ELSIF v_status = 'failure' AND v_payment.status = 'pending' THEN
        UPDATE payments SET status = 'failure', failed_at = v_at, error_message = nullif(btrim(p_error), ''),
                            mihpayid = coalesce(p_mihpayid, mihpayid), payment_mode = coalesce(p_mode, payment_mode),
                            updated_at = v_at
         WHERE id = v_payment.id
        RETURNING * INTO v_payment;
        PERFORM release_payment_redemption(v_payment, 'payment failed');
        SELECT * INTO v_rules FROM payment_rules;
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key)
        VALUES ('payment_failed', v_payment.customer_id, v_rules.dunning_channel,
                jsonb_build_object('txnid', v_payment.txnid, 'amount', v_payment.amount_text,
                                   'currency', v_payment.currency, 'item', v_payment.productinfo,
                                   'error', v_payment.error_message),
                'payment_failed:' || v_payment.txnid)
        ON CONFLICT (idempotency_key) DO NOTHING;
        IF v_payment.purpose = 'renewal' THEN
            SELECT * INTO v_sub FROM subscriptions WHERE id = v_payment.subscription_id;
            INSERT INTO dunning_cases (subscription_id, customer_id, payment_id, reason, reminders_sent,
                                       next_reminder_at, grace_ends_at, opened_at, actions)
            VALUES (v_sub.id, v_sub.customer_id, v_payment.id, 'payment_failed', 0,
                    v_at + v_rules.dunning_retries[1]::interval,
                    greatest(v_sub.current_period_end, v_at) + v_rules.dunning_grace::interval, v_at,
                    jsonb_build_array(jsonb_build_object('at', v_at, 'action', 'opened', 'payment', v_payment.id)))
            ON CONFLICT (subscription_id) WHERE status = 'open' DO NOTHING;
        END IF;
        v_outcome := 'applied';
    ELSE
        v_outcome := 'ignored';
        v_detail := format('%s after %s changes nothing', v_status, v_payment.status);
    END IF;
    UPDATE payment_events SET outcome = v_outcome, detail = v_detail WHERE id = v_event;
    SELECT * INTO v_payment FROM payments WHERE id = v_payment.id;
    RETURN jsonb_build_object('txnid', p_txnid, 'status', v_status, 'payment_status', v_payment.status,
                              'outcome', v_outcome, 'detail', v_detail, 'duplicate', false, 'event_id', v_event,
                              'payment_id', v_payment.id) || v_result;
END
$$;
