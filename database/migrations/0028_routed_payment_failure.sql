-- The notice settle_payment() writes when a pending PayU payment fails follows the notification routes
-- (tariff.yaml `notifications.routes.payment_failed`, stored by apply: migration 0025), one row per routed
-- channel with enqueue's keys, as the dunning notices already do; unrouted, it still goes to the payment
-- rules' dunning channel. settle_payment is otherwise as migration 0024 left it.

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
        SELECT 'payment_failed', v_payment.customer_id, t.channel,
               jsonb_build_object('txnid', v_payment.txnid, 'amount', v_payment.amount_text,
                                  'currency', v_payment.currency, 'item', v_payment.productinfo,
                                  'error', v_payment.error_message),
               'payment_failed:' || v_payment.txnid || t.key_suffix
          FROM notification_targets('payment_failed', ARRAY[v_rules.dunning_channel]) t
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
