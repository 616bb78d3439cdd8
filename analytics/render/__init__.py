"""Renderers of the report model: text (rich), csv, json, xlsx and html — the same figures in each.

`render(report, fmt, out, console)`:
* text: to the console (out ignored unless given, then a plain-text copy is written there);
* csv: one file with every section (`out` a file, or stdout when None); `out` an existing directory
  (or a path ending in "/") writes one CSV per section, `<report>-<section>.csv`;
* json: one document to `out` or stdout;
* xlsx and html: binary/self-contained files, so `out` is required.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from rich.console import Console

from analytics.model import Report, validate

Format = Literal["text", "csv", "json", "xlsx", "html"]
FORMATS: tuple[Format, ...] = ("text", "csv", "json", "xlsx", "html")


class RenderError(ValueError):
    """A render request that cannot be honoured (e.g. xlsx without an output file)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


def _is_directory(out: Path) -> bool:
    return out.is_dir() or str(out).endswith(("/", "\\"))


def render(report: Report, fmt: Format, out: Path | None, console: Console) -> list[Path]:
    """Render `report` as `fmt`; returns the files written (empty when printed to the console)."""
    validate(report)
    if fmt == "text":
        from analytics.render.text import render_text

        if out is None:
            render_text(report, console)
            return []
        with out.open("w", encoding="utf-8") as handle:
            render_text(report, Console(file=handle, width=140, color_system=None, highlight=False))
        return [out]
    if fmt == "csv":
        from analytics.render.csv_render import report_csv, write_directory

        if out is not None and _is_directory(out):
            return write_directory(report, out)
        return _write_text(report_csv(report), out)
    if fmt == "json":
        from analytics.render.json_render import dump_report

        return _write_text(dump_report(report), out)
    if out is None or _is_directory(out):
        suffix = f".{fmt}"
        raise RenderError(
            f"--format {fmt} writes a file", fix=f"add --out FILE{suffix}, e.g. --out report{suffix}"
        )
    if fmt == "xlsx":
        from analytics.render.xlsx import write_xlsx

        write_xlsx(report, out)
        return [out]
    from analytics.render.html import report_html

    return _write_text(report_html(report), out)


def _write_text(text: str, out: Path | None) -> list[Path]:
    if out is None:
        sys.stdout.write(text)
        return []
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return [out]
