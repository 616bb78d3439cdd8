"""`tariff notify`: deliver the notifications outbox (SMTP, signed webhooks), list it, preview and retry.

Templates, channels, routes and the retry policy come from the config (`--config`); secrets only from the
environment variables it names. Database and delivery modules are imported inside the commands.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from cli.errors import CommandError
from cli.options import (
    BIGINT_MAX,
    ConfigOption,
    DatabaseUrlOption,
    EnvOption,
    OutputFormat,
    OutputFormatOption,
    database,
)
from cli.output import print_json, stderr_console, stdout_console

if TYPE_CHECKING:
    from compiler.catalog import Catalog

notify_app = typer.Typer(
    help="Notification delivery: send due notifications by e-mail and webhook, list, preview, retry.",
    no_args_is_help=True,
)


def compiled_catalog(config: Path) -> Catalog:
    from compiler.project import compile_config

    result = compile_config(config)
    if not result.ok or result.catalog is None:
        raise CommandError(
            f"the config in {config} has {len(result.diagnostics.errors)} error(s)",
            fix=f"run `tariff validate -c {config}` and fix them first",
        )
    return result.catalog


def _parse_now(now: str | None, timezone: str) -> datetime | None:
    from compiler.timeutil import parse_timestamp

    if now is None:
        return None
    try:
        return parse_timestamp(now, timezone)
    except ValueError as exc:
        raise CommandError(f"--now: {exc}", fix="write e.g. 2026-12-01T09:00 or 2026-12-01T09:00Z") from exc


@notify_app.command("send")
def notify_send(
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=100000, help="Send at most this many notifications.")
    ] = 100,
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Deliver what is due at this time (ISO 8601; without an offset, in tariff.yaml `timezone`). "
            "Default: now.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Deliver due notifications: e-mail by SMTP, events by signed webhook.

    Each notification is claimed with a lease, so concurrent senders never send the same one at once.

    Failed attempts are retried with exponential backoff and jitter (tariff.yaml `notifications.delivery`).

    After the last attempt a notification is marked failed (see `tariff notify retry`).

    Delivery is at least once: receivers de-duplicate on the idempotency key.
    """
    from cli.session import open_session
    from database.errors import DatabaseError
    from publishers.notify.deliver import deliver_due

    catalog = compiled_catalog(config)
    at = _parse_now(now, catalog.timezone)
    session = open_session(config, env, database_url, stderr_console(), settings=catalog.settings)
    try:
        summary = deliver_due(session.engine, session.schema, at, catalog=catalog, limit=limit)
    except DatabaseError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    finally:
        session.engine.dispose()
    if format_ is OutputFormat.json:
        print_json(summary)
        return
    console = stdout_console()
    console.print(
        f"{summary['sent']} sent, {summary['retry_scheduled']} to be retried, {summary['failed']} failed "
        f"({summary['claimed']} due)"
        + (f", {summary['lease_lost']} taken over" if summary["lease_lost"] else "")
    )
    for error in summary["errors"]:
        console.print(
            f"  #{error['id']} {error['kind']} via {error['channel']}: {escape(error['error'])} "
            f"→ {error['status'] or 'taken over'}",
            markup=True,
        )


@notify_app.command("list")
def notify_list(
    failed: Annotated[
        bool, typer.Option("--failed", help="Only notifications that failed for good.")
    ] = False,
    pending: Annotated[bool, typer.Option("--pending", help="Only notifications still to be sent.")] = False,
    sent: Annotated[bool, typer.Option("--sent", help="Only delivered notifications.")] = False,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Only this customer's.", show_default=False)
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only this kind.", show_default=False)] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=BIGINT_MAX, help="Newest first, at most this many.")
    ] = 50,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """The outbox, newest first: status, attempts, next attempt and last error of each notification."""
    from compiler.notification_kinds import KINDS
    from publishers.notify.outbox import list_notifications

    chosen = [name for name, on in (("failed", failed), ("pending", pending), ("sent", sent)) if on]
    if len(chosen) > 1:
        raise CommandError(
            f"--{' and --'.join(chosen)} exclude each other",
            fix="pass at most one of --failed, --pending, --sent",
        )
    if kind is not None and kind not in KINDS:
        raise CommandError(
            f"--kind: unknown notification kind {kind!r}", fix=f"use one of: {', '.join(KINDS)}"
        )
    with database(config, env, database_url) as db:
        rows = list_notifications(
            db.conn,
            db.schema,
            status=chosen[0] if chosen else None,
            customer=customer,
            kind=kind,
            limit=limit,
        )
        timezone = db.timezone
    if format_ is OutputFormat.json:
        print_json([{k: v.isoformat() if isinstance(v, datetime) else v for k, v in r.items()} for r in rows])
        return
    console = stdout_console()
    if not rows:
        console.print("no notifications match")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "kind", "customer", "channel", "status", "attempts", "when", "last error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["kind"],
            row["customer_id"] or "(admins)",
            row["channel"],
            _status(row),
            str(row["attempts"]),
            _when(row, timezone),
            escape(row["last_error"] or ""),
        )
    console.print(table)


