"""The notifications outbox in SQL: claim with a lease, record outcomes, list, retry and enqueue.

Each function runs on the caller's connection; delivery (publishers.notify.deliver) gives each its own short
transaction so no transaction stays open while a message is on the wire.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from compiler.catalog import Catalog, DeliveryPolicy
from compiler.notification_kinds import KINDS, channels_for
from database.connection import quote_schema
from database.errors import DatabaseError

STATUSES = ("pending", "sent", "failed")


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    kind: str
    customer_id: str | None
    channel: str
    payload: Mapping[str, Any]
    idempotency_key: str
    attempts: int
    created_at: datetime
    customer_email: str | None
    customer_region: str | None


def claim(
    conn: Connection, schema: str, token: uuid.UUID, limit: int, lease: timedelta, at: datetime
) -> list[Claimed]:
    rows = conn.execute(
        sa.text(f"SELECT * FROM {quote_schema(schema)}.notification_claim(:token, :limit, :lease, :at)"),
        {"token": token, "limit": limit, "lease": lease, "at": at},
    ).mappings()
    return [Claimed(**row) for row in rows]


def mark_sent(conn: Connection, schema: str, notification_id: int, token: uuid.UUID, at: datetime) -> bool:
    return bool(
        conn.execute(
            sa.text(f"SELECT {quote_schema(schema)}.notification_sent(:id, :token, :at)"),
            {"id": notification_id, "token": token, "at": at},
        ).scalar_one()
    )


def mark_failed(
    conn: Connection,
    schema: str,
    notification_id: int,
    token: uuid.UUID,
    error: str,
    policy: DeliveryPolicy,
    at: datetime,
    *,
    permanent: bool = False,
) -> str | None:
    """The row's new status (`pending` to be retried, or `failed`); None when another claim holds it."""
    status = conn.execute(
        sa.text(
            f"SELECT {quote_schema(schema)}.notification_failed(:id, :token, :error, :max_attempts, "
            ":backoff, :max_backoff, :permanent, :at)"
        ),
        {
            "id": notification_id,
            "token": token,
            "error": error,
            "max_attempts": policy.max_attempts,
            "backoff": timedelta(seconds=policy.backoff_seconds),
            "max_backoff": timedelta(seconds=policy.max_backoff_seconds),
            "permanent": permanent,
            "at": at,
        },
    ).scalar_one()
    return None if status is None else str(status)


class NotificationNotFoundError(DatabaseError):
    pass


def retry(conn: Connection, schema: str, notification_id: int | None, at: datetime | None) -> list[int]:
    """Failed rows back to pending with a fresh budget of attempts; `None` retries every failed row."""
    try:
        rows = conn.execute(
            sa.text(
                f"SELECT * FROM {quote_schema(schema)}.notification_retry(:id, "
                "coalesce(CAST(:at AS timestamptz), now()))"
            ),
            {"id": notification_id, "at": at},
        ).scalars()
        return [int(r) for r in rows]
    except DBAPIError as exc:
        diag = getattr(exc.orig, "diag", None)
        if diag is not None and diag.sqlstate in ("P0002", "55000"):
            raise NotificationNotFoundError(str(diag.message_primary), diag.message_hint) from exc
        raise


def list_notifications(
    conn: Connection,
    schema: str,
    *,
    status: str | None = None,
    customer: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            "SELECT id, kind, customer_id, channel, status, attempts, next_attempt_at, last_attempt_at, "
            "last_error, created_at, sent_at, claimed_until, idempotency_key, payload "
            f"FROM {s}.notifications WHERE (CAST(:status AS text) IS NULL OR status = :status) "
            "AND (CAST(:customer AS text) IS NULL OR customer_id = :customer) "
            "AND (CAST(:kind AS text) IS NULL OR kind = :kind) ORDER BY id DESC LIMIT :limit"
        ),
        {"status": status, "customer": customer, "kind": kind, "limit": limit},
    ).mappings()
    return [dict(r) for r in rows]


def get_notification(conn: Connection, schema: str, notification_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.text(
                "SELECT n.*, c.email AS customer_email, c.region AS customer_region "
                f"FROM {quote_schema(schema)}.notifications n "
                f"LEFT JOIN {quote_schema(schema)}.customers c ON c.id = n.customer_id WHERE n.id = :id"
            ),
            {"id": notification_id},
        )
        .mappings()
        .first()
    )
    return None if row is None else dict(row)


def latest_for(conn: Connection, schema: str, kind: str, customer: str | None) -> dict[str, Any] | None:
    """The newest row of `kind` (for `customer` when given): what `notify preview --customer` renders."""
    row_id = conn.execute(
        sa.text(
            f"SELECT id FROM {quote_schema(schema)}.notifications WHERE kind = :kind "
            "AND (CAST(:customer AS text) IS NULL OR customer_id = :customer) "
            "ORDER BY (status = 'pending') DESC, id DESC LIMIT 1"
        ),
        {"kind": kind, "customer": customer},
    ).scalar()
    return None if row_id is None else get_notification(conn, schema, int(row_id))


def enqueue(
    conn: Connection,
    schema: str,
    catalog: Catalog,
    kind: str,
    key: str,
    payload: Mapping[str, Any],
    *,
    customer_id: str | None = None,
    at: datetime | None = None,
) -> int:
    """Write one outbox row per channel the kind is routed to; idempotent per `key` (+ channel).

    The row for the first channel carries `key` itself, further channels `key:channel`. Returns the number
    of rows written (0 on a replay, or when the kind is routed nowhere).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}")
    channels = channels_for(kind, catalog)
    written = 0
    for index, channel in enumerate(channels):
        written += conn.execute(
            sa.text(
                f"INSERT INTO {quote_schema(schema)}.notifications (kind, customer_id, channel, payload, "
                "idempotency_key, next_attempt_at) VALUES (:kind, :customer, :channel, "
                "CAST(:payload AS jsonb), :key, coalesce(CAST(:at AS timestamptz), now())) "
                "ON CONFLICT (idempotency_key) DO NOTHING"
            ),
            {
                "kind": kind,
                "customer": customer_id,
                "channel": channel,
                "payload": json.dumps(payload, default=str),
                "key": key if index == 0 else f"{key}:{channel}",
                "at": at,
            },
        ).rowcount
    return written
