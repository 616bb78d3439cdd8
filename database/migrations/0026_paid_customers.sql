-- Who counts as a paying ("existing") customer for promotions' `customers: new | existing`.
--
-- Before, any subscription on a paid price whose status was not `trialing` counted, so a customer whose
-- trial was canceled or ran out became "existing" and lost every new-customer offer, the win-back offers
-- made for exactly them. Now a customer has paid when one of their subscriptions was ever paying: its
-- history (subscription_history, kept since 0012) shows it active or past due on a paid price; or, for a
-- subscription registered or imported already ended (canceled, expired) on a paid price, whose history holds
-- no earlier state, it had no trial or ended after its trial did. paid_customer() is the one definition:
-- quote() and the CLI's eligibility counts use it.

CREATE OR REPLACE FUNCTION paid_customer(p_customer_id text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path FROM CURRENT
AS $$
    SELECT EXISTS (SELECT 1 FROM subscription_history h
                    WHERE h.customer_id = p_customer_id AND h.mrr_minor > 0)
        OR EXISTS (
            SELECT 1 FROM subscriptions s JOIN price_versions pv ON pv.id = s.price_version_id
             WHERE s.customer_id = p_customer_id AND pv.amount_minor > 0
               AND s.status IN ('canceled', 'expired')
               -- Its history, when it has one, already answered above.
               AND NOT EXISTS (SELECT 1 FROM subscription_history t
                                WHERE t.subscription_id = s.id AND t.status IN ('trialing', 'active', 'past_due'))
               AND (s.trial_end IS NULL OR coalesce(s.canceled_at, s.current_period_end) > s.trial_end))
$$;

CREATE OR REPLACE FUNCTION quote(
    p_customer_id text,
    p_item        jsonb,
    p_region      text DEFAULT NULL,
    p_codes       text[] DEFAULT NULL,
    p_at          timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
-- Plans are made once per session: re-planning the per-promotion statement for every call would cost more
-- than running it.
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_at         timestamptz := coalesce(p_at, now());
    v_kind       text;
    v_plan       text := p_item->>'plan';
    v_cycle      text := p_item->>'cycle';
    v_package    text := p_item->>'package';
    v_bundle     text := p_item->>'bundle';
    v_want       text := upper(nullif(btrim(p_item->>'currency'), ''));
    v_known      boolean := p_customer_id IS NOT NULL;
    v_found      boolean;
    v_segments   text[];
    v_paid       boolean := false;
    v_held       text[] := '{}';
    v_home       text;
    v_region     text;
    v_main       text;
    v_fallback   text;
    v_retired    boolean;
    v_tz         text;
    v_status     text;
    v_currency   text;
    v_units      integer;
    v_rounding   text;
    v_list       bigint;
    v_components jsonb;
    v_codes      text[] := '{}';
    v_matched    jsonb := '{}';
    v_by_promo   jsonb := '{}';
    v_considered jsonb;
    v_stack      jsonb;
    v_exclusive  jsonb;
    v_options    jsonb;
    v_option     jsonb;
    v_step       jsonb;
    v_steps      jsonb;
    v_price      bigint;
    v_before     bigint;
    v_off        bigint;
    v_has_code   boolean;
    v_benefits   integer;
    v_days       integer;
    v_tokens     bigint;
    v_best       jsonb := '[]';
    v_best_final bigint;
    v_best_code  boolean;
    v_best_ben   integer;
    v_best_days  integer := 0;
    v_best_tok   bigint := 0;
    v_winner     text;
    v_applied    text[] := '{}';
    v_code_out   jsonb := '[]';
    v_i          integer;
    v_j          integer;
BEGIN
    -- The item ------------------------------------------------------------------------------------------
    IF p_item IS NULL OR jsonb_typeof(p_item) <> 'object' THEN
        RAISE EXCEPTION 'the item must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pass {"plan": "pro", "cycle": "annual"}, {"package": "extra-500"} or {"bundle": "creator-bundle"}';
    END IF;
    IF p_item - ARRAY['plan', 'cycle', 'package', 'bundle', 'currency'] <> '{}' THEN
        RAISE EXCEPTION 'unknown key(s) in the item: %',
            array_to_string(ARRAY(SELECT jsonb_object_keys(p_item - ARRAY['plan', 'cycle', 'package', 'bundle', 'currency'])), ', ')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'an item has plan and cycle, or package, or bundle';
    END IF;
    IF (v_plan IS NOT NULL)::int + (v_package IS NOT NULL)::int + (v_bundle IS NOT NULL)::int <> 1 THEN
        RAISE EXCEPTION 'the item must name exactly one of plan, package or bundle'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'a bundle is sold as one item: pass {"bundle": "<promotion id>"} on its own';
    END IF;
    IF v_plan IS NOT NULL AND v_cycle IS NULL THEN
        RAISE EXCEPTION 'plan "%" needs a billing cycle', v_plan
            USING ERRCODE = 'invalid_parameter_value', HINT = 'add "cycle": "monthly" (or another cycle it is sold in)';
    END IF;
    IF v_plan IS NULL AND v_cycle IS NOT NULL THEN
        RAISE EXCEPTION 'a cycle goes with a plan only'
            USING ERRCODE = 'invalid_parameter_value', HINT = 'packages and bundles are priced as a whole';
    END IF;
    v_kind := CASE WHEN v_plan IS NOT NULL THEN 'plan' WHEN v_package IS NOT NULL THEN 'package' ELSE 'bundle' END;

    -- The customer: never created here; an unknown id is an error, NULL is an anonymous visitor -----------
    IF v_known THEN
        SELECT true, c.segments, c.region,
               paid_customer(c.id),
               ARRAY(SELECT DISTINCT s.plan_id::text FROM subscriptions s
                      WHERE s.customer_id = c.id AND s.status IN ('trialing', 'active', 'past_due'))
          INTO v_found, v_segments, v_home, v_paid, v_held
          FROM customers c WHERE c.id = p_customer_id;
        IF v_found IS NULL THEN
            RAISE EXCEPTION 'unknown customer "%"', p_customer_id
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'register the customer first with register_customer(); Tariff never creates customers implicitly';
        END IF;
    END IF;

    -- The region and its currency ---------------------------------------------------------------------------
    v_region := coalesce(nullif(btrim(p_region), ''), v_home);
    SELECT r.code, r.currency, r.fallback_currency, r.retired_at IS NOT NULL, coalesce(cs.timezone, 'UTC')
      INTO v_region, v_main, v_fallback, v_retired, v_tz
      FROM (SELECT 1) one
      LEFT JOIN catalog_state cs ON true
      LEFT JOIN regions r ON r.code = coalesce(v_region, cs.default_region);
    IF v_main IS NULL OR v_retired THEN
        RAISE EXCEPTION 'unknown region "%"', coalesce(nullif(btrim(p_region), ''), v_home, '(none)')
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'use a region declared in tariff.yaml and published by tariff apply';
    END IF;
    IF v_want IS NOT NULL AND v_want NOT IN (v_main, coalesce(v_fallback, v_main)) THEN
        RAISE EXCEPTION 'currency mismatch: region % sells in %, not %', v_region, concat_ws(' or ', v_main, v_fallback), v_want
            USING ERRCODE = 'invalid_parameter_value', HINT = 'leave out the currency, or quote for the region that sells in it';
    END IF;

    -- The list price: the region's override, else the currency's base price; the region's currency first,
    -- then its fallback currency ----------------------------------------------------------------------------
    IF v_kind = 'plan' THEN
        SELECT pl.status, pv.currency, pv.amount_minor INTO v_status, v_currency, v_list
          FROM plans pl
          LEFT JOIN LATERAL (
                SELECT x.currency, x.amount_minor FROM price_versions x
                 WHERE x.plan_id = pl.id AND x.cycle = v_cycle AND x.valid_to IS NULL
                   AND x.currency IN (v_main, v_fallback) AND (v_want IS NULL OR x.currency = v_want)
                   AND (x.region = v_region OR x.region IS NULL)
                 ORDER BY x.currency = v_main DESC, x.region IS NULL
                 LIMIT 1) pv ON true
         WHERE pl.id = v_plan;
        IF v_status IS NULL THEN
            RAISE EXCEPTION 'unknown plan "%"', v_plan
                USING ERRCODE = 'foreign_key_violation', HINT = 'plans are published from the config by tariff apply';
        ELSIF v_status <> 'active' THEN
            RAISE EXCEPTION 'plan "%" is % and not on sale', v_plan, v_status USING ERRCODE = 'invalid_parameter_value';
        ELSIF v_list IS NULL THEN
            RAISE EXCEPTION 'plan "%" has no % price on sale in region %', v_plan, v_cycle, v_region
                USING ERRCODE = 'no_data_found',
                      HINT = CASE WHEN NOT EXISTS (SELECT 1 FROM billing_cycles WHERE id = v_cycle)
                                  THEN format('"%s" is not a billing cycle', v_cycle)
                                  ELSE 'check the plan''s prices in the config' END;
        END IF;
    ELSIF v_kind = 'package' THEN
        SELECT tp.status, pv.currency, pv.amount_minor INTO v_status, v_currency, v_list
          FROM token_packages tp
          LEFT JOIN LATERAL (
                SELECT x.currency, x.amount_minor FROM package_price_versions x
                 WHERE x.package_id = tp.id AND x.valid_to IS NULL
                   AND x.currency IN (v_main, v_fallback) AND (v_want IS NULL OR x.currency = v_want)
                   AND (x.region = v_region OR x.region IS NULL)
                 ORDER BY x.currency = v_main DESC, x.region IS NULL
                 LIMIT 1) pv ON true
         WHERE tp.id = v_package;
        IF v_status IS NULL THEN
            RAISE EXCEPTION 'unknown token package "%"', v_package
                USING ERRCODE = 'foreign_key_violation', HINT = 'packages are published from the config by tariff apply';
        ELSIF v_status <> 'active' THEN
            RAISE EXCEPTION 'token package "%" is % and not on sale', v_package, v_status USING ERRCODE = 'invalid_parameter_value';
        ELSIF v_list IS NULL THEN
            RAISE EXCEPTION 'token package "%" has no price on sale in region %', v_package, v_region
                USING ERRCODE = 'no_data_found';
        END IF;
    ELSE
        IF NOT EXISTS (SELECT 1 FROM promotions WHERE id = v_bundle AND applies_to ? 'bundle') THEN
            RAISE EXCEPTION 'unknown bundle "%"', v_bundle
                USING ERRCODE = 'foreign_key_violation',
                      HINT = 'a bundle is the id of a promotion with applies_to.bundle (see tariff promo list)';
        END IF;
        -- Every component priced in one currency: the region's if all have a price in it, else the fallback.
        SELECT c.currency, sum(c.amount), jsonb_agg(c.component ORDER BY c.n)
          INTO v_currency, v_list, v_components
          FROM (
            SELECT cur.code AS currency, i.n,
                   price.amount_minor * coalesce(i.quantity, 1) AS amount,
                   jsonb_strip_nulls(jsonb_build_object('plan', i.plan, 'cycle', i.cycle, 'package', i.package,
                       'quantity', coalesce(i.quantity, 1), 'unit_minor', price.amount_minor,
                       'list_minor', price.amount_minor * coalesce(i.quantity, 1))) AS component
              FROM promotions p
             CROSS JOIN LATERAL ROWS FROM (
                   jsonb_to_recordset(p.applies_to->'bundle') AS (plan text, cycle text, package text, quantity integer))
                   WITH ORDINALITY AS i(plan, cycle, package, quantity, n)
             CROSS JOIN (SELECT unnest(ARRAY[v_main, v_fallback]) AS code) cur
              LEFT JOIN LATERAL (
                    SELECT pv.amount_minor, pv.region IS NULL AS base
                      FROM price_versions pv JOIN plans pl ON pl.id = pv.plan_id
                     WHERE i.plan IS NOT NULL AND pl.status = 'active' AND pv.plan_id = i.plan
                       AND pv.cycle = i.cycle AND pv.currency = cur.code AND pv.valid_to IS NULL
                       AND (pv.region = v_region OR pv.region IS NULL)
                    UNION ALL
                    SELECT pp.amount_minor, pp.region IS NULL
                      FROM package_price_versions pp JOIN token_packages tp ON tp.id = pp.package_id
                     WHERE i.package IS NOT NULL AND tp.status = 'active' AND pp.package_id = i.package
                       AND pp.currency = cur.code AND pp.valid_to IS NULL
                       AND (pp.region = v_region OR pp.region IS NULL)
                    ORDER BY 2 LIMIT 1) price ON true
             WHERE p.id = v_bundle AND cur.code IS NOT NULL AND (v_want IS NULL OR cur.code = v_want)
          ) c
         GROUP BY c.currency
        HAVING count(c.amount) = count(*)
         ORDER BY c.currency = v_main DESC
         LIMIT 1;
        IF v_list IS NULL THEN
            RAISE EXCEPTION 'bundle "%" cannot be priced in region %: a component is not on sale in %', v_bundle,
                v_region, concat_ws(' or ', v_main, v_fallback)
                USING ERRCODE = 'no_data_found';
        END IF;
    END IF;
    SELECT minor_units, rounding INTO v_units, v_rounding FROM currencies WHERE code = v_currency;

    -- Codes: trimmed, uppercased, compared by indexed equality; lookalikes and typos simply match nothing.
    -- v_matched: code → its promotion; v_by_promo: promotion → the code used for it (an unused one first).
    IF cardinality(p_codes) > 0 THEN
        IF cardinality(p_codes) > 10 THEN
            RAISE EXCEPTION 'too many codes (% given, at most 10)', cardinality(p_codes)
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        -- For two codes of one promotion the later value wins in jsonb_object_agg: an unused code, then
        -- the first in order.
        SELECT coalesce(array_agg(f.code ORDER BY f.code), '{}'),
               coalesce(jsonb_object_agg(f.code, jsonb_build_object('promotion', f.promotion_id))
                        FILTER (WHERE f.promotion_id IS NOT NULL), '{}'),
               coalesce(jsonb_object_agg(f.promotion_id, jsonb_build_object('code', f.code,
                            'single_use', f.single_use, 'used', f.used) ORDER BY f.used DESC, f.code DESC)
                        FILTER (WHERE f.promotion_id IS NOT NULL), '{}')
          INTO v_codes, v_matched, v_by_promo
          FROM (SELECT DISTINCT upper(btrim(c)) AS code FROM unnest(p_codes) c WHERE btrim(c) <> '') f0
          LEFT JOIN LATERAL (SELECT f0.code, pc.promotion_id, pc.single_use, pc.used FROM promotion_codes pc
                              WHERE pc.code = f0.code AND pc.retired_at IS NULL) f1 ON true
         CROSS JOIN LATERAL (SELECT f0.code, f1.promotion_id, f1.single_use, f1.used) f;
    END IF;

    -- Every promotion that could apply (live ones, bundles only for their own bundle, and any a code names),
    -- judged in one statement: the first rule it fails is its reason. Eligible ones become discount steps.
    WITH judged AS MATERIALIZED (
        SELECT p.id, p.name, p.kind, p.stackable, p.priority, mc.code,
               trim_scale(p.percent_off) AS percent, amt.amount_minor, p.extra_trial_days, p.bonus_tokens,
               mc.single_use, p.duration,
               CASE
                 WHEN p.status = 'draft' THEN 'not_started:not published yet (draft)'
                 WHEN p.status = 'retired' THEN 'ended:retired'
                 WHEN NOT coalesce(CASE v_kind
                         WHEN 'bundle' THEN p.id = v_bundle
                         WHEN 'plan' THEN p.applies_to = '{}'
                             OR ((p.applies_to->'plans') ? v_plan
                                 AND (NOT p.applies_to ? 'cycles' OR (p.applies_to->'cycles') ? v_cycle))
                         ELSE p.kind <> 'extra_trial_days'
                              AND (p.applies_to = '{}' OR (p.applies_to->'packages') ? v_package)
                       END, false) THEN 'not_applicable'
                 WHEN w.state <> 'active' THEN w.state
                 WHEN (p.vanity_code IS NOT NULL OR p.code_count IS NOT NULL) AND mc.code IS NULL THEN 'code_required'
                 WHEN el ? 'regions' AND NOT (el->'regions') ? v_region THEN 'wrong_region'
                 WHEN p.kind IN ('amount_off', 'fixed_price') AND amt.amount_minor IS NULL THEN 'currency_not_covered'
                 WHEN NOT v_known AND (el ?| ARRAY['customers', 'plans_held', 'segments', 'customers_file'])
                      THEN 'not_eligible:sign in'
                 WHEN el->>'customers' = 'new' AND v_paid THEN 'not_eligible:new customers only'
                 WHEN el->>'customers' = 'existing' AND NOT v_paid THEN 'not_eligible:existing customers only'
                 WHEN el ? 'plans_held' AND NOT (el->'plans_held') ?| v_held THEN 'not_eligible:plans_held'
                 WHEN el ? 'segments' AND NOT (el->'segments') ?| v_segments THEN 'not_eligible:segments'
                 WHEN el ? 'customers_file' AND NOT EXISTS (
                          SELECT 1 FROM promotion_customers pc WHERE pc.promotion_id = p.id AND pc.customer_id = p_customer_id)
                      THEN 'not_eligible:not on the customer list'
                 WHEN p.max_redemptions IS NOT NULL AND coalesce(u.redeemed, 0) >= p.max_redemptions THEN 'limit_reached'
                 WHEN v_known AND p.per_customer IS NOT NULL AND coalesce(cu.redeemed, 0) >= p.per_customer
                      THEN 'per_customer_limit'
                 WHEN mc.single_use AND mc.used THEN 'code_used'
               END AS verdict,
               p.applies_to, el, w.window_starts, w.window_ends, coalesce(p.schedule_timezone, v_tz) AS zone,
               p.max_redemptions, p.per_customer, cu.redeemed AS by_customer
          FROM promotions p
         CROSS JOIN LATERAL (SELECT p.eligibility AS el) e
         CROSS JOIN LATERAL (SELECT v_by_promo->p.id->>'code' AS code,
                                    (v_by_promo->p.id->>'single_use')::boolean AS single_use,
                                    (v_by_promo->p.id->>'used')::boolean AS used) mc
          LEFT JOIN promotion_amounts amt ON amt.promotion_id = p.id AND amt.currency = v_currency
          LEFT JOIN LATERAL (SELECT sum(x.redeemed) AS redeemed FROM promotion_usage x WHERE x.promotion_id = p.id) u
                 ON p.max_redemptions IS NOT NULL
          LEFT JOIN promotion_customer_usage cu
                 ON v_known AND p.per_customer IS NOT NULL AND cu.promotion_id = p.id AND cu.customer_id = p_customer_id
         CROSS JOIN LATERAL (
                -- A fixed window is two comparisons; only yearly ones pay for the function call.
                SELECT CASE WHEN v_at < p.starts_at THEN 'not_started' WHEN v_at >= p.ends_at THEN 'ended'
                            ELSE 'active' END AS state, p.starts_at AS window_starts, p.ends_at AS window_ends
                 WHERE NOT p.yearly
                UNION ALL
                SELECT * FROM promotion_window(p.starts_at, p.ends_at, true, coalesce(p.schedule_timezone, v_tz), v_at)
                 WHERE p.yearly) w
         WHERE (p.status = 'active' AND CASE WHEN v_kind = 'bundle' THEN p.id = v_bundle ELSE NOT p.applies_to ? 'bundle' END)
            OR v_by_promo ? p.id
    ), explained AS (
        SELECT j.*, split_part(j.verdict, ':', 1) AS reason,
               CASE WHEN j.verdict IS NULL THEN jsonb_build_object(
                   'promotion', j.id, 'name', j.name, 'kind', j.kind, 'code', j.code, 'stackable', j.stackable,
                   'priority', j.priority, 'percent', j.percent, 'amount_minor', j.amount_minor,
                   'single_use', j.single_use, 'extra_trial_days', j.extra_trial_days, 'bonus_tokens', j.bonus_tokens,
                   'duration', CASE WHEN j.duration LIKE 'cycles:%' THEN 'cycles' ELSE j.duration END,
                   'cycles', CASE WHEN j.duration = 'once' THEN 1
                                  WHEN j.duration LIKE 'cycles:%' THEN split_part(j.duration, ':', 2)::integer END)
               END AS step,

               CASE split_part(j.verdict, ':', 1)
                 WHEN 'not_started' THEN coalesce(nullif(split_part(j.verdict, ':', 2), ''),
                     'starts ' || to_char(j.window_starts AT TIME ZONE j.zone, 'YYYY-MM-DD HH24:MI') || ' ' || j.zone)
                 WHEN 'ended' THEN coalesce(nullif(split_part(j.verdict, ':', 2), ''),
                     'ended ' || to_char(j.window_ends AT TIME ZONE j.zone, 'YYYY-MM-DD HH24:MI') || ' ' || j.zone)
                 WHEN 'not_applicable' THEN CASE WHEN j.applies_to ? 'bundle' THEN 'sold as the bundle ' || j.id
                     ELSE 'applies to ' || concat_ws('; ',
                         'plans ' || nullif(array_to_string(ARRAY(
                                    SELECT jsonb_array_elements_text(j.applies_to->'plans')), ', '), '')
                             || coalesce(' (' || nullif(array_to_string(ARRAY(
                                    SELECT jsonb_array_elements_text(j.applies_to->'cycles')), ', '), '') || ')', ''),
                         'packages ' || nullif(array_to_string(ARRAY(
                                    SELECT jsonb_array_elements_text(j.applies_to->'packages')), ', '), ''))
                     END
                 WHEN 'code_required' THEN 'applies with a code only'
                 WHEN 'wrong_region' THEN 'only in ' || array_to_string(ARRAY(SELECT jsonb_array_elements_text(j.el->'regions')), ', ')
                 WHEN 'currency_not_covered' THEN 'no ' || v_currency || ' amount'
                 WHEN 'not_eligible' THEN CASE split_part(j.verdict, ':', 2)
                     WHEN 'plans_held' THEN 'customers on '
                         || array_to_string(ARRAY(SELECT jsonb_array_elements_text(j.el->'plans_held')), ', ') || ' only'
                     WHEN 'segments' THEN 'segment '
                         || array_to_string(ARRAY(SELECT jsonb_array_elements_text(j.el->'segments')), ', ') || ' only'
                     ELSE split_part(j.verdict, ':', 2) END
                 WHEN 'limit_reached' THEN format('all %s redemptions used', j.max_redemptions)
                 WHEN 'per_customer_limit' THEN format('already redeemed %s of %s time(s)', j.by_customer, j.per_customer)
                 WHEN 'code_used' THEN 'this single-use code was already redeemed'
               END AS detail
          FROM judged j
    )
    SELECT jsonb_agg(jsonb_build_object('id', id, 'name', name, 'kind', kind, 'code', code, 'stackable', stackable,
                                        'priority', priority, 'applied', false, 'reason', reason, 'detail', detail)
                     ORDER BY priority, id),
           -- Steps are built for eligible promotions only (a FILTER skips evaluating its aggregate's argument).
           coalesce(jsonb_agg(step ORDER BY priority, id) FILTER (WHERE verdict IS NULL AND stackable), '[]'),
           coalesce(jsonb_agg(jsonb_build_array(step) ORDER BY priority, id) FILTER (WHERE verdict IS NULL AND NOT stackable), '[]')
      INTO v_considered, v_stack, v_exclusive
      FROM explained;

    -- Stacking: the stackable ones together (ascending priority, each on the price the previous one left),
    -- or one exclusive alone; the customer gets whichever option is cheapest. Ties go to the option using a
    -- code the customer typed, then to the one with more benefits (trial days, tokens), then to the first.
    v_best_final := v_list;
    v_options := CASE WHEN v_stack = '[]' THEN '[]' ELSE jsonb_build_array(v_stack) END || v_exclusive;
    -- Loops by index: expressions only, no query per element.
    FOR v_i IN 0 .. jsonb_array_length(v_options) - 1 LOOP
        v_option := v_options->v_i;
        v_price := v_list;
        v_steps := '[]';
        v_has_code := false;
        v_benefits := 0;
        v_days := 0;
        v_tokens := 0;
        FOR v_j IN 0 .. jsonb_array_length(v_option) - 1 LOOP
            v_step := v_option->v_j;
            v_before := v_price;
            v_off := CASE v_step->>'kind'
                WHEN 'percent_off' THEN least(round_minor(v_price * (v_step->>'percent')::numeric / 100, v_rounding), v_price)
                WHEN 'amount_off' THEN least((v_step->>'amount_minor')::bigint, v_price)
                WHEN 'fixed_price' THEN greatest(v_price - (v_step->>'amount_minor')::bigint, 0)
                ELSE 0 END;
            v_price := v_price - v_off;
            v_has_code := v_has_code OR v_step->>'code' IS NOT NULL;
            v_days := v_days + coalesce((v_step->>'extra_trial_days')::integer, 0);
            v_tokens := v_tokens + coalesce((v_step->>'bonus_tokens')::bigint, 0);
            v_benefits := v_benefits + (v_step->>'kind' IN ('extra_trial_days', 'bonus_tokens'))::int;
            v_steps := v_steps || (v_step || jsonb_build_object('position', jsonb_array_length(v_steps) + 1,
                'before_minor', v_before, 'discount_minor', v_off, 'after_minor', v_price));
        END LOOP;
        IF v_best = '[]' OR v_price < v_best_final
           OR (v_price = v_best_final AND (v_has_code AND NOT v_best_code
               OR (v_has_code = v_best_code AND v_benefits > v_best_ben))) THEN
            v_best := v_steps;
            v_best_final := v_price;
            v_best_code := v_has_code;
            v_best_ben := v_benefits;
            v_best_days := v_days;
            v_best_tok := v_tokens;
        END IF;
    END LOOP;

    -- Mark what applied, and why the other eligible ones did not.
    IF v_best <> '[]' THEN
        v_applied := ARRAY(SELECT s->>'promotion' FROM jsonb_array_elements(v_best) s);
        v_winner := v_best->0->>'promotion';
        SELECT jsonb_agg(CASE
                   WHEN c->>'reason' IS NOT NULL THEN c
                   WHEN c->>'id' = ANY (v_applied) THEN c || '{"applied": true}'
                   ELSE c || jsonb_build_object('reason', 'not_stackable_with:' || v_winner,
                        'detail', CASE WHEN (c->>'stackable')::boolean
                                       THEN v_winner || ' is exclusive and gives the better price'
                                       WHEN (v_best->0->>'stackable')::boolean
                                       THEN 'exclusive: the stackable offers (' || array_to_string(v_applied, ', ')
                                            || ') give the better price'
                                       ELSE 'exclusive: ' || v_winner || ' gives the better price' END)
               END ORDER BY n)
          INTO v_considered
          FROM jsonb_array_elements(v_considered) WITH ORDINALITY AS x(c, n);
    END IF;

    -- Each code given, and what became of it.
    IF cardinality(v_codes) > 0 THEN
        SELECT jsonb_agg(CASE
                   WHEN NOT v_matched ? code THEN jsonb_build_object('code', code, 'promotion', NULL, 'applied', false,
                        'reason', 'unknown_code', 'detail', 'no promotion has this code')
                   WHEN c.entry IS NULL OR c.entry->>'code' IS DISTINCT FROM code THEN jsonb_build_object('code', code,
                        'promotion', v_matched->code->>'promotion', 'applied', false, 'reason', 'duplicate_code',
                        'detail', 'another code for the same promotion was given')
                   ELSE jsonb_build_object('code', code, 'promotion', c.entry->>'id',
                        'applied', (c.entry->>'applied')::boolean, 'reason', c.entry->>'reason', 'detail', c.entry->>'detail')
               END ORDER BY code)
          INTO v_code_out
          FROM unnest(v_codes) code
          LEFT JOIN LATERAL (SELECT e AS entry FROM jsonb_array_elements(v_considered) e
                              WHERE e->>'id' = v_matched->code->>'promotion') c ON true;
    END IF;

    RETURN jsonb_build_object(
        'at', v_at,
        'customer', p_customer_id,
        'item', jsonb_strip_nulls(jsonb_build_object('kind', v_kind, 'plan', v_plan, 'cycle', v_cycle,
                                                     'package', v_package, 'bundle', v_bundle)),
        'components', v_components,
        'region', v_region,
        'currency', v_currency,
        'minor_units', v_units,
        'rounding', v_rounding,
        'list_minor', v_list,
        'list', minor_text(v_list, v_units),
        'discount_minor', v_list - v_best_final,
        'final_minor', v_best_final,
        'final', minor_text(v_best_final, v_units),
        'promotions', coalesce(v_considered, '[]'),
        'discounts', v_best,
        'codes', v_code_out,
        'extra_trial_days', v_best_days,
        'bonus_tokens', v_best_tok
    );
END
$$;

