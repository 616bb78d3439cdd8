"""`tariff report tokens|revenue` and `tariff demo seed`: thin commands over the analytics package.

Reports print to the terminal or write CSV, JSON, XLSX or HTML (--out); every format carries the same
figures for the same --from/--to and filters. Analytics modules are imported inside the commands so
`tariff --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, cast

import typer
from rich.markup import escape

from cli.errors import CommandError
from cli.options import ConfigOption, DatabaseUrlOption, EnvOption, database
from cli.output import print_json, stderr_console, stdout_console

if TYPE_CHECKING:
    from analytics.model import Report
    from analytics.render import Format
    from analytics.revenue_report import RevenueGrouping
    from analytics.token_report import TokenGrouping

report_app = typer.Typer(
    help="Reports over the ledger, subscriptions and payments: AI-credit usage and revenue.",
    no_args_is_help=True,
)
demo_app = typer.Typer(
    help="Demo data: a realistic, deterministic history to try the reports on.", no_args_is_help=True
)

FORMATS = ("text", "csv", "json", "xlsx", "html")
FromOption = Annotated[
    str | None,
    typer.Option(
        "--from", help="First day (YYYY-MM-DD, inclusive, ledger time zone). Default: 179 days before --to."
    ),
]
ToOption = Annotated[
    str | None, typer.Option("--to", help="Last day (YYYY-MM-DD, inclusive). Default: today.")
]
ReportFormatOption = Annotated[
    str,
    typer.Option(
        "--format",
        "-f",
        help="text (terminal), csv (one file; --out DIR/ writes one file per section), json, xlsx or html "
        "(xlsx and html need --out).",
    ),
]
OutOption = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="File to write (or a directory for one CSV per section).", show_default=False
    ),
]


def _day(option: str, text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise CommandError(
            f"{option} {text!r} is not a date", fix=f"write {option} as YYYY-MM-DD, e.g. 2026-01-31"
        ) from None


def _format(text: str, out: Path | None) -> Format:
    value = text.strip().lower()
    if value not in FORMATS:
        raise CommandError(
            f"--format {text!r} is not a report format", fix=f"use one of: {', '.join(FORMATS)}"
        )
    if value in {"xlsx", "html"} and out is None:
        raise CommandError(
            f"--format {value} writes a file", fix=f"add --out FILE, e.g. --out report.{value}"
        )
    return value  # type: ignore[return-value]


def _choice(option: str, text: str, allowed: tuple[str, ...]) -> str:
    value = text.strip().lower()
    if value not in allowed:
        raise CommandError(
            f"{option} {text!r} is not one of the groupings", fix=f"use one of: {', '.join(allowed)}"
        )
    return value


def _check_known(conn: object, option: str, table: str, value: str | None) -> None:
    import sqlalchemy as sa
    from sqlalchemy.engine import Connection

    assert isinstance(conn, Connection)
    if value is None:
        return
    if conn.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = :v)"), {"v": value}).scalar():
        return
    listed = f"SELECT string_agg(id, ', ' ORDER BY id) FROM (SELECT id FROM {table} ORDER BY id LIMIT 20) x"
    names = conn.execute(sa.text(listed)).scalar() or "none"
    raise CommandError(f"{option} {value!r}: no such {table[:-1].replace('_', ' ')}", fix=f"known: {names}")


def _emit(report: Report, fmt: Format, out: Path | None) -> None:
    """Render; a file is written beside its destination and renamed into place: a failure leaves nothing."""
    from analytics.render import RenderError, render

    console = stdout_console()
    try:
        if out is None or (fmt in {"text", "csv"} and (out.is_dir() or str(out).endswith("/"))):
            written = render(report, fmt, out, console)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_name(f".{out.name}.partial")
            try:
                render(report, fmt, partial, console)
                partial.replace(out)
            finally:
                partial.unlink(missing_ok=True)
            written = [out]
    except RenderError as exc:
        raise CommandError(str(exc), exc.fix) from exc
    except OSError as exc:
        raise CommandError(f"cannot write {out}: {exc.strerror}", fix="choose a writable --out path") from exc
    for path in written:
        # The path is the user's text: escaped, so brackets in it are not read as markup.
        stderr_console().print(f"[green]✓[/green] wrote {escape(str(path))}")


def _progress(label: str, total: int) -> tuple[Callable[[str], None], Callable[[], None]]:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    if not console.is_terminal:
        return (lambda _name: None), (lambda: None)
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console, transient=True
    )
    progress.start()
    task = progress.add_task(label, total=total)

    def advance(name: str) -> None:
        progress.update(task, advance=1, description=f"{label}: {name}")

    return advance, progress.stop


@report_app.command("tokens")
def report_tokens(
    start: FromOption = None,
    end: ToOption = None,
    by: Annotated[
        str, typer.Option("--by", help="Breakdown: customer, plan, model, region, day or hour.")
    ] = "day",
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer.")] = None,
    plan: Annotated[str | None, typer.Option("--plan", help="Only usage while on this plan.")] = None,
    model: Annotated[str | None, typer.Option("--model", help="Only this AI model.")] = None,
    format_: ReportFormatOption = "text",
    out: OutOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """AI credits: totals, outstanding, trend, peak hours, utilisation, margin, top consumers, hints.

    Reads the usage rollups (never raw usage in bulk). Money in USD; see docs/reports.md for every metric.
    """
    from analytics.period import PeriodError, resolve_period, use_schema
    from analytics.token_report import GROUPINGS, TOKEN_STEPS, TokenFilters, build_token_report

    grouping = _choice("--by", by, GROUPINGS)
    fmt = _format(format_, out)
    first, last = _day("--from", start), _day("--to", end)
    with database(config, env, database_url) as db:
        use_schema(db.conn, db.schema)
        _check_known(db.conn, "--plan", "plans", plan)
        _check_known(db.conn, "--model", "ai_models", model)
        _check_known(db.conn, "--customer", "customers", customer)
        try:
            period = resolve_period(db.conn, first, last)
        except PeriodError as exc:
            raise CommandError(str(exc), exc.fix) from exc
        advance, stop = _progress("token report", TOKEN_STEPS)
        try:
            report = build_token_report(
                db.conn,
                period,
                TokenFilters(customer, plan, model),
                cast("TokenGrouping", grouping),
                progress=advance,
            )
        finally:
            stop()
    _emit(report, fmt, out)


@report_app.command("revenue")
def report_revenue(
    start: FromOption = None,
    end: ToOption = None,
    by: Annotated[str, typer.Option("--by", help="Breakdown: plan, region, currency or month.")] = "plan",
    format_: ReportFormatOption = "text",
    out: OutOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Revenue: MRR/ARR per currency and in USD, movements, conversion, flows, churn, cohorts, plans,
    payments, pricing-change impact and promotion performance. See docs/reports.md for every metric."""
    from analytics.period import PeriodError, resolve_period, use_schema
    from analytics.revenue_report import GROUPINGS, REVENUE_STEPS, build_revenue_report

    grouping = _choice("--by", by, GROUPINGS)
    fmt = _format(format_, out)
    first, last = _day("--from", start), _day("--to", end)
    with database(config, env, database_url) as db:
        use_schema(db.conn, db.schema)
        try:
            period = resolve_period(db.conn, first, last)
        except PeriodError as exc:
            raise CommandError(str(exc), exc.fix) from exc
        advance, stop = _progress("revenue report", REVENUE_STEPS)
        try:
            report = build_revenue_report(
                db.conn, period, cast("RevenueGrouping", grouping), progress=advance
            )
        finally:
            stop()
    _emit(report, fmt, out)


