-- Usage anomalies: days on which a customer used a model far more than on the same weekday of the weeks
-- before, judged with robust statistics over the daily rollup (token_usage_daily), never the raw usage rows.
--
--   SELECT * FROM tariff.usage_anomalies(p_from => '2026-11-01', p_to => '2026-11-30');
--   SELECT tariff.raise_anomaly_alerts(p_at => now());      -- what `tariff tick` calls
--
-- The baseline of a (customer, model, day) is the same weekday of the p_weeks weeks before it, days without
-- usage counting as zero once the pair has been seen at all (so a quiet weekend stays a quiet weekend and a
-- busy Monday is compared with Mondays). With fewer than p_min_history such weekdays nothing is judged.
--   usual  = median of those weekdays' credits
--   mad    = median absolute deviation from `usual`
--   spread = greatest(1.4826 × mad, 10 % of usual, p_min_excess / p_min_score)
--            (1.4826 × MAD estimates a standard deviation for normal noise; the floors stop a perfectly
--            regular history — MAD 0 — from making any small wobble infinitely unusual)
--   score  = (credits − usual) / spread
-- A day is an anomaly when score >= p_min_score AND credits >= p_min_ratio × usual AND
-- credits − usual >= p_min_excess. Only increases are reported: a drop in usage is not an incident.

CREATE FUNCTION usage_anomalies(
    p_from        date,
    p_to          date,
    p_customer    text DEFAULT NULL,
    p_model       text DEFAULT NULL,
    p_weeks       integer DEFAULT 8,
    p_min_history integer DEFAULT 4,
    p_min_score   numeric DEFAULT 5,
    p_min_ratio   numeric DEFAULT 3,
    p_min_excess  bigint DEFAULT 100
) RETURNS TABLE (
    day         date,
    customer_id text,
    model_id    text,
    credits     bigint,
    usual       numeric,
    mad         numeric,
    history     integer,
    ratio       numeric,
    score       numeric
)
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
-- One analytical statement: JIT compilation would cost more than it saves on a busy server.
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
    IF p_from IS NULL OR p_to IS NULL OR p_from > p_to THEN
        RAISE EXCEPTION 'anomaly window % .. % is empty', p_from, p_to
            USING ERRCODE = 'invalid_parameter_value', HINT = 'pass p_from <= p_to';
    END IF;
    IF p_weeks < 1 OR p_min_history < 1 OR p_min_history > p_weeks THEN
        RAISE EXCEPTION 'history of % weeks with at least % of them is not possible', p_weeks, p_min_history
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use 1 <= p_min_history <= p_weeks';
    END IF;
    IF p_min_score <= 0 OR p_min_ratio < 1 OR p_min_excess < 1 THEN
        RAISE EXCEPTION 'anomaly thresholds must be positive (score %, ratio %, excess %)',
            p_min_score, p_min_ratio, p_min_excess
            USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. score 5, ratio 3, excess 100 credits';
    END IF;
    -- Set-based and join-free: the zero-filled daily series of each (customer, model) seen in the window,
    -- then each day's preceding p_weeks weeks as one array (a sliding window frame), from which the same
    -- weekday's values are every 7th element counted back from the day.
    RETURN QUERY
    WITH daily AS (
        SELECT d.customer_id, d.model_id::text AS model_id, d.day, sum(d.credits)::bigint AS credits
          FROM token_usage_daily d
         WHERE d.day BETWEEN p_from - 7 * p_weeks AND p_to
           AND (p_customer IS NULL OR d.customer_id = p_customer)
           AND (p_model IS NULL OR d.model_id = p_model)
         GROUP BY 1, 2, 3
    ), pairs AS (
        -- Before its first day a pair has no history (not yet a user); after it, a day without a row is zero.
        SELECT customer_id, model_id, min(day) AS first_day
          FROM daily
         GROUP BY 1, 2
        HAVING max(day) >= p_from
    ), series AS (
        SELECT customer_id, model_id, day, sum(credits)::bigint AS credits
          FROM (SELECT customer_id, model_id, day, credits FROM daily WHERE day >= p_from - 7 * p_weeks
                UNION ALL
                SELECT p.customer_id, p.model_id, g::date, 0
                  FROM pairs p, generate_series(p.first_day, p_to, interval '1 day') AS g) u
         WHERE (customer_id, model_id) IN (SELECT customer_id, model_id FROM pairs)
         GROUP BY 1, 2, 3
    ), framed AS (
        SELECT customer_id, model_id, day, credits,
               array_agg(credits) OVER (PARTITION BY customer_id, model_id ORDER BY day
                                        ROWS BETWEEN 7 * p_weeks PRECEDING AND 1 PRECEDING) AS before
          FROM series
    ), scored AS (
        SELECT f.day, f.customer_id, f.model_id, f.credits, m.n, m.usual, v.mad,
               round((f.credits - m.usual)
                     / greatest(1.4826 * v.mad, 0.1 * m.usual, p_min_excess::numeric / p_min_score), 2) AS score
          FROM framed f
         CROSS JOIN LATERAL (
              SELECT count(*)::integer AS n,
                     percentile_cont(0.5) WITHIN GROUP (ORDER BY a.credits)::numeric AS usual
                FROM unnest(f.before) WITH ORDINALITY AS a (credits, i)
               WHERE (cardinality(f.before) - a.i + 1) % 7 = 0
         ) m
         CROSS JOIN LATERAL (
              SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(a.credits - m.usual))::numeric AS mad
                FROM unnest(f.before) WITH ORDINALITY AS a (credits, i)
               WHERE (cardinality(f.before) - a.i + 1) % 7 = 0
         ) v
         WHERE f.day BETWEEN p_from AND p_to AND f.credits > 0 AND m.n >= p_min_history
    )
    SELECT day, customer_id, model_id, credits, round(usual, 2), round(mad, 2), n,
           CASE WHEN usual > 0 THEN round(credits / usual, 2) END, score
      FROM scored
     WHERE score >= p_min_score
       AND credits >= p_min_ratio * usual
       AND credits - usual >= p_min_excess
     ORDER BY score DESC, credits DESC, day, customer_id, model_id;
