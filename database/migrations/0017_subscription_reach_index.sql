-- Who a price change reaches, read from the index alone.
--
-- `plan` and `apply` find the subscribers of every price version a change closes: for a 10% price change
-- over a large catalog, hundreds of thousands of subscriptions, each a random heap page read for its
-- customer and period end. Carrying those two columns in the index turns that into an index-only scan
-- (on pages the visibility map marks all-visible, which autovacuum keeps up to date). customer_id never
-- changes and current_period_end was already indexed, so no update that was HOT stops being HOT.
--
-- Built in the migration's transaction: writes to subscriptions wait while it builds (about a second per
-- million subscriptions).

CREATE INDEX subscriptions_price_version_reach ON subscriptions (price_version_id, status)
    INCLUDE (customer_id, current_period_end);
DROP INDEX subscriptions_price_version;
ALTER INDEX subscriptions_price_version_reach RENAME TO subscriptions_price_version;
