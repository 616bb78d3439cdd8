-- Payments through PayU India: what Tariff priced and sent to checkout, what PayU reported back, refunds,
-- invoices, e-mandates and dunning. The merchant salt never reaches the database: hashes are computed and
-- checked in Python (publishers/payu), the functions here take results that were already verified.
--
--   SELECT tariff.payment_checkout(p_customer_id => 'ck9x…', p_item => '{"plan": "pro", "cycle": "annual"}',
--                                  p_region => 'IN', p_codes => ARRAY['PGLAUNCH7Q2K9W']);
--   SELECT tariff.settle_payment(p_txnid => 'PG3F…', p_status => 'success', p_mihpayid => '403993715…',
--                                p_amount => '17688.20', p_source => 'webhook', p_payload => '{…}');
--
-- Money is bigint minor units with the currency next to it, as everywhere in Tariff. Every function is
-- idempotent: a retried webhook, a replayed file or two receivers racing change nothing twice, because every
-- event is stored once under a dedupe key and every consequence (grant, redemption, invoice) has its own key.

-- ------------------------------------------------------------------------------------------------ rules

-- How payments behave, published by `tariff apply` from tariff.yaml `payments` (a single row; the defaults
-- below hold until a config with a `payments` block is applied).
CREATE TABLE payment_rules (
    singleton               boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    -- Currencies PayU may charge; a price in any other currency is refused at checkout.
    currencies              text[] NOT NULL DEFAULT '{INR}',
    -- On a refund, take back the credits the payment granted (proportionally for a partial refund).
    revoke_tokens_on_refund boolean NOT NULL DEFAULT true,
    -- Dunning: reminders at these offsets after a failed or missing payment, access kept for the grace
    -- period, then the after-grace action.
    dunning_retries         text[] NOT NULL DEFAULT '{1 day,3 days,5 days}',
    dunning_grace           duration NOT NULL DEFAULT '7 days',
    dunning_status          text NOT NULL DEFAULT 'past_due' CHECK (dunning_status IN ('past_due', 'canceled')),
    dunning_downgrade_to    text,                     -- plan id the customer moves to after grace; NULL: none
    dunning_suspend_tokens  boolean NOT NULL DEFAULT false,
    dunning_channel         text NOT NULL DEFAULT 'email' CHECK (dunning_channel <> ''),
    invoice_prefix          text NOT NULL DEFAULT 'INV-' CHECK (invoice_prefix ~ '^[A-Za-z0-9/_-]{0,16}$'),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
INSERT INTO payment_rules DEFAULT VALUES;

-- ---------------------------------------------------------------------------------------------- payments

-- One row per checkout attempt: the priced item, the amount sent to PayU (amount_text is the exact string
-- that was hashed and posted), and its lifecycle. A txnid is never reused: a retry is a new payment.
--   kind        plan | package | bundle — what was bought (plan_id + cycle + price_version_id, package_id +
--               package_price_version_id, or bundle_id = the bundle promotion's id)
--   purpose     new (first purchase of the item), renewal (an existing subscription's next period)
--   net_minor   what Tariff charges for the item after promotions (the quote's final price)
--   tax_minor   the region's tax on it (0 when the region has none or prices include it)
--   amount_minor the amount charged = net + tax (exclusive tax), or net (inclusive tax)
--   status      pending → success | failure | expired; success → partially_refunded → refunded
CREATE TABLE payments (
    id                       text PRIMARY KEY DEFAULT ('pay_' || replace(gen_random_uuid()::text, '-', '')),
    txnid                    text NOT NULL UNIQUE CHECK (txnid ~ '^[A-Za-z0-9]{1,25}$'),
    mihpayid                 text,
    provider                 text NOT NULL DEFAULT 'payu' CHECK (provider = 'payu'),
    environment              text,
    customer_id              text NOT NULL REFERENCES customers,
    kind                     text NOT NULL CHECK (kind IN ('plan', 'package', 'bundle')),
    purpose                  text NOT NULL DEFAULT 'new' CHECK (purpose IN ('new', 'renewal')),
    plan_id                  text REFERENCES plans,
    cycle                    text REFERENCES billing_cycles,
    price_version_id         bigint REFERENCES price_versions,
    package_id               text REFERENCES token_packages,
    package_price_version_id bigint REFERENCES package_price_versions,
    bundle_id                text REFERENCES promotions,
    subscription_id          text REFERENCES subscriptions,   -- renewed, or created when the payment succeeded
    region                   text REFERENCES regions,
    currency                 currency_code NOT NULL REFERENCES currencies,
    list_minor               bigint NOT NULL CHECK (list_minor >= 0),
    discount_minor           bigint NOT NULL DEFAULT 0 CHECK (discount_minor >= 0),
    net_minor                bigint NOT NULL CHECK (net_minor >= 0),
    tax_name                 text,
    tax_percent              numeric(7, 4),
    tax_inclusive            boolean NOT NULL DEFAULT false,
    tax_minor                bigint NOT NULL DEFAULT 0 CHECK (tax_minor >= 0),
    amount_minor             bigint NOT NULL CHECK (amount_minor > 0),
    amount_text              text NOT NULL CHECK (amount_text ~ '^[0-9]+(\.[0-9]{1,4})?$'),
    codes                    text[] NOT NULL DEFAULT '{}',
    promotion_ids            text[] NOT NULL DEFAULT '{}',    -- promotions the quote applied
    quote                    jsonb NOT NULL CHECK (jsonb_typeof(quote) = 'object'),
    redemption_key           text NOT NULL UNIQUE,            -- redeem()'s idempotency key for this payment
    redemption_status        text CHECK (redemption_status IN ('redeemed', 'refused', 'none', 'reversed')),
    productinfo              text NOT NULL CHECK (productinfo <> '' AND length(productinfo) <= 100),
    status                   text NOT NULL DEFAULT 'pending'
                             CHECK (status IN ('pending', 'success', 'failure', 'expired', 'partially_refunded',
                                               'refunded')),
    refunded_minor           bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    tokens_granted           bigint NOT NULL DEFAULT 0 CHECK (tokens_granted >= 0),
    tokens_revoked           bigint NOT NULL DEFAULT 0 CHECK (tokens_revoked >= 0),
    fulfilment_error         text,        -- paid, but a consequence failed (e.g. package no longer purchasable)
    error_message            text,        -- PayU's reason for a failure
    payment_mode             text,        -- CC, DC, NB, UPI … as PayU reports it
    actor                    text,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    paid_at                  timestamptz,
    failed_at                timestamptz,
    CHECK (net_minor <= list_minor),
    CHECK (refunded_minor <= amount_minor),
    CHECK ((kind = 'plan') = (plan_id IS NOT NULL AND cycle IS NOT NULL AND price_version_id IS NOT NULL)),
    CHECK ((kind = 'package') = (package_id IS NOT NULL AND package_price_version_id IS NOT NULL)),
    CHECK ((kind = 'bundle') = (bundle_id IS NOT NULL)),
    CHECK ((status IN ('success', 'partially_refunded', 'refunded')) = (paid_at IS NOT NULL)),
    CHECK ((status = 'refunded') = (refunded_minor = amount_minor AND paid_at IS NOT NULL))
);
CREATE INDEX payments_customer ON payments (customer_id, created_at);
CREATE INDEX payments_status ON payments (status, created_at);
CREATE INDEX payments_paid ON payments (paid_at) WHERE paid_at IS NOT NULL;
CREATE INDEX payments_subscription ON payments (subscription_id) WHERE subscription_id IS NOT NULL;
CREATE INDEX payments_mihpayid ON payments (mihpayid) WHERE mihpayid IS NOT NULL;

-- Every payment result and refund callback Tariff accepted, stored once under its dedupe key
-- ('payment:<txnid>:<status>' or 'refund:<request_id>:<status>'), with the raw payload as received (the
-- merchant key and hash included: they are not secret; the salt never is in a payload). Events that failed
-- hash verification or were malformed are not stored: nobody can occupy a dedupe key with a forged event.
--   source   webhook | browser | ingest | reconcile | refund (the refund command's own answers)
--   verified the result was confirmed with PayU's verify_payment / check_action_status
--   outcome  applied (changed the payment), duplicate-free but ignored (e.g. failure after success),
--            fulfilment_failed (paid, but a consequence failed: see payments.fulfilment_error)
CREATE TABLE payment_events (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    dedupe_key  text NOT NULL UNIQUE CHECK (dedupe_key <> ''),
    kind        text NOT NULL CHECK (kind IN ('payment', 'refund')),
    txnid       text NOT NULL,
    payment_id  text REFERENCES payments,     -- NULL: a txnid Tariff never issued (reported by reconcile)
    refund_id   bigint,                       -- refunds(id) for refund events
    status      text NOT NULL CHECK (status <> ''),
    mihpayid    text,
    request_id  text,
    amount_text text,
    source      text NOT NULL CHECK (source IN ('webhook', 'browser', 'ingest', 'reconcile', 'refund')),
    verified    boolean NOT NULL DEFAULT false,
    outcome     text NOT NULL CHECK (outcome IN ('applied', 'ignored', 'fulfilment_failed', 'unknown_txnid')),
    detail      text,
    payload     jsonb NOT NULL CHECK (jsonb_typeof(payload) = 'object'),
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_events_payment ON payment_events (payment_id, id);
CREATE INDEX payment_events_txnid ON payment_events (txnid);
CREATE INDEX payment_events_received ON payment_events (received_at);

-- ----------------------------------------------------------------------------------------------- refunds

-- One row per refund Tariff asked PayU for. The row (with its unique token) is committed before PayU is
-- called, so a refund interrupted by a network failure is retried with the same token and PayU refuses a
-- second refund under it (error 106) instead of paying twice.
--   status     requested (sent or being sent, no answer yet) → queued | in_progress → success | failure;
--              error: PayU refused the request (nothing refunded)
--   history    [{status, at, detail}] every state the refund went through, oldest first
CREATE TABLE refunds (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    payment_id      text NOT NULL REFERENCES payments,
    token           text NOT NULL UNIQUE CHECK (token ~ '^[A-Za-z0-9]{1,23}$'),
    request_id      text UNIQUE,
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    currency        currency_code NOT NULL,
    amount_text     text NOT NULL,
    reason          text NOT NULL CHECK (btrim(reason) <> ''),
    status          text NOT NULL DEFAULT 'requested'
                    CHECK (status IN ('requested', 'queued', 'in_progress', 'success', 'failure', 'error')),
    history         jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(history) = 'array'),
    error_code      text,
    error_message   text,
    bank_ref_num    text,
    tokens_revoked  bigint NOT NULL DEFAULT 0 CHECK (tokens_revoked >= 0),
    actor           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    settled_at      timestamptz,
    CHECK ((status IN ('success', 'failure', 'error')) = (settled_at IS NOT NULL))
);
CREATE INDEX refunds_payment ON refunds (payment_id);
CREATE INDEX refunds_open ON refunds (status) WHERE status IN ('requested', 'queued', 'in_progress');
ALTER TABLE payment_events ADD FOREIGN KEY (refund_id) REFERENCES refunds;

-- ---------------------------------------------------------------------------------------------- invoices

-- One invoice per successful payment, written when it succeeds, with the region's tax as configured then.
-- Numbers are gap-free per prefix only by convention of the sequence (a rolled-back payment burns one).
CREATE SEQUENCE invoice_numbers;
CREATE TABLE invoices (
    id             bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    number         text NOT NULL UNIQUE,
    payment_id     text NOT NULL UNIQUE REFERENCES payments,
    customer_id    text NOT NULL REFERENCES customers,
    currency       currency_code NOT NULL,
    net_minor      bigint NOT NULL CHECK (net_minor >= 0),
    tax_name       text,
    tax_percent    numeric(7, 4),
    tax_minor      bigint NOT NULL CHECK (tax_minor >= 0),
    total_minor    bigint NOT NULL CHECK (total_minor >= 0),
    refunded_minor bigint NOT NULL DEFAULT 0 CHECK (refunded_minor >= 0),
    items          jsonb NOT NULL CHECK (jsonb_typeof(items) = 'array'),
    status         text NOT NULL DEFAULT 'paid' CHECK (status IN ('paid', 'partially_refunded', 'refunded')),
    issued_at      timestamptz NOT NULL,
    CHECK (refunded_minor <= total_minor),
    CHECK ((tax_name IS NULL) = (tax_percent IS NULL))
);
CREATE INDEX invoices_customer ON invoices (customer_id, issued_at);
CREATE INDEX invoices_issued ON invoices (issued_at);

-- ---------------------------------------------------------------------------------------------- mandates

-- E-mandates (PayU standing instructions): the customer authorised debits up to max_amount_minor per
-- billing cycle; the consent payment's mihpayid is the authpayuid later debits name. A price above the
-- maximum cannot be debited: the customer must authorise a new mandate.
CREATE TABLE mandates (
    id               bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    customer_id      text NOT NULL REFERENCES customers,
    subscription_id  text REFERENCES subscriptions,
    consent_payment  text REFERENCES payments,
    authpayuid       text UNIQUE,
    currency         currency_code NOT NULL,
    max_amount_minor bigint NOT NULL CHECK (max_amount_minor > 0),
    billing_cycle    text NOT NULL CHECK (billing_cycle IN ('DAILY', 'WEEKLY', 'MONTHLY', 'YEARLY', 'ONCE', 'ADHOC')),
    billing_rule     text NOT NULL DEFAULT 'MAX' CHECK (billing_rule IN ('MAX', 'EXACT')),
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'active', 'revoked', 'expired')),
    starts_on        date,
    ends_on          date,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'pending' OR authpayuid IS NOT NULL)
);
CREATE INDEX mandates_subscription ON mandates (subscription_id, status);
CREATE INDEX mandates_customer ON mandates (customer_id);

-- What a price change means for PayU, recorded by `tariff apply` and performed through the PayU client when
-- the environment has PayU configured:
--   new_mandate   the new price exceeds the subscriber's mandate maximum: ask for a new mandate
--   pre_debit     the next debit carries a new amount: notify PayU (pre_debit_SI) with it
CREATE TABLE payu_actions (
    id              bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    kind            text NOT NULL CHECK (kind IN ('new_mandate', 'pre_debit')),
    subscription_id text NOT NULL REFERENCES subscriptions,
    mandate_id      bigint NOT NULL REFERENCES mandates,
    revision_id     bigint REFERENCES revisions,
    amount_minor    bigint NOT NULL CHECK (amount_minor >= 0),
    currency        currency_code NOT NULL,
    debit_on        date,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'done', 'failed', 'skipped')),
    request_id      text,
    detail          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    done_at         timestamptz,
    UNIQUE (kind, subscription_id, mandate_id, amount_minor)
);
CREATE INDEX payu_actions_pending ON payu_actions (status) WHERE status = 'pending';

