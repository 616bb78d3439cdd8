"""tariff.yaml `notifications.routes`, stored where the database's own writers read them.

The tick steps, dunning and anomaly alerts write their notifications in SQL (migration 0025), so they can
only follow routes the database holds; apps that call those functions directly get the same routing.
`tariff apply` and `tariff tick` both publish the config's routes: settings are not part of the plan's diff,
so a change to the routes alone makes no revision, and tick is what writes most of these notifications.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from database.connection import quote_schema


def publish_routes(conn: Connection, schema: str, routes: Mapping[str, Sequence[str]]) -> bool:
    """Make `routes` the stored routes (in the caller's transaction); True when that changed them."""
    document = json.dumps({kind: list(channels) for kind, channels in routes.items()})
    changed = conn.execute(
        sa.text(f"SELECT {quote_schema(schema)}.set_notification_routes(CAST(:routes AS jsonb))"),
        {"routes": document},
    ).scalar_one()
    return bool(changed)
