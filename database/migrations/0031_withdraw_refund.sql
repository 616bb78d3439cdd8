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
-- caller must first have asked PayU for a refund under the token and found none (`tariff payu
-- refund-withdraw` does that); this function cannot see PayU. It also refuses a refund requested less than
-- p_min_age ago, whose request may still be on its way to PayU.

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
BEGIN
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'a reason is required to withdraw a refund' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'say why, e.g. --reason "paid back by bank transfer"';
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
    IF v_refund.created_at > v_at - p_min_age THEN
        RAISE EXCEPTION 'refund % of % was requested at %, less than % ago: PayU may still be answering it',
            p_token, v_txnid, v_refund.created_at, p_min_age
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = format('withdraw it after %s', v_refund.created_at + p_min_age);
    END IF;
    RETURN record_refund(v_refund.id, 'error', NULL, 'withdrawn',
                         jsonb_build_object('actor', p_actor, 'reason', btrim(p_reason)), 'withdrawn',
                         format('withdrawn by %s: %s', coalesce(p_actor, 'unknown'), btrim(p_reason)), NULL, v_at);
END
$$;

COMMENT ON FUNCTION withdraw_refund(text, text, text, timestamptz, interval) IS
    'Give up a refund PayU never acknowledged (requested, no request id, older than p_min_age): it becomes '
    'error/withdrawn and frees its amount. Ask PayU for a refund under its token first.';
