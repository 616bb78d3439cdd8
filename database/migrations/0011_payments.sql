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
