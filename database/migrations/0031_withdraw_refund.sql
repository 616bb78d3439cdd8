-- Withdrawing a refund PayU never received.
--
-- A refund whose request got no clear answer stays `requested` (0011), and while it does, request_refund()
-- refuses any other refund of the payment ("still unanswered"): the amount is held in case PayU made it.
-- Resending it (same token) settles it when the refund is still wanted. When it is not (the customer was
-- paid another way, the refund was a mistake), the admin had no way to let go of it. withdraw_refund() does:
-- the refund becomes `error` with error_code `withdrawn`, which frees its amount, and its history records
-- who withdrew it and why.
--
-- Only a refund PayU never acknowledged can be withdrawn: status `requested` and no PayU request id. The
-- caller must first have asked PayU for the payment's actions and found none under the token (`tariff payu
-- refund-withdraw` does that); this function cannot see PayU. It also waits p_min_age from the last time
-- the refund was sent: request_refund() hands an unanswered refund back for resending without touching its
-- row, so it now stamps `updated_at` when it does, and a refund resent a moment ago is not withdrawn while
-- the resend may still be on its way to PayU.
--
-- PayU's word wins: should PayU report a withdrawn refund as queued, in progress or done after all,
-- record_refund() reopens it (status `requested` again, the withdrawal kept in its history) and records
-- what PayU says, with everything that follows from it (a success takes back credits and is counted on
-- the payment). A settled refund ignores later reports, so without this money PayU paid out would not show.

ALTER FUNCTION request_refund(text, bigint, text, text, timestamptz) RENAME TO request_refund_exact;
ALTER FUNCTION record_refund(bigint, text, text, text, jsonb, text, text, text, timestamptz)
    RENAME TO record_refund_exact;

CREATE FUNCTION request_refund(
    p_txnid        text,
    p_amount_minor bigint DEFAULT NULL,
    p_reason       text DEFAULT NULL,
    p_actor        text DEFAULT NULL,
    p_at           timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_result jsonb;
BEGIN
    v_result := request_refund_exact(p_txnid, p_amount_minor, p_reason, p_actor, p_at);
    IF (v_result->>'retry')::boolean THEN
        UPDATE refunds SET updated_at = coalesce(p_at, now()) WHERE id = (v_result->>'id')::bigint;
        v_result := v_result || jsonb_build_object('updated_at', coalesce(p_at, now()));
    END IF;
    RETURN v_result;
END
$$;

CREATE FUNCTION record_refund(
    p_refund_id     bigint,
    p_status        text,
    p_request_id    text DEFAULT NULL,
    p_source        text DEFAULT 'refund',
    p_payload       jsonb DEFAULT '{}',
    p_error_code    text DEFAULT NULL,
    p_error_message text DEFAULT NULL,
    p_bank_ref      text DEFAULT NULL,
    p_at            timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
BEGIN
    IF upper(btrim(p_status)) IN ('QUEUED', 'SUCCESS', 'IN PROGRESS', 'IN_PROGRESS', 'REQUESTED', 'PENDING') THEN
        UPDATE refunds
           SET status = 'requested', settled_at = NULL, error_code = NULL, error_message = NULL,
               updated_at = coalesce(p_at, now()),
               history = history || jsonb_build_array(jsonb_build_object(
                   'status', 'requested', 'at', coalesce(p_at, now()), 'source', p_source,
                   'detail', 'reopened: PayU reported ' || upper(btrim(p_status)) || ' after it was withdrawn'))
         WHERE id = p_refund_id AND status = 'error' AND error_code = 'withdrawn';
    END IF;
    RETURN record_refund_exact(p_refund_id, p_status, p_request_id, p_source, p_payload, p_error_code,
                               p_error_message, p_bank_ref, p_at);
END
$$;

CREATE FUNCTION withdraw_refund(
    p_token   text,
    p_reason  text,
    p_actor   text DEFAULT NULL,
    p_at      timestamptz DEFAULT NULL,
    p_min_age interval DEFAULT '15 minutes'
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_at     timestamptz := coalesce(p_at, now());
    v_refund refunds;
    v_txnid  text;
    v_sent   timestamptz;
BEGIN
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'a reason is required to withdraw a refund' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'say why, e.g. --reason "paid back by bank transfer"';
    END IF;
    IF p_min_age IS NULL OR p_min_age < interval '0' THEN
        RAISE EXCEPTION 'p_min_age must be a length of time, not %', coalesce(p_min_age::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'leave it out for the default, 15 minutes';
    END IF;
    SELECT * INTO v_refund FROM refunds WHERE token = p_token FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown refund token "%"', p_token USING ERRCODE = 'no_data_found',
            HINT = 'list refunds and their tokens with tariff payu refunds';
    END IF;
    SELECT txnid INTO v_txnid FROM payments WHERE id = v_refund.payment_id;
    IF v_refund.settled_at IS NOT NULL THEN
        RAISE EXCEPTION 'refund % of % is already settled (%)', p_token, v_txnid, v_refund.status
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'only an unanswered refund (requested) can be withdrawn';
    END IF;
    IF v_refund.status <> 'requested' OR v_refund.request_id IS NOT NULL THEN
        RAISE EXCEPTION 'refund % of % is % at PayU (request %): PayU has it, so it cannot be withdrawn', p_token,
            v_txnid, v_refund.status, coalesce(v_refund.request_id, '-')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'follow it to its end with tariff payu refunds --poll';
    END IF;
    v_sent := greatest(v_refund.created_at, v_refund.updated_at);
    IF v_sent > v_at - p_min_age THEN
        RAISE EXCEPTION 'refund % of % was last sent to PayU at %, less than % ago: PayU may still be answering it',
            p_token, v_txnid, v_sent, p_min_age
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('withdraw it after %s', v_sent + p_min_age);
    END IF;
    RETURN record_refund_exact(v_refund.id, 'error', NULL, 'withdrawn',
                               jsonb_build_object('actor', p_actor, 'reason', btrim(p_reason)), 'withdrawn',
                               format('withdrawn by %s: %s', coalesce(p_actor, 'unknown'), btrim(p_reason)),
                               NULL, v_at);
END
$$;

COMMENT ON FUNCTION withdraw_refund(text, text, text, timestamptz, interval) IS
    'Give up a refund PayU never acknowledged (requested, no request id, last sent over p_min_age ago): it '
    'becomes error/withdrawn and frees its amount. Ask PayU for the payment''s actions first.';
