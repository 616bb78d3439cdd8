-- Functions the app calls at request time, from any language (PineGenie: Prisma's $queryRaw), e.g.
--   SELECT tariff.register_customer(p_id => 'ck9x…', p_email => 'a@b.c', p_country => 'IN');
-- They pin search_path to the Tariff schema (FROM CURRENT = the schema this migration runs in), so they work
-- whatever search_path the caller has. Errors carry standard SQLSTATEs and a HINT saying what to do.

-- Insert or update a customer; returns the stored row as jsonb. Idempotent: the same call twice changes
-- nothing the second time (updated_at included). NULL arguments leave the stored value alone, so a partial
-- call never wipes data. The region comes from p_region, else from p_country via the catalog's regions,
-- else the catalog's default region.
CREATE FUNCTION register_customer(
    p_id         text,
    p_email      text DEFAULT NULL,
    p_region     text DEFAULT NULL,
    p_country    text DEFAULT NULL,
    p_segments   text[] DEFAULT NULL,
    p_attributes jsonb DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_email   text := nullif(btrim(p_email), '');
    v_country text := upper(nullif(btrim(p_country), ''));
    v_region  text := nullif(btrim(p_region), '');
    v_result  jsonb;
BEGIN
    IF p_id IS NULL OR p_id !~ '^\S{1,255}$' THEN
        RAISE EXCEPTION 'invalid customer id %', coalesce('"' || p_id || '"', 'NULL')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass the app''s own user id: 1 to 255 characters without spaces';
    END IF;
    IF v_email IS NOT NULL AND v_email !~ '^[^@\s]+@[^@\s]+$' THEN
        RAISE EXCEPTION 'invalid email "%" for customer "%"', v_email, p_id USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_country IS NOT NULL AND v_country !~ '^[A-Z]{2}$' THEN
        RAISE EXCEPTION 'invalid country "%" for customer "%"', p_country, p_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'use an ISO 3166 alpha-2 code such as IN or US';
    END IF;
    IF p_attributes IS NOT NULL AND jsonb_typeof(p_attributes) <> 'object' THEN
        RAISE EXCEPTION 'attributes of customer "%" must be a JSON object', p_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_region IS NOT NULL AND NOT EXISTS (SELECT 1 FROM regions WHERE code = v_region) THEN
        RAISE EXCEPTION 'unknown region "%" for customer "%"', v_region, p_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'regions are declared in tariff.yaml and published by tariff apply';
    END IF;
    IF v_region IS NULL AND v_country IS NOT NULL THEN
        SELECT rc.region_code INTO v_region
          FROM region_countries rc JOIN regions r ON r.code = rc.region_code
         WHERE rc.country = v_country AND r.retired_at IS NULL
         ORDER BY rc.region_code
         LIMIT 1;
        IF v_region IS NULL THEN
            SELECT default_region INTO v_region FROM catalog_state;
        END IF;
    END IF;

    INSERT INTO customers AS c (id, email, region, country, segments, attributes)
    VALUES (p_id, v_email, coalesce(v_region, (SELECT default_region FROM catalog_state)), v_country,
            coalesce(p_segments, '{}'), coalesce(p_attributes, '{}'))
    ON CONFLICT (id) DO UPDATE
       SET email      = coalesce(v_email, c.email),
           region     = coalesce(v_region, c.region),
           country    = coalesce(v_country, c.country),
           segments   = coalesce(p_segments, c.segments),
           attributes = coalesce(p_attributes, c.attributes),
           updated_at = now()
     WHERE (c.email, c.region, c.country, c.segments, c.attributes)
           IS DISTINCT FROM (coalesce(v_email, c.email), coalesce(v_region, c.region),
                             coalesce(v_country, c.country), coalesce(p_segments, c.segments),
                             coalesce(p_attributes, c.attributes));

    SELECT to_jsonb(c) INTO v_result FROM customers c WHERE c.id = p_id;
    RETURN v_result;
END
$$;

-- Record a subscription for a registered customer; returns the row as jsonb plus the amount it pays.
-- Never creates a customer: an unknown id is an error. Without p_price_version_id it takes the version on sale
-- now for plan × cycle × currency in the customer's region (the region's override first, then the base
-- price; the region's currency, then its fallback currency). Passing a version records a subscriber on an
-- older price (adoption of an existing base). With p_id it is idempotent: registering the same id again
-- updates status and dates only; plan and price change through Tariff's own migrations, not here.
CREATE FUNCTION register_subscription(
    p_customer_id          text,
    p_plan_id              text,
    p_cycle                text,
    p_price_version_id     bigint DEFAULT NULL,
    p_status               text DEFAULT 'active',
    p_current_period_start timestamptz DEFAULT NULL,
    p_current_period_end   timestamptz DEFAULT NULL,
    p_trial_end            timestamptz DEFAULT NULL,
    p_id                   text DEFAULT NULL,
    p_currency             text DEFAULT NULL,
    p_region               text DEFAULT NULL,
    p_cancel_at_period_end boolean DEFAULT false
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_customer customers;
    v_plan     plans;
    v_cycle    billing_cycles;
    v_version  price_versions;
    v_sub      subscriptions;
    v_region   text;
    v_currency text;
    v_fallback text;
    v_start    timestamptz := coalesce(p_current_period_start, now());
    v_end      timestamptz := p_current_period_end;
    v_trial    timestamptz := p_trial_end;
    v_tz       text;
BEGIN
    -- KEY SHARE: the customer cannot be deleted (or re-keyed) while we attach a subscription to it.
    SELECT * INTO v_customer FROM customers WHERE id = p_customer_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown customer "%"', p_customer_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'register the customer first with register_customer(); Tariff never creates customers implicitly';
    END IF;
    IF p_status IS NULL OR p_status NOT IN ('trialing', 'active', 'past_due', 'canceled', 'expired') THEN
        RAISE EXCEPTION 'invalid subscription status "%"', p_status
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'use one of trialing, active, past_due, canceled, expired';
    END IF;

    IF p_id IS NOT NULL THEN
        SELECT * INTO v_sub FROM subscriptions WHERE id = p_id FOR UPDATE;
        IF FOUND THEN
            IF v_sub.customer_id <> p_customer_id THEN
                RAISE EXCEPTION 'subscription "%" belongs to customer "%", not "%"', p_id, v_sub.customer_id, p_customer_id
                    USING ERRCODE = 'unique_violation';
            END IF;
            IF v_sub.plan_id <> p_plan_id OR v_sub.cycle <> p_cycle
               OR v_sub.price_version_id IS DISTINCT FROM coalesce(p_price_version_id, v_sub.price_version_id) THEN
                RAISE EXCEPTION 'subscription "%" is on % (%), price version %; register_subscription does not change plans or prices',
                    p_id, v_sub.plan_id, v_sub.cycle, v_sub.price_version_id
                    USING ERRCODE = 'invalid_parameter_value';
            END IF;
            UPDATE subscriptions s
               SET status = p_status,
                   current_period_start = coalesce(p_current_period_start, s.current_period_start),
                   current_period_end = coalesce(p_current_period_end, s.current_period_end),
                   trial_end = coalesce(p_trial_end, s.trial_end),
                   cancel_at_period_end = coalesce(p_cancel_at_period_end, s.cancel_at_period_end),
                   updated_at = now()
             WHERE s.id = p_id
               AND (s.status, s.current_period_start, s.current_period_end, s.trial_end, s.cancel_at_period_end)
                   IS DISTINCT FROM (p_status, coalesce(p_current_period_start, s.current_period_start),
                                     coalesce(p_current_period_end, s.current_period_end),
                                     coalesce(p_trial_end, s.trial_end),
                                     coalesce(p_cancel_at_period_end, s.cancel_at_period_end));
            RETURN (SELECT to_jsonb(s) || jsonb_build_object('amount_minor', pv.amount_minor)
                      FROM subscriptions s JOIN price_versions pv ON pv.id = s.price_version_id
                     WHERE s.id = p_id);
        END IF;
    END IF;

    SELECT * INTO v_plan FROM plans WHERE id = p_plan_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown plan "%"', p_plan_id
            USING ERRCODE = 'foreign_key_violation', HINT = 'plans are published from the config by tariff apply';
    END IF;
    SELECT * INTO v_cycle FROM billing_cycles WHERE id = p_cycle;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown billing cycle "%"', p_cycle USING ERRCODE = 'foreign_key_violation';
    END IF;
    v_region := coalesce(nullif(btrim(p_region), ''), v_customer.region);

    IF p_price_version_id IS NOT NULL THEN
        SELECT * INTO v_version FROM price_versions WHERE id = p_price_version_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown price version %', p_price_version_id USING ERRCODE = 'foreign_key_violation';
        END IF;
        IF v_version.plan_id <> p_plan_id OR v_version.cycle <> p_cycle THEN
            RAISE EXCEPTION 'price version % is a price of % (%), not of % (%)',
                p_price_version_id, v_version.plan_id, v_version.cycle, p_plan_id, p_cycle
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
    ELSE
        IF v_plan.status <> 'active' THEN
            RAISE EXCEPTION 'plan "%" is % and not on sale', p_plan_id, v_plan.status
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass p_price_version_id to record a subscription on an existing price';
        END IF;
        SELECT currency, fallback_currency INTO v_currency, v_fallback FROM regions WHERE code = v_region;
        v_currency := coalesce(upper(nullif(btrim(p_currency), '')), v_currency);
        IF v_currency IS NULL THEN
            RAISE EXCEPTION 'cannot choose a price for customer "%": no region or currency', p_customer_id
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'pass p_currency or p_region, or register the customer with a region or country';
        END IF;
        SELECT * INTO v_version FROM price_versions
         WHERE plan_id = p_plan_id AND cycle = p_cycle AND currency = v_currency AND valid_to IS NULL
           AND (region = v_region OR region IS NULL)
         ORDER BY region IS NULL
         LIMIT 1;
        IF v_version.id IS NULL AND p_currency IS NULL AND v_fallback IS NOT NULL THEN
            v_currency := v_fallback;
            SELECT * INTO v_version FROM price_versions
             WHERE plan_id = p_plan_id AND cycle = p_cycle AND currency = v_currency AND valid_to IS NULL
               AND (region = v_region OR region IS NULL)
             ORDER BY region IS NULL
             LIMIT 1;
        END IF;
        IF v_version.id IS NULL THEN
            RAISE EXCEPTION 'plan "%" has no % price on sale in % for region %',
                p_plan_id, p_cycle, v_currency, coalesce(v_region, '(none)')
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;

    -- Calendar arithmetic in the project's timezone, not the caller's session TimeZone: "one month after
    -- Jan 31, 00:30 in Kolkata" must not depend on which server or driver registered the subscription.
    v_tz := coalesce((SELECT timezone FROM catalog_state), 'UTC');
    IF p_status = 'trialing' AND v_trial IS NULL AND v_plan.trial_days > 0 THEN
        v_trial := ((v_start AT TIME ZONE v_tz) + make_interval(days => v_plan.trial_days)) AT TIME ZONE v_tz;
    END IF;
    IF v_end IS NULL THEN
        v_end := CASE
            WHEN p_status = 'trialing' AND v_trial IS NOT NULL THEN v_trial
            WHEN v_cycle.unit = 'month'
                THEN ((v_start AT TIME ZONE v_tz) + make_interval(months => v_cycle.every)) AT TIME ZONE v_tz
            ELSE ((v_start AT TIME ZONE v_tz) + make_interval(days => v_cycle.every)) AT TIME ZONE v_tz
        END;
    END IF;

    INSERT INTO subscriptions (id, customer_id, plan_id, cycle, currency, region, price_version_id, status,
                               current_period_start, current_period_end, trial_end, cancel_at_period_end)
    VALUES (coalesce(p_id, 'sub_' || replace(gen_random_uuid()::text, '-', '')), p_customer_id, p_plan_id,
            p_cycle, v_version.currency, v_region, v_version.id, p_status, v_start, v_end, v_trial,
            coalesce(p_cancel_at_period_end, false))
    RETURNING * INTO v_sub;
    RETURN to_jsonb(v_sub) || jsonb_build_object('amount_minor', v_version.amount_minor);
END
$$;
