"""Terminal: one rich table per section; a sparkline under line charts, inline bars for bar charts and a
shaded grid for heat maps, so the shape of the data shows without leaving the terminal.

Everything taken from the report (cells, titles, filters, notes) goes to rich as `Text`, never as a markup
string: a customer id such as `tenant[admin]` or `user[/]` is data, and as markup it would be hidden,
restyled or would crash the report."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from analytics.model import NUMERIC_KINDS, Report, Section
from analytics.render.values import display, number

SPARK = "▁▂▃▄▅▆▇█"
SHADES = " ░▒▓█"
BAR_WIDTH = 24
MAX_TEXT_ROWS = 60


def sparkline(values: list[float]) -> str:
    if not values:
        return ""
    low, high = min(values), max(values)
    span = high - low
    if span == 0:
        return SPARK[len(SPARK) // 2] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int((v - low) / span * (len(SPARK) - 1) + 0.5))] for v in values)


def _downsample(values: list[float], width: int) -> list[float]:
    if len(values) <= width:
        return values
    step = len(values) / width
    return [
        sum(values[int(i * step) : int((i + 1) * step)])
        / max(1, len(values[int(i * step) : int((i + 1) * step)]))
        for i in range(width)
    ]


def _bar(value: float, high: float) -> str:
    if high <= 0:
        return ""
    filled = value / high * BAR_WIDTH
    return "█" * int(filled) + ("▌" if filled - int(filled) >= 0.5 else "")


def _heatmap(section: Section) -> Table:
    chart = section.chart
    assert chart is not None
    grid = Table(title=Text(chart.title), show_edge=False, box=None, padding=(0, 0))
    grid.add_column("")
    for key in chart.y:
        grid.add_column(Text(section.column(key).title[-2:]), justify="center")
    cells = [[number(row[section.index(k)]) for k in chart.y] for row in section.rows]
    high = max((v for row in cells for v in row), default=0.0)
    for row, values in zip(section.rows, cells, strict=True):
        label = Text(str(row[section.index(chart.x)]))
        shaded = [
            Text(SHADES[min(len(SHADES) - 1, int(v / high * (len(SHADES) - 1) + 0.5))] * 2 if high else "  ")
            for v in values
        ]
        grid.add_row(label, *shaded)
    return grid


def render_section(section: Section, console: Console) -> None:
    chart = section.chart
    if chart is not None and chart.kind == "heatmap":
        console.print(Text(section.title, style="bold"))
        console.print(_heatmap(section))
        if section.note:
            console.print(Text(section.note, style="dim"))
        console.print()
        return
    table = Table(title=Text(section.title, style="bold"), title_justify="left", header_style="bold")
    for column in section.columns:
        table.add_column(Text(column.title), justify="right" if column.kind in NUMERIC_KINDS else "left")
    bar_key = chart.y[0] if chart is not None and chart.kind == "bar" else None
    if bar_key is not None:
        table.add_column("")
        series = [number(v) for v in section.values(bar_key)]
        high = max(series, default=0.0)
    rows = section.rows[:MAX_TEXT_ROWS]
    for position, row in enumerate(rows):
        cells = [Text(display(section, c, row, v)) for c, v in zip(section.columns, row, strict=True)]
        if bar_key is not None:
            cells.append(Text(_bar(series[position], high), style="cyan"))
        table.add_row(*cells)
    if not section.rows:
        table.add_row(*(["—"] + [""] * (len(section.columns) - 1 + (bar_key is not None))))
    console.print(table)
    if len(section.rows) > MAX_TEXT_ROWS:
        console.print(f"[dim]… {len(section.rows) - MAX_TEXT_ROWS} more rows (use --format csv/xlsx)[/dim]")
    if chart is not None and chart.kind == "line" and section.rows:
        for key in chart.y:
            values = _downsample([number(v) for v in section.values(key)], 60)
            console.print(Text.assemble(f"  {section.column(key).title:<24} ", (sparkline(values), "green")))
    if section.note:
        console.print(Text(section.note, style="dim"))
    console.print()


def render_text(report: Report, console: Console) -> None:
    console.rule(Text(report.title, style="bold"))
    filters = ", ".join(f"{k}={v}" for k, v in report.filters.items()) or "none"
    console.print(Text(f"period {report.period_label()} · filters: {filters}"))
    for note in report.notes:
        console.print(Text(note, style="dim"))
    console.print()
    for section in report.sections:
        render_section(section, console)
