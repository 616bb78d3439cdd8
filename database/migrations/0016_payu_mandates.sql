-- E-mandates Tariff creates itself, and pre-debit notices sent close to the debit date.
--
--   SELECT tariff.payment_checkout_mandate(p_customer_id => 'ck9x', p_item => '{"plan": "pro", "cycle": "monthly"}',
--                                          p_region => 'IN');
--   → the pending payment of payment_checkout, plus "mandate_terms": the standing-instruction (si=1) consent
--     PayU's checkout gets as si_details: billingAmount (the mandate's maximum), billingCycle, billingInterval,
--     paymentStartDate, paymentEndDate, billingRule, billingCurrency.
--
-- When that payment succeeds (settle_payment, from a verified webhook or ingest), its mihpayid becomes the
-- mandate's authpayuid: a row in `mandates`, active, replacing the subscription's earlier mandate. Price changes
-- that exceeded the earlier mandate's maximum (payu_actions 'new_mandate') are resolved by it, and their
-- pre-debit notices are scheduled against the new mandate.
--
-- Pre-debit notices (payu_actions 'pre_debit') are no longer sent by `tariff apply`: they wait for the send
-- window before their debit (payment_rules.pre_debit_notice), and `tariff tick` sends the due ones after its
-- transaction commits (publishers/payu/mandates.py), leasing each so that concurrent runs send it once.

-- ------------------------------------------------------------------------------------------- settings

-- tariff.yaml `payments.mandates`:
--   mandate_headroom_percent  the mandate's maximum is the recurring debit (price + tax) raised by this
--                             percentage, rounded up to a whole currency unit, so that later price increases
--                             up to it need no new mandate
--   mandate_valid_for         paymentEndDate = paymentStartDate + this
--   pre_debit_notice          a pre-debit notice goes out this long before its debit (at least the 24 hours
--                             PayU and RBI require; the notice is late, and is not sent, within 24 hours)
ALTER TABLE payment_rules
    ADD COLUMN mandate_headroom_percent numeric(7, 4) NOT NULL DEFAULT 25
        CHECK (mandate_headroom_percent >= 0 AND mandate_headroom_percent <= 1000),
    ADD COLUMN mandate_valid_for duration NOT NULL DEFAULT '10 years',
    ADD COLUMN pre_debit_notice duration NOT NULL DEFAULT '2 days'
        CHECK (pre_debit_notice::interval > interval '24 hours');

-- ------------------------------------------------------------------------------------------- payments

-- The standing-instruction consent a payment asks for (NULL: an ordinary payment). Keys as PayU's si_details,
-- plus max_amount_minor; the checkout form serialises them in this order, and that exact string is hashed.
ALTER TABLE payments ADD COLUMN mandate_terms jsonb CHECK (mandate_terms IS NULL OR jsonb_typeof(mandate_terms) = 'object');

-- ------------------------------------------------------------------------------------------- mandates

ALTER TABLE mandates ADD COLUMN billing_interval integer NOT NULL DEFAULT 1 CHECK (billing_interval > 0);
-- replaced: the customer authorised a newer mandate for the same subscription.
ALTER TABLE mandates DROP CONSTRAINT mandates_status_check;
ALTER TABLE mandates ADD CONSTRAINT mandates_status_check
    CHECK (status IN ('pending', 'active', 'revoked', 'expired', 'replaced'));
CREATE UNIQUE INDEX mandates_consent_payment ON mandates (consent_payment) WHERE consent_payment IS NOT NULL;

-- ------------------------------------------------------------------------------------------- payu_actions

