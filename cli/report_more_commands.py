"""`tariff report forecast` and `tariff report anomalies`: predictions with their track record, and usage
that stands out from a customer's own weekly pattern. Both render in every report format.
"""

from __future__ import annotations

import re
from datetime import date, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cli.errors import CommandError
from cli.options import BIGINT_MAX, ConfigOption, DatabaseUrlOption, EnvOption, database
from cli.report_commands import OutOption, ReportFormatOption, _check_known, _emit, _format

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


class Subject(StrEnum):
    tokens = "tokens"
    revenue = "revenue"


class Basis(StrEnum):
    auto = "auto"
    collected = "collected"
    mrr = "mrr"


CustomerOption = Annotated[
    str | None, typer.Option("--customer", help="Only this customer (the app's user id).", show_default=False)
]
ModelOption = Annotated[
    str | None, typer.Option("--model", help="Only this AI model id (e.g. gpt-4o).", show_default=False)
]

_RELATIVE = re.compile(r"(?P<n>[0-9]{1,4})\s*(?P<unit>d|w)", re.IGNORECASE)


def parse_day(text: str, option: str, today: date) -> date:
    """A date (2026-11-01) or a span back from today (14d, 8w)."""
    match = _RELATIVE.fullmatch(text.strip())
    if match is not None:
        days = int(match["n"]) * (7 if match["unit"].lower() == "w" else 1)
        return today - timedelta(days=days)
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise CommandError(
            f"{option}: not a date: {text!r}",
            fix="write a date such as 2026-11-01, or 14d / 8w back from today",
        ) from exc


def _known(conn: Connection, schema: str, customer: str | None, model: str | None) -> None:
    from analytics.period import use_schema

    use_schema(conn, schema)
    _check_known(conn, "--customer", "customers", customer)
    _check_known(conn, "--model", "ai_models", model)


def forecast(
    subject: Annotated[
        Subject,
        typer.Argument(metavar="tokens|revenue", help="What to forecast: credits consumed or revenue."),
    ],
    horizon: Annotated[
        str, typer.Option("--horizon", help="How far ahead: days, weeks or 30-day months (90d, 12w, 3m).")
    ] = "90d",
    from_: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Fit on history from this day (a date, or 26w back from today). Default: all history.",
            show_default=False,
        ),
    ] = None,
    currency: Annotated[
        str | None,
        typer.Option(
            "--currency",
            help="Revenue currency (default: the one with the most revenue).",
            show_default=False,
        ),
    ] = None,
    basis: Annotated[
        Basis,
        typer.Option(
            "--basis",
            help="Revenue as money collected per day (payments less refunds) or as MRR in force each day; "
            "auto: collected when there are payments, else MRR.",
        ),
    ] = Basis.auto,
    customer: CustomerOption = None,
    model: ModelOption = None,
    level: Annotated[
        float, typer.Option("--level", min=0.5, max=0.99, help="Probability of the prediction interval.")
    ] = 0.8,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: ReportFormatOption = "text",
    out: OutOption = None,
) -> None:
    """Forecast daily credits or revenue, with prediction intervals and how far to trust them.

    Shows how far off the same method was on recent weeks it had not seen (rolling-origin back-test:
    MAE, MAPE, interval coverage).

    Fits exponential smoothing with a trend and weekly seasonality (the model chosen by AICc) on complete
    days (today is left out). Needs at least 28 days of history.
    """
    from analytics.forecast import NotEnoughHistoryError, parse_horizon, today_in
    from analytics.forecast_report import NoRevenueError, build_forecast_report

    fmt = _format(format_, out)
    try:
        days = parse_horizon(horizon)
    except ValueError as exc:
        raise CommandError(f"--horizon: {exc}", fix="write days, weeks or months: 90d, 12w, 3m") from exc
    if subject is Subject.tokens and (currency is not None or basis is not Basis.auto):
        raise CommandError(
            "--currency and --basis are for revenue forecasts", fix="drop them, or forecast revenue"
        )
    if subject is Subject.revenue and (customer is not None or model is not None):
        raise CommandError(
            "--customer and --model are for token forecasts", fix="drop them, or forecast tokens"
        )
    with database(config, env, database_url) as db:
        _known(db.conn, db.schema, customer, model)
        start = parse_day(from_, "--from", today_in(db.conn, db.schema)) if from_ is not None else None
        try:
            report = build_forecast_report(
                db.conn,
                db.schema,
                subject.value,
                days,
                start=start,
                currency=currency.upper() if currency else None,
                basis=basis.value,
                customer=customer,
                model=model,
                level=level,
            )
        except NotEnoughHistoryError as exc:
            raise CommandError(
                f"cannot forecast {subject.value}: {exc}",
                fix=f"forecasts need {exc.needed} complete days (four weeks, to learn the weekly rhythm); "
                + ("move --from earlier, or " if start is not None else "")
                + "wait until more history has been recorded",
            ) from exc
        except NoRevenueError as exc:
            raise CommandError(
                f"cannot forecast revenue: {exc}",
                fix="try --basis mrr (MRR from subscriptions) or another --currency"
                if basis is not Basis.mrr
                else "register paying subscriptions first, or try another --currency",
            ) from exc
    _emit(report, fmt, out)


