"""tariff.yaml `notifications.routes`, stored where the database's own writers read them.

The tick steps, dunning and anomaly alerts write their notifications in SQL (migration 0025), so they can
only follow routes the database holds; apps that call those functions directly get the same routing.
`tariff apply` and `tariff tick` both publish the config's routes. Routes are settings, not catalog rows: a
change to them makes no revision, so `tariff plan` lists it apart from the catalog's changes (and counts it
as a change for `--detailed-exitcode`), and tick is what writes most of these notifications.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True, slots=True)
class RouteChange:
    """One kind whose stored route the config changes. None: no route, the kind goes to its default."""

    kind: str
    before: tuple[str, ...] | None
    after: tuple[str, ...] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "before": None if self.before is None else list(self.before),
            "after": None if self.after is None else list(self.after),
        }


def stored_routes(conn: Connection, schema: str) -> dict[str, tuple[str, ...]]:
    document = conn.execute(sa.text(f"SELECT {quote_schema(schema)}.notification_routes_json()")).scalar_one()
    return {str(kind): tuple(str(c) for c in channels) for kind, channels in document.items()}


def route_changes(conn: Connection, schema: str, routes: Mapping[str, Sequence[str]]) -> list[RouteChange]:
    """What publishing `routes` would change in the stored routes, by kind."""
    live = stored_routes(conn, schema)
    wanted = {kind: tuple(channels) for kind, channels in routes.items()}
    return [
        RouteChange(kind, live.get(kind), wanted.get(kind))
        for kind in sorted(live.keys() | wanted.keys())
        if live.get(kind) != wanted.get(kind)
    ]


def describe_route(channels: tuple[str, ...] | None) -> str:
    if channels is None:
        return "default"
    return ", ".join(channels) if channels else "off"


def route_lines(changes: Sequence[RouteChange]) -> list[str]:
    """`kind: before → after`, one line per changed kind, as plan and apply print them."""
    return [f"{c.kind}: {describe_route(c.before)} → {describe_route(c.after)}" for c in changes]
