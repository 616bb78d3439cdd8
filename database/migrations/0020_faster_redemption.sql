-- Faster redemptions: no shared hot row, rounding PostgreSQL can inline, rules checked as domains.
--
-- * A foreign key check key-share-locks the row it finds. Every redemption of a promotion checked the same
--   promotions row (from redemptions and from promotion_customer_usage), every redemption of a shared code
--   (WELCOME20) the same promotion_codes row, and every redemption in a region the same regions and
--   currencies rows: with concurrent checkouts, each lock became a new multixact on one of those rows, WAL
--   included, and all redeemers of a promotion queued behind it. redeem() writes these rows only after
--   quote() has read the promotion, code, region and currency in the same transaction, and none of those
--   rows is ever deleted (apply retires promotions and codes), so these keys go, as the ledger's keys to
--   ai_models did (0014_fast_admission.sql). The keys to the customer and the request stay: their rows are
--   the customer's own.
-- * round_minor() was STRICT around a CASE, which PostgreSQL will not inline (CASE is not strict), so every
--   quote with a percentage discount planned the function's query again. It returns NULL for a NULL
--   argument without STRICT as well, and is now inlined into the statements that call it.

ALTER TABLE redemptions
    DROP CONSTRAINT redemptions_promotion_id_fkey,
    DROP CONSTRAINT redemptions_code_fkey,
    DROP CONSTRAINT redemptions_region_fkey,
    DROP CONSTRAINT redemptions_currency_fkey;
ALTER TABLE promotion_customer_usage DROP CONSTRAINT promotion_customer_usage_promotion_id_fkey;

ALTER FUNCTION round_minor(numeric, text) CALLED ON NULL INPUT;

-- The single-column rules of the tables every redemption writes become domains, as the ledger's did
-- (0018_ledger_domains.sql, which says why: a table's CHECK constraints are read back from their stored
-- form for every statement that writes it, and an UPDATE checks them all). The rules are unchanged; the
-- rules across columns stay table constraints (redemptions' three are one now). The columns change type in
-- place and the domains get their rules NOT VALID: the rows already stored were held to the same rules by
-- the constraints dropped here.

CREATE DOMAIN minor_amount AS bigint;
CREATE DOMAIN discount_position AS smallint;
CREATE DOMAIN promotion_item_kind AS text;
CREATE DOMAIN promotion_duration AS text;
CREATE DOMAIN trial_days AS integer;
CREATE DOMAIN bonus_token_count AS bigint;
CREATE DOMAIN redemption_status AS text;
CREATE DOMAIN usage_slot AS smallint;
CREATE DOMAIN redemption_count AS bigint;
CREATE DOMAIN customer_redemption_count AS integer;

ALTER TABLE redemptions
    ALTER list_minor TYPE minor_amount,
    ALTER discount_minor TYPE minor_amount,
    ALTER final_minor TYPE minor_amount,
    ALTER position TYPE discount_position,
    ALTER item_kind TYPE promotion_item_kind,
    ALTER duration TYPE promotion_duration,
    ALTER extra_trial_days TYPE trial_days,
    ALTER bonus_tokens TYPE bonus_token_count,
    ALTER status TYPE redemption_status,
    DROP CONSTRAINT redemptions_list_minor_check,
    DROP CONSTRAINT redemptions_discount_minor_check,
    DROP CONSTRAINT redemptions_final_minor_check,
    DROP CONSTRAINT redemptions_position_check,
    DROP CONSTRAINT redemptions_item_kind_check,
    DROP CONSTRAINT redemptions_duration_check,
    DROP CONSTRAINT redemptions_extra_trial_days_check,
    DROP CONSTRAINT redemptions_bonus_tokens_check,
    DROP CONSTRAINT redemptions_status_check,
    DROP CONSTRAINT redemptions_check,
    DROP CONSTRAINT redemptions_check1,
    DROP CONSTRAINT redemptions_check2,
    -- Nobody pays more than the list price, nor is discounted more; a reversal has its time and a reason.
    ADD CONSTRAINT redemptions_consistent CHECK (
        discount_minor <= list_minor AND final_minor <= list_minor
        AND (status = 'reversed') = (reversed_at IS NOT NULL)
        AND (status = 'redeemed' OR reason <> '')) NOT VALID;

ALTER TABLE promotion_usage
    ALTER slot TYPE usage_slot,
    ALTER redeemed TYPE redemption_count,
    ALTER cap TYPE redemption_count,
    DROP CONSTRAINT promotion_usage_slot_check,
    DROP CONSTRAINT promotion_usage_redeemed_check,
    DROP CONSTRAINT promotion_usage_cap_check;

ALTER TABLE promotion_customer_usage
    ALTER redeemed TYPE customer_redemption_count,
    DROP CONSTRAINT promotion_customer_usage_redeemed_check;

ALTER DOMAIN minor_amount ADD CONSTRAINT minor_amount_not_negative CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN discount_position ADD CONSTRAINT discount_position_from_one CHECK (VALUE >= 1) NOT VALID;
ALTER DOMAIN promotion_item_kind ADD CONSTRAINT promotion_item_kind_known
    CHECK (VALUE IN ('plan', 'package', 'bundle')) NOT VALID;
ALTER DOMAIN promotion_duration ADD CONSTRAINT promotion_duration_known
    CHECK (VALUE IN ('once', 'forever') OR VALUE ~ '^cycles:[1-9][0-9]*$') NOT VALID;
ALTER DOMAIN trial_days ADD CONSTRAINT trial_days_positive CHECK (VALUE > 0) NOT VALID;
ALTER DOMAIN bonus_token_count ADD CONSTRAINT bonus_token_count_positive CHECK (VALUE > 0) NOT VALID;
ALTER DOMAIN redemption_status ADD CONSTRAINT redemption_status_known
    CHECK (VALUE IN ('redeemed', 'reversed')) NOT VALID;
ALTER DOMAIN usage_slot ADD CONSTRAINT usage_slot_range CHECK (VALUE BETWEEN 0 AND 15) NOT VALID;
ALTER DOMAIN redemption_count ADD CONSTRAINT redemption_count_not_negative CHECK (VALUE >= 0) NOT VALID;
ALTER DOMAIN customer_redemption_count ADD CONSTRAINT customer_redemption_count_not_negative
    CHECK (VALUE >= 0) NOT VALID;