@demo_app.command("seed")
def demo_seed(
    customers: Annotated[
        int, typer.Option("--customers", "-n", min=1, max=1_000_000, help="Customers to create.")
    ] = 1000,
    days: Annotated[
        int, typer.Option("--days", "-d", min=14, max=3660, help="Days of history, ending now.")
    ] = 180,
    seed: Annotated[
        int, typer.Option("--seed", "-s", help="Random seed: the same seed gives the same history.")
    ] = 1,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    json_: Annotated[bool, typer.Option("--json", help="Print the counts as JSON.")] = False,
) -> None:
    """Load a realistic, deterministic history on the applied catalog: sign-ups, trials, conversions,
    upgrades, churn, payments and refunds, promotion redemptions, a mid-history price change, and AI usage
    with daily and weekly rhythms, heavy and light users and a few anomalies. One transaction, set-based."""
    from analytics.period import use_schema
    from analytics.seed import SeedError
    from analytics.seed import seed as load

    with database(config, env, database_url) as db:
        use_schema(db.conn, db.schema)
        advance, stop = _progress("seeding", 7)
        try:
            result = load(db.conn, customers=customers, days=days, seed_value=seed, progress=advance)
        except SeedError as exc:
            raise CommandError(str(exc), exc.fix) from exc
        finally:
            stop()
    if json_:
        print_json(result.to_json())
        return
    stdout_console().print(
        f"[green]✓[/green] seeded {result.customers:,} customers, {result.history_rows:,} subscription "
        f"states, {result.usage_records:,} usage records, {result.payments:,} payments, "
        f"{result.redemptions:,} redemptions and {result.price_changes} price changes from "
        f"{result.start:%Y-%m-%d} to {result.end:%Y-%m-%d}"
    )
