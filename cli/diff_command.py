"""`tariff diff BASE..HEAD`: compare the config at two revisions or directories, with no database."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from cli.output import (
    EXIT_ERROR,
    EXIT_OK,
    check_output_file,
    dump_json,
    output_error,
    print_diagnostics,
    stderr_console,
    stdout_console,
    write_output,
)
from compiler.diff import CatalogDiff, diff_catalogs
from compiler.diff_format import diff_to_json, diff_to_markdown, diff_to_text
from compiler.git_source import GitSourceError, Side, parse_range, resolve_side
from compiler.project import CompileResult, compile_config

FORMATS = ("text", "markdown", "json")
# CI posts each markdown part as its own comment; the marker lets a script split stdout back into parts.
PART_SEPARATOR = "<!-- tariff:part -->"

Compiler = Callable[[Path], CompileResult]


def diff(
    range_: str, config: Path, format_: str, out: Path | None, *, compiler: Compiler = compile_config
) -> int:
    """Print the changes from BASE to HEAD in `format_`; 0 when no policy finding is an error, else 1."""
    errors = stderr_console()
    if format_ not in FORMATS:
        errors.print(f"[red]error:[/red] unknown format {escape(format_)!r}: use one of {', '.join(FORMATS)}")
        return EXIT_ERROR
    if out is not None:
        check_output_file(out, "--out", {"text": "diff.txt", "markdown": "diff.md"}.get(format_, "diff.json"))
    try:
        base_side, head_side = parse_range(range_)
        with tempfile.TemporaryDirectory(prefix="tariff-diff-") as scratch:
            base = _compile(base_side, config, Path(scratch), "base", compiler, errors)
            head = _compile(head_side, config, Path(scratch), "head", compiler, errors)
    except GitSourceError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        return EXIT_ERROR
    if base is None or head is None or base.catalog is None or head.catalog is None:
        return EXIT_ERROR
    result = diff_catalogs(base.catalog, head.catalog, locations=head.locations)
    _emit(result, format_, out, errors, title=f"Tariff diff {range_.strip()}")
    return EXIT_ERROR if result.has_errors else EXIT_OK


def _compile(
    side: Side, config: Path, scratch: Path, role: str, compiler: Compiler, errors: Console
) -> CompileResult | None:
    """Compile one side, or print why it does not compile and return None."""
    directory = resolve_side(side, config, scratch)
    result = compiler(directory)
    if result.ok and result.catalog is not None:
        return result
    # Paths in these findings are relative to the config directory as it was at that revision.
    errors.print(f"[bold]{role} ({escape(side.label)})[/bold] does not compile:")
    print_diagnostics(errors, result.diagnostics)
    return None


def _emit(result: CatalogDiff, format_: str, out: Path | None, errors: Console, *, title: str) -> None:
    if format_ == "text":
        _emit_text(result, out)
    elif format_ == "json":
        _write(out, dump_json(diff_to_json(result)) + "\n", "--out")
    else:
        emit_markdown(diff_to_markdown(result, title=title), out, errors)
    if format_ != "text" and result.findings:
        # The findings are inside the output too, but CI logs should say why the job failed.
        print_diagnostics(errors, result.findings)


def _emit_text(result: CatalogDiff, out: Path | None) -> None:
    if out is None:
        stdout_console().print(diff_to_text(result))
        return
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as handle:
            Console(file=handle, highlight=False, soft_wrap=True, no_color=True, width=120).print(
                diff_to_text(result)
            )
    except OSError as exc:
        raise output_error(out, "--out", exc) from exc


def emit_markdown(parts: list[str], out: Path | None, errors: Console, *, option: str = "--out") -> None:
    if out is None:
        _write(None, f"\n{PART_SEPARATOR}\n".join(parts))
        return
    paths = markdown_part_paths(out, len(parts))
    for path, part in zip(paths, parts, strict=True):
        _write(path, part, option)
    if len(paths) > 1:
        errors.print(f"wrote {len(paths)} parts: " + ", ".join(escape(str(p)) for p in paths))


def markdown_part_paths(out: Path, count: int) -> list[Path]:
    """FILE for the first part, then FILE's stem with .2.md, .3.md, … (`plan.md`, `plan.2.md`)."""
    suffix = out.suffix or ".md"
    return [out, *(out.with_name(f"{out.stem}.{index}{suffix}") for index in range(2, count + 1))]


def _write(path: Path | None, text: str, option: str = "--out") -> None:
    if path is None:
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    write_output(path, text, option)