-- ----------------------------------------------------------------------------------------------- dunning

-- A subscription whose payment failed (or whose paid period ended unpaid): the reminders sent, when the next
-- one is due, when grace ends, and what was done after it. At most one open case per subscription; a later
-- successful payment for the subscription recovers it (restoring suspended credits).
--   status   open → recovered | lapsed (the after-grace action was taken) | canceled
CREATE TABLE dunning_cases (
    id                bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    subscription_id   text NOT NULL REFERENCES subscriptions,
    customer_id       text NOT NULL REFERENCES customers,
    payment_id        text REFERENCES payments,           -- the failed payment that opened it, if any
    reason            text NOT NULL CHECK (reason IN ('payment_failed', 'renewal_unpaid')),
    status            text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'recovered', 'lapsed', 'canceled')),
    reminders_sent    integer NOT NULL DEFAULT 0 CHECK (reminders_sent >= 0),
    next_reminder_at  timestamptz,
    grace_ends_at     timestamptz NOT NULL,
    tokens_suspended  bigint NOT NULL DEFAULT 0 CHECK (tokens_suspended >= 0),
    downgraded_to     text,                               -- subscription id on the plan moved to
    actions           jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(actions) = 'array'),
    opened_at         timestamptz NOT NULL,
    closed_at         timestamptz,
    recovered_by      text REFERENCES payments,
    CHECK ((status = 'open') = (closed_at IS NULL))
);
CREATE UNIQUE INDEX dunning_cases_one_open ON dunning_cases (subscription_id) WHERE status = 'open';
CREATE INDEX dunning_cases_due ON dunning_cases (next_reminder_at) WHERE status = 'open';
CREATE INDEX dunning_cases_grace ON dunning_cases (grace_ends_at) WHERE status = 'open';

