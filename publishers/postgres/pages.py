"""Published pricing pages: the rendered HTML and JSON of every page × region, stored with each revision.

The app serves exactly what was reviewed (`current_pages`), and any past revision's page can be
recovered. A snapshot shows promotions as they stood when it was published; `tariff preview --at`
shows any other moment.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compiler.catalog import Catalog
from database.connection import quote_schema
from publishers.site.render import render_site


def publish_pages(conn: Connection, schema: str, catalog: Catalog, revision_id: int, at: datetime) -> int:
    """Render every page for every region and store the snapshots under `revision_id`."""
    if not catalog.pages:
        return 0
    site = render_site(catalog, at=at)
    rows = [
        {
            "revision": revision_id,
            "page": page.page_id,
            "region": page.region,
            "locale": page.locale,
            "currency": page.currency,
            "html": page.html,
            "data": json.dumps(page.data, sort_keys=True),
            "at": at,
        }
        for page in site.pages
    ]
    conn.execute(
        sa.text(
            f"INSERT INTO {quote_schema(schema)}.published_pages "
            "(revision_id, page_id, region, locale, currency, "
            "html, data, published_at) VALUES (:revision, :page, :region, :locale, :currency, :html, "
            "CAST(:data AS jsonb), :at)"
        ),
        rows,
    )
    return len(rows)


def published_page(
    conn: Connection, schema: str, revision_id: int | None, page_id: str | None, region: str
) -> dict[str, Any] | None:
    """One stored snapshot: of `revision_id`, or the newest when None; the first page when no page id."""
    s = quote_schema(schema)
    row = (
        conn.execute(
            sa.text(
                f"SELECT revision_id, page_id, region, locale, currency, html, data, published_at "
                f"FROM {s}.published_pages WHERE upper(region) = upper(:region) "
                "AND (CAST(:page AS text) IS NULL OR page_id = :page) "
                "AND revision_id = coalesce(CAST(:revision AS bigint), "
                f"(SELECT max(revision_id) FROM {s}.published_pages)) "
                "ORDER BY page_id LIMIT 1"
            ),
            {"region": region, "page": page_id, "revision": revision_id},
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)