--   debit_at        when the debit the notice announces happens (the renewal at which the new price applies)
--   status          pending → sending (leased by one sender) → done; back to pending with next_attempt_at
--                   after a failure; failed when the notice can no longer go out 24 hours before the debit;
--                   skipped when its mandate was replaced or revoked first
--   attempts        sends tried; detail holds the last answer or error, response PayU's last answer
ALTER TABLE payu_actions
    ADD COLUMN debit_at timestamptz,
    ADD COLUMN attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN next_attempt_at timestamptz,
    ADD COLUMN lease_token uuid,
    ADD COLUMN lease_until timestamptz,
    ADD COLUMN last_attempt_at timestamptz,
    ADD COLUMN response jsonb;
UPDATE payu_actions SET debit_at = debit_on::timestamptz WHERE debit_at IS NULL AND debit_on IS NOT NULL;
ALTER TABLE payu_actions DROP CONSTRAINT payu_actions_status_check;
ALTER TABLE payu_actions ADD CONSTRAINT payu_actions_status_check
    CHECK (status IN ('pending', 'sending', 'done', 'failed', 'skipped'));
CREATE INDEX payu_actions_due ON payu_actions (debit_at) WHERE kind = 'pre_debit' AND status IN ('pending', 'sending');

COMMENT ON COLUMN payments.mandate_terms IS 'The e-mandate (standing instruction) this payment asks consent for: PayU si_details and max_amount_minor.';
COMMENT ON COLUMN payu_actions.debit_at IS 'When the debit a pre-debit notice announces happens; the notice goes out payment_rules.pre_debit_notice before it.';

-- ------------------------------------------------------------------------------------------- checkout

-- What a customer consents to when a plan payment is also an e-mandate: the recurring debit is the price
-- version the payment buys plus the region's exclusive tax (promotions discount the first payment only); the
-- maximum adds the configured headroom and rounds up to a whole unit, never below this payment, and at most
-- the plan's own ceiling (plans/<id>.yaml payu.mandate.max_amount for the currency). A plan whose mandate
-- billing_rule is EXACT gets the recurring debit itself. A recurring debit above the plan's ceiling is refused.
-- Debits start when the paid period ends and may run for mandate_valid_for.
CREATE FUNCTION mandate_terms_for(p_payment payments) RETURNS jsonb
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_rules     payment_rules;
    v_cycle     billing_cycles;
    v_region    regions;
    v_units     integer;
    v_rounding  text;
    v_recurring bigint;
    v_unit      bigint;
    v_max       bigint;
    v_sub       subscriptions;
    v_from      timestamptz := p_payment.created_at;
    v_tz        text := coalesce((SELECT timezone FROM catalog_state), 'UTC');
    v_start     date;
    v_name      text;
    v_interval  integer;
    v_plan_rule text;
    v_ceiling   bigint;