def _status(row: dict[str, Any]) -> str:
    if row["status"] == "pending" and row["claimed_until"] is not None:
        return "sending"
    return str(row["status"])


def _when(row: dict[str, Any], timezone: str) -> str:
    from zoneinfo import ZoneInfo

    at = row["sent_at"] if row["status"] == "sent" else row["next_attempt_at"]
    if row["status"] == "failed":
        at = row["last_attempt_at"]
    if at is None:
        return ""
    prefix = {"sent": "sent ", "pending": "due ", "failed": "last tried "}[row["status"]]
    return prefix + str(at.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M"))


@notify_app.command("preview")
def notify_preview(
    kind: Annotated[str, typer.Argument(metavar="KIND", help="Notification kind, e.g. price_change.")],
    customer: Annotated[
        str | None,
        typer.Option(
            "--customer",
            help="Render this customer's newest notification of KIND from the outbox instead of sample data.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the HTML part to this file.", show_default=False),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Render KIND's template as it would be sent: subject and text part, and the HTML part with --out.

    Without --customer the data are realistic samples drawn from the config; no database is needed.
    """
    from compiler.notification_kinds import KINDS
    from publishers.notify.context import Recipient
    from publishers.notify.deliver import render_notification
    from publishers.notify.errors import DeliveryError
    from publishers.notify.outbox import latest_for
    from publishers.notify.samples import SAMPLE_RECIPIENT, sample_payload

    if kind not in KINDS:
        raise CommandError(f"unknown notification kind {kind!r}", fix=f"use one of: {', '.join(KINDS)}")
    catalog = compiled_catalog(config)
    notification_id = 0
    if customer is None:
        payload: dict[str, Any] = sample_payload(catalog, kind)
        recipient = SAMPLE_RECIPIENT if KINDS[kind].audience == "customer" else Recipient(None, None, None)
    else:
        with database(config, env, database_url) as db:
            row = latest_for(db.conn, db.schema, kind, customer)
        if row is None:
            raise CommandError(
                f"customer {customer!r} has no {kind} notification in the outbox",
                fix=f"check with `tariff notify list --customer {customer}`, or preview sample data "
                "without --customer",
            )
        payload = dict(row["payload"])
        recipient = Recipient(row["customer_id"], row["customer_email"], row["customer_region"])
        notification_id = int(row["id"])
    try:
        message = render_notification(catalog, kind, payload, recipient, notification_id)
    except DeliveryError as exc:
        raise CommandError(str(exc), fix=f"run `tariff validate -c {config}`") from exc
    if out is not None:
        try:
            out.write_text(message.html, "utf-8")
        except OSError as exc:
            raise CommandError(
                f"cannot write {out}: {exc.strerror or exc}", fix="choose another --out"
            ) from exc
    if format_ is OutputFormat.json:
        print_json({"kind": kind, "subject": message.subject, "text": message.text, "html": message.html})
        return
    console = stdout_console()
    console.print(f"Subject: {message.subject}", markup=False, highlight=False)
    console.print(markup=False)
    typer.echo(message.text, nl=False)
    if out is not None:
        stderr_console().print(f"HTML part written to {out}", markup=False)


@notify_app.command("retry")
def notify_retry(
    notification: Annotated[
        int | None,
        typer.Argument(
            metavar="[ID]",
            min=1,
            max=BIGINT_MAX,
            help="The failed notification to send again.",
            show_default=False,
        ),
    ] = None,
    all_failed: Annotated[
        bool, typer.Option("--all-failed", help="Retry every failed notification.")
    ] = False,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Put failed notifications back in the queue, due now with a fresh budget of attempts."""
    from publishers.notify.outbox import NotificationNotFoundError, retry

    if (notification is None) == (not all_failed):
        raise CommandError(
            "say which notifications to retry",
            fix="pass one ID (see `tariff notify list --failed`) or --all-failed",
        )
    try:
        with database(config, env, database_url) as db:
            ids = retry(db.conn, db.schema, notification, None)
    except NotificationNotFoundError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    if format_ is OutputFormat.json:
        print_json({"retried": ids})
        return
    stdout_console().print(
        f"{len(ids)} notification(s) queued again"
        + (f": {', '.join(map(str, ids))}" if ids else "")
        + ("; run `tariff notify send` to deliver them" if ids else "")
    )
