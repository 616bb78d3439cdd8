"""The report model every report builds and every renderer reads.

A report is a list of sections; a section is a typed table (columns + rows) with an optional chart.
Conventions every builder keeps, so the five formats agree:

* `money` cells are `Decimal` in major units (12.50 means 12.50 of the currency). The currency comes from
  the column's `currency_key` (another column of the same row holding an ISO code) or, when that is None,
  from `Section.currency`; with neither the amount is shown bare.
* `percent` cells are `Decimal` *fractions*: 0.25 is 25 %. Renderers multiply for display; XLSX stores the
  fraction with a percent number format, so spreadsheets compute with the true value.
* `int` cells are `int`, `decimal` cells `Decimal`, `date` cells `date`, `datetime` cells timezone-aware
  `datetime`, `text` cells `str`. Any cell may be None (shown empty; JSON null).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

ColumnKind = Literal["text", "int", "money", "percent", "decimal", "date", "datetime"]
ChartKind = Literal["line", "bar", "heatmap"]
NUMERIC_KINDS: frozenset[str] = frozenset({"int", "money", "percent", "decimal"})


class ReportModelError(ValueError):
    """A section whose rows do not match its columns or chart: a builder bug, caught before rendering."""


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: ColumnKind
    # money only: the key of the column that holds each row's ISO currency (None: Section.currency).
    currency_key: str | None = None


@dataclass(frozen=True)
class Chart:
    """What to draw from a section's rows.

    line / bar: `x` is the category column (dates, plans, …) and `y` the numeric series drawn against it.
    heatmap: `x` is the row-label column and `y` the numeric columns forming the grid's columns
    (e.g. x="weekday", y=("h00", …, "h23") for an hour-of-week heat map).
    """

    kind: ChartKind
    x: str
    y: tuple[str, ...]
    title: str


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[object, ...], ...]
    chart: Chart | None = None
    note: str | None = None
    currency: str | None = None  # fixed ISO currency of money columns without a currency_key

    def index(self, key: str) -> int:
        for position, column in enumerate(self.columns):
            if column.key == key:
                return position
        raise ReportModelError(f"section {self.key!r} has no column {key!r}")

    def column(self, key: str) -> Column:
        return self.columns[self.index(key)]

    def currency_of(self, column: Column, row: tuple[object, ...]) -> str | None:
        if column.kind != "money":
            return None
        if column.currency_key is not None:
            value = row[self.index(column.currency_key)]
            return str(value) if value is not None else None
        return self.currency

    def values(self, key: str) -> list[object]:
        position = self.index(key)
        return [row[position] for row in self.rows]


@dataclass(frozen=True)
class Report:
    key: str
    title: str
    period_from: date | None
    period_to: date | None
    filters: Mapping[str, str]
    sections: tuple[Section, ...]
    generated_at: datetime
    notes: tuple[str, ...] = field(default=())

    def section(self, key: str) -> Section:
        for section in self.sections:
            if section.key == key:
                return section
        raise KeyError(key)

    def period_label(self) -> str:
        start = self.period_from.isoformat() if self.period_from else "beginning"
        end = self.period_to.isoformat() if self.period_to else "now"
        return f"{start} … {end}"


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "int": (int,),
    "money": (Decimal, int),
    "percent": (Decimal, int),
    "decimal": (Decimal, int),
    "date": (date,),
    "datetime": (datetime,),
}


def validate(report: Report) -> None:
    """Check every section's shape and cell types; raises ReportModelError naming the first bad cell."""
    seen: set[str] = set()
    for section in report.sections:
        if section.key in seen:
            raise ReportModelError(f"duplicate section key {section.key!r}")
        seen.add(section.key)
        keys = [c.key for c in section.columns]
        if len(set(keys)) != len(keys):
            raise ReportModelError(f"section {section.key!r} repeats a column key")
        for column in section.columns:
            if column.currency_key is not None and column.currency_key not in keys:
                raise ReportModelError(
                    f"section {section.key!r}: column {column.key!r} takes its currency from "
                    f"unknown column {column.currency_key!r}"
                )
        if section.chart is not None:
            for key in (section.chart.x, *section.chart.y):
                section.index(key)
            for key in section.chart.y:
                if section.column(key).kind not in NUMERIC_KINDS:
                    raise ReportModelError(f"section {section.key!r}: chart series {key!r} is not numeric")
        for number, row in enumerate(section.rows, 1):
            if len(row) != len(section.columns):
                raise ReportModelError(
                    f"section {section.key!r} row {number} has {len(row)} cells for {len(keys)} columns"
                )
            for column, value in zip(section.columns, row, strict=True):
                if value is None:
                    continue
                allowed = _PY_TYPES[column.kind]
                bad = not isinstance(value, allowed) or isinstance(value, bool)
                if column.kind == "date" and isinstance(value, datetime):
                    bad = True
                if column.kind == "datetime" and isinstance(value, datetime) and value.tzinfo is None:
                    bad = True
                if bad:
                    raise ReportModelError(
                        f"section {section.key!r} row {number} column {column.key!r}: "
                        f"{type(value).__name__} is not a {column.kind} value"
                    )