COMMENT ON TABLE payment_rules IS 'How payments behave: PayU currencies, refunds, dunning, invoice numbers (tariff.yaml payments).';
COMMENT ON TABLE payments IS 'One row per checkout attempt: priced item, amount sent to PayU, lifecycle, refunds so far.';
COMMENT ON TABLE payment_events IS 'PayU payment results and refund callbacks accepted, stored once per dedupe key, raw payload kept.';
COMMENT ON TABLE refunds IS 'Refunds asked of PayU: unique token, request id, amount, status history.';
COMMENT ON TABLE invoices IS 'One invoice per successful payment: net, tax (name, percent, amount) and total in minor units.';
COMMENT ON TABLE mandates IS 'PayU e-mandates (standing instructions): authpayuid, maximum amount, cycle, status.';
COMMENT ON TABLE payu_actions IS 'PayU consequences of price changes recorded by apply: new mandates needed, pre-debit notifications.';
COMMENT ON TABLE dunning_cases IS 'Failed or unpaid renewals: reminders sent, grace period, after-grace action, recovery.';

-- ---------------------------------------------------------------------------------------------- checkout

-- The period after p_start for a billing cycle, in the project's time zone (as register_subscription does).
CREATE FUNCTION cycle_end(p_start timestamptz, p_cycle text) RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path FROM CURRENT
AS $$
DECLARE
    v_cycle billing_cycles;
    v_tz    text := coalesce((SELECT timezone FROM catalog_state), 'UTC');
BEGIN
    SELECT * INTO v_cycle FROM billing_cycles WHERE id = p_cycle;
    RETURN CASE WHEN v_cycle.unit = 'month'
                THEN ((p_start AT TIME ZONE v_tz) + make_interval(months => v_cycle.every)) AT TIME ZONE v_tz
                ELSE ((p_start AT TIME ZONE v_tz) + make_interval(days => v_cycle.every)) AT TIME ZONE v_tz END;
END
$$;

-- Price one item for a customer with promotions applied and record a pending payment for it; returns the
-- payment as jsonb with the fields a PayU checkout form needs except the hash (txnid, amount_text,
-- productinfo, email, firstname, udf1..udf5), which the caller signs with the merchant salt (Tariff's Python
-- API does: publishers/payu/checkout.py). A customer who already holds the plan and cycle renews it at the
-- price version they pay (grandfathered prices stay); promotions apply to new purchases only.
-- Refused with a clear error: unknown customer or item, a code that does not apply, a currency PayU is not
-- configured to charge (payment_rules.currencies), a package the customer's plan may not buy, a free item.
CREATE FUNCTION payment_checkout(
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
    v_at        timestamptz := coalesce(p_at, now());
    v_rules     payment_rules;
    v_customer  customers;
    v_sub       subscriptions;
    v_quote     jsonb;
    v_kind      text;
    v_purpose   text := 'new';
    v_currency  text;
    v_region    regions;
    v_units     integer;
    v_rounding  text;
    v_list      bigint;
    v_net       bigint;
    v_tax       bigint := 0;
    v_amount    bigint;
    v_version   bigint;
    v_pversion  bigint;
    v_bad       jsonb;
    v_plan      text;
    v_package   token_packages;
    v_info      text := nullif(btrim(p_productinfo), '');
    v_txnid     text := nullif(btrim(p_txnid), '');
    v_codes     text[] := ARRAY(SELECT DISTINCT upper(btrim(c)) FROM unnest(coalesce(p_codes, '{}')) c
                                 WHERE btrim(c) <> '' ORDER BY 1);
    v_payment   payments;
    v_id        text := 'pay_' || replace(gen_random_uuid()::text, '-', '');
BEGIN
    SELECT * INTO v_rules FROM payment_rules;
    SELECT * INTO v_customer FROM customers WHERE id = p_customer_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown customer "%"', p_customer_id
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'register the customer first with register_customer(); Tariff never creates customers implicitly';
    END IF;
    IF v_customer.email IS NULL THEN
        RAISE EXCEPTION 'customer "%" has no email address, which PayU checkout requires', p_customer_id
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'register it with register_customer(p_id => …, p_email => …)';
    END IF;
    IF v_txnid IS NOT NULL AND v_txnid !~ '^[A-Za-z0-9]{1,25}$' THEN
        RAISE EXCEPTION 'invalid txnid "%"', v_txnid
            USING ERRCODE = 'invalid_parameter_value', HINT = 'PayU txnids are 1 to 25 letters and digits; leave it out to get a fresh one';
    END IF;
    IF v_txnid IS NOT NULL AND EXISTS (SELECT 1 FROM payments WHERE txnid = v_txnid) THEN
        RAISE EXCEPTION 'txnid "%" was already used for a payment', v_txnid
            USING ERRCODE = 'unique_violation', HINT = 'every checkout attempt needs a new txnid; leave it out to get a fresh one';
    END IF;

    -- A renewal: the customer already holds this plan and cycle.
    IF p_item ? 'plan' AND jsonb_typeof(p_item) = 'object' THEN
        SELECT * INTO v_sub FROM subscriptions
         WHERE customer_id = p_customer_id AND plan_id = p_item->>'plan' AND cycle = p_item->>'cycle'
           AND status IN ('trialing', 'active', 'past_due')
         ORDER BY current_period_end DESC LIMIT 1;
    END IF;
    IF v_sub.id IS NOT NULL AND (SELECT amount_minor FROM price_versions WHERE id = v_sub.price_version_id) > 0 THEN
        IF cardinality(v_codes) > 0 THEN
            RAISE EXCEPTION 'customer "%" already subscribes to % (%): promotion codes apply to new purchases only',
                p_customer_id, v_sub.plan_id, v_sub.cycle
                USING ERRCODE = 'invalid_parameter_value', HINT = 'leave out --code to renew at the price the customer pays';
        END IF;
        v_purpose := 'renewal';
        v_kind := 'plan';
        v_version := v_sub.price_version_id;
        SELECT pv.amount_minor, pv.currency INTO v_list, v_currency FROM price_versions pv WHERE pv.id = v_version;
        SELECT * INTO v_region FROM regions WHERE code = coalesce(v_sub.region, v_customer.region);
        v_net := v_list;
        v_quote := jsonb_build_object('at', v_at, 'customer', p_customer_id,
            'item', jsonb_build_object('kind', 'plan', 'plan', v_sub.plan_id, 'cycle', v_sub.cycle),
            'region', v_region.code, 'currency', v_currency, 'list_minor', v_list, 'discount_minor', 0,
            'final_minor', v_list, 'discounts', '[]'::jsonb, 'renewal_of', v_sub.id);
    ELSE
        v_quote := quote(p_customer_id, p_item, p_region, v_codes, v_at);
        SELECT jsonb_agg(c) INTO v_bad FROM jsonb_array_elements(v_quote->'codes') c
         WHERE NOT (c->>'applied')::boolean AND c->>'reason' NOT LIKE 'not\_stackable\_with:%';
        IF v_bad IS NOT NULL THEN
            RAISE EXCEPTION 'code % does not apply: %', v_bad->0->>'code',
                concat_ws(' — ', v_bad->0->>'reason', v_bad->0->>'detail')
                USING ERRCODE = 'invalid_parameter_value', HINT = 'check the code with tariff promo check CODE, or leave it out';
        END IF;
        v_kind := v_quote->'item'->>'kind';
        v_currency := v_quote->>'currency';
        v_list := (v_quote->>'list_minor')::bigint;
        v_net := (v_quote->>'final_minor')::bigint;
        SELECT * INTO v_region FROM regions WHERE code = v_quote->>'region';
        IF v_kind = 'plan' THEN
            SELECT id INTO v_version FROM price_versions
             WHERE plan_id = v_quote->'item'->>'plan' AND cycle = v_quote->'item'->>'cycle' AND currency = v_currency
               AND valid_to IS NULL AND (region = v_region.code OR region IS NULL)
             ORDER BY region IS NULL LIMIT 1;
        ELSIF v_kind = 'package' THEN
            SELECT * INTO v_package FROM token_packages WHERE id = v_quote->'item'->>'package';
            SELECT id INTO v_pversion FROM package_price_versions
             WHERE package_id = v_package.id AND currency = v_currency AND valid_to IS NULL
               AND (region = v_region.code OR region IS NULL)
             ORDER BY region IS NULL LIMIT 1;
            v_plan := token_limits(p_customer_id, v_at)->>'plan';
            IF v_package.purchasable_by IS NOT NULL AND NOT (coalesce(v_plan, '') = ANY (v_package.purchasable_by)) THEN
                RAISE EXCEPTION 'token package "%" is for plans %, and customer "%" is on %', v_package.id,
                    array_to_string(v_package.purchasable_by, ', '), p_customer_id, coalesce('plan ' || v_plan, 'no plan')
                    USING ERRCODE = 'check_violation', HINT = 'upgrade the plan first, or choose another package';
            END IF;
        END IF;
    END IF;

    IF NOT (v_currency = ANY (v_rules.currencies)) THEN
        RAISE EXCEPTION 'PayU is not configured to charge %: the % price for region % is in %', v_currency,
            coalesce(v_quote->'item'->>'plan', v_quote->'item'->>'package', v_quote->'item'->>'bundle'),
            v_region.code, v_currency
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('PayU India charges %s; sell in a region priced in it (--region IN), or add %s to payments.currencies in tariff.yaml once the PayU account accepts it',
                                array_to_string(v_rules.currencies, ', '), v_currency);
    END IF;
    IF v_net <= 0 THEN
        RAISE EXCEPTION 'nothing to pay: the price after promotions is 0'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'register free subscriptions with register_subscription(); PayU only takes payments';
    END IF;

    SELECT minor_units, rounding INTO v_units, v_rounding FROM currencies WHERE code = v_currency;
    IF v_region.tax_percent IS NOT NULL AND v_region.tax_percent > 0 THEN
        IF v_region.tax_inclusive THEN
            v_tax := v_net - round_minor(v_net / (1 + v_region.tax_percent / 100), v_rounding);
            v_amount := v_net;
        ELSE
            v_tax := round_minor(v_net * v_region.tax_percent / 100, v_rounding);
            v_amount := v_net + v_tax;
        END IF;
    ELSE
        v_amount := v_net;
    END IF;

    v_info := coalesce(v_info, CASE v_kind
        WHEN 'plan' THEN (SELECT coalesce(p.payu->>'productinfo', p.name) || ' (' || (v_quote->'item'->>'cycle') || ')'
                            FROM plans p WHERE p.id = v_quote->'item'->>'plan')
        WHEN 'package' THEN v_package.name
        ELSE (SELECT name FROM promotions WHERE id = v_quote->'item'->>'bundle') END);

    INSERT INTO payments (id, txnid, environment, customer_id, kind, purpose, plan_id, cycle, price_version_id,
                          package_id, package_price_version_id, bundle_id, subscription_id, region, currency,
                          list_minor, discount_minor, net_minor, tax_name, tax_percent, tax_inclusive, tax_minor,
                          amount_minor, amount_text, codes, promotion_ids, quote, redemption_key, productinfo,
                          actor, created_at, updated_at)
    VALUES (v_id, coalesce(v_txnid, 'T' || upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 24))),
            nullif(btrim(p_environment), ''), p_customer_id, v_kind, v_purpose,
            v_quote->'item'->>'plan', v_quote->'item'->>'cycle', v_version,
            v_quote->'item'->>'package', v_pversion, v_quote->'item'->>'bundle', v_sub.id, v_region.code, v_currency,
            v_list, v_list - v_net, v_net, v_region.tax_name, v_region.tax_percent, v_region.tax_inclusive, v_tax,
            v_amount, minor_text(v_amount, v_units), v_codes,
            ARRAY(SELECT d->>'promotion' FROM jsonb_array_elements(coalesce(v_quote->'discounts', '[]')) d),
            v_quote, 'payment:' || v_id, left(regexp_replace(v_info, '[|]', '/', 'g'), 100),
            nullif(btrim(p_actor), ''), v_at, v_at)
    RETURNING * INTO v_payment;

    RETURN to_jsonb(v_payment) || jsonb_build_object(
        'email', v_customer.email,
        'firstname', left(coalesce(nullif(btrim(v_customer.attributes->>'firstname'), ''),
                                   nullif(btrim(split_part(v_customer.attributes->>'name', ' ', 1)), ''),
                                   split_part(v_customer.email, '@', 1)), 60),
        'phone', coalesce(v_customer.attributes->>'phone', ''),
        'minor_units', v_units);