BEGIN
    SELECT * INTO v_rules FROM payment_rules;
    SELECT * INTO v_cycle FROM billing_cycles WHERE id = p_payment.cycle;
    SELECT * INTO v_region FROM regions WHERE code = p_payment.region;
    SELECT minor_units, rounding INTO v_units, v_rounding FROM currencies WHERE code = p_payment.currency;
    SELECT amount_minor INTO v_recurring FROM price_versions WHERE id = p_payment.price_version_id;
    IF v_region.tax_percent > 0 AND NOT v_region.tax_inclusive THEN
        v_recurring := v_recurring + round_minor(v_recurring * v_region.tax_percent / 100, v_rounding);
    END IF;
    v_unit := (10::numeric ^ v_units)::bigint;
    SELECT coalesce(payu->'mandate'->>'billing_rule', 'MAX'),
           ((payu->'mandate'->'max_amount'->>p_payment.currency)::numeric * v_unit)::bigint
      INTO v_plan_rule, v_ceiling
      FROM plans WHERE id = p_payment.plan_id;
    IF v_ceiling IS NOT NULL AND v_recurring > v_ceiling THEN
        RAISE EXCEPTION 'plan % debits % % per cycle, above its mandate ceiling of % %', p_payment.plan_id,
            minor_text(v_recurring, v_units), p_payment.currency, minor_text(v_ceiling, v_units), p_payment.currency
            USING ERRCODE = 'check_violation',
                  HINT = format('raise payu.mandate.max_amount.%s in plans/%s.yaml, or sell it without --mandate',
                                p_payment.currency, p_payment.plan_id);
    END IF;
    IF v_plan_rule = 'EXACT' THEN
        v_max := v_recurring;
    ELSE
        v_max := ceil(greatest(v_recurring, p_payment.amount_minor) * (100 + v_rules.mandate_headroom_percent)
                      / 100 / v_unit)::bigint * v_unit;
        v_max := least(v_max, coalesce(v_ceiling, v_max));
    END IF;
    IF p_payment.purpose = 'renewal' THEN
        SELECT * INTO v_sub FROM subscriptions WHERE id = p_payment.subscription_id;
        v_from := greatest(v_sub.current_period_end, p_payment.created_at);
    END IF;
    v_start := (cycle_end(v_from, p_payment.cycle) AT TIME ZONE v_tz)::date;
    IF v_cycle.unit = 'month' AND v_cycle.every % 12 = 0 THEN
        v_name := 'YEARLY'; v_interval := v_cycle.every / 12;
    ELSIF v_cycle.unit = 'month' THEN
        v_name := 'MONTHLY'; v_interval := v_cycle.every;
    ELSIF v_cycle.every % 7 = 0 THEN
        v_name := 'WEEKLY'; v_interval := v_cycle.every / 7;
    ELSE
        v_name := 'DAILY'; v_interval := v_cycle.every;
    END IF;
    RETURN jsonb_build_object(
        'billingAmount', minor_text(v_max, v_units),
        'billingCurrency', p_payment.currency,
        'billingCycle', v_name,
        'billingInterval', v_interval,
        'paymentStartDate', to_char(v_start, 'YYYY-MM-DD'),
        'paymentEndDate', to_char((v_start + v_rules.mandate_valid_for::interval)::date, 'YYYY-MM-DD'),
        'billingRule', v_plan_rule,
        'max_amount_minor', v_max,
        'recurring_minor', v_recurring);
END
$$;

