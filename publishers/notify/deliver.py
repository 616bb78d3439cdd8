"""Deliver due outbox rows: claim a batch (short transaction), send each with no transaction open, record.

At least once: a row is marked sent only after the SMTP server or webhook accepted it; a sender that dies
in between leaves the row to be claimed again when its lease runs out. Concurrent senders never hold the
same row in one attempt (notification_claim takes rows FOR UPDATE SKIP LOCKED and leases them).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.engine import Connection, Engine

from compiler.catalog import Catalog
from compiler.notification_kinds import KINDS
from publishers.notify import outbox
from publishers.notify.context import Recipient, template_variables
from publishers.notify.errors import DeliveryError
from publishers.notify.render import Message, RenderError, render
from publishers.notify.smtp import send_email
from publishers.notify.webhook import post_event

DEFAULT_LIMIT = 100
BATCH = 20
MAX_REPORTED_ERRORS = 20


def render_notification(
    catalog: Catalog, kind: str, payload: Mapping[str, Any], recipient: Recipient, notification_id: int = 0
) -> Message:
    """The message a row of `kind` becomes; DeliveryError when the config cannot render it."""
    if kind not in KINDS:
        raise DeliveryError(f"unknown notification kind {kind!r}", permanent=True)
    template = catalog.settings.templates.get(kind)
    if template is None:
        raise DeliveryError(f"no template for kind {kind!r}: add content/notifications/{kind}.md")
    try:
        variables = template_variables(catalog, kind, payload, recipient, notification_id)
    except (ValueError, TypeError, ArithmeticError) as exc:
        raise DeliveryError(
            f"payload of this {kind} notification is malformed: {exc}", permanent=True
        ) from exc
    try:
        return render(template, variables)
    except RenderError as exc:
        raise DeliveryError(str(exc)) from exc


def _send(row: outbox.Claimed, catalog: Catalog, environ: Mapping[str, str]) -> None:
    settings = catalog.settings
    channel = settings.channels.get(row.channel)
    if channel is None:
        raise DeliveryError(
            f"channel {row.channel!r} is not configured (tariff.yaml `notifications.channels`)"
        )
    recipient = Recipient(row.customer_id, row.customer_email, row.customer_region)
    message = render_notification(catalog, row.kind, row.payload, recipient, row.id)
    timeout = float(settings.delivery.timeout_seconds)
    if channel.type == "smtp":
        if row.customer_id is not None:
            if not row.customer_email:
                raise DeliveryError(f"customer {row.customer_id!r} has no e-mail address", permanent=True)
            recipients = [row.customer_email]
        else:
            if not settings.admins:
                raise DeliveryError(
                    "an admin notification by e-mail, but tariff.yaml `notifications.admins` is empty",
                    permanent=True,
                )
            recipients = list(settings.admins)
        send_email(channel, recipients, message, row.idempotency_key, timeout=timeout, environ=environ)
        return
    event = {
        "id": row.id,
        "kind": row.kind,
        "idempotency_key": row.idempotency_key,
        "created_at": row.created_at.isoformat(),
        "attempt": row.attempts,
        "customer": None if row.customer_id is None else {"id": row.customer_id, "email": row.customer_email},
        "payload": dict(row.payload),
        "message": {"subject": message.subject, "text": message.text},
    }
    post_event(channel, event, row.idempotency_key, timeout=timeout, environ=environ)


def deliver_due(
    bind: Engine | Connection,
    schema: str,
    at: datetime | None = None,
    *,
    catalog: Catalog,
    limit: int = DEFAULT_LIMIT,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Send up to `limit` due notifications; a summary of what happened.

    `bind` is best an Engine. Given a Connection, its Engine is used: claims and outcomes commit in their
    own short transactions, never in the caller's, so a caller's long transaction holds no row locks
    while messages are on the wire. `at` fixes the clock (tests, `--now`); by default the wall clock.
    """
    engine = bind.engine if isinstance(bind, Connection) else bind
    env = os.environ if environ is None else environ
    policy = catalog.settings.delivery
    clock: Callable[[], datetime] = (lambda: at) if at is not None else (lambda: datetime.now(UTC))
    # Long enough for a whole batch to time out at every step (connect, TLS, send) before another sender
    # may take its rows over.
    lease = timedelta(seconds=max(60, BATCH * policy.timeout_seconds * 3))
    token = uuid.uuid4()
    summary: dict[str, Any] = {
        "at": clock().isoformat(),
        "claimed": 0,
        "sent": 0,
        "retry_scheduled": 0,
        "failed": 0,
        "lease_lost": 0,
        "errors": [],
    }
    while summary["claimed"] < limit:
        with engine.begin() as conn:
            rows = outbox.claim(conn, schema, token, min(BATCH, limit - summary["claimed"]), lease, clock())
        if not rows:
            break
        summary["claimed"] += len(rows)
        for row in rows:
            error: DeliveryError | None = None
            try:
                _send(row, catalog, env)
            except DeliveryError as exc:
                error = exc
            except Exception as exc:  # a bug must not leave the row leased: record it and go on
                error = DeliveryError(f"internal error: {type(exc).__name__}: {exc}")
            with engine.begin() as conn:
                if error is None:
                    kept = outbox.mark_sent(conn, schema, row.id, token, clock())
                    status: str | None = "sent" if kept else None
                else:
                    status = outbox.mark_failed(
                        conn, schema, row.id, token, str(error), policy, clock(), permanent=error.permanent
                    )
            if status is None:
                summary["lease_lost"] += 1
            elif status == "sent":
                summary["sent"] += 1
            elif status == "failed":
                summary["failed"] += 1
            else:
                summary["retry_scheduled"] += 1
            if error is not None and len(summary["errors"]) < MAX_REPORTED_ERRORS:
                summary["errors"].append(
                    {
                        "id": row.id,
                        "kind": row.kind,
                        "channel": row.channel,
                        "status": status,
                        "error": str(error),
                    }
                )
    return summary