END
$$;

-- ---------------------------------------------------------------------------------------------- results

-- Put the customer on a plan after a payment: renew the subscription the payment names (its next period, on
-- the price version it pays), or end the customer's other live subscriptions and start one on the paid
-- version. Closes an open dunning case of the subscription as recovered, giving back suspended credits.
CREATE FUNCTION activate_paid_plan(
    p_payment payments, p_plan text, p_cycle text, p_version bigint, p_at timestamptz
) RETURNS text
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_sub   subscriptions;
    v_start timestamptz;
    v_case  dunning_cases;
    v_id    text;
BEGIN
    IF p_payment.purpose = 'renewal' THEN
        SELECT * INTO v_sub FROM subscriptions WHERE id = p_payment.subscription_id FOR UPDATE;
        v_start := CASE WHEN v_sub.current_period_end >= p_at THEN v_sub.current_period_end ELSE p_at END;
        UPDATE subscriptions
           SET status = 'active', current_period_start = v_start, current_period_end = cycle_end(v_start, cycle),
               canceled_at = NULL, updated_at = p_at
         WHERE id = v_sub.id;
        v_id := v_sub.id;
    ELSE
        UPDATE subscriptions SET status = 'canceled', canceled_at = p_at, updated_at = p_at
         WHERE customer_id = p_payment.customer_id AND status IN ('trialing', 'active', 'past_due');
        UPDATE dunning_cases d SET status = 'canceled', closed_at = p_at,
               actions = actions || jsonb_build_array(jsonb_build_object('at', p_at, 'action', 'superseded',
                                                                         'by', p_payment.id))
         WHERE d.customer_id = p_payment.customer_id AND d.status = 'open';
        v_id := register_subscription(p_customer_id => p_payment.customer_id, p_plan_id => p_plan,
                                      p_cycle => p_cycle, p_price_version_id => p_version, p_status => 'active',
                                      p_current_period_start => p_at, p_region => p_payment.region)->>'id';
    END IF;
    SELECT * INTO v_case FROM dunning_cases WHERE subscription_id = v_id AND status = 'open' FOR UPDATE;
    IF FOUND THEN
        UPDATE dunning_cases SET status = 'recovered', closed_at = p_at, recovered_by = p_payment.id,
               actions = actions || jsonb_build_array(jsonb_build_object('at', p_at, 'action', 'recovered',
                                                                         'payment', p_payment.id))
         WHERE id = v_case.id;
        IF v_case.tokens_suspended > 0 THEN
            PERFORM grant_tokens(p_payment.customer_id, v_case.tokens_suspended, 'admin', NULL,
                                 'credits restored after payment ' || p_payment.txnid, 'tariff payments',
                                 'dunning:' || v_case.id || ':restore', p_at => p_at);
        END IF;
    END IF;
    RETURN v_id;
