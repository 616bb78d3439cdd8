-- retry_fulfilment() as in migration 0024, its hint naming the command that lists payments.

CREATE OR REPLACE FUNCTION retry_fulfilment(p_txnid text, p_at timestamptz DEFAULT NULL) RETURNS jsonb
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
            HINT = 'list payments with tariff payu payments';
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
