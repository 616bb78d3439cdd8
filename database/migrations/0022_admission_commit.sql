-- The rules' `admissions.commit`: with `asynchronous`, the transactions that admit and settle AI requests
-- (consume, reserve, commit, release) commit without waiting for their WAL to reach the disk.
--
-- The call sets synchronous_commit to off for the rest of the caller's transaction (set_config with
-- is_local), so whatever else that transaction writes commits the same way. Everything else (grants,
-- purchases, payments, tick, admin operations) keeps the server's setting; since the WAL is one ordered
-- stream, a durable commit also makes every earlier asynchronous one durable. What a crash of the database
-- server can lose is the admissions of the last moments before it (at most three wal_writer_delay, 600 ms
-- with PostgreSQL's defaults), each whole: the ledger comes back as it was at an earlier instant, every
-- balance still equal to its entries and grants. The lost admissions' credits are not charged (the app
-- already served them), and their request ids are new again. A crash of the app or a connection loses
-- nothing: the server still writes the WAL out.

ALTER TABLE token_rules
    ADD COLUMN admission_commit text NOT NULL DEFAULT 'synchronous'
        CONSTRAINT token_rules_admission_commit CHECK (admission_commit IN ('synchronous', 'asynchronous'));

-- Shared by consume() and reserve(). Same rules, refusals and result as 0021_admission_plan_stability.sql:
-- before any lock, the arguments, model, rules, limits and pool membership; under the account lock(s),
-- replay, lazy reservation expiry, usage against the limits, throttle, pool member caps and usable credits,
-- then the draw and the writes.
CREATE OR REPLACE FUNCTION admit_tokens(
    p_kind text, p_customer text, p_model text, p_input integer, p_output integer, p_request_id text,
    p_request_type text, p_at timestamptz
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_model_id     text;
    v_model_status text;
    v_model_plans  text[];
    v_credits      bigint;
    v_cost         numeric;
    v_cost_cur     text;
    v_tz           text;
    v_hold_for     interval;
    v_local        timestamp;
    v_plan         text;
    v_per_request  bigint;
    v_daily_limit  bigint;
    v_month_limit  bigint;
    v_rpm          bigint;
    v_cpm          bigint;
    v_overridden   boolean;
    v_account      token_accounts;
    v_pool         text;
    v_pool_acct    bigint;
    v_cap_day      bigint;
    v_cap_month    bigint;
    v_check_pool   text;
    v_prev_kind    text;
    v_prev_cust    text;
    v_prev_result  jsonb;
    v_has_expired  boolean;
    v_day_start    timestamptz;
    v_day_reset    timestamptz;
    v_mon_start    timestamptz;
    v_mon_reset    timestamptz;
    v_daily        bigint := 0;
    v_monthly      bigint := 0;
    v_min_reqs     bigint := 0;
    v_min_creds    bigint := 0;
    v_pool_day     bigint := 0;
    v_pool_month   bigint := 0;
    v_own          bigint;
    v_pooled       bigint := 0;
    v_from_pool    bigint := 0;
    v_reason       text;
    v_message      text;
    v_resets       timestamptz;
    v_draws        jsonb := '[]';
    v_single       boolean := false;
    v_balance      bigint;
    v_expires      timestamptz;
    v_result       jsonb;
    v_attempt      integer := 0;
    v_first        bigint;
    v_first_left   bigint;
    v_async        boolean;
BEGIN
    IF p_request_id IS NULL OR length(p_request_id) NOT BETWEEN 1 AND 255 OR p_request_id ~ '\s' THEN
        RAISE EXCEPTION 'invalid request id %', coalesce('"' || p_request_id || '"', 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass the app''s id of this AI request (1 to 255 characters without spaces), the same on retries';
    END IF;
    IF p_input IS NULL OR p_output IS NULL OR p_input < 0 OR p_output < 0 THEN
        RAISE EXCEPTION 'token counts must be zero or more (input %, output %)', p_input, p_output
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF coalesce(btrim(p_request_type), '') = '' THEN
        RAISE EXCEPTION 'request type must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'use a short label such as chat, completion or embedding';
    END IF;

    -- Before the lock: the model and its price in credits, the rules, the limits in force (the newest admin
    -- override per field, else the plan of the live subscription) and the pool membership.
    SELECT m.id, m.status, m.plans, model_credits(m, p_input, p_output),
           trim_scale(p_input::numeric / 1000 * m.cost_per_1k_input + p_output::numeric / 1000 * m.cost_per_1k_output),
           m.cost_currency, coalesce(r.timezone, 'UTC'),
           coalesce(r.reservation_expiry::interval, interval '15 minutes'),
           pl.id, coalesce(o.per_request, pl.limit_per_request), coalesce(o.daily, pl.limit_daily),
           coalesce(o.monthly, pl.limit_monthly), pl.throttle_requests_per_minute, pl.throttle_tokens_per_minute,
           o.customer_id IS NOT NULL,
           (SELECT mb.pool_id FROM token_pool_members mb WHERE mb.customer_id = p_customer),
           coalesce(r.admission_commit = 'asynchronous', false)
      INTO v_model_id, v_model_status, v_model_plans, v_credits, v_cost, v_cost_cur, v_tz, v_hold_for,
           v_plan, v_per_request, v_daily_limit, v_month_limit, v_rpm, v_cpm, v_overridden,
           v_pool, v_async
      FROM (SELECT) AS one
      LEFT JOIN ai_models m ON m.id = p_model
      LEFT JOIN token_rules r ON true
      LEFT JOIN LATERAL (
            SELECT p.id, p.limit_per_request, p.limit_daily, p.limit_monthly, p.throttle_requests_per_minute,
                   p.throttle_tokens_per_minute
              FROM subscriptions s JOIN plans p ON p.id = s.plan_id
             WHERE s.customer_id = p_customer AND s.status IN ('trialing', 'active', 'past_due')
               AND s.current_period_start <= p_at
             ORDER BY s.current_period_start DESC, s.id
             LIMIT 1) pl ON true
      LEFT JOIN LATERAL (
            SELECT customer_id, per_request, daily, monthly FROM token_limit_overrides
             WHERE customer_id = p_customer AND created_at <= p_at
             ORDER BY id DESC LIMIT 1) o ON true;
    IF v_model_id IS NULL THEN
        RAISE EXCEPTION 'unknown AI model "%"', p_model
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'AI models are declared in pricing/tokens/ and published by tariff apply';
    END IF;
    IF v_async THEN
        PERFORM set_config('synchronous_commit', 'off', true);  -- for the rest of the caller's transaction
    END IF;
    v_local := p_at AT TIME ZONE v_tz;
    v_day_start := date_trunc('day', v_local) AT TIME ZONE v_tz;
    v_mon_start := date_trunc('month', v_local) AT TIME ZONE v_tz;
    v_day_reset := (date_trunc('day', v_local) + interval '1 day') AT TIME ZONE v_tz;
    v_mon_reset := (date_trunc('month', v_local) + interval '1 month') AT TIME ZONE v_tz;
    IF v_pool IS NOT NULL THEN
        v_pool_acct := (SELECT account_id FROM token_pools WHERE id = v_pool);
    END IF;

    -- Lock the account, and the pool's with it for a member (id order). Membership only changes under both
    -- locks, so it is read again once they are held (below); a change in between (rare) means locking again.
    LOOP
        IF v_pool_acct IS NULL THEN
            SELECT * INTO v_account FROM token_accounts WHERE customer_id = p_customer FOR UPDATE;
            IF NOT FOUND THEN
                v_account := lock_token_account(p_customer);  -- creates it (or says the customer is unknown)
            END IF;
        ELSE
            -- A new account is invisible to others until commit, so creating it first inverts no lock order.
            PERFORM 1 FROM token_accounts WHERE customer_id = p_customer;
            IF NOT FOUND THEN
                PERFORM lock_token_account(p_customer);
            END IF;
            PERFORM 1 FROM token_accounts
             WHERE customer_id = p_customer OR id = v_pool_acct ORDER BY id FOR UPDATE;
            SELECT * INTO v_account FROM token_accounts WHERE customer_id = p_customer;
        END IF;

        -- Under the lock, in one statement: the membership again, an earlier request with this id, expired
        -- reservations to release, usage against the limits (the rollup plus credits held by open
        -- reservations) and the usable credits of the account and its pool with the grant drawn first.
        SELECT (SELECT mb.pool_id FROM token_pool_members mb WHERE mb.customer_id = p_customer),
               prev.customer_id, prev.kind, prev.result,
               coalesce(held.expired, false),
               coalesce(rollup.today, 0) + coalesce(held.today, 0),
               coalesce(rollup.month, 0) + coalesce(held.month, 0),
               coalesce(credit.own, 0), coalesce(credit.pooled, 0), credit.first, credit.first_left
          INTO v_check_pool, v_prev_cust, v_prev_kind, v_prev_result, v_has_expired,
               v_daily, v_monthly, v_own, v_pooled, v_first, v_first_left
          FROM (SELECT) AS one
          LEFT JOIN token_requests prev ON prev.request_id = p_request_id
          LEFT JOIN LATERAL (
                SELECT sum(credits) FILTER (WHERE day = v_local::date) AS today, sum(credits) AS month
                  FROM token_usage_daily
                 WHERE (v_daily_limit IS NOT NULL OR v_month_limit IS NOT NULL)
                   AND customer_id = p_customer
                   -- As row comparisons, which only the primary key (customer_id, day, …) can serve.
                   AND (customer_id, day) >= (p_customer, date_trunc('month', v_local)::date)
                   AND (customer_id, day) <= (p_customer, v_local::date)) rollup ON true
          LEFT JOIN LATERAL (
                -- Open reservations: any expired (to release first), and the credits they hold against the
                -- limits (counted, like the rollup's, only when there are limits).
                SELECT bool_or(expires_at <= p_at) AS expired,
                       sum(credits) FILTER (WHERE (v_daily_limit IS NOT NULL OR v_month_limit IS NOT NULL)
                                              AND created_at >= v_day_start AND created_at <= p_at) AS today,
                       sum(credits) FILTER (WHERE (v_daily_limit IS NOT NULL OR v_month_limit IS NOT NULL)
                                              AND created_at >= v_mon_start AND created_at <= p_at) AS month
                  FROM token_requests
                 WHERE account_id = v_account.id AND status = 'open') held ON true
          LEFT JOIN LATERAL (
                SELECT g.own, g.pooled, g.head[1][1] AS first, g.head[1][2] AS first_left
                  FROM (SELECT sum(remaining) FILTER (WHERE account_id = v_account.id) AS own,
                               sum(remaining) FILTER (WHERE account_id = v_pool_acct) AS pooled,
                               -- The grant drawn first and what it has left, in one ordered aggregate.
                               array_agg(ARRAY[id, remaining] ORDER BY account_id <> v_account.id, priority,
                                         expires_at NULLS LAST, created_at, id) AS head
                          FROM token_grants
                         WHERE account_id IN (v_account.id, v_pool_acct) AND remaining > 0
                           AND starts_at <= p_at AND (expires_at IS NULL OR expires_at > p_at)) g) credit ON true;

        IF v_check_pool IS DISTINCT FROM v_pool THEN
            v_attempt := v_attempt + 1;
            IF v_attempt > 3 THEN
                RAISE EXCEPTION 'pool membership of "%" keeps changing', p_customer
                    USING ERRCODE = 'serialization_failure', HINT = 'retry the request';
            END IF;
            v_pool := v_check_pool;
            v_pool_acct := (SELECT account_id FROM token_pools WHERE id = v_check_pool);
            CONTINUE;
        END IF;
        IF v_prev_kind IS NOT NULL THEN
            IF v_prev_cust <> p_customer OR v_prev_kind <> p_kind THEN
                RAISE EXCEPTION 'request id "%" was already used by a % of customer "%"', p_request_id,
                    v_prev_kind, v_prev_cust
                    USING ERRCODE = 'unique_violation', HINT = 'use a fresh request id for every AI request';
            END IF;
            RETURN v_prev_result || jsonb_build_object('replayed', true);
        END IF;
        EXIT WHEN NOT v_has_expired;
        -- Rare: give expired reservations back first, then read again.
        PERFORM expire_reservations(v_account.id, p_at);
        SELECT * INTO v_account FROM token_accounts WHERE id = v_account.id;
    END LOOP;
    IF v_rpm IS NOT NULL OR v_cpm IS NOT NULL THEN
        -- The rolling minute, still under the lock: at most requests_per_minute rows (no more can have been
        -- admitted in it).
        SELECT count(*), coalesce(sum(r.credits), 0) INTO v_min_reqs, v_min_creds
          FROM (SELECT credits FROM token_requests
                 WHERE account_id = v_account.id AND allowed
                   AND created_at > p_at - interval '1 minute' AND created_at <= p_at
                 ORDER BY created_at DESC
                 LIMIT coalesce(v_rpm, 1000000000)) r;
    END IF;
    IF v_pool IS NOT NULL THEN
        -- A member's caps, read under both locks (they change only under both).
        SELECT coalesce(mb.daily, t.member_daily), coalesce(mb.monthly, t.member_monthly)
          INTO v_cap_day, v_cap_month
          FROM token_pool_members mb JOIN token_pools tp ON tp.id = mb.pool_id
          JOIN pool_templates t ON t.id = tp.template_id
         WHERE mb.customer_id = p_customer;
    END IF;

    IF v_model_status = 'retired' THEN
        v_reason := 'model_retired';
        v_message := format('model %s is retired', v_model_id);
    ELSIF v_model_plans IS NOT NULL AND NOT (coalesce(v_plan, '') = ANY (v_model_plans)) THEN
        v_reason := 'model_not_in_plan';
        v_message := format('model %s is not available on %s', v_model_id, coalesce('plan ' || v_plan, 'no plan'));
    ELSIF v_credits > v_per_request THEN
        v_reason := 'per_request_limit';
        v_message := format('request needs %s credits, above the per-request limit %s', v_credits, v_per_request);
    ELSIF v_min_reqs + 1 > v_rpm THEN
        v_reason := 'throttle_requests';
        v_message := format('throttled: %s requests per minute', v_rpm);
    ELSIF v_min_creds + v_credits > v_cpm THEN
        v_reason := 'throttle_credits';
        v_message := format('throttled: %s credits per minute', v_cpm);
    ELSIF v_daily + v_credits > v_daily_limit THEN
        v_reason := 'daily_limit';
        v_resets := v_day_reset;
        v_message := format('daily limit %s reached, resets %s %s', v_daily_limit,
                            to_char(v_day_reset AT TIME ZONE v_tz, 'HH24:MI'), tz_label(v_tz, v_day_reset));
    ELSIF v_monthly + v_credits > v_month_limit THEN
        v_reason := 'monthly_limit';
        v_resets := v_mon_reset;
        v_message := format('monthly limit %s reached, resets %s %s', v_month_limit,
                            to_char(v_mon_reset AT TIME ZONE v_tz, 'YYYY-MM-DD HH24:MI'),
                            tz_label(v_tz, v_mon_reset));
    END IF;

    IF v_reason IS NULL AND v_own < v_credits AND v_pool IS NOT NULL THEN
        v_from_pool := v_credits - v_own;
        SELECT u.daily_used, u.monthly_used INTO v_pool_day, v_pool_month
          FROM pool_member_usage(p_customer, v_pool, v_account.id, v_tz, p_at) u;
        IF v_pool_day + v_from_pool > v_cap_day THEN
            v_reason := 'pool_member_daily_limit';
            v_resets := v_day_reset;
            v_message := format('pool member daily limit %s reached, resets %s %s', v_cap_day,
                                to_char(v_day_reset AT TIME ZONE v_tz, 'HH24:MI'), tz_label(v_tz, v_day_reset));
        ELSIF v_pool_month + v_from_pool > v_cap_month THEN
            v_reason := 'pool_member_monthly_limit';
            v_resets := v_mon_reset;
            v_message := format('pool member monthly limit %s reached, resets %s %s', v_cap_month,
                                to_char(v_mon_reset AT TIME ZONE v_tz, 'YYYY-MM-DD HH24:MI'),
                                tz_label(v_tz, v_mon_reset));
        ELSIF v_pooled < v_from_pool THEN
            v_reason := 'insufficient_balance';
            v_message := format('insufficient balance: %s credits needed, %s available (%s own, %s in pool %s)',
                                v_credits, v_own + v_pooled, v_own, v_pooled, v_pool);
        END IF;
    ELSIF v_reason IS NULL AND v_own < v_credits THEN
        v_reason := 'insufficient_balance';
        v_message := format('insufficient balance: %s credits needed, %s available', v_credits, v_own);
    END IF;

    v_balance := v_account.balance;
    IF v_reason IS NULL THEN
        -- The usual case: the first grant in draw order covers the request (a single-row update, made by the
        -- write statement below); otherwise the running-sum draw across grants (and the pool's).
        v_single := v_first_left >= v_credits AND v_credits > 0;
        IF v_single THEN
            v_draws := jsonb_build_array(jsonb_build_object('grant_id', v_first, 'amount', v_credits));
        ELSE
            v_draws := draw_member_credits(v_account.id, v_pool_acct, v_credits, p_at);
        END IF;
        v_balance := v_account.balance - (v_credits - v_from_pool);
        v_own := v_own - (v_credits - v_from_pool);
        v_pooled := v_pooled - v_from_pool;
        v_daily := v_daily + v_credits;
        v_monthly := v_monthly + v_credits;
        v_pool_day := v_pool_day + v_from_pool;
        v_pool_month := v_pool_month + v_from_pool;
        IF p_kind = 'reserve' THEN
            v_expires := p_at + v_hold_for;
        END IF;
    ELSIF v_from_pool > 0 THEN
        v_from_pool := 0;
    END IF;

    v_result := jsonb_build_object(
        'allowed', v_reason IS NULL,
        'reason', v_reason,
        'message', coalesce(v_message, 'ok'),
        'request_id', p_request_id,
        'customer', p_customer,
        'model', v_model_id,
        'credits', v_credits,
        'remaining', v_own + v_pooled,
        'balance', v_balance,
        'resets_at', v_resets,
        'expires_at', v_expires,
        'limits', jsonb_build_object(
            'plan', v_plan, 'per_request', v_per_request, 'daily', v_daily_limit, 'monthly', v_month_limit,
            'requests_per_minute', v_rpm, 'credits_per_minute', v_cpm, 'overridden', v_overridden,
            'daily_used', v_daily, 'monthly_used', v_monthly,
            'daily_resets_at', v_day_reset, 'monthly_resets_at', v_mon_reset),
        'replayed', false);
    IF v_pool IS NOT NULL THEN
        v_result := v_result || jsonb_build_object('pool', jsonb_build_object(
            'id', v_pool, 'drawn', v_from_pool, 'remaining', v_pooled, 'own_remaining', v_own,
            'member_daily', v_cap_day, 'member_daily_used', v_pool_day,
            'member_monthly', v_cap_month, 'member_monthly_used', v_pool_month));
    END IF;

    IF v_from_pool > 0 THEN
        -- The pool's share: an entry on the pool's account (same request id) and the member's pool usage.
        WITH pool AS (
            UPDATE token_accounts SET balance = balance - v_from_pool, updated_at = p_at WHERE id = v_pool_acct
            RETURNING id, balance
        ), usage AS (
            INSERT INTO token_pool_usage AS u (customer_id, pool_id, day, requests, credits)
            SELECT p_customer, v_pool, v_local::date, 1, v_from_pool
             WHERE p_kind = 'consume'
            ON CONFLICT (customer_id, pool_id, day) DO UPDATE
               SET requests = u.requests + 1, credits = u.credits + EXCLUDED.credits
        )
        INSERT INTO token_entries (account_id, kind, amount, balance_after, request_id, actor, reason, created_at)
        SELECT id, p_kind, -v_from_pool, balance, p_request_id, p_customer,
               p_request_type || ' ' || v_model_id || ' by ' || p_customer, p_at
          FROM pool;
    END IF;

    -- Every other write of the request in one statement; for a refusal only the request row is written.
    WITH drawn AS (
        UPDATE token_grants SET remaining = remaining - v_credits WHERE v_single AND id = v_first
    ), own AS (
        UPDATE token_accounts SET balance = v_balance, updated_at = p_at
         WHERE v_reason IS NULL AND (v_from_pool = 0 OR v_from_pool < v_credits) AND id = v_account.id
        RETURNING id
    ), entry AS (
        INSERT INTO token_entries (account_id, kind, amount, balance_after, request_id, actor, reason, created_at)
        SELECT id, p_kind, -(v_credits - v_from_pool), v_balance, p_request_id, p_customer,
               p_request_type || ' ' || v_model_id, p_at
          FROM own
    ), usage AS (
        INSERT INTO token_usage (customer_id, model_id, request_id, request_type, input_tokens, output_tokens,
                                 credits, cost, cost_currency, created_at)
        SELECT p_customer, v_model_id, p_request_id, p_request_type, p_input, p_output, v_credits, v_cost,
               v_cost_cur, p_at
         WHERE v_reason IS NULL AND p_kind = 'consume'
    ), queued AS (
        INSERT INTO usage_rollup_queue (customer_id, model_id, local_hour, first_at, requests, input_tokens,
                                        output_tokens, credits, cost, cost_currency)
        SELECT p_customer, v_model_id, date_trunc('hour', v_local), p_at, 1, p_input, p_output, v_credits, v_cost,
               v_cost_cur
         WHERE v_reason IS NULL AND p_kind = 'consume'
    ), daily AS (
        INSERT INTO token_usage_daily AS d (day, customer_id, model_id, request_type, requests, input_tokens,
                                            output_tokens, credits, cost, cost_currency)
        SELECT v_local::date, p_customer, v_model_id, p_request_type, 1, p_input, p_output, v_credits, v_cost,
               v_cost_cur
         WHERE v_reason IS NULL AND p_kind = 'consume'
        ON CONFLICT (customer_id, day, model_id, request_type) DO UPDATE
           SET requests = d.requests + 1,
               input_tokens = d.input_tokens + EXCLUDED.input_tokens,
               output_tokens = d.output_tokens + EXCLUDED.output_tokens,
               credits = d.credits + EXCLUDED.credits,
               cost = d.cost + EXCLUDED.cost
    )
    INSERT INTO token_requests (request_id, account_id, customer_id, kind, model_id, request_type, allowed, reason,
                                credits, status, draws, result, expires_at, created_at, pool_account_id,
                                pool_credits)
    VALUES (p_request_id, v_account.id, p_customer, p_kind, v_model_id, p_request_type, v_reason IS NULL,
            v_reason, CASE WHEN v_reason IS NULL THEN v_credits ELSE 0 END,
            CASE WHEN v_reason IS NOT NULL THEN 'refused' WHEN p_kind = 'consume' THEN 'done' ELSE 'open' END,
            v_draws, v_result, v_expires, p_at, v_pool_acct, v_from_pool);
    RETURN v_result;
END
$$;

-- commit() and release() start here: the same choice for settling a reservation.
CREATE OR REPLACE FUNCTION locked_reservation(p_request_id text) RETURNS token_requests
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_req token_requests;
BEGIN
    IF (SELECT admission_commit FROM token_rules) = 'asynchronous' THEN
        PERFORM set_config('synchronous_commit', 'off', true);  -- for the rest of the caller's transaction
    END IF;
    SELECT * INTO v_req FROM token_requests WHERE request_id = p_request_id;
    IF NOT FOUND OR v_req.kind <> 'reserve' THEN
        RAISE EXCEPTION 'no reservation "%"', p_request_id
            USING ERRCODE = 'no_data_found', HINT = 'reserve() first, with the same request id';
    END IF;
    PERFORM lock_accounts_in_order(v_req.account_id, v_req.pool_account_id);
    -- Re-read under the lock: a concurrent commit or release may have settled it meanwhile.
    SELECT * INTO v_req FROM token_requests WHERE request_id = p_request_id;
    IF v_req.status = 'refused' THEN
        RAISE EXCEPTION 'reservation "%" was refused: %', p_request_id, v_req.result->>'message'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'a refused request cannot be settled';
    END IF;
    RETURN v_req;
END
$$;
