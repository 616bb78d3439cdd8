"""A transient progress bar for reports whose queries take long enough to be noticed."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

T = TypeVar("T")


@contextmanager
def steps(console: Console | None, total: int, label: str) -> Iterator[Callable[[str], None]]:
    """Yields `advance(description)`; draws on `console` (stderr in the CLI) only when it is a terminal."""
    if console is None or not console.is_terminal:
        yield lambda _description: None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    with progress:
        task = progress.add_task(label, total=total)

        def advance(description: str) -> None:
            progress.update(task, advance=1, description=f"{label}: {description}")

        yield advance


def run_steps(console: Console | None, label: str, work: Sequence[tuple[str, Callable[[], T]]]) -> list[T]:
    """Run each named query in turn under one progress bar; returns their results in order."""
    results: list[T] = []
    with steps(console, len(work), label) as advance:
        for name, job in work:
            results.append(job())
            advance(name)
    return results
