"""XLSX: one workbook, a cover sheet (title, period, filters) and one sheet per section with typed cells
(numbers stay numbers; text is always text, never a formula), money and percent number formats, a frozen
header row, and a native Excel chart where the section has one (heat maps become a colour-scale
conditional format)."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell.cell import Cell
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from analytics.model import Column, Report, Section
from analytics.render.values import starts_like_formula

HEADER_FILL = PatternFill("solid", fgColor="E8EEF7")
FORMATS = {
    "int": "#,##0",
    "decimal": "#,##0.####",
    "percent": "0.0%",
    "date": "yyyy-mm-dd",
    "datetime": "yyyy-mm-dd hh:mm",
}
_SHEET_FORBIDDEN = re.compile(r"[\[\]:*?/\\]")


def money_format(currency: str | None) -> str:
    return f'#,##0.00 "{currency}"' if currency else "#,##0.00"


def _sheet_name(title: str, used: set[str]) -> str:
    base = _SHEET_FORBIDDEN.sub(" ", title).strip()[:31].rstrip() or "Sheet"
    name, n = base, 2
    while name.lower() in used:
        suffix = f" ({n})"
        name, n = base[: 31 - len(suffix)] + suffix, n + 1
    used.add(name.lower())
    return name


def _cell_value(column: Column, value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)  # Excel has no time zones: cells are in UTC
    if isinstance(value, Decimal):
        return value  # openpyxl writes Decimal as a number
    if isinstance(value, int | str | date) or value is None:
        return value
    return str(value)


def _put(sheet: Worksheet, row: int, column: int, value: object) -> Cell:
    """Write one cell. openpyxl turns any string starting with `=` into a live formula, and report text
    carries customer-controlled strings (ids, names, filter values): text is therefore always stored as a
    string cell. Text Excel would re-read as a formula once edited (= + - @ …) also gets the quote prefix,
    Excel's own "this is text" mark, so it stays text after the user presses F2 and Enter."""
    cell = sheet.cell(row=row, column=column, value=value)
    if isinstance(value, str):
        cell.data_type = "s"
        if starts_like_formula(value):
            cell.quotePrefix = True
    return cell


def _write_section(sheet: Worksheet, section: Section) -> None:
    for position, column in enumerate(section.columns, 1):
        cell = _put(sheet, 1, position, column.title)
        cell.font = Font(bold=True)
        cell.fill = HEADER_FILL
        width = max(len(column.title), 12 if column.kind in {"money", "date", "datetime"} else 8)
        sheet.column_dimensions[get_column_letter(position)].width = min(40, width + 2)
    for row_number, row in enumerate(section.rows, 2):
        for position, (column, value) in enumerate(zip(section.columns, row, strict=True), 1):
            cell = _put(sheet, row_number, position, _cell_value(column, value))
            if column.kind == "money":
                cell.number_format = money_format(section.currency_of(column, row))
            elif column.kind in FORMATS:
                cell.number_format = FORMATS[column.kind]
    sheet.freeze_panes = "A2"
    if section.note:
        _put(sheet, len(section.rows) + 3, 1, section.note).font = Font(italic=True)
    if section.chart is not None and section.rows:
        _add_chart(sheet, section)


def _add_chart(sheet: Worksheet, section: Section) -> None:
    chart_spec = section.chart
    assert chart_spec is not None
    last = len(section.rows) + 1
    columns = [section.index(k) + 1 for k in chart_spec.y]
    if chart_spec.kind == "heatmap":
        first, end = get_column_letter(min(columns)), get_column_letter(max(columns))
        sheet.conditional_formatting.add(
            f"{first}2:{end}{last}",
            ColorScaleRule(start_type="min", start_color="FFFFFF", end_type="max", end_color="1F4E79"),
        )
        return
    chart: LineChart | BarChart = LineChart() if chart_spec.kind == "line" else BarChart()
    chart.title = chart_spec.title
    chart.height, chart.width = 8, 18
    for column in columns:
        data = Reference(sheet, min_col=column, min_row=1, max_row=last)
        chart.add_data(data, titles_from_data=True)
    x_col = section.index(chart_spec.x) + 1
    chart.set_categories(Reference(sheet, min_col=x_col, min_row=2, max_row=last))
    sheet.add_chart(chart, f"{get_column_letter(len(section.columns) + 2)}2")


def write_xlsx(report: Report, path: Path) -> None:
    workbook = Workbook()
    cover = workbook.active
    assert cover is not None
    cover.title = "Report"
    _put(cover, 1, 1, report.title).font = Font(bold=True, size=14)
    info = [
        ("Report", report.key),
        ("From", report.period_from),
        ("To", report.period_to),
        ("Generated at (UTC)", report.generated_at.astimezone(UTC).replace(tzinfo=None)),
        *((f"Filter: {k}", v) for k, v in report.filters.items()),
        *(("Note", n) for n in report.notes),
    ]
    for row, (label, value) in enumerate(info, 3):
        _put(cover, row, 1, label).font = Font(bold=True)
        cell = _put(cover, row, 2, value)
        if isinstance(value, datetime):
            cell.number_format = FORMATS["datetime"]
        elif isinstance(value, date):
            cell.number_format = FORMATS["date"]
    cover.column_dimensions["A"].width = 22
    cover.column_dimensions["B"].width = 30
    used = {"report"}
    for section in report.sections:
        _write_section(workbook.create_sheet(_sheet_name(section.title, used)), section)
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
