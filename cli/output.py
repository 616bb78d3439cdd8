"""Console output shared by commands: diagnostics, JSON, exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape

from compiler.diagnostics import Diagnostic, Severity

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
