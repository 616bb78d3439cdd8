-- Delivering the notifications outbox: a sender claims due rows with a lease in one short transaction, does
-- the network I/O (SMTP, webhooks) with no transaction open, then records the outcome in another.
--
-- Invariants:
--   * a row is claimed by at most one sender at a time: the claim takes rows FOR UPDATE SKIP LOCKED and stamps
--     them with a lease (claimed_until) and a claim token; rows under a live lease are not due;
--   * an outcome counts only for the claim that holds the lease (the token must match), so a sender whose lease
--     ran out cannot overwrite the outcome of the sender that took the row over;
--   * delivery is at least once: a sender that dies after sending but before recording leaves the row to be
--     claimed again when its lease ends (receivers de-duplicate on the idempotency key);
--   * attempts counts claims, so a crash mid-send still uses up an attempt.

ALTER TABLE notifications
    ADD COLUMN claim_token     uuid,
    ADD COLUMN claimed_until   timestamptz,
    ADD COLUMN last_attempt_at timestamptz,
    ADD CONSTRAINT notifications_claim CHECK ((claim_token IS NULL) = (claimed_until IS NULL)),
    ADD CONSTRAINT notifications_claim_pending CHECK (claim_token IS NULL OR status = 'pending');

-- `tariff notify list --failed --kind …` and the failed-row retry scan.
CREATE INDEX notifications_status ON notifications (status, kind, id);

-- Claim up to p_limit due rows for p_lease. Returns them with what delivery needs of the customer.
CREATE FUNCTION notification_claim(p_token uuid, p_limit integer, p_lease interval, p_at timestamptz DEFAULT now())
RETURNS TABLE (
    id bigint, kind text, customer_id text, channel text, payload jsonb, idempotency_key text,
    attempts integer, created_at timestamptz, customer_email text, customer_region text
)
LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF p_token IS NULL OR p_limit IS NULL OR p_limit < 1 OR p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'notification_claim needs a token, a positive limit and a positive lease'
            USING ERRCODE = '22023', HINT = 'pass e.g. gen_random_uuid(), 50, interval ''5 minutes''';
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT n.id FROM notifications n
        WHERE n.status = 'pending' AND n.next_attempt_at <= p_at
          AND (n.claimed_until IS NULL OR n.claimed_until <= p_at)
        ORDER BY n.next_attempt_at, n.id
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE notifications n
        SET claim_token = p_token, claimed_until = p_at + p_lease, attempts = n.attempts + 1,
            last_attempt_at = p_at
        FROM due WHERE n.id = due.id
        RETURNING n.*
    )
    SELECT c.id, c.kind, c.customer_id, c.channel, c.payload, c.idempotency_key, c.attempts, c.created_at,
           cu.email, cu.region::text
    FROM claimed c LEFT JOIN customers cu ON cu.id = c.customer_id
    ORDER BY c.next_attempt_at, c.id;
END;
$$;

-- Record a delivery. False when the claim no longer holds the row (its lease ran out and another took it).
CREATE FUNCTION notification_sent(p_id bigint, p_token uuid, p_at timestamptz DEFAULT now())
RETURNS boolean LANGUAGE sql SET search_path FROM CURRENT AS $$
    WITH done AS (
        UPDATE notifications
        SET status = 'sent', sent_at = p_at, claim_token = NULL, claimed_until = NULL, last_error = NULL
        WHERE id = p_id AND claim_token = p_token
        RETURNING 1
    )
    SELECT EXISTS (SELECT 1 FROM done);
$$;

-- Record a failed attempt: retry after p_backoff · 2^(attempts − 1), capped at p_max_backoff, with equal
-- jitter (half the delay fixed, half random) so senders that failed together do not retry together; or
-- `failed` once attempts reach p_max_attempts, or at once when p_permanent. Returns the new status, or NULL
-- when the claim no longer holds the row.
CREATE FUNCTION notification_failed(
    p_id bigint, p_token uuid, p_error text, p_max_attempts integer, p_backoff interval,
    p_max_backoff interval, p_permanent boolean DEFAULT false, p_at timestamptz DEFAULT now()
) RETURNS text LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
DECLARE
    v_status text;
BEGIN
    IF p_max_attempts IS NULL OR p_max_attempts < 1 OR p_backoff IS NULL OR p_max_backoff IS NULL THEN
        RAISE EXCEPTION 'notification_failed needs max attempts >= 1 and backoff intervals'
            USING ERRCODE = '22023', HINT = 'pass the delivery policy from tariff.yaml';
    END IF;
    UPDATE notifications n
    SET status = CASE WHEN p_permanent OR n.attempts >= p_max_attempts THEN 'failed' ELSE 'pending' END,
        next_attempt_at = CASE WHEN p_permanent OR n.attempts >= p_max_attempts THEN n.next_attempt_at
            ELSE p_at + least(p_max_backoff, p_backoff * power(2, least(n.attempts - 1, 30)))
                        * (0.5 + random() / 2) END,
        last_error = left(coalesce(nullif(p_error, ''), 'unknown error'), 2000),
        claim_token = NULL, claimed_until = NULL
    WHERE n.id = p_id AND n.claim_token = p_token
    RETURNING n.status INTO v_status;
    RETURN v_status;
END;
$$;

-- Put failed notifications back in the queue, due at p_at with a fresh budget of attempts. p_id NULL: all.
CREATE FUNCTION notification_retry(p_id bigint DEFAULT NULL, p_at timestamptz DEFAULT now())
RETURNS SETOF bigint LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
BEGIN
    IF p_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM notifications WHERE id = p_id) THEN
        RAISE EXCEPTION 'no notification %', p_id
            USING ERRCODE = 'P0002', HINT = 'list them with: tariff notify list --failed';
    END IF;
    IF p_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM notifications WHERE id = p_id AND status = 'failed') THEN
        RAISE EXCEPTION 'notification % has not failed', p_id
            USING ERRCODE = '55000', HINT = 'only failed notifications can be retried; pending ones are retried on their own';
    END IF;
    RETURN QUERY
    UPDATE notifications SET status = 'pending', attempts = 0, next_attempt_at = p_at
    WHERE status = 'failed' AND (p_id IS NULL OR id = p_id)
    RETURNING id;
END;
$$;