-- payment_checkout for a plan, as a standing-instruction consent: the same pricing and pending payment, with
-- the mandate's terms recorded on it and returned as "mandate_terms". Refused for packages and bundles
-- (nothing recurs) and for free plans.
CREATE FUNCTION payment_checkout_mandate(
    p_customer_id text,
    p_item        jsonb,
    p_region      text DEFAULT NULL,
    p_codes       text[] DEFAULT NULL,
    p_txnid       text DEFAULT NULL,
    p_productinfo text DEFAULT NULL,
    p_environment text DEFAULT NULL,
    p_actor       text DEFAULT NULL,
    p_at          timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_result  jsonb;
    v_payment payments;
    v_terms   jsonb;
BEGIN
    IF jsonb_typeof(p_item) <> 'object' OR NOT p_item ? 'plan' THEN
        RAISE EXCEPTION 'an e-mandate is for a plan: % does not recur', coalesce(p_item::text, 'nothing')
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'pay packages and bundles with an ordinary checkout (leave out --mandate)';
    END IF;
    v_result := payment_checkout(p_customer_id, p_item, p_region, p_codes, p_txnid, p_productinfo,
                                 p_environment, p_actor, p_at);
    SELECT * INTO v_payment FROM payments WHERE id = v_result->>'id';
    v_terms := mandate_terms_for(v_payment);
    UPDATE payments SET mandate_terms = v_terms WHERE id = v_payment.id;
    RETURN v_result || jsonb_build_object('mandate_terms', v_terms);
END
$$;

-- ------------------------------------------------------------------------------------------- results

-- A consent payment that succeeded (settle_payment sets status, mihpayid and, once fulfilled, the
-- subscription): its mihpayid is the authpayuid of a new active mandate, which replaces the subscription's
-- earlier one. Price changes waiting for a new mandate (payu_actions 'new_mandate' whose debit is still
-- ahead) are resolved: their pre-debit notice is scheduled against the new mandate when the amount fits.
-- A trigger, so the app's own settle_payment calls record mandates too; keyed by the consent payment, so
-- replays and the second update of the same settle change nothing.
CREATE FUNCTION record_consent_mandate() RETURNS trigger
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_mandate mandates;
    v_action  payu_actions;
BEGIN
    IF NEW.mandate_terms IS NULL OR NEW.paid_at IS NULL OR NEW.subscription_id IS NULL OR NEW.mihpayid IS NULL
       OR EXISTS (SELECT 1 FROM mandates WHERE consent_payment = NEW.id) THEN
        RETURN NULL;
    END IF;
    -- Not the mandate this consent created, when the app recorded it already under the same authpayuid.
    UPDATE mandates SET status = 'replaced', updated_at = NEW.paid_at
     WHERE subscription_id = NEW.subscription_id AND status IN ('pending', 'active')
       AND authpayuid IS DISTINCT FROM NEW.mihpayid;
    INSERT INTO mandates (customer_id, subscription_id, consent_payment, authpayuid, currency, max_amount_minor,
                          billing_cycle, billing_interval, billing_rule, status, starts_on, ends_on,
                          created_at, updated_at)
    VALUES (NEW.customer_id, NEW.subscription_id, NEW.id, NEW.mihpayid, NEW.currency,
            (NEW.mandate_terms->>'max_amount_minor')::bigint, NEW.mandate_terms->>'billingCycle',
            (NEW.mandate_terms->>'billingInterval')::integer, coalesce(NEW.mandate_terms->>'billingRule', 'MAX'),
            'active', (NEW.mandate_terms->>'paymentStartDate')::date, (NEW.mandate_terms->>'paymentEndDate')::date,
            NEW.paid_at, NEW.paid_at)
    ON CONFLICT (authpayuid) DO NOTHING
    RETURNING * INTO v_mandate;
    IF v_mandate.id IS NULL THEN
        RETURN NULL;
    END IF;
    -- Pending notices of the mandates just replaced cannot be used for debits on the new one.
    UPDATE payu_actions SET status = 'skipped', done_at = NEW.paid_at,
           detail = 'mandate replaced by ' || v_mandate.authpayuid || ' before the notice was sent'
     WHERE subscription_id = NEW.subscription_id AND kind = 'pre_debit' AND status = 'pending'
       AND mandate_id <> v_mandate.id;
    FOR v_action IN
        SELECT * FROM payu_actions
         WHERE subscription_id = NEW.subscription_id AND kind = 'new_mandate' AND status = 'pending'
           AND coalesce(debit_at, debit_on::timestamptz) > NEW.paid_at
         ORDER BY id FOR UPDATE
    LOOP
        IF v_action.amount_minor <= v_mandate.max_amount_minor THEN
            INSERT INTO payu_actions (kind, subscription_id, mandate_id, revision_id, amount_minor, currency,
                                      debit_on, debit_at, created_at)
            VALUES ('pre_debit', v_action.subscription_id, v_mandate.id, v_action.revision_id,
                    v_action.amount_minor, v_action.currency, v_action.debit_on, v_action.debit_at, NEW.paid_at)
            ON CONFLICT (kind, subscription_id, mandate_id, amount_minor) DO NOTHING;
            UPDATE payu_actions SET status = 'done', done_at = NEW.paid_at,
                   detail = 'the customer authorised mandate ' || v_mandate.authpayuid
             WHERE id = v_action.id;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

CREATE TRIGGER payments_consent_mandate
AFTER UPDATE OF status, subscription_id, mihpayid ON payments
FOR EACH ROW WHEN (NEW.mandate_terms IS NOT NULL AND NEW.paid_at IS NOT NULL)
EXECUTE FUNCTION record_consent_mandate();
