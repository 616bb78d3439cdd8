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
    RETURN QUERY
    WITH daily AS (
        SELECT d.customer_id, d.model_id::text AS model_id, d.day, sum(d.credits)::bigint AS credits
          FROM token_usage_daily d
         WHERE d.day BETWEEN p_from - 7 * p_weeks AND p_to
           AND (p_customer IS NULL OR d.customer_id = p_customer)
           AND (p_model IS NULL OR d.model_id = p_model)
         GROUP BY 1, 2, 3
    ), firsts AS (
        SELECT customer_id, model_id, min(day) AS first_day FROM daily GROUP BY 1, 2
    ), candidates AS (
        SELECT * FROM daily WHERE day BETWEEN p_from AND p_to AND credits > 0
    ), past AS (
        SELECT c.customer_id, c.model_id, c.day, coalesce(h.credits, 0)::numeric AS credits
          FROM candidates c
          JOIN firsts f ON f.customer_id = c.customer_id AND f.model_id = c.model_id
         CROSS JOIN generate_series(1, p_weeks) AS w (k)
          LEFT JOIN daily h
                 ON h.customer_id = c.customer_id AND h.model_id = c.model_id AND h.day = c.day - 7 * w.k
         WHERE c.day - 7 * w.k >= f.first_day
    ), medians AS (
        SELECT customer_id, model_id, day, count(*)::integer AS n,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY credits)::numeric AS usual
          FROM past
         GROUP BY 1, 2, 3
        HAVING count(*) >= p_min_history
    ), spreads AS (
        SELECT m.customer_id, m.model_id, m.day, m.n, m.usual,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY abs(p.credits - m.usual))::numeric AS mad
          FROM medians m
          JOIN past p ON p.customer_id = m.customer_id AND p.model_id = m.model_id AND p.day = m.day
         GROUP BY 1, 2, 3, 4, 5
    ), scored AS (
        SELECT c.day, c.customer_id, c.model_id, c.credits, s.usual, s.mad, s.n,
               round((c.credits - s.usual)
                     / greatest(1.4826 * s.mad, 0.1 * s.usual, p_min_excess::numeric / p_min_score), 2) AS score
          FROM candidates c
          JOIN spreads s ON s.customer_id = c.customer_id AND s.model_id = c.model_id AND s.day = c.day
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
