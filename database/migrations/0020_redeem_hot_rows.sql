-- Redemptions without a shared hot row, and rounding that PostgreSQL can inline.
--
-- * A foreign key check key-share-locks the row it finds. Every redemption of a promotion checked the same
--   promotions row (from redemptions and from promotion_customer_usage), and every redemption in a region
--   the same regions and currencies rows: with concurrent checkouts, each lock became a new multixact on
--   one of those rows, WAL included, and all redeemers of a promotion queued behind it. redeem() writes
--   these rows only after quote() has read the promotion, region and currency in the same transaction, and
--   catalog rows are never deleted (apply retires them), so the keys to the catalog go, as the ledger's
--   keys to ai_models did (0014_fast_admission.sql). The keys to the customer, the request and the code
--   stay: their rows are the customer's own.
-- * round_minor() was STRICT around a CASE, which PostgreSQL will not inline (CASE is not strict), so every
--   quote with a percentage discount planned the function's query again. It returns NULL for a NULL
--   argument without STRICT as well, and is now inlined into the statements that call it.

ALTER TABLE redemptions
    DROP CONSTRAINT redemptions_promotion_id_fkey,
    DROP CONSTRAINT redemptions_region_fkey,
    DROP CONSTRAINT redemptions_currency_fkey;
ALTER TABLE promotion_customer_usage DROP CONSTRAINT promotion_customer_usage_promotion_id_fkey;

ALTER FUNCTION round_minor(numeric, text) CALLED ON NULL INPUT;
