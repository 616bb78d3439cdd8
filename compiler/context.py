"""Shared state while compiling: the loaded documents, the findings, and where each entity was defined."""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.catalog import Policy, Suppression
from compiler.diagnostics import Diagnostic, Diagnostics, Severity
from compiler.yaml_loader import LoadedDocument, PathKey


def suggest(word: str, options: Iterable[str]) -> str | None:
    """A `did you mean …?` hint for a misspelt id, or None."""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"did you mean `{close[0]}`?" if close else None


@dataclass
class BuildContext:
    root: Path
    diagnostics: Diagnostics = field(default_factory=Diagnostics)
    locations: dict[str, tuple[str, int | None]] = field(default_factory=dict)
    policies: dict[str, Policy] = field(default_factory=dict)
    suppressions: list[tuple[Suppression, LoadedDocument, PathKey]] = field(default_factory=list)
    used_suppressions: set[int] = field(default_factory=set)
    # Entities (`plan:pro`, `feature:*`) defined by files that failed to load: their own error is
    # reported, so references to them are not reported a second time as unknown.
    unloaded: set[str] = field(default_factory=set)

    def error(
        self,
        doc: LoadedDocument,
        path: PathKey,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        expected: str | None = None,
        key: bool = False,
    ) -> None:
        self.diagnostics.add(
            Diagnostic(
                Severity.ERROR, code, message, expected=expected, hint=hint, **doc.locate(path, key=key)
            )
        )

    def warning(
        self,
        doc: LoadedDocument,
        path: PathKey,
        code: str,
        message: str,
        *,
        hint: str | None = None,
        key: bool = False,
    ) -> None:
        self.diagnostics.add(
            Diagnostic(Severity.WARNING, code, message, hint=hint, **doc.locate(path, key=key))
        )

    def unknown(
        self,
        doc: LoadedDocument,
        path: PathKey,
        what: str,
        name: str,
        known: Iterable[str],
        *,
        declared_in: str,
        key: bool = False,
    ) -> None:
        if f"{what}:{name}" in self.unloaded or f"{what}:*" in self.unloaded:
            return
        known_list = sorted(known)
        hint = suggest(name, known_list) or (
            f"declare it in {declared_in}" if not known_list else f"known: {', '.join(known_list[:12])}"
        )
        self.error(
            doc, path, f"ref.unknown-{what.replace(' ', '-')}", f"unknown {what} {name!r}", hint=hint, key=key
        )

    def remember(self, entity: str, doc: LoadedDocument, path: PathKey) -> None:
        pos = doc.position(path)
        self.locations[entity] = (doc.file, pos[0] if pos else None)

    def policy(
        self,
        name: str,
        target: str,
        doc: LoadedDocument,
        path: PathKey,
        message: str,
        *,
        hint: str | None = None,
    ) -> None:
        """Report a policy finding at the policy's severity unless a suppression with a reason covers it."""
        policy = self.policies.get(name)
        if policy is None or policy.severity == "off":
            return
        for index, (suppression, _doc, _path) in enumerate(self.suppressions):
            if suppression.policy == name and fnmatch.fnmatchcase(target, suppression.target):
                self.used_suppressions.add(index)
                return
        severity = Severity.ERROR if policy.severity == "error" else Severity.WARNING
        fix = hint or f"fix it, or add a suppression for policy {name!r} and target {target!r} with a reason"
        self.diagnostics.add(Diagnostic(severity, f"policy.{name}", message, hint=fix, **doc.locate(path)))


def get(data: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data
