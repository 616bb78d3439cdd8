"""`tariff tick`: the ledger's scheduled automation — release overdue reservations, expire lapsed grants,
renew plan allowances at each subscription's period boundary. Safe to run every few minutes from cron or CI:
it is idempotent and concurrent runs serialise in the database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.errors import CommandError
from cli.options import ConfigOption, DatabaseUrlOption, EnvOption, OutputFormat, OutputFormatOption
from cli.output import print_json, stderr_console, stdout_console


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
) -> None:
    """Renew plan allowances, expire grants and release overdue reservations (idempotent)."""
    import sqlalchemy as sa

    from cli.session import open_session
    from compiler.timeutil import parse_timestamp
    from database.connection import quote_schema
    from database.errors import DatabaseError
    from database.ledger import tick as run_tick

    session = open_session(config, env, database_url, stderr_console())
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
            summary = run_tick(conn, session.schema, at=at)
    except DatabaseError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    finally:
        session.engine.dispose()
    if format_ is OutputFormat.json:
        print_json(summary)
        return
    stdout_console().print(
        f"tick at {summary['at']}: {summary['allowances_granted']} allowance(s) renewed "
        f"({summary['credits_granted']} credits), {summary['grants_expired']} grant(s) expired "
        f"({summary['credits_expired']} credits), {summary['reservations_released']} reservation(s) released"
    )