END
$$;

-- One admin notification per anomaly of yesterday and today (in token_rules.timezone) into the outbox.
-- Idempotent: the key names customer, model and day, so running it every few minutes alerts once per
-- anomaly, however the day's usage grows afterwards. Returns what it found and wrote.
CREATE FUNCTION raise_anomaly_alerts(
    p_at      timestamptz DEFAULT now(),
    p_channel text DEFAULT 'email'
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_today   date := (p_at AT TIME ZONE token_timezone())::date;
    v_found   integer;
    v_written integer;
BEGIN
    IF coalesce(btrim(p_channel), '') = '' THEN
        RAISE EXCEPTION 'anomaly alerts need a notification channel' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'name a channel from tariff.yaml notifications.channels, e.g. email';
    END IF;
    WITH found AS (
        SELECT * FROM usage_anomalies(v_today - 1, v_today)
    ), written AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key, next_attempt_at,
                                   created_at)
        SELECT 'usage_anomaly', NULL, p_channel,
               jsonb_build_object('customer', f.customer_id, 'model', f.model_id, 'day', f.day,
                                  'credits', f.credits, 'usual', f.usual, 'history_days', f.history,
                                  'ratio', f.ratio, 'score', f.score),
               'usage-anomaly:' || f.customer_id || ':' || f.model_id || ':' || f.day,
               p_at, p_at
          FROM found f
         ORDER BY f.score DESC
        ON CONFLICT (idempotency_key) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM found), (SELECT count(*) FROM written) INTO v_found, v_written;
    RETURN jsonb_build_object('at', p_at, 'days', jsonb_build_array(v_today - 1, v_today),
                              'anomalies', v_found, 'alerts_written', v_written);
END
$$;