END
$$;

-- Everything a successful payment buys, in one go: the promotion redemption (judged at the moment the
-- payment was priced, before the new subscription makes the customer an existing one), the subscription,
-- the token packages, promotion bonus credits and the invoice. Each step is keyed by the payment, so running
-- it again changes nothing.
CREATE FUNCTION fulfil_payment(p_payment payments, p_at timestamptz) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_item       jsonb := p_payment.quote->'item';
    v_redeem     jsonb;
    v_redemption text := 'none';
    v_sub        text := p_payment.subscription_id;
    v_tokens     bigint := 0;
    v_component  record;
    v_version    bigint;
    v_q          integer;
    v_rules      payment_rules;
    v_tz         text := coalesce((SELECT timezone FROM catalog_state), 'UTC');
    v_invoice    text;
BEGIN
    SELECT * INTO v_rules FROM payment_rules;
    IF cardinality(p_payment.promotion_ids) > 0 AND p_payment.purpose = 'new' THEN
        v_redeem := redeem(p_payment.customer_id,
                           (v_item - 'kind') || jsonb_build_object('currency', p_payment.currency),
                           p_payment.region, p_payment.codes, p_payment.redemption_key, p_payment.created_at);
        v_redemption := v_redeem->>'status';
    END IF;

    IF p_payment.kind = 'plan' THEN
        v_sub := activate_paid_plan(p_payment, p_payment.plan_id, p_payment.cycle, p_payment.price_version_id, p_at);
    ELSIF p_payment.kind = 'package' THEN
        v_tokens := (purchase(p_payment.customer_id, p_payment.package_id, p_payment.txnid, 'tariff payments', p_at)
                     ->>'amount')::bigint;
    ELSE
        FOR v_component IN
            SELECT c->>'plan' AS plan, c->>'cycle' AS cycle, c->>'package' AS package,
                   coalesce((c->>'quantity')::integer, 1) AS quantity, n
              FROM jsonb_array_elements(p_payment.quote->'components') WITH ORDINALITY AS x(c, n)
             ORDER BY (c->>'plan') IS NULL, n
        LOOP
            IF v_component.plan IS NOT NULL THEN
                SELECT id INTO v_version FROM price_versions
                 WHERE plan_id = v_component.plan AND cycle = v_component.cycle AND currency = p_payment.currency
                   AND valid_from <= p_payment.created_at
                   AND (valid_to IS NULL OR valid_to > p_payment.created_at)
                   AND (region = p_payment.region OR region IS NULL)
                 ORDER BY region IS NULL LIMIT 1;
                v_sub := activate_paid_plan(p_payment, v_component.plan, v_component.cycle, v_version, p_at);
            ELSE
                FOR v_q IN 1..v_component.quantity LOOP
                    v_tokens := v_tokens + (purchase(p_payment.customer_id, v_component.package,
                                                     p_payment.txnid || '-' || v_component.n || '-' || v_q,
                                                     'tariff payments', p_at)->>'amount')::bigint;
                END LOOP;
            END IF;
        END LOOP;
    END IF;

    IF (p_payment.quote->>'bonus_tokens')::bigint > 0 AND v_redemption = 'redeemed' THEN
        v_tokens := v_tokens + (grant_tokens(p_payment.customer_id, (p_payment.quote->>'bonus_tokens')::bigint,
                                             'promotion', NULL, 'promotion bonus with payment ' || p_payment.txnid,
                                             'tariff payments', 'promotion:' || p_payment.id, p_at => p_at)
                                ->>'amount')::bigint;
    END IF;

    v_invoice := v_rules.invoice_prefix || to_char(p_at AT TIME ZONE v_tz, 'YYYY') || '-'
                 || lpad(nextval('invoice_numbers')::text, 6, '0');
    INSERT INTO invoices (number, payment_id, customer_id, currency, net_minor, tax_name, tax_percent, tax_minor,
                          total_minor, items, issued_at)
    VALUES (v_invoice, p_payment.id, p_payment.customer_id, p_payment.currency, p_payment.net_minor,
            p_payment.tax_name, p_payment.tax_percent, p_payment.tax_minor,
            CASE WHEN p_payment.tax_inclusive THEN p_payment.net_minor ELSE p_payment.net_minor + p_payment.tax_minor END,
            jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
                'description', p_payment.productinfo, 'kind', p_payment.kind, 'plan', p_payment.plan_id,
                'cycle', p_payment.cycle, 'package', p_payment.package_id, 'bundle', p_payment.bundle_id,
                'list_minor', p_payment.list_minor, 'discount_minor', p_payment.discount_minor,
                'promotions', to_jsonb(p_payment.promotion_ids), 'net_minor', p_payment.net_minor))),
            p_at)
    ON CONFLICT (payment_id) DO NOTHING;

    UPDATE payments SET subscription_id = v_sub, tokens_granted = v_tokens, redemption_status = v_redemption,
                        fulfilment_error = NULL, updated_at = p_at
     WHERE id = p_payment.id;
    RETURN jsonb_build_object('subscription', v_sub, 'tokens_granted', v_tokens, 'redemption', v_redemption,
                              'redemption_reasons', v_redeem->'reasons', 'invoice', v_invoice);
END
$$;

