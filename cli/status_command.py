"""`tariff status`: the admin's one-screen dashboard, once or live (`--watch`).

Reads only: plans, prices, subscribers, MRR, this month's conversion and churn, credits used against what
the plans allocate, outstanding balance, top models and customers, promotions, the last revision, pending
price migrations, undelivered notifications and drift. Figures come from small tables and the daily usage
rollup (analytics/status.py), so leaving `--watch` running costs the database next to nothing.
"""

from __future__ import annotations

import time
from datetime import datetime
from io import StringIO
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from cli.errors import CommandError
from cli.options import ConfigOption, DatabaseUrlOption, EnvOption
from cli.output import stderr_console, stdout_console
from cli.report_commands import OutOption, ReportFormatOption, _emit, _format

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.text import Text
    from sqlalchemy.engine import Connection

    from analytics.model import Report
    from analytics.status import Drift

DRIFT_EVERY = 60.0  # seconds between drift checks under --watch: it compiles the last published config


def drift_summary(conn: Connection, schema: str) -> Drift | None:
    """Live catalog rows changed outside Tariff since the last apply, as `tariff plan` detects them."""
    from analytics.status import Drift
    from publishers.postgres.plan import drift, live_state

    live, published, _revision = live_state(conn, schema)
    if live is None or published is None:
        return None
    if live.fingerprint == published:
        return Drift(0, ())
    found = drift(conn, schema, live, live.settings)
    if found is None:
        return None
    return Drift(len(found.changes), tuple(change.key for change in found.changes))


def _screen(report: Report, console: Console) -> Text:
    """The report as the text renderer draws it, captured so rich Live can redraw it in place."""
    from rich.text import Text

    from analytics.render.text import render_text

    buffer = StringIO()
    capture = Console(
        file=buffer,
        width=console.width,
        force_terminal=console.is_terminal,
        color_system=console.color_system,  # type: ignore[arg-type]
        highlight=False,
    )
    render_text(report, capture)
    return Text.from_ansi(buffer.getvalue())


def status(
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Keep the screen open and refresh it live (Ctrl-C to stop).")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            "--interval", "-n", min=1.0, max=3600.0, help="Seconds between refreshes under --watch."
        ),
    ] = 5.0,
    times: Annotated[
        int | None,
        typer.Option(
            "--times", min=1, help="Stop --watch after this many refreshes (default: until Ctrl-C)."
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Show the figures as of this time (ISO 8601; without an offset, in the token rules' time "
            "zone). Default: now.",
            show_default=False,
        ),
    ] = None,
    no_drift: Annotated[
        bool,
        typer.Option("--no-drift", help="Skip the drift check (it recompiles the last published config)."),
    ] = False,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: ReportFormatOption = "text",
    out: OutOption = None,
) -> None:
    """The admin dashboard: what is live and how it is doing, once or redrawn live (--watch).

    Plans and prices per region, subscribers, trials, MRR, conversion and churn this month, credits used
    against what the plans allocate, outstanding balance, top models and customers, promotions, the last
    revision, pending price migrations, undelivered notifications and drift. Reads small tables and the
    daily rollup only, so --watch can be left running.
    """
    if watch and (format_.strip().lower() != "text" or out is not None):
        raise CommandError(
            "--watch redraws the terminal and cannot write --format/--out",
            fix="drop --watch to write the status once, or drop --format/--out to watch it",
        )
    fmt = _format(format_, out)
    import sqlalchemy as sa

    from analytics.status import collect_status
    from cli.session import open_session
    from compiler.timeutil import parse_timestamp
    from database.connection import quote_schema
    from database.errors import DatabaseError

    session = open_session(config, env, database_url, stderr_console(), migrate=False)
    label = env or ""
    try:
        moment: datetime | None = None
        if at is not None:
            with session.engine.connect() as conn:
                zone = str(
                    conn.execute(
                        sa.text(f"SELECT {quote_schema(session.schema)}.token_timezone()")
                    ).scalar_one()
                )
            try:
                moment = parse_timestamp(at, zone)
            except ValueError as exc:
                raise CommandError(
                    f"--at: {exc}", fix="write e.g. 2026-11-15T12:00 or 2026-11-15T06:30Z"
                ) from exc

        def snapshot(with_drift: bool, last: Drift | None) -> tuple[Report, Drift | None]:
            with session.engine.connect() as conn:
                found = last
                if with_drift and not no_drift:
                    found = drift_summary(conn, session.schema)
                return collect_status(conn, session.schema, moment, drift=found, environment=label), found

        if not watch:
            report, _ = snapshot(True, None)
            _emit(report, fmt, out)
            return
        _watch(snapshot, interval, times)
    except DatabaseError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    finally:
        session.engine.dispose()


def _watch(
    take: Callable[[bool, Drift | None], tuple[Report, Drift | None]], interval: float, times: int | None
) -> None:
    """Redraw in place every `interval` seconds; drift (the costly check) at most every DRIFT_EVERY."""
    from rich.live import Live

    console = stdout_console()
    drift: Drift | None = None
    drift_checked = float("-inf")
    count = 0
    try:
        with Live(console=console, auto_refresh=False, screen=False, transient=False) as live:
            while True:
                now = time.monotonic()
                check = now - drift_checked >= DRIFT_EVERY
                report, drift = take(check, drift)
                if check:
                    drift_checked = now
                live.update(_screen(report, console), refresh=True)
                count += 1
                if times is not None and count >= times:
                    return
                time.sleep(interval)
    except KeyboardInterrupt:
        return
