"""The usage rollups' maintenance step, for `tariff tick` to call so the queue stays short between reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection


def refresh_usage_rollups(conn: Connection, schema: str, at: datetime | None = None) -> dict[str, Any]:
    """Fold the committed usage queue into usage_hourly and usage_customer_monthly (idempotent).

    `at` is accepted for tick's uniform signature; the fold does not depend on the clock.
    """
    quoted = '"' + schema.replace('"', '""') + '"'
    folded = conn.execute(sa.text(f"SELECT {quoted}.refresh_usage_rollups()")).scalar_one()
    return {"usage_rollup_rows": int(folded)}