-- Record one payment result from PayU and act on it, once. The caller has checked the reverse hash and, for a
-- success, confirmed it with PayU's verify_payment (p_verified): the salt is not here to check either.
--   success  pending/failure/expired → success: redemption, subscription, credits, invoice (fulfil_payment);
--            a paid payment stays as it is
--   failure  pending → failure: a payment_failed notification, a dunning case for a renewal; a failure after
--            a success changes nothing (PayU reports attempts out of order)
--   pending  recorded, nothing changes
-- The echoed amount must be the amount sent (PayU echoes "10" as "10.00": compared as numbers). Each
-- (txnid, status) is stored once: a replay returns "duplicate": true and changes nothing. A txnid Tariff
-- never issued is stored as unknown_txnid for reconciliation.
CREATE FUNCTION settle_payment(
    p_txnid    text,
    p_status   text,
    p_mihpayid text DEFAULT NULL,
    p_amount   text DEFAULT NULL,
    p_source   text DEFAULT 'webhook',
    p_payload  jsonb DEFAULT '{}',
    p_verified boolean DEFAULT false,
    p_error    text DEFAULT NULL,
    p_mode     text DEFAULT NULL,
    p_at       timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_at      timestamptz := coalesce(p_at, now());
    v_status  text := lower(btrim(p_status));
    v_payment payments;
    v_event   bigint;
    v_outcome text;
    v_detail  text;
    v_result  jsonb := '{}';
    v_units   integer;
    v_message text;
    v_sub     subscriptions;
    v_rules   payment_rules;
BEGIN
    IF v_status IS NULL OR v_status NOT IN ('success', 'failure', 'pending') THEN
        RAISE EXCEPTION 'unknown payment status "%" for txnid %', p_status, p_txnid
            USING ERRCODE = 'invalid_parameter_value', HINT = 'PayU reports success, failure or pending';
    END IF;
    IF p_source NOT IN ('webhook', 'browser', 'ingest', 'reconcile') THEN
        RAISE EXCEPTION 'unknown event source "%"', p_source USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO v_payment FROM payments WHERE txnid = p_txnid FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO payment_events (dedupe_key, kind, txnid, status, mihpayid, amount_text, source, verified,
                                    outcome, detail, payload, received_at)
        VALUES ('payment:' || p_txnid || ':' || v_status, 'payment', p_txnid, v_status, p_mihpayid, p_amount,
                p_source, p_verified, 'unknown_txnid', 'Tariff issued no payment with this txnid',
                coalesce(p_payload, '{}'), v_at)
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id INTO v_event;
        RETURN jsonb_build_object('txnid', p_txnid, 'status', v_status, 'outcome', 'unknown_txnid',
                                  'duplicate', v_event IS NULL, 'event_id', v_event);
    END IF;
    IF p_amount IS NOT NULL THEN
        SELECT minor_units INTO v_units FROM currencies WHERE code = v_payment.currency;
        IF p_amount !~ '^\s*[0-9]+(\.[0-9]+)?\s*$'
           OR p_amount::numeric * (10::numeric ^ v_units) <> v_payment.amount_minor THEN
            RAISE EXCEPTION 'amount mismatch for txnid %: PayU reports %, Tariff charged %', p_txnid, p_amount,
                v_payment.amount_text
                USING ERRCODE = 'data_exception',
                      HINT = 'nothing was recorded; compare the payment in PayU''s dashboard (tariff payu reconcile)';
        END IF;
    END IF;
    IF v_status = 'success' AND NOT coalesce(p_verified, false) THEN
        RAISE EXCEPTION 'success of txnid % is not confirmed with PayU', p_txnid
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'confirm it with verify_payment first; a browser redirect alone is never trusted';
    END IF;

    INSERT INTO payment_events (dedupe_key, kind, txnid, payment_id, status, mihpayid, amount_text, source,
                                verified, outcome, payload, received_at)
    VALUES ('payment:' || p_txnid || ':' || v_status, 'payment', p_txnid, v_payment.id, v_status, p_mihpayid,
            p_amount, p_source, coalesce(p_verified, false), 'ignored', coalesce(p_payload, '{}'), v_at)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id INTO v_event;
    IF v_event IS NULL THEN
        RETURN jsonb_build_object('txnid', p_txnid, 'status', v_status, 'payment_status', v_payment.status,
                                  'outcome', 'duplicate', 'duplicate', true, 'payment_id', v_payment.id);
    END IF;

    IF v_status = 'success' AND v_payment.status IN ('pending', 'failure', 'expired') THEN
        UPDATE payments SET status = 'success', paid_at = v_at, failed_at = NULL, error_message = NULL,
                            mihpayid = coalesce(p_mihpayid, mihpayid), payment_mode = coalesce(p_mode, payment_mode),
                            updated_at = v_at
         WHERE id = v_payment.id
        RETURNING * INTO v_payment;
        BEGIN
            v_result := fulfil_payment(v_payment, v_at);
            v_outcome := 'applied';
        EXCEPTION WHEN OTHERS THEN
            -- Paid but not delivered: keep the money's record and say what failed; reconcile --fix retries.
            GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT;
            UPDATE payments SET fulfilment_error = v_message WHERE id = v_payment.id;
            v_outcome := 'fulfilment_failed';
            v_detail := v_message;
        END;
    ELSIF v_status = 'failure' AND v_payment.status = 'pending' THEN
        UPDATE payments SET status = 'failure', failed_at = v_at, error_message = nullif(btrim(p_error), ''),
                            mihpayid = coalesce(p_mihpayid, mihpayid), payment_mode = coalesce(p_mode, payment_mode),
                            updated_at = v_at
         WHERE id = v_payment.id
        RETURNING * INTO v_payment;
        SELECT * INTO v_rules FROM payment_rules;
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key)
        VALUES ('payment_failed', v_payment.customer_id, v_rules.dunning_channel,
                jsonb_build_object('txnid', v_payment.txnid, 'amount', v_payment.amount_text,
                                   'currency', v_payment.currency, 'item', v_payment.productinfo,
                                   'error', v_payment.error_message),
                'payment_failed:' || v_payment.txnid)
        ON CONFLICT (idempotency_key) DO NOTHING;
        IF v_payment.purpose = 'renewal' THEN
            SELECT * INTO v_sub FROM subscriptions WHERE id = v_payment.subscription_id;
            INSERT INTO dunning_cases (subscription_id, customer_id, payment_id, reason, reminders_sent,
                                       next_reminder_at, grace_ends_at, opened_at, actions)
            VALUES (v_sub.id, v_sub.customer_id, v_payment.id, 'payment_failed', 0,
                    v_at + v_rules.dunning_retries[1]::interval,
                    greatest(v_sub.current_period_end, v_at) + v_rules.dunning_grace::interval, v_at,
                    jsonb_build_array(jsonb_build_object('at', v_at, 'action', 'opened', 'payment', v_payment.id)))
            ON CONFLICT (subscription_id) WHERE status = 'open' DO NOTHING;
        END IF;
        v_outcome := 'applied';
    ELSE
        v_outcome := 'ignored';
        v_detail := format('%s after %s changes nothing', v_status, v_payment.status);
    END IF;
    UPDATE payment_events SET outcome = v_outcome, detail = v_detail WHERE id = v_event;
    SELECT * INTO v_payment FROM payments WHERE id = v_payment.id;
    RETURN jsonb_build_object('txnid', p_txnid, 'status', v_status, 'payment_status', v_payment.status,
                              'outcome', v_outcome, 'detail', v_detail, 'duplicate', false, 'event_id', v_event,
                              'payment_id', v_payment.id) || v_result;
END
$$;

-- ----------------------------------------------------------------------------------------------- refunds

-- Open a refund of a paid payment (p_amount_minor NULL: whatever is left to refund), or return the unanswered
-- one of the same amount ("retry": true) so that a refund interrupted by a network failure goes out again
-- under the same token. Commit the result before calling PayU. Refused: an unpaid payment, more than is left
-- to refund, another refund of this payment still unanswered.
CREATE FUNCTION request_refund(
    p_txnid        text,
    p_amount_minor bigint DEFAULT NULL,
    p_reason       text DEFAULT NULL,
    p_actor        text DEFAULT NULL,
    p_at           timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_at      timestamptz := coalesce(p_at, now());
    v_payment payments;
    v_open    refunds;
    v_left    bigint;
    v_amount  bigint;
    v_units   integer;
    v_refund  refunds;
BEGIN
    IF coalesce(btrim(p_reason), '') = '' THEN
        RAISE EXCEPTION 'a refund needs a reason' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'say why, e.g. --reason "customer asked within 7 days"';
    END IF;
    SELECT * INTO v_payment FROM payments WHERE txnid = p_txnid FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown txnid "%"', p_txnid USING ERRCODE = 'no_data_found',
            HINT = 'list payments with tariff payu payments';
    END IF;
    IF v_payment.status NOT IN ('success', 'partially_refunded') THEN
        RAISE EXCEPTION 'payment % is %, so there is nothing to refund', p_txnid, v_payment.status
            USING ERRCODE = 'invalid_parameter_value', HINT = 'only successful payments can be refunded';
    END IF;
    SELECT minor_units INTO v_units FROM currencies WHERE code = v_payment.currency;
    v_left := v_payment.amount_minor - coalesce((SELECT sum(amount_minor) FROM refunds
                                                 WHERE payment_id = v_payment.id AND status NOT IN ('failure', 'error')), 0);
    v_amount := coalesce(p_amount_minor, v_left);
    SELECT * INTO v_open FROM refunds WHERE payment_id = v_payment.id AND status = 'requested' ORDER BY id LIMIT 1;
    IF FOUND THEN
        IF v_open.amount_minor = v_amount OR p_amount_minor IS NULL THEN
            RETURN to_jsonb(v_open) || jsonb_build_object('retry', true, 'txnid', v_payment.txnid,
                                                          'mihpayid', v_payment.mihpayid);
        END IF;
        RAISE EXCEPTION 'refund % of % % for % is still unanswered', v_open.token, v_open.amount_text,
            v_open.currency, p_txnid
            USING ERRCODE = 'object_in_use',
                  HINT = format('retry it with --amount %s (same token, never refunded twice), or run tariff payu refunds --poll',
                                v_open.amount_text);
    END IF;
    IF v_amount <= 0 OR v_amount > v_left THEN
        RAISE EXCEPTION 'cannot refund % % of payment %: % % is left to refund', minor_text(v_amount, v_units),
            v_payment.currency, p_txnid, minor_text(v_left, v_units), v_payment.currency
            USING ERRCODE = 'check_violation', HINT = format('refund at most %s', minor_text(v_left, v_units));
    END IF;
    INSERT INTO refunds (payment_id, token, amount_minor, currency, amount_text, reason, history, actor,
                         created_at, updated_at)
    VALUES (v_payment.id, 'R' || upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 22)), v_amount,
            v_payment.currency, minor_text(v_amount, v_units), btrim(p_reason),
            jsonb_build_array(jsonb_build_object('status', 'requested', 'at', v_at)),
            nullif(btrim(p_actor), ''), v_at, v_at)
    RETURNING * INTO v_refund;
    RETURN to_jsonb(v_refund) || jsonb_build_object('retry', false, 'txnid', v_payment.txnid,
                                                    'mihpayid', v_payment.mihpayid);
