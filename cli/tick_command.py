"""`tariff tick`: the scheduled automation (database/automation.py) — allowance renewal and rollover, grant
expiry and the end of boosts, low-balance alerts, package renewal orders, promotion start/end notices and due
grandfathering migrations. Safe to run every few minutes from cron or CI: it is idempotent and concurrent
runs serialise in the database.
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
    """Run the scheduled automation once: renew and roll over allowances, expire grants and boosts, send
    low-balance alerts, queue package renewals, announce promotions and execute due price migrations.

    Idempotent: running it again (or two at once) changes nothing more. Run it every few minutes.
    """
    import sqlalchemy as sa

    from cli.session import open_session
    from compiler.timeutil import parse_timestamp
    from database.automation import describe, run_tick
    from database.connection import quote_schema
    from database.errors import DatabaseError

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
    console = stdout_console()
    for line in describe(summary):
        console.print(line, markup=False)
