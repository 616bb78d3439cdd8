"""CSV. One file holds every section: each starts with a `# <key>: <title>` line, then its header and
rows, and a blank line separates sections. With an output *directory*, each section is its own plain CSV
file `<report>-<section>.csv` (header + rows only), ready for tools that expect one table per file.

Cells are machine-friendly: money to the cent without separators (its currency in the column's
`currency_key` column, or in the header as `title (USD)` for a fixed currency), percent as the fraction.
Text starting with = + - @, a tab or a carriage return gets a leading apostrophe, so a spreadsheet shows
a customer id such as `=HYPERLINK(…)` or `+919876543210` as text instead of evaluating it.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from analytics.model import Report, Section
from analytics.render.values import plain


def _header(section: Section) -> list[str]:
    titles = []
    for column in section.columns:
        fixed = column.kind == "money" and column.currency_key is None and section.currency
        titles.append(f"{column.title} ({section.currency})" if fixed else column.title)
    return titles


def write_section(section: Section, stream: io.StringIO) -> None:
    out = csv.writer(stream, lineterminator="\n")
    # Python 3.11's writer quotes only the line terminator's characters: a bare carriage return in a cell
    # would go out unquoted and split the row for readers that accept any line ending. Such rows are
    # written fully quoted; every other row keeps the minimal quoting.
    quoted = csv.writer(stream, lineterminator="\n", quoting=csv.QUOTE_ALL)
    out.writerow(_header(section))
    for row in section.rows:
        cells = [plain(c, v) for c, v in zip(section.columns, row, strict=True)]
        (quoted if any("\r" in cell for cell in cells) else out).writerow(cells)


def section_csv(section: Section) -> str:
    buffer = io.StringIO()
    write_section(section, buffer)
    return buffer.getvalue()


def report_csv(report: Report) -> str:
    parts = []
    for section in report.sections:
        parts.append(f"# {section.key}: {section.title}\n{section_csv(section)}")
    return "\n".join(parts)


def write_directory(report: Report, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for section in report.sections:
        path = directory / f"{report.key}-{section.key}.csv"
        path.write_text(section_csv(section), encoding="utf-8")
        written.append(path)
    return written


def parse_report_csv(text: str) -> dict[str, list[list[str]]]:
    """Read a one-file report back: {section key: [header, row, …]} (tests and round trips)."""
    sections: dict[str, list[list[str]]] = {}
    current: list[str] = []
    key = ""
    for block in text.split("\n# "):
        first, _, body = block.lstrip("# ").partition("\n")
        key = first.split(":", 1)[0]
        current = [line for line in body.splitlines() if line]
        sections[key] = list(csv.reader(current))
    return sections
