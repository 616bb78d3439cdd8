"""HTML: one self-contained file — inline CSS, charts as inline SVG, no scripts, fonts or network."""

from __future__ import annotations

from html import escape

from analytics.model import NUMERIC_KINDS, Column, Report, Section
from analytics.render.svg import chart_svg
from analytics.render.values import display

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1e293b;
  background:#f8fafc}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px}
.meta{color:#64748b;margin-bottom:16px}
section{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:16px 20px;margin:16px 0}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:4px 8px;border-bottom:1px solid #f1f5f9;text-align:left;white-space:nowrap}
th{background:#f1f5f9;font-weight:600;position:sticky;top:0}
td.num,th.num{text-align:right}
.note{color:#64748b;font-style:italic;margin-top:8px}
.scroll{max-height:480px;overflow:auto}
svg.chart{width:100%;height:auto;margin:8px 0}
svg .grid{stroke:#e2e8f0;stroke-width:1}
svg .axis{font-size:11px;fill:#64748b}
svg .chart-title{font-size:13px;font-weight:600;fill:#1e293b}
"""


def _align(column: Column) -> str:
    return "num" if column.kind in NUMERIC_KINDS else ""


def _section_html(section: Section) -> str:
    head = "".join(f'<th class="{_align(c)}">{escape(c.title)}</th>' for c in section.columns)
    body = []
    for row in section.rows:
        cells = "".join(
            f'<td class="{_align(c)}">{escape(display(section, c, row, v))}</td>'
            for c, v in zip(section.columns, row, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    if not section.rows:
        body.append(f'<tr><td colspan="{len(section.columns)}">No data in this period.</td></tr>')
    note = f'<p class="note">{escape(section.note)}</p>' if section.note else ""
    return (
        f'<section id="{escape(section.key)}"><h2>{escape(section.title)}</h2>{chart_svg(section)}'
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
        f"{note}</section>"
    )


def report_html(report: Report) -> str:
    filters = ", ".join(f"{k}={v}" for k, v in report.filters.items()) or "none"
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in report.notes)
    sections = "\n".join(_section_html(s) for s in report.sections)
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(report.title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{escape(report.title)}</h1>"
        f'<p class="meta">Period {escape(report.period_label())} · filters: {escape(filters)} · generated '
        f"{escape(report.generated_at.strftime('%Y-%m-%d %H:%M %Z'))}</p>{notes}\n"
        f"{sections}\n</main></body></html>\n"
    )
