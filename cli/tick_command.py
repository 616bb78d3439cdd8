"""`tariff tick`: the scheduled automation (database/automation.py) — allowance renewal and rollover, grant
expiry and the end of boosts, low-balance alerts, package renewal orders, promotion start/end notices and due
grandfathering migrations; then, with the transaction committed, it sends the PayU pre-debit notices that
are due and delivers due notifications. Safe to run every few minutes from cron or CI: it is idempotent and
concurrent runs serialise in the database (and lease what they send).

The notifications the automation writes follow tariff.yaml `notifications.routes`, which the database holds
(migration 0025): tick publishes the config's routes first, in its own transaction, because a change to the
routes alone makes no revision for `tariff apply` to publish.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli.errors import CommandError
from cli.options import ConfigOption, DatabaseUrlOption, EnvOption, OutputFormat, OutputFormatOption
from cli.output import print_json, stderr_console, stdout_console

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from cli.session import Session
    from compiler.catalog import Catalog


def tick(
    now: Annotated[
        str | None,
        typer.Option(
            "--now",
            help="Run as of this time (ISO 8601; without an offset, in the token rules' time zone). "
            "Default: the database's clock.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
    send: Annotated[
        bool,
        typer.Option(
            "--send/--no-send",
            help="After the automation, send the PayU pre-debit notices that are due (when the environment "
            "has PayU settings) and deliver due notifications (what `tariff notify send` does).",
        ),
    ] = True,
) -> None:
    """Run the scheduled automation once: renew and roll over allowances, expire grants and boosts, send
    low-balance alerts, queue package renewals, announce promotions, execute due price migrations, remind
    failed payments (dunning), fold usage rollups, raise usage-anomaly alerts, then send due PayU pre-debit
    notices and deliver due notifications.

    Idempotent: running it again (or two at once) changes nothing more. Run it every few minutes.
    """
    import sqlalchemy as sa

    from analytics.anomalies import raise_anomaly_alerts
    from analytics.rollups import refresh_usage_rollups
    from cli.session import open_session
    from compiler.timeutil import parse_timestamp
    from database.automation import STEPS, describe, run_tick
    from database.connection import quote_schema
    from database.errors import DatabaseError

    session = open_session(config, env, database_url, stderr_console())
    # Reporting steps live above the database layer, so they join the list here rather than in STEPS.
    steps = (*STEPS, ("usage_rollups", refresh_usage_rollups), ("anomalies", raise_anomaly_alerts))
    # Compiled before the transaction so the tick lock is not held while the config is read.
    catalog, config_error = _compile(config) if send or _has_settings(config) else (None, None)
    try:
        with session.engine.begin() as conn:
            zone = str(
                conn.execute(sa.text(f"SELECT {quote_schema(session.schema)}.token_timezone()")).scalar_one()
            )
            try:
                at = None if now is None else parse_timestamp(now, zone)
            except ValueError as exc:
                raise CommandError(
                    f"--now: {exc}", fix="write e.g. 2026-12-01T00:05 or 2026-12-01T00:05Z"
                ) from exc
            _refresh_routes(conn, session.schema, config, catalog, config_error)
            summary = run_tick(conn, session.schema, at=at, steps=steps)
        # Delivery runs after the tick commits, so what tick queued goes out in this same run, and no
        # transaction is open while messages are on the wire.
        if send:
            summary["steps"]["pre_debits"] = _pre_debits(session, datetime.fromisoformat(summary["at"]))
            summary["steps"]["notifications"] = _deliver(
                session.engine, session.schema, at, catalog, config_error
            )
    except DatabaseError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    finally:
        session.engine.dispose()
    if format_ is OutputFormat.json:
        print_json(summary)
        return
    console = stdout_console()
    for line in describe(summary):
        console.print(line, markup=False)


def _pre_debits(session: Session, at: datetime) -> dict[str, Any]:
    """PayU pre-debit notices due at `at`, sent with no transaction open; without PayU settings for the
    environment (or its key and salt) they stay recorded in payu_actions, as `tariff payu actions` lists."""
    from publishers.payu.client import PayUClient
    from publishers.payu.config import resolve
    from publishers.payu.errors import PayUError
    from publishers.payu.mandates import pending_pre_debits, send_due_pre_debits

    env = session.environment
    reason = "this environment has no PayU settings"
    if env is not None and env.payu is not None:
        settings = resolve(env.name, env.payu)
        try:
            client = PayUClient(settings.api_url, settings.credentials())
        except PayUError as exc:
            stderr_console().print(f"warning: PayU pre-debit notices not sent: {exc.message}", markup=False)
            reason = exc.message
        else:
            return send_due_pre_debits(session.engine, session.schema, client, at)
    with session.engine.begin() as conn:
        pending = pending_pre_debits(conn, session.schema)
    return {"not_sent": reason, "pending": pending}


def _has_settings(config: Path) -> bool:
    return (config / "tariff.yaml").is_file() or (config / "tariff.yml").is_file()


def _compile(config: Path) -> tuple[Catalog | None, str | None]:
    """The compiled config, or why it does not compile: the automation itself does not need it."""
    from cli.notify_commands import compiled_catalog

    try:
        return compiled_catalog(config), None
    except CommandError as exc:
        return None, exc.message


def _refresh_routes(
    conn: Connection, schema: str, config: Path, catalog: Catalog | None, config_error: str | None
) -> None:
    """Store the config's notification routes for the steps about to write notifications. Without a
    tariff.yaml there is nothing to refresh (tick works on the database alone); a config that does not
    compile leaves the stored routes in place, with a warning."""
    from publishers.notify.routes import publish_routes

    if catalog is not None:
        if publish_routes(conn, schema, catalog.settings.routes):
            stderr_console().print(
                f"notification routes updated from {config} (notifications.routes)", markup=False
            )
    elif config_error is not None and _has_settings(config):
        stderr_console().print(
            f"warning: notification routes not refreshed: {config_error}; the routes stored by the last "
            "apply or tick are used",
            markup=False,
        )


def _deliver(
    engine: Engine, schema: str, at: datetime | None, catalog: Catalog | None, config_error: str | None
) -> dict[str, Any]:
    """Send due notifications with the channels and templates of the config; the automation has committed
    by now, so a config that does not compile skips delivery (with a warning) instead of undoing the tick."""
    from publishers.notify.deliver import deliver_due

    if catalog is None:
        reason = config_error or "the config did not compile"
        stderr_console().print(
            f"warning: notifications not sent: {reason}; fix it, then run `tariff notify send`",
            markup=False,
        )
        return {"skipped": reason}
    return deliver_due(engine, schema, at, catalog=catalog)
