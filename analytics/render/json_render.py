"""JSON: the whole report in one document, exact numbers (decimals as strings), ISO dates."""

from __future__ import annotations

import json
from typing import Any

from analytics.model import Report, Section
from analytics.render.values import to_json

FORMAT_VERSION = 1


def section_json(section: Section) -> dict[str, Any]:
    return {
        "key": section.key,
        "title": section.title,
        "note": section.note,
        "currency": section.currency,
        "columns": [
            {"key": c.key, "title": c.title, "kind": c.kind, "currency_key": c.currency_key}
            for c in section.columns
        ],
        "rows": [
            {c.key: to_json(c, value) for c, value in zip(section.columns, row, strict=True)}
            for row in section.rows
        ],
        "chart": None
        if section.chart is None
        else {
            "kind": section.chart.kind,
            "x": section.chart.x,
            "y": list(section.chart.y),
            "title": section.chart.title,
        },
    }


def report_json(report: Report) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "report": report.key,
        "title": report.title,
        "period": {
            "from": report.period_from.isoformat() if report.period_from else None,
            "to": report.period_to.isoformat() if report.period_to else None,
        },
        "filters": dict(report.filters),
        "generated_at": report.generated_at.isoformat(),
        "notes": list(report.notes),
        "sections": [section_json(s) for s in report.sections],
    }


def dump_report(report: Report) -> str:
    return json.dumps(report_json(report), indent=2, ensure_ascii=False) + "\n"
