"""The report renderers: every format carries the same figures, typed where the format allows."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
from dataclasses import replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from openpyxl import load_workbook
from rich.console import Console

from analytics.model import Column, ReportModelError, Section, validate
from analytics.render import RenderError, render
from analytics.render.csv_render import parse_report_csv
from tests.report_samples import sample_report


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=160, color_system=None, highlight=False), buffer


def test_text_shows_money_with_currency_percent_and_shapes() -> None:
    console, buffer = _console()
    render(sample_report(), "text", None, console)
    text = buffer.getvalue()
    assert "49,900.00 INR" in text and "1,234.50 USD" in text
    assert "75.0 %" in text
    assert "▁" in text and "█" in text  # sparkline of the daily trend
    assert "No refunds in this period." in text
    assert "plan=pro" in text


def test_csv_one_file_has_every_section_with_plain_numbers(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    render(sample_report(), "csv", out, Console())
    sections = parse_report_csv(out.read_text())
    assert list(sections) == ["trend", "plans", "heat", "empty"]
    assert sections["trend"][0] == ["Day", "Credits", "Provider cost (USD)"]
    assert sections["trend"][2] == ["2026-01-02", "3400", "4.25"]
    assert sections["plans"][1][:4] == ["pro", "INR", "49900.00", "0.75"]
    assert sections["plans"][1][5] == "2026-01-03T10:30:00+00:00"
    assert sections["empty"] == [["Payment", "Amount (INR)"]]


def test_csv_directory_writes_one_plain_file_per_section(tmp_path: Path) -> None:
    written = render(sample_report(), "csv", tmp_path, Console())
    assert [p.name for p in written] == [
        "sample-trend.csv",
        "sample-plans.csv",
        "sample-heat.csv",
        "sample-empty.csv",
    ]
    rows = list(csv.reader((tmp_path / "sample-plans.csv").open()))
    assert rows[2][2] == "1234.50"


def test_json_keeps_exact_numbers_and_period(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    render(sample_report(), "json", out, Console())
    data = json.loads(out.read_text())
    assert data["period"] == {"from": "2026-01-01", "to": "2026-01-03"}
    assert data["filters"] == {"plan": "pro"}
    plans = data["sections"][1]
    assert plans["rows"][1] == {
        "plan": "team",
        "currency": "USD",
        "mrr": "1234.50",
        "share": "0.25",
        "arpu": "12.345",
        "seen": None,
    }
    assert data["sections"][0]["chart"] == {
        "kind": "line",
        "x": "day",
        "y": ["credits"],
        "title": "Credits per day",
    }


def test_xlsx_cells_are_typed_formatted_frozen_and_charted(tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    render(sample_report(), "xlsx", out, Console())
    book = load_workbook(out)
    assert book.sheetnames == ["Report", "Daily usage", "Revenue by plan", "Peak hours", "Refunds"]
    plans = book["Revenue by plan"]
    assert plans.freeze_panes == "A2"
    assert plans["C2"].value == 49900 and plans["C2"].number_format == '#,##0.00 "INR"'
    assert plans["C3"].number_format == '#,##0.00 "USD"'
    assert plans["D2"].value == 0.75 and plans["D2"].number_format == "0.0%"
    assert plans["F2"].value == datetime(2026, 1, 3, 10, 30)
    trend = book["Daily usage"]
    assert trend["A2"].value == datetime(2026, 1, 1) and trend["A2"].number_format == "yyyy-mm-dd"
    assert len(trend._charts) == 1 and len(plans._charts) == 1
    assert book["Peak hours"].conditional_formatting  # heat map as a colour scale
    # Same figures as the CSV export.
    csv_out = tmp_path / "r.csv"
    render(sample_report(), "csv", csv_out, Console())
    sections = parse_report_csv(csv_out.read_text())
    for header_and_rows, sheet in ((sections["trend"], trend), (sections["plans"], plans)):
        for r, row in enumerate(header_and_rows[1:], 2):
            for c, text in enumerate(row, 1):
                value = sheet.cell(row=r, column=c).value
                if text == "":
                    assert value is None
                elif isinstance(value, int | float):
                    assert Decimal(str(value)) == Decimal(text)
                elif isinstance(value, datetime):
                    assert text.startswith(value.date().isoformat())
                else:
                    assert str(value) == text


@pytest.mark.skipif(
    shutil.which("libreoffice") is None and shutil.which("soffice") is None, reason="no LibreOffice"
)
def test_xlsx_converted_by_libreoffice_matches_csv(tmp_path: Path) -> None:
    out = tmp_path / "r.xlsx"
    render(sample_report(), "xlsx", out, Console())
    office = shutil.which("libreoffice") or shutil.which("soffice")
    assert office is not None
    subprocess.run(
        [
            office,
            "--headless",
            "--convert-to",
            "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,3",
            "--outdir",
            str(tmp_path),
            str(out),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    converted = next(tmp_path.glob("r*Revenue*.csv"), None) or next(tmp_path.glob("r-*.csv"))
    assert "49900" in converted.read_text().replace(",", "")


def test_html_is_self_contained_with_inline_svg_charts(tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    render(sample_report(), "html", out, Console())
    html = out.read_text()
    assert html.count("<svg") == 3
    assert "<polyline" in html and "<rect" in html
    assert "49,900.00 INR" in html and "75.0 %" in html
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "https://" not in html and "<script" not in html
    assert "No data in this period." in html


@pytest.mark.parametrize("fmt", ["xlsx", "html"])
def test_file_formats_need_an_output_file(fmt: str) -> None:
    with pytest.raises(RenderError) as caught:
        render(sample_report(), fmt, None, Console())  # type: ignore[arg-type]
    assert "--out" in caught.value.fix


def test_model_rejects_rows_that_do_not_match_columns() -> None:
    report = sample_report()
    bad = Section("x", "X", (Column("n", "N", "int"),), ((Decimal("1.5"),),))
    with pytest.raises(ReportModelError, match="column 'n'"):
        validate(replace(report, sections=(bad,)))
    short = Section("y", "Y", (Column("n", "N", "int"), Column("d", "D", "date")), ((1,),))
    with pytest.raises(ReportModelError, match="has 1 cells"):
        validate(replace(report, sections=(short,)))
    naive = Section("z", "Z", (Column("t", "T", "datetime"),), ((datetime(2026, 1, 1),),))
    with pytest.raises(ReportModelError):
        validate(replace(report, sections=(naive,)))
    wrong_date = Section("w", "W", (Column("d", "D", "date"),), ((date(2026, 1, 1),),))
    validate(replace(report, sections=(wrong_date,)))
