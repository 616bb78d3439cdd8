"""Reading revisions back: `tariff history` and `tariff show`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from database.connection import quote_schema

_COLUMNS = "id, created_at, actor, environment, git_commit, git_dirty, config_fingerprint, counts, summary"


def _plain(row: sa.RowMapping) -> dict[str, Any]:
    data = dict(row)
    data["created_at"] = data["created_at"].isoformat()
    return data


def list_revisions(conn: Connection, schema: str, limit: int) -> list[dict[str, Any]]:
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(f"SELECT {_COLUMNS} FROM {s}.revisions ORDER BY id DESC LIMIT :limit"), {"limit": limit}
    ).mappings()
    return [_plain(r) for r in rows]


def get_revision(conn: Connection, schema: str, revision: int) -> dict[str, Any] | None:
    s = quote_schema(schema)
    row = (
        conn.execute(sa.text(f"SELECT {_COLUMNS}, plan FROM {s}.revisions WHERE id = :id"), {"id": revision})
        .mappings()
        .first()
    )
    return None if row is None else _plain(row)
