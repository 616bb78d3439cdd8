"""`tariff report forecast` and `tariff report anomalies` through the CLI: every format, and bad input."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.main import app
from tests.ledger_support import S, add_customer, publish_shipped
from tests.reporting_support import insert_usage, weekly_usage


def _today(engine: Engine) -> date:
    with engine.connect() as conn:
        value = conn.execute(sa.text(f"SELECT (now() AT TIME ZONE {S}.token_timezone())::date")).scalar_one()
    assert isinstance(value, date)
    return value


@pytest.fixture
def cli(engine: Engine, pg_url: str, tmp_path: Path) -> Any:
    publish_shipped(engine)
    for customer in ("alice", "bob"):
        add_customer(engine, customer, "pro")

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


@pytest.fixture
def history(engine: Engine) -> date:
    """Ten weeks of usage up to yesterday, and a spike of bob's yesterday."""
    today = _today(engine)
    start = today - timedelta(days=70)
    rows = weekly_usage("alice", "gpt-4o", start, 70, 500) + weekly_usage("bob", "gpt-4o", start, 70, 300)
    insert_usage(engine, rows)
    yesterday = today - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {S}.token_usage_daily SET credits = 6000 WHERE customer_id = 'bob' AND day = :day"
            ),
            {"day": yesterday},
        )
    return yesterday


def test_token_forecast_text_shows_forecast_and_trust(cli: Any, history: date) -> None:
    output = cli("forecast", "tokens", "--horizon", "2w").output
    assert "Token forecast" in output and "Forecast, next 14 days" in output
    assert "Back-test: how far off earlier forecasts were" in output
    assert "Trust: forecasts 14 days ahead were off by" in output
    assert (history + timedelta(days=14)).isoformat() in output


def test_token_forecast_json_and_filters(cli: Any, history: date) -> None:
    document = json.loads(cli("forecast", "tokens", "--customer", "alice", "-f", "json").output)
    assert document["report"] == "forecast-tokens"
    assert document["filters"] == {"horizon": "90d", "customer": "alice"}
    sections = {s["key"]: s for s in document["sections"]}
    assert len(sections["forecast"]["rows"]) == 90
    assert sections["forecast"]["rows"][0]["day"] == (history + timedelta(days=1)).isoformat()
    (accuracy,) = sections["accuracy"]["rows"]
    assert accuracy["window"] == 14 and accuracy["folds"] == 3


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "html"])
def test_forecast_and_anomalies_write_every_file_format(
    cli: Any, history: date, tmp_path: Path, fmt: str
) -> None:
    for command, expected in (
        (("forecast", "tokens", "--horizon", "30d"), "high (80 %)"),
        (("anomalies",), "bob"),
    ):
        out = tmp_path / f"{command[0]}.{fmt}"
        cli(*command, "--format", fmt, "--out", str(out))
        if fmt == "xlsx":
            from openpyxl import load_workbook

            cells = [c.value for sheet in load_workbook(out) for row in sheet.iter_rows() for c in row]
            assert any(expected in str(v).lower() for v in cells)
        else:
            assert expected in out.read_text("utf-8").lower()


def test_too_short_history_is_a_clear_error(cli: Any, engine: Engine) -> None:
    today = _today(engine)
    insert_usage(engine, weekly_usage("alice", "gpt-4o", today - timedelta(days=10), 10, 500))
    error = cli("forecast", "tokens", code=1)
    assert error.message == "cannot forecast tokens: only 10 day(s) of history, a forecast needs at least 28"
    assert "wait until more history" in error.fix
    error = cli("forecast", "tokens", "--from", "5d", code=1)
    assert "move --from earlier" in error.fix


def test_revenue_forecast_from_mrr_when_nothing_was_collected(cli: Any, history: date) -> None:
    error = cli("forecast", "revenue", "--basis", "collected", code=1)
    assert error.message == "cannot forecast revenue: no collected payments to forecast revenue from"
    assert "--basis mrr" in error.fix
    document = json.loads(cli("forecast", "revenue", "--horizon", "7d", "-f", "json").output)
    assert document["filters"]["basis"] == "mrr" and document["filters"]["currency"] == "INR"
    forecast = {s["key"]: s for s in document["sections"]}["forecast"]
    # Two Pro subscribers at 1,499 INR a month all along: the forecast is that, exactly.
    assert {row["forecast"] for row in forecast["rows"]} == {"2998.00"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("forecast", "tokens", "--horizon", "soon"), "--horizon: not a horizon: 'soon'"),
        (("forecast", "tokens", "--from", "last tuesday"), "--from: not a date: 'last tuesday'"),
        (("forecast", "tokens", "--currency", "INR"), "--currency and --basis are for revenue forecasts"),
        (("forecast", "revenue", "--model", "gpt-4o"), "--customer and --model are for token forecasts"),
        (
            ("anomalies", "--since", "2026-11-20", "--until", "2026-11-01"),
            "--since 2026-11-20 is after --until",
        ),
        (("anomalies", "--weeks", "3", "--min-history", "5"), "--min-history/--weeks"),
        (("anomalies", "--until", "tomorrow"), "--until: not a date: 'tomorrow'"),
        (("anomalies", "--customer", "ghost"), "--customer 'ghost': no such customer"),
        (("forecast", "tokens", "--model", "gpt-9"), "--model 'gpt-9': no such ai model"),
        (("anomalies", "--format", "pdf"), "--format 'pdf' is not a report format"),
        (("forecast", "revenue", "--format", "xlsx"), "--format xlsx writes a file"),
    ],
)
def test_bad_input_is_refused_with_a_fix(cli: Any, args: tuple[str, ...], message: str) -> None:
    error = cli(*args, code=1)
    assert error.message.startswith(message) and error.fix


def test_anomalies_text_and_json(cli: Any, history: date) -> None:
    output = cli("anomalies").output
    assert "Unusual usage, strongest first" in output
    assert f"used 6,000 credits of gpt-4o on {history:%a} {history.day} {history:%b}" in output
    document = json.loads(cli("anomalies", "--since", "14d", "-f", "json").output)
    (row,) = document["sections"][0]["rows"]
    assert (row["customer"], row["credits"], row["day"]) == ("bob", 6000, history.isoformat())
    quiet = cli("anomalies", "--customer", "alice").output
    assert "Nothing unusual" in quiet