def anomalies(
    since: Annotated[
        str,
        typer.Option("--since", help="First day to check: a date, or 14d / 2w back from today."),
    ] = "7d",
    until: Annotated[
        str | None,
        typer.Option("--until", help="Last day to check (default: today).", show_default=False),
    ] = None,
    customer: CustomerOption = None,
    model: ModelOption = None,
    min_ratio: Annotated[
        float, typer.Option("--min-ratio", min=1.0, help="At least this many times the usual weekday.")
    ] = 3.0,
    min_score: Annotated[
        float,
        typer.Option(
            "--min-score", min=0.1, help="Robust score: distance from the usual day in scaled MADs."
        ),
    ] = 5.0,
    min_credits: Annotated[
        int,
        typer.Option(
            "--min-credits", min=1, max=BIGINT_MAX, help="At least this many credits above the usual day."
        ),
    ] = 100,
    weeks: Annotated[
        int,
        typer.Option("--weeks", min=1, max=52, help="Same weekdays of history each day is compared with."),
    ] = 8,
    min_history: Annotated[
        int, typer.Option("--min-history", min=1, max=52, help="Fewer same weekdays of history: not judged.")
    ] = 4,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: ReportFormatOption = "text",
    out: OutOption = None,
) -> None:
    """Unusual usage per customer, model and day, strongest first, each explained in a sentence.

    A day is unusual when it is far above the same weekday of the customer's own recent weeks (median and
    MAD, computed in the database over the daily rollup). Thresholds: docs/reports.md.
    """
    from decimal import Decimal

    from analytics.anomalies import Thresholds, anomaly_report, find_anomalies
    from analytics.forecast import today_in

    thresholds = Thresholds(
        weeks=weeks,
        min_history=min_history,
        min_score=Decimal(str(min_score)),
        min_ratio=Decimal(str(min_ratio)),
        min_excess=min_credits,
    )
    fmt = _format(format_, out)
    problems = thresholds.problems()
    if problems:
        raise CommandError(f"--min-history/--weeks: {problems[0]}", fix="use --min-history at most --weeks")
    with database(config, env, database_url) as db:
        _known(db.conn, db.schema, customer, model)
        today = today_in(db.conn, db.schema)
        first = parse_day(since, "--since", today)
        last = parse_day(until, "--until", today) if until is not None else today
        if first > last:
            raise CommandError(
                f"--since {first} is after --until {last}", fix="pick a --since on or before --until"
            )
        found = find_anomalies(
            db.conn, db.schema, first, last, customer=customer, model=model, thresholds=thresholds
        )
        report = anomaly_report(found, first, last, customer=customer, model=model, thresholds=thresholds)
    _emit(report, fmt, out)


def register(report_app: typer.Typer) -> None:
    """Add `forecast` and `anomalies` to the `tariff report` sub-app."""
    report_app.command("forecast")(forecast)
    report_app.command("anomalies")(anomalies)