END
$$;

-- Record what PayU said about a refund (the refund call's answer, check_action_status, a refund callback)
-- and act on it once. PayU's states map to queued (QUEUED), in_progress (IN PROGRESS, REQUESTED, PENDING),
-- success (SUCCESS), failure (FAILURE); 'error' is a request PayU refused outright. Settled refunds never
-- change again. On success: the payment's and invoice's refunded amount, the credits the payment granted
-- taken back in proportion (payment_rules.revoke_tokens_on_refund), and, once the payment is refunded in
-- full, its promotion redemptions reversed and its subscription canceled.
CREATE FUNCTION record_refund(
    p_refund_id     bigint,
    p_status        text,
    p_request_id    text DEFAULT NULL,
    p_source        text DEFAULT 'refund',
    p_payload       jsonb DEFAULT '{}',
    p_error_code    text DEFAULT NULL,
    p_error_message text DEFAULT NULL,
    p_bank_ref      text DEFAULT NULL,
    p_at            timestamptz DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_at      timestamptz := coalesce(p_at, now());
    v_refund  refunds;
    v_payment payments;
    v_status  text;
    v_event   bigint;
    v_rules   payment_rules;
    v_due     bigint;
    v_revoke  bigint := 0;
    v_usable  bigint;
    v_account bigint;
    v_actions jsonb := '[]';
BEGIN
    v_status := CASE upper(btrim(p_status))
        WHEN 'QUEUED' THEN 'queued' WHEN 'SUCCESS' THEN 'success' WHEN 'FAILURE' THEN 'failure'
        WHEN 'IN PROGRESS' THEN 'in_progress' WHEN 'IN_PROGRESS' THEN 'in_progress'
        WHEN 'REQUESTED' THEN 'in_progress' WHEN 'PENDING' THEN 'in_progress' WHEN 'ERROR' THEN 'error' END;
    IF v_status IS NULL THEN
        RAISE EXCEPTION 'unknown refund status "%"', p_status USING ERRCODE = 'invalid_parameter_value',
            HINT = 'PayU reports QUEUED, IN PROGRESS, REQUESTED, PENDING, SUCCESS or FAILURE';
    END IF;
    SELECT * INTO v_refund FROM refunds WHERE id = p_refund_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown refund %', p_refund_id USING ERRCODE = 'no_data_found';
    END IF;
    SELECT * INTO v_payment FROM payments WHERE id = v_refund.payment_id FOR UPDATE;
    IF p_request_id IS NOT NULL AND v_refund.request_id IS NOT NULL AND p_request_id <> v_refund.request_id THEN
        RAISE EXCEPTION 'refund % has request id %, not %', v_refund.token, v_refund.request_id, p_request_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    IF v_status <> 'error' THEN
        INSERT INTO payment_events (dedupe_key, kind, txnid, payment_id, refund_id, status, mihpayid, request_id,
                                    amount_text, source, verified, outcome, payload, received_at)
        VALUES ('refund:' || coalesce(p_request_id, v_refund.request_id, v_refund.token) || ':' || v_status,
                'refund', v_payment.txnid, v_payment.id, v_refund.id, v_status, v_payment.mihpayid,
                coalesce(p_request_id, v_refund.request_id), v_refund.amount_text, p_source, true, 'ignored',
                coalesce(p_payload, '{}'), v_at)
        ON CONFLICT (dedupe_key) DO NOTHING
        RETURNING id INTO v_event;
        IF v_event IS NULL THEN
            RETURN to_jsonb(v_refund) || jsonb_build_object('duplicate', true, 'txnid', v_payment.txnid);
        END IF;
    END IF;

    IF v_refund.settled_at IS NOT NULL OR v_refund.status = v_status
       OR (v_refund.status = 'in_progress' AND v_status = 'queued') THEN
        UPDATE refunds SET request_id = coalesce(request_id, p_request_id) WHERE id = v_refund.id
        RETURNING * INTO v_refund;
        RETURN to_jsonb(v_refund) || jsonb_build_object('duplicate', false, 'changed', false, 'txnid', v_payment.txnid);
    END IF;

    UPDATE refunds
       SET status = v_status, request_id = coalesce(request_id, p_request_id),
           error_code = coalesce(nullif(btrim(p_error_code), ''), error_code),
           error_message = coalesce(nullif(btrim(p_error_message), ''), error_message),
           bank_ref_num = coalesce(nullif(btrim(p_bank_ref), ''), bank_ref_num),
           history = history || jsonb_build_array(jsonb_strip_nulls(jsonb_build_object(
               'status', v_status, 'at', v_at, 'source', p_source, 'detail', nullif(btrim(p_error_message), '')))),
           settled_at = CASE WHEN v_status IN ('success', 'failure', 'error') THEN v_at END,
           updated_at = v_at
     WHERE id = v_refund.id
    RETURNING * INTO v_refund;
    IF v_event IS NOT NULL THEN
        UPDATE payment_events SET outcome = 'applied' WHERE id = v_event;
    END IF;

    IF v_status = 'success' THEN
        SELECT * INTO v_rules FROM payment_rules;
        UPDATE payments
           SET refunded_minor = refunded_minor + v_refund.amount_minor,
               status = CASE WHEN refunded_minor + v_refund.amount_minor >= amount_minor THEN 'refunded'
                             ELSE 'partially_refunded' END,
               updated_at = v_at
         WHERE id = v_payment.id
        RETURNING * INTO v_payment;
        UPDATE invoices
           SET refunded_minor = least(total_minor, refunded_minor + v_refund.amount_minor),
               status = CASE WHEN refunded_minor + v_refund.amount_minor >= total_minor THEN 'refunded'
                             ELSE 'partially_refunded' END
         WHERE payment_id = v_payment.id;
        IF v_rules.revoke_tokens_on_refund AND v_payment.tokens_granted > 0 THEN
            v_due := (v_payment.tokens_granted * v_payment.refunded_minor / v_payment.amount_minor) - v_payment.tokens_revoked;
            IF v_due > 0 THEN
                SELECT id INTO v_account FROM lock_token_account(v_payment.customer_id);
                v_usable := usable_credits(v_account, v_at);
                v_revoke := least(v_due, v_usable);
                IF v_revoke > 0 THEN
                    PERFORM revoke_tokens(v_payment.customer_id, v_revoke,
                                          'refund ' || v_refund.token || ' of payment ' || v_payment.txnid,
                                          'tariff payments', v_at);
                END IF;
                -- What was already spent cannot be taken back; it counts as settled so a later refund does
                -- not try again.
                UPDATE payments SET tokens_revoked = tokens_revoked + v_due WHERE id = v_payment.id;
                UPDATE refunds SET tokens_revoked = v_revoke WHERE id = v_refund.id RETURNING * INTO v_refund;
                v_actions := v_actions || jsonb_build_object('action', 'tokens_revoked', 'credits', v_revoke,
                                                             'due', v_due);
            END IF;
        END IF;
        IF v_payment.status = 'refunded' THEN
            IF v_payment.redemption_status = 'redeemed' THEN
                PERFORM reverse_redemptions(v_payment.redemption_key, 'refund ' || v_refund.token);
                UPDATE payments SET redemption_status = 'reversed' WHERE id = v_payment.id;
                v_actions := v_actions || jsonb_build_object('action', 'redemption_reversed');
            END IF;
            IF v_payment.kind IN ('plan', 'bundle') AND v_payment.subscription_id IS NOT NULL THEN
                UPDATE subscriptions SET status = 'canceled', canceled_at = v_at, updated_at = v_at
                 WHERE id = v_payment.subscription_id AND status IN ('trialing', 'active', 'past_due');
                IF FOUND THEN
                    v_actions := v_actions || jsonb_build_object('action', 'subscription_canceled',
                                                                 'subscription', v_payment.subscription_id);
                END IF;
            END IF;
        END IF;
    END IF;
    RETURN to_jsonb(v_refund) || jsonb_build_object('duplicate', false, 'changed', true, 'txnid', v_payment.txnid,
                                                    'payment_status', v_payment.status, 'actions', v_actions);
END
$$;

-- ----------------------------------------------------------------------------------------------- dunning

-- Scheduled dunning (tariff tick): open cases for paid subscriptions whose period ended unpaid, send the
-- reminders that are due (payment_failed notifications in the outbox), and take the after-grace action on
-- cases whose grace ended: the subscription becomes past_due (or canceled), optionally moves to the
-- downgrade plan, and optionally has its usable credits suspended (given back if the customer pays later).
-- Idempotent (notifications are keyed by case and reminder; cases are unique per open subscription) and
-- serialised by an advisory lock. Set-based except for the after-grace actions, which are rare.
CREATE FUNCTION run_dunning(p_at timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql
SET search_path FROM CURRENT
AS $$
DECLARE
    v_rules     payment_rules;
    v_opened    bigint;
    v_reminded  bigint;
    v_lapsed    integer := 0;
    v_case      dunning_cases;
    v_sub       subscriptions;
    v_new       text;
    v_usable    bigint;
    v_account   bigint;
    v_actions   jsonb;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.run_dunning'));
    SELECT * INTO v_rules FROM payment_rules;

    -- Paid through PayU, period over, not renewed: dun it.
    WITH due AS (
        SELECT s.id, s.customer_id, s.current_period_end
          FROM subscriptions s JOIN price_versions pv ON pv.id = s.price_version_id
         WHERE s.status = 'active' AND NOT s.cancel_at_period_end AND s.current_period_end <= p_at
           AND pv.amount_minor > 0
           AND EXISTS (SELECT 1 FROM payments p WHERE p.subscription_id = s.id AND p.paid_at IS NOT NULL)
           AND NOT EXISTS (SELECT 1 FROM dunning_cases d WHERE d.subscription_id = s.id AND d.status = 'open')
           AND NOT EXISTS (SELECT 1 FROM dunning_cases d WHERE d.subscription_id = s.id
                            AND d.opened_at >= s.current_period_end)
    ), opened AS (
        INSERT INTO dunning_cases (subscription_id, customer_id, reason, next_reminder_at, grace_ends_at,
                                   opened_at, actions)
        SELECT id, customer_id, 'renewal_unpaid', current_period_end, current_period_end + v_rules.dunning_grace::interval,
               p_at, jsonb_build_array(jsonb_build_object('at', p_at, 'action', 'opened', 'period_end', current_period_end))
          FROM due
        ON CONFLICT (subscription_id) WHERE status = 'open' DO NOTHING
        RETURNING id
    )
    SELECT count(*) INTO v_opened FROM opened;

    -- Reminders due before grace ends.
    WITH due AS (
        SELECT d.id, d.customer_id, d.reminders_sent + 1 AS n, d.grace_ends_at, d.opened_at, d.reason,
               s.plan_id, pv.amount_minor, pv.currency
          FROM dunning_cases d JOIN subscriptions s ON s.id = d.subscription_id
          JOIN price_versions pv ON pv.id = s.price_version_id
         WHERE d.status = 'open' AND d.next_reminder_at <= p_at AND d.grace_ends_at > p_at
    ), sent AS (
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key)
        SELECT 'payment_failed', due.customer_id, v_rules.dunning_channel,
               jsonb_build_object('reason', due.reason, 'reminder', due.n, 'plan', due.plan_id,
                                  'amount', minor_text(due.amount_minor, c.minor_units), 'currency', due.currency,
                                  'grace_ends_at', due.grace_ends_at),
               'dunning:' || due.id || ':' || due.n
          FROM due JOIN currencies c ON c.code = due.currency
        ON CONFLICT (idempotency_key) DO NOTHING
    ), moved AS (
        UPDATE dunning_cases d
           SET reminders_sent = due.n,
               next_reminder_at = CASE WHEN due.n + 1 <= cardinality(v_rules.dunning_retries)
                                       THEN due.opened_at + v_rules.dunning_retries[due.n + 1]::interval END,
               actions = d.actions || jsonb_build_array(jsonb_build_object('at', p_at, 'action', 'reminded', 'reminder', due.n))
          FROM due WHERE d.id = due.id
        RETURNING d.id
    )
    SELECT count(*) INTO v_reminded FROM moved;

    FOR v_case IN SELECT * FROM dunning_cases WHERE status = 'open' AND grace_ends_at <= p_at ORDER BY id FOR UPDATE LOOP
        SELECT * INTO v_sub FROM subscriptions WHERE id = v_case.subscription_id FOR UPDATE;
        v_actions := jsonb_build_array(jsonb_build_object('at', p_at, 'action', v_rules.dunning_status));
        v_new := NULL;
        UPDATE subscriptions SET status = v_rules.dunning_status, updated_at = p_at,
                                 canceled_at = CASE WHEN v_rules.dunning_status = 'canceled' THEN p_at END
         WHERE id = v_sub.id AND status IN ('trialing', 'active', 'past_due');
        IF v_rules.dunning_suspend_tokens THEN
            SELECT id INTO v_account FROM token_accounts WHERE customer_id = v_case.customer_id;
            IF v_account IS NOT NULL THEN
                PERFORM 1 FROM lock_token_account(v_case.customer_id);
                v_usable := usable_credits(v_account, p_at);
                IF v_usable > 0 THEN
                    PERFORM revoke_tokens(v_case.customer_id, v_usable,
                                          'suspended: unpaid subscription ' || v_sub.id, 'tariff dunning', p_at);
                    UPDATE dunning_cases SET tokens_suspended = v_usable WHERE id = v_case.id;
                    v_actions := v_actions || jsonb_build_object('at', p_at, 'action', 'tokens_suspended',
                                                                 'credits', v_usable);
                END IF;
            END IF;
        END IF;
        IF v_rules.dunning_downgrade_to IS NOT NULL AND v_rules.dunning_downgrade_to <> v_sub.plan_id THEN
            UPDATE subscriptions SET status = 'canceled', canceled_at = p_at, updated_at = p_at WHERE id = v_sub.id;
            v_new := register_subscription(p_customer_id => v_sub.customer_id, p_plan_id => v_rules.dunning_downgrade_to,
                                           p_cycle => v_sub.cycle, p_status => 'active',
                                           p_current_period_start => p_at, p_region => v_sub.region)->>'id';
            v_actions := v_actions || jsonb_build_object('at', p_at, 'action', 'downgraded',
                                                         'plan', v_rules.dunning_downgrade_to, 'subscription', v_new);
        END IF;
        INSERT INTO notifications (kind, customer_id, channel, payload, idempotency_key)
        VALUES ('payment_failed', v_case.customer_id, v_rules.dunning_channel,
                jsonb_build_object('reason', v_case.reason, 'final', true, 'plan', v_sub.plan_id,
                                   'status', v_rules.dunning_status, 'downgraded_to', v_rules.dunning_downgrade_to,
                                   'tokens_suspended', v_rules.dunning_suspend_tokens),
                'dunning:' || v_case.id || ':lapsed')
        ON CONFLICT (idempotency_key) DO NOTHING;
        UPDATE dunning_cases SET status = 'lapsed', closed_at = p_at, downgraded_to = v_new,
                                 actions = actions || v_actions
         WHERE id = v_case.id;
        v_lapsed := v_lapsed + 1;
    END LOOP;

    RETURN jsonb_build_object('at', p_at, 'cases_opened', v_opened, 'reminders_sent', v_reminded,
                              'cases_lapsed', v_lapsed,
                              'open_cases', (SELECT count(*) FROM dunning_cases WHERE status = 'open'));
END
$$;
