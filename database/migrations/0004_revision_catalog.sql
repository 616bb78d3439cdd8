-- The catalog each revision published, as the config files `tariff import` would write. `plan` compares it
-- with the live tables to show drift (rows changed outside Tariff) entity by entity, and a past revision's
-- catalog can be recovered exactly.
ALTER TABLE revisions ADD COLUMN catalog jsonb CHECK (jsonb_typeof(catalog) = 'object');
-- What was published at each revision, for `tariff history` and drift: the fingerprint of the catalog as
-- written (the config's catalog plus retired rows the config no longer lists).
ALTER TABLE revisions ADD COLUMN catalog_fingerprint text CHECK (catalog_fingerprint ~ '^sha256:[0-9a-f]{64}$');
