-- Pricing pages as published: the rendered HTML and JSON of each page × region, one set per revision, so the
-- app serves exactly what was reviewed and any past revision's page can be recovered.
CREATE TABLE published_pages (
    revision_id  bigint NOT NULL REFERENCES revisions,
    page_id      catalog_id NOT NULL,
    region       catalog_id NOT NULL,
    locale       text NOT NULL,
    currency     currency_code NOT NULL,
    html         text NOT NULL,
    data         jsonb NOT NULL CHECK (jsonb_typeof(data) = 'object'),
    published_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (revision_id, page_id, region)
);

-- What the app serves: the newest snapshot of every page × region.
CREATE VIEW current_pages AS
SELECT DISTINCT ON (page_id, region) page_id, region, locale, currency, html, data, published_at, revision_id
  FROM published_pages
 ORDER BY page_id, region, revision_id DESC;
