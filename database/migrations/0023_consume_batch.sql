-- consume_batch(): many consume() calls in one call and one transaction.
--
-- Each request is admitted exactly as consume() admits it (same checks, refusals, idempotency per request
-- id, answer), in the order given, so a later request of the same customer sees the earlier ones' charges.
-- What a batch saves is the fixed cost of a call: one statement, one transaction and one commit (one WAL
-- flush) for all of them instead of one each; and on a hot account the lock is taken once, not handed from
-- backend to backend per request.
--
-- All or nothing: a request the function rejects as wrong (unknown customer or model, reused request id,
-- bad arguments) fails the whole batch, with its position in the error; nothing of the batch is written.
-- A refusal (limit, throttle, balance) is an answer, as with consume(). The Python batcher
-- (database/ledger_batch.py) then admits the batch's requests one by one, so only the wrong one fails.
--
-- Locks: every account the batch draws on (its customers' and their pools') is locked up front in id
-- order, the order consume() locks a member and its pool in, so batches and single calls never deadlock.
-- They stay locked until the batch commits: a batch makes the other callers of those accounts wait for all
-- of it, which is why it is capped at 1,000 requests.

CREATE FUNCTION consume_batch(p_requests jsonb, p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_bad     record;
    v_item    record;
    v_results jsonb[] := '{}';
    v_customers text[];
    v_n       bigint;
    v_id      text;
    v_state   text;
    v_message text;
    v_hint    text;
BEGIN
    IF p_requests IS NULL OR jsonb_typeof(p_requests) <> 'array' THEN
        RAISE EXCEPTION 'a batch is a JSON array of requests, not %', coalesce(jsonb_typeof(p_requests), 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass [{"customer": …, "model": …, "input_tokens": …, "output_tokens": …, "request_id": …}, …]';
    END IF;
    IF jsonb_array_length(p_requests) > 1000 THEN
        RAISE EXCEPTION 'a batch holds at most 1000 requests, not %', jsonb_array_length(p_requests)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'split it: every account a batch draws on stays locked until the whole batch commits';
    END IF;

    -- The first request whose shape is wrong, before anything is locked or written. (CASE tests in order,
    -- so no number is cast before its type is known.)
    SELECT x.ord, x.request_id, x.problem
      INTO v_bad
      FROM (SELECT e.ord, CASE WHEN jsonb_typeof(e.r) = 'object' THEN e.r->>'request_id' END AS request_id,
                   CASE
                       WHEN jsonb_typeof(e.r) <> 'object' THEN format('is a JSON %s, not an object', jsonb_typeof(e.r))
                       WHEN jsonb_typeof(e.r->'customer') IS DISTINCT FROM 'string' THEN '"customer" must be a string'
                       WHEN jsonb_typeof(e.r->'model') IS DISTINCT FROM 'string' THEN '"model" must be a string'
                       WHEN jsonb_typeof(e.r->'request_id') IS DISTINCT FROM 'string'
                           THEN '"request_id" must be a string'
                       WHEN jsonb_typeof(e.r->'input_tokens') IS DISTINCT FROM 'number'
                           THEN '"input_tokens" must be a whole number from 0 to 2147483647'
                       WHEN (e.r->>'input_tokens')::numeric NOT BETWEEN 0 AND 2147483647
                         OR (e.r->>'input_tokens')::numeric <> trunc((e.r->>'input_tokens')::numeric)
                           THEN '"input_tokens" must be a whole number from 0 to 2147483647'
                       WHEN jsonb_typeof(e.r->'output_tokens') IS DISTINCT FROM 'number'
                           THEN '"output_tokens" must be a whole number from 0 to 2147483647'
                       WHEN (e.r->>'output_tokens')::numeric NOT BETWEEN 0 AND 2147483647
                         OR (e.r->>'output_tokens')::numeric <> trunc((e.r->>'output_tokens')::numeric)
                           THEN '"output_tokens" must be a whole number from 0 to 2147483647'
                       WHEN e.r ? 'request_type' AND jsonb_typeof(e.r->'request_type') <> 'string'
                           THEN '"request_type" must be a string'
                       WHEN e.r ? 'at' AND jsonb_typeof(e.r->'at') <> 'string'
                           THEN '"at" must be a timestamp with a time zone, as a string'
                       ELSE (SELECT 'has unknown fields: ' || string_agg(k, ', ' ORDER BY k)
                               FROM jsonb_object_keys(e.r) k
                              WHERE k NOT IN ('customer', 'model', 'input_tokens', 'output_tokens', 'request_id',
                                              'request_type', 'at'))
                   END AS problem
              FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS e(r, ord)) x
     WHERE x.problem IS NOT NULL
     ORDER BY x.ord
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'request % of the batch%: %', v_bad.ord,
            CASE WHEN v_bad.request_id IS NULL THEN '' ELSE format(' ("%s")', v_bad.request_id) END, v_bad.problem
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'each request is {"customer": text, "model": text, "input_tokens": integer, '
                         '"output_tokens": integer, "request_id": text} with optional "request_type" and "at"';
    END IF;

    -- Every account the batch draws on, locked in id order (see the top of this file); each found through
    -- its key, so a batch never reads more of token_accounts than it locks.
    v_customers := ARRAY(SELECT DISTINCT e.r->>'customer' FROM jsonb_array_elements(p_requests) e(r));
    PERFORM 1
       FROM token_accounts a
      WHERE a.id = ANY (ARRAY(
                SELECT own.id FROM token_accounts own WHERE own.customer_id = ANY (v_customers)
                UNION ALL
                SELECT tp.account_id
                  FROM token_pool_members mb JOIN token_pools tp ON tp.id = mb.pool_id
                 WHERE mb.customer_id = ANY (v_customers)))
      ORDER BY a.id
        FOR UPDATE OF a;

    BEGIN
        FOR v_item IN SELECT e.ord, e.r FROM jsonb_array_elements(p_requests) WITH ORDINALITY AS e(r, ord)
                       ORDER BY e.ord
        LOOP
            v_n := v_item.ord;
            v_id := v_item.r->>'request_id';
            v_results := array_append(v_results, admit_tokens(
                'consume', v_item.r->>'customer', v_item.r->>'model', (v_item.r->>'input_tokens')::numeric::integer,
                (v_item.r->>'output_tokens')::numeric::integer, v_id, coalesce(v_item.r->>'request_type', 'chat'),
                coalesce((v_item.r->>'at')::timestamptz, p_at)));
        END LOOP;
    EXCEPTION WHEN OTHERS THEN
        -- Name the request that failed; the code and hint stay those of consume().
        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT, v_hint = PG_EXCEPTION_HINT;
        IF coalesce(v_hint, '') = '' THEN
            RAISE EXCEPTION 'request % of the batch ("%"): %', v_n, v_id, v_message USING ERRCODE = v_state;
        END IF;
        RAISE EXCEPTION 'request % of the batch ("%"): %', v_n, v_id, v_message
            USING ERRCODE = v_state, HINT = v_hint;
    END;
    RETURN to_jsonb(v_results);
END
$$;
