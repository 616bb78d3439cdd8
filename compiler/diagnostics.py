"""Located, user-facing findings: every error or warning names file, line, column and document path."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    code: str
    message: str
    file: str | None = None
    line: int | None = None
    column: int | None = None
    path: str = ""
    expected: str | None = None
    hint: str | None = None

    def location(self) -> str:
        if self.file is None:
            return "<config>"
        if self.line is None:
            return self.file
        return f"{self.file}:{self.line}:{self.column or 1}"

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file or "", self.line or 0, self.column or 0, self.code)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.value
        return data


@dataclass
class Diagnostics:
    """An ordered, de-duplicated collection of findings."""

    items: list[Diagnostic] = field(default_factory=list)

    def add(self, diagnostic: Diagnostic) -> None:
        if diagnostic not in self.items:
            self.items.append(diagnostic)

    def extend(self, diagnostics: Iterable[Diagnostic]) -> None:
        for diagnostic in diagnostics:
            self.add(diagnostic)

    def error(self, code: str, message: str, **where: Any) -> None:
        self.add(Diagnostic(Severity.ERROR, code, message, **where))

    def warning(self, code: str, message: str, **where: Any) -> None:
        self.add(Diagnostic(Severity.WARNING, code, message, **where))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.ERROR]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity is Severity.WARNING]

    @property
    def has_errors(self) -> bool:
        return any(d.severity is Severity.ERROR for d in self.items)

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=Diagnostic.sort_key)

    def __iter__(self) -> Iterator[Diagnostic]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


class ConfigError(Exception):
    """Raised when a config cannot be compiled; carries every finding, not just the first."""

    def __init__(self, diagnostics: Diagnostics) -> None:
        self.diagnostics = diagnostics
        first = diagnostics.errors[0] if diagnostics.errors else None
        summary = f"{first.location()}: {first.message}" if first else "invalid config"
        super().__init__(f"{len(diagnostics.errors)} error(s) in config; first: {summary}")


def format_path(parts: Iterable[str | int]) -> str:
    """Render a document path the way users write it: `prices.monthly.INR`, `cards[2].cta`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
