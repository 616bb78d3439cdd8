"""`tariff status` through the real CLI: text, JSON, files, --watch, and its errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.main import app
from tests.ledger_support import add_customer, publish_shipped
from tests.reporting_support import insert_usage


@pytest.fixture
def run(engine: Engine, pg_url: str, tmp_path: Path) -> Any:
    from datetime import date

    publish_shipped(engine)
    add_customer(engine, "ck_1", "pro")
    insert_usage(engine, [(date(2026, 11, 15), "ck_1", "gpt-4o", 321)])

    def invoke(*args: str, code: int = 0) -> Any:
        result = CliRunner(env={"COLUMNS": "220"}).invoke(
            app,
            [
                "status",
                *args,
                "--config",
                str(tmp_path),
                "--database-url",
                pg_url,
                "--at",
                "2026-11-15T12:00",
            ],
        )
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return invoke


def test_status_text_shows_every_panel(run: Any) -> None:
    output = run().output
    for title in (
        "Tariff status",
        "Plans: subscribers and MRR",
        "Live prices by region",
        "This month",
        "AI credits",
        "Top models this month",
        "Top customers this month",
        "Active and scheduled promotions",
        "Operations",
    ):
        assert title in output
    assert "1,499.00 INR" in output and "321" in output


def test_status_json_has_the_figures(run: Any) -> None:
    document = json.loads(run("--format", "json").output)
    sections = {s["key"]: s for s in document["sections"]}
    (tokens,) = sections["tokens"]["rows"]
    assert tokens["today"] == 321 and tokens["month"] == 321
    (operations,) = sections["operations"]["rows"]
    assert operations["drift"] == "none"  # the live catalog is what the last apply wrote


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "html"])
def test_status_writes_files(run: Any, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"status.{fmt}"
    run("--format", fmt, "--out", str(out), "--no-drift")
    assert out.stat().st_size > 500


def test_watch_refreshes_in_place(run: Any) -> None:
    result = run("--watch", "--interval", "1", "--times", "2", "--no-drift")
    assert result.output.count("AI credits") >= 1


def test_watch_refuses_a_file_format(run: Any) -> None:
    result = run("--watch", "--format", "json", code=1)
    assert "--watch redraws the terminal" in result.output or "--watch" in str(result.exception)


def test_bad_interval_is_a_usage_error(run: Any) -> None:
    assert "--interval" in run("--interval", "0", code=2).output
