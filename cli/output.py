"""Console output shared by commands: diagnostics, JSON, exit codes."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from cli.errors import CommandError
from compiler.diagnostics import Diagnostic, Diagnostics, Severity

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CHANGES = 2

_changes_exit = False


def signal_changes() -> int:
    """Mark that exit code 2 means "changes present" (so `main` does not read it as a usage error)."""
    global _changes_exit  # noqa: PLW0603 - one process-wide flag read once at exit
    _changes_exit = True
    return EXIT_CHANGES


def changes_signalled() -> bool:
    return _changes_exit


def stdout_console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_diagnostics(console: Console, diagnostics: Iterable[Diagnostic]) -> None:
    """One block per finding: location, severity, message, then what was expected and the fix."""
    items = sorted(diagnostics, key=Diagnostic.sort_key)
    for item in items:
        colour = "red" if item.severity is Severity.ERROR else "yellow"
        path = f" [dim]{escape(item.path)}[/dim]" if item.path else ""
        console.print(
            f"[bold]{escape(item.location())}[/bold]: [{colour}]{item.severity.value}[/{colour}]"
            f"{path}: {escape(item.message)} [dim]({item.code})[/dim]"
        )
        if item.expected:
            console.print(f"    expected: {escape(item.expected)}")
        if item.hint:
            console.print(f"    [cyan]fix:[/cyan] {escape(item.hint)}")
    errors = sum(1 for i in items if i.severity is Severity.ERROR)
    warnings = len(items) - errors
    if items:
        console.print(f"{errors} error(s), {warnings} warning(s)")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def dump_json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False, default=_default)


def print_json(data: Any) -> None:
    sys.stdout.write(dump_json(data) + "\n")


def diagnostics_json(diagnostics: Diagnostics, *, ok: bool, fingerprint: str | None = None) -> dict[str, Any]:
    """The document `tariff validate --format json` prints, for every command that reports a config's
    findings as JSON (so a script reads one shape whichever command ran)."""
    return {
        "format_version": 1,
        "ok": ok,
        "errors": len(diagnostics.errors),
        "warnings": len(diagnostics.warnings),
        "fingerprint": fingerprint,
        "diagnostics": [d.to_json() for d in diagnostics.sorted()],
    }


def check_output_file(path: Path, option: str, example: str) -> None:
    """Refuse, before any work, an output file that can never be written: a directory, or a path under a
    file. Anything else (permissions, a read-only or virtual file system) is found by `write_output`."""
    if path.is_dir():
        raise CommandError(
            f"cannot write {option} {path}: it is a directory",
            fix=f"name a file, e.g. {option} {path / example}",
        )
    _check_parent(path, option)


def check_output_directory(path: Path, option: str) -> None:
    """Refuse, before any work, an output directory that is an existing file or lies under one."""
    if path.exists() and not path.is_dir():
        raise CommandError(
            f"cannot write {option} {path}: it is a file, not a directory",
            fix=f"name a directory (created when missing), or remove the file {path}",
        )
    _check_parent(path, option)


def _check_parent(path: Path, option: str) -> None:
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise CommandError(
            f"cannot write {option} {path}: {ancestor} is not a directory",
            fix=f"choose a path inside a directory, not under the file {ancestor}",
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise CommandError(
            f"cannot write {option} {path}: no permission to write in {ancestor}",
            fix="choose a directory you can write to",
        )


def write_output(path: Path, text: str, option: str) -> None:
    """Write an output file (creating its directory), reporting failure as a CommandError."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise output_error(path, option, exc) from exc


def output_error(path: Path, option: str, exc: OSError) -> CommandError:
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return CommandError(
        f"cannot write {option} {path}: {reason}{where}",
        fix="choose a path in a directory you can write to (check that it exists and is not a file)",
    )
