"""Errors a command reports as a message and a fix (exit 1), never as a traceback."""

from __future__ import annotations

from rich.console import Console


class CommandError(Exception):
    """A failure the command reports as a message and a fix, exit 1."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def report_error(console: Console, message: str, fix: str | None) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    if fix:
        console.print(f"  [cyan]fix:[/cyan] {fix}", highlight=False)
