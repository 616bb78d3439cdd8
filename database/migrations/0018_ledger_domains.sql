-- The same rules on the ledger's hot tables, checked without re-reading them on every statement.
--
-- PostgreSQL keeps a table's CHECK constraints as stored expression trees and reads them back from text for
-- every statement that writes the table; an UPDATE checks them all, whichever columns it sets. Every
-- admission writes seven ledger tables, whose 29 constraints were a quarter of its server time (the
-- `IN (…)` lists the costliest: their arrays are stored byte by byte). A domain's constraints are read once
-- per session and cached, and are checked only on the columns a statement assigns.
--
-- So every single-column rule moves into a domain, unchanged; the rules that relate two columns stay table
-- constraints (token_requests' four are one constraint now). Errors name the domain and its constraint
-- instead of the table's: `value for domain tariff.credit_balance violates check constraint
-- "credit_balance_not_negative"`.
--
-- Existing rows already satisfy every rule, so no table is rewritten or read: the columns first change to
-- domains without constraints (a relabelling PostgreSQL does in place; of the indexes, only token_requests'
-- partial index on open reservations, whose condition reads `status`, is built again), then each domain
-- gets its constraint NOT VALID: enforced on every value written from now on, and not checked against the
-- rows already stored, which the table constraints dropped in the same transaction held to the same rules.
-- (Validating would read token_usage and token_requests in full, blocking admissions meanwhile, to learn
-- nothing.) The two merged table constraints are added NOT VALID for the same reason.
--
-- catalog_id's rule is restated the same way: `{0,79}` after a character class makes PostgreSQL's regex
-- engine run 80 copies of the class, about 4 µs a match, and admission matched it three times (model ids
-- in the request, usage and daily rows). A length test and `*` accept exactly the same ids, at 0.3 µs.

CREATE DOMAIN credit_balance AS bigint;
CREATE DOMAIN credit_count AS bigint;
CREATE DOMAIN grant_amount AS bigint;
CREATE DOMAIN token_count AS integer;
CREATE DOMAIN usage_total AS bigint;
CREATE DOMAIN cost_amount AS numeric;
CREATE DOMAIN request_id AS text;
CREATE DOMAIN nonempty_text AS text;
CREATE DOMAIN token_account_kind AS text;
CREATE DOMAIN token_grant_source AS text;
CREATE DOMAIN token_entry_kind AS text;
CREATE DOMAIN token_request_kind AS text;
CREATE DOMAIN token_request_status AS text;

ALTER TABLE token_accounts
    ALTER kind TYPE token_account_kind,
    ALTER balance TYPE credit_balance,
    DROP CONSTRAINT token_accounts_kind_check,
    DROP CONSTRAINT token_accounts_balance_check;

-- The renewal trigger's condition reads `source`, so it is dropped for the type change and made again as it was.
DROP TRIGGER token_grants_fulfil_renewal ON token_grants;
ALTER TABLE token_grants
    ALTER source TYPE token_grant_source,
    ALTER amount TYPE grant_amount,
    ALTER remaining TYPE credit_balance,
    ALTER reference TYPE nonempty_text,
    ALTER actor TYPE nonempty_text,
    DROP CONSTRAINT token_grants_source_check,
    DROP CONSTRAINT token_grants_amount_check,
    DROP CONSTRAINT token_grants_reference_check,
    DROP CONSTRAINT token_grants_actor_check,
    DROP CONSTRAINT token_grants_check,
    DROP CONSTRAINT token_grants_check1,
    ADD CONSTRAINT token_grants_consistent
        CHECK (remaining <= amount AND (expires_at IS NULL OR expires_at > starts_at)) NOT VALID;
CREATE TRIGGER token_grants_fulfil_renewal AFTER INSERT ON token_grants
    FOR EACH ROW WHEN (NEW.source = 'package' AND NEW.package_id IS NOT NULL)
    EXECUTE FUNCTION fulfil_renewal_order();

ALTER TABLE token_entries
    ALTER kind TYPE token_entry_kind,
    ALTER balance_after TYPE credit_balance,
    DROP CONSTRAINT token_entries_kind_check,
    DROP CONSTRAINT token_entries_balance_after_check;

ALTER TABLE token_requests
    ALTER request_id TYPE request_id,
    ALTER kind TYPE token_request_kind,
    ALTER status TYPE token_request_status,
    ALTER credits TYPE credit_count,
    ALTER pool_credits TYPE credit_count,
    DROP CONSTRAINT token_requests_request_id_check,
    DROP CONSTRAINT token_requests_kind_check,
    DROP CONSTRAINT token_requests_status_check,
    DROP CONSTRAINT token_requests_credits_check,
    DROP CONSTRAINT token_requests_pool_credits_check,
    DROP CONSTRAINT token_requests_check,
    DROP CONSTRAINT token_requests_check1,
    DROP CONSTRAINT token_requests_check2,
    DROP CONSTRAINT token_requests_check3,
    -- A refusal has a reason and nothing else does; only an admitted reservation expires; credits drawn
    -- from a pool name the pool's account.
    ADD CONSTRAINT token_requests_consistent CHECK (
        allowed = (reason IS NULL)
        AND (allowed OR status = 'refused')
        AND (kind = 'reserve' AND allowed) = (expires_at IS NOT NULL)
        AND (pool_credits = 0 OR pool_account_id IS NOT NULL)) NOT VALID;

ALTER TABLE token_usage
    ALTER input_tokens TYPE token_count,
    ALTER output_tokens TYPE token_count,
    ALTER credits TYPE credit_count,
    ALTER cost TYPE cost_amount,
    DROP CONSTRAINT token_usage_input_tokens_check,
    DROP CONSTRAINT token_usage_output_tokens_check,
    DROP CONSTRAINT token_usage_credits_check,
    DROP CONSTRAINT token_usage_cost_check;

ALTER TABLE token_usage_daily
    ALTER requests TYPE usage_total,
    ALTER input_tokens TYPE usage_total,
    ALTER output_tokens TYPE usage_total,
    ALTER credits TYPE credit_count,
    ALTER cost TYPE cost_amount,
    DROP CONSTRAINT token_usage_daily_requests_check,
    DROP CONSTRAINT token_usage_daily_input_tokens_check,
    DROP CONSTRAINT token_usage_daily_output_tokens_check,
    DROP CONSTRAINT token_usage_daily_credits_check,
    DROP CONSTRAINT token_usage_daily_cost_check;

ALTER TABLE token_pool_usage
    ALTER requests TYPE usage_total,
    ALTER credits TYPE credit_count,
    DROP CONSTRAINT token_pool_usage_requests_check,
    DROP CONSTRAINT token_pool_usage_credits_check;

ALTER DOMAIN credit_balance ADD CONSTRAINT credit_balance_not_negative CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN credit_count ADD CONSTRAINT credit_count_not_negative CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN grant_amount ADD CONSTRAINT grant_amount_positive CHECK (VALUE > 0) NOT VALID;
ALTER DOMAIN token_count ADD CONSTRAINT token_count_not_negative CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN usage_total ADD CONSTRAINT usage_total_not_negative CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN cost_amount ADD CONSTRAINT cost_amount_not_negative CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN request_id ADD CONSTRAINT request_id_opaque
    CHECK (length(VALUE) BETWEEN 1 AND 255 AND VALUE !~ '\s') NOT VALID;
ALTER DOMAIN nonempty_text ADD CONSTRAINT nonempty_text_not_empty CHECK (VALUE <> '') NOT VALID;
ALTER DOMAIN token_account_kind ADD CONSTRAINT token_account_kind_known CHECK (VALUE IN ('customer', 'pool')) NOT VALID;
ALTER DOMAIN token_grant_source ADD CONSTRAINT token_grant_source_known
    CHECK (VALUE IN ('allowance', 'package', 'promotion', 'admin', 'boost', 'rollover')) NOT VALID;
ALTER DOMAIN token_entry_kind ADD CONSTRAINT token_entry_kind_known
    CHECK (VALUE IN ('grant', 'consume', 'reserve', 'commit', 'release', 'expire', 'adjust')) NOT VALID;
ALTER DOMAIN token_request_kind ADD CONSTRAINT token_request_kind_known CHECK (VALUE IN ('consume', 'reserve')) NOT VALID;
ALTER DOMAIN token_request_status ADD CONSTRAINT token_request_status_known
    CHECK (VALUE IN ('refused', 'done', 'open', 'committed', 'released', 'expired')) NOT VALID;

ALTER DOMAIN catalog_id DROP CONSTRAINT catalog_id_check;
ALTER DOMAIN catalog_id ADD CONSTRAINT catalog_id_check
    CHECK (length(VALUE) <= 80 AND VALUE ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]*$') NOT VALID;
