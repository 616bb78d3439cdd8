-- A redeemer never keeps the lock of a usage slot it did not take.
--
-- redeem() takes one of a promotion's usage slots (0006_promotions.sql): first a slot with room that nobody
-- holds (FOR UPDATE SKIP LOCKED), else it waits for one. Under READ COMMITTED an UPDATE that waited for a
-- slot and then found it full updates nothing but keeps the row lock until the transaction ends, and so
-- does the SKIP LOCKED pick of a row whose newest version turns out full. The redeemer then waited for a
-- second slot while holding the first, and a reversal, which locks every slot of the promotion in slot
-- order, could deadlock with it: a checkout failed with "deadlock detected" (never an overshoot). Each
-- attempt now runs in a subtransaction that is rolled back when it takes no slot, which releases its lock.

CREATE OR REPLACE FUNCTION redeem(
    p_customer_id     text,
    p_item            jsonb,
    p_region          text DEFAULT NULL,
    p_codes           text[] DEFAULT NULL,
    p_idempotency_key text DEFAULT NULL,
    p_at              timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_at       timestamptz := coalesce(p_at, now());
    v_codes    text[] := '{}';
    v_request  jsonb;
    v_stored   redemption_requests;
    v_quote    jsonb;
    v_refusals jsonb;
    v_ids      jsonb;
    v_response jsonb;
    d          record;
    v_state    text;
    v_message  text;
    v_detail   text;
    v_hint     text;
    v_constraint text;
    v_slot     smallint;
    v_slots    jsonb := '{}';
    v_try      integer;
    v_wait     smallint;
BEGIN
    IF p_customer_id IS NULL THEN
        RAISE EXCEPTION 'a redemption needs a customer'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'anonymous visitors can be quoted, not redeemed: sign them in first';
    END IF;
    IF p_idempotency_key IS NULL OR p_idempotency_key !~ '^\S+$' OR length(p_idempotency_key) > 255 THEN
        RAISE EXCEPTION 'invalid idempotency key %', coalesce('"' || p_idempotency_key || '"', 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass one key per checkout (e.g. the order id): 1 to 255 characters without spaces';
    END IF;
    IF cardinality(p_codes) > 0 THEN
        v_codes := ARRAY(SELECT DISTINCT upper(btrim(c)) FROM unnest(p_codes) c WHERE btrim(c) <> '' ORDER BY 1);
    END IF;
    v_request := jsonb_build_object('customer', p_customer_id, 'item', p_item, 'region', nullif(btrim(p_region), ''),
                                    'codes', to_jsonb(v_codes));
    SELECT * INTO v_stored FROM redemption_requests WHERE idempotency_key = p_idempotency_key;
    IF FOUND THEN
        RETURN replayed_redemption(v_stored, v_request);
    END IF;

    v_quote := quote(p_customer_id, p_item, p_region, p_codes, v_at);

    IF cardinality(v_codes) > 0 OR p_item ? 'bundle' THEN
        SELECT jsonb_agg(x) INTO v_refusals FROM (
            SELECT jsonb_build_object('code', c->>'code', 'promotion', c->>'promotion', 'reason', c->>'reason',
                                      'detail', c->>'detail') AS x
              FROM jsonb_array_elements(v_quote->'codes') c
             WHERE NOT (c->>'applied')::boolean AND c->>'reason' NOT LIKE 'not\_stackable\_with:%'
            UNION ALL
            SELECT jsonb_build_object('code', p->>'code', 'promotion', p->>'id', 'reason', p->>'reason', 'detail', p->>'detail')
              FROM jsonb_array_elements(v_quote->'promotions') p
             WHERE v_quote->'item'->>'kind' = 'bundle' AND p->>'id' = v_quote->'item'->>'bundle'
               AND NOT (p->>'applied')::boolean
        ) r;
        IF v_refusals IS NOT NULL THEN
            RETURN v_quote || jsonb_build_object('status', 'refused', 'idempotency_key', p_idempotency_key,
                                                 'reasons', v_refusals, 'redemptions', '[]'::jsonb);
        END IF;
    END IF;
    -- Stored without the redemption ids: a replay reads them (and their current status) from the ledger.
    v_response := v_quote || jsonb_build_object('status', 'redeemed', 'idempotency_key', p_idempotency_key,
                                                'replayed', false);

    BEGIN
        -- First the request row: a concurrent call with the same key waits here, then finds it.
        INSERT INTO redemption_requests (idempotency_key, customer_id, request, response)
        VALUES (p_idempotency_key, p_customer_id, v_request, v_response);

        -- Counters in one global order: promotions by id, for each a usage slot then the customer's row; then
        -- single-use codes by code. A redeemer holds at most one slot per promotion, so concurrent redeemers
        -- queue instead of deadlocking. Every UPDATE re-checks its limit on the newest row version after any
        -- wait: that is what makes the limits exact under concurrency.
        FOR d IN SELECT p.id, p.max_redemptions, p.per_customer
                   FROM jsonb_to_recordset(v_quote->'discounts') s(promotion text)
                   JOIN promotions p ON p.id = s.promotion ORDER BY p.id LOOP
            v_slot := NULL;
            -- Each attempt runs in a subtransaction that is rolled back when it takes no slot: an attempt
            -- can lock a slot it does not take (the UPDATE that waited for a slot and then found it full,
            -- the SKIP LOCKED pick of a row whose newest version turned out full), and PostgreSQL keeps
            -- such a lock until the transaction ends. Kept, it would have this redeemer wait for one slot
            -- while holding another, and deadlock with a reversal, which locks every slot in slot order.
            FOR v_try IN 1..40 LOOP
                -- A slot with room that nobody holds: no waiting.
                BEGIN
                    UPDATE promotion_usage u SET redeemed = u.redeemed + 1, updated_at = now()
                     WHERE (u.promotion_id, u.slot) = (
                            SELECT f.promotion_id, f.slot FROM promotion_usage f
                             WHERE f.promotion_id = d.id AND (f.cap IS NULL OR f.redeemed < f.cap)
                             ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED)
                    RETURNING u.slot INTO v_slot;
                    IF v_slot IS NULL THEN
                        RAISE EXCEPTION USING ERRCODE = 'TRF02';
                    END IF;
                EXCEPTION
                    WHEN SQLSTATE 'TRF02' THEN NULL;
                END;
                EXIT WHEN v_slot IS NOT NULL;
                -- Every slot with room is held by a redeemer in flight: wait for one of them.
                SELECT f.slot INTO v_wait FROM promotion_usage f
                 WHERE f.promotion_id = d.id AND (f.cap IS NULL OR f.redeemed < f.cap)
                 ORDER BY random() LIMIT 1;
                EXIT WHEN v_wait IS NULL;
                BEGIN
                    UPDATE promotion_usage u SET redeemed = u.redeemed + 1, updated_at = now()
                     WHERE u.promotion_id = d.id AND u.slot = v_wait AND (u.cap IS NULL OR u.redeemed < u.cap)
                    RETURNING u.slot INTO v_slot;
                    IF v_slot IS NULL THEN
                        RAISE EXCEPTION USING ERRCODE = 'TRF02';
                    END IF;
                EXCEPTION
                    WHEN SQLSTATE 'TRF02' THEN NULL;
                END;
                EXIT WHEN v_slot IS NOT NULL;
            END LOOP;
            IF v_slot IS NULL THEN
                IF NOT EXISTS (SELECT 1 FROM promotion_usage WHERE promotion_id = d.id) THEN
                    RAISE EXCEPTION 'promotion "%" has no usage counters', d.id
                        USING ERRCODE = 'object_not_in_prerequisite_state',
                              HINT = format('run SELECT sync_promotion_usage(%L)', d.id);
                END IF;
                RAISE EXCEPTION USING ERRCODE = 'TRF01', MESSAGE = d.id, DETAIL = 'limit_reached',
                    HINT = format('all %s redemptions used', d.max_redemptions);
            END IF;
            v_slots := v_slots || jsonb_build_object(d.id, v_slot);

            INSERT INTO promotion_customer_usage AS u (promotion_id, customer_id, redeemed)
            VALUES (d.id, p_customer_id, 1)
            ON CONFLICT (promotion_id, customer_id) DO UPDATE SET redeemed = u.redeemed + 1
             WHERE d.per_customer IS NULL OR u.redeemed < d.per_customer;
            IF NOT FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'TRF01', MESSAGE = d.id, DETAIL = 'per_customer_limit',
                    HINT = format('already redeemed %s time(s)', d.per_customer);
            END IF;
        END LOOP;
        IF v_quote->'discounts' @> '[{"single_use": true}]' THEN
            FOR d IN SELECT s.promotion, s.code
                       FROM jsonb_to_recordset(v_quote->'discounts') s(promotion text, code text, single_use boolean)
                      WHERE s.single_use ORDER BY s.code LOOP
                UPDATE promotion_codes SET used = true WHERE code = d.code AND single_use AND NOT used;
                IF NOT FOUND THEN
                    RAISE EXCEPTION USING ERRCODE = 'TRF01', MESSAGE = d.promotion, DETAIL = 'code_used',
                        HINT = 'this single-use code was already redeemed';
                END IF;
            END LOOP;
        END IF;

        WITH inserted AS (
            INSERT INTO redemptions (promotion_id, code, customer_id, item_kind, item_id, cycle, region, currency,
                                     list_minor, position, discount_minor, usage_slot, final_minor, duration,
                                     extra_trial_days, bonus_tokens, idempotency_key, redeemed_at)
            SELECT s.promotion, s.code, p_customer_id, v_quote->'item'->>'kind',
                   coalesce(v_quote->'item'->>'plan', v_quote->'item'->>'package', v_quote->'item'->>'bundle'),
                   v_quote->'item'->>'cycle', v_quote->>'region', v_quote->>'currency',
                   (v_quote->>'list_minor')::bigint, s.position, s.discount_minor,
                   (v_slots->>s.promotion)::smallint, (v_quote->>'final_minor')::bigint,
                   CASE s.duration WHEN 'cycles' THEN 'cycles:' || s.cycles ELSE s.duration END,
                   s.extra_trial_days, s.bonus_tokens, p_idempotency_key, v_at
              FROM jsonb_to_recordset(v_quote->'discounts')
                   AS s(promotion text, code text, position smallint, discount_minor bigint, duration text,
                        cycles integer, extra_trial_days integer, bonus_tokens bigint)
            RETURNING id, promotion_id, code, discount_minor, position)
        SELECT coalesce(jsonb_agg(jsonb_build_object('id', id, 'promotion', promotion_id, 'code', code,
                                                     'discount_minor', discount_minor, 'status', 'redeemed')
                                  ORDER BY position), '[]')
          INTO v_ids FROM inserted;
        RETURN v_response || jsonb_build_object('redemptions', v_ids);
    EXCEPTION
        WHEN SQLSTATE 'TRF01' THEN
            -- Everything in this block is rolled back: counters, request row, redemptions.
            GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT, v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
            RETURN v_quote || jsonb_build_object('status', 'refused', 'idempotency_key', p_idempotency_key,
                'redemptions', '[]'::jsonb,
                'reasons', jsonb_build_array(jsonb_build_object(
                    'promotion', v_message, 'reason', v_detail, 'detail', v_hint,
                    'code', (SELECT s->>'code' FROM jsonb_array_elements(v_quote->'discounts') s
                              WHERE s->>'promotion' = v_message))));
        WHEN unique_violation THEN
            GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME, v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT;
            IF v_constraint IS DISTINCT FROM 'redemption_requests_pkey' THEN
                RAISE EXCEPTION '%', v_message USING ERRCODE = v_state;
            END IF;
            SELECT * INTO v_stored FROM redemption_requests WHERE idempotency_key = p_idempotency_key;
            RETURN replayed_redemption(v_stored, v_request);
    END;
END
$$;
