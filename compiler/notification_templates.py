"""Notification templates (`content/notifications/<kind>.md`): parsing and the checks `tariff validate` runs.

A template is a `Subject:` line, a blank line, then a Markdown body; both are Jinja, rendered in a sandbox
(publishers.notify.render) with exactly the variables compiler.notification_kinds lists for the kind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from compiler.catalog import NotificationTemplate
from compiler.context import suggest
from compiler.diagnostics import Diagnostic, Diagnostics, Severity
from compiler.notification_kinds import KINDS, variables_of

FOLDER = "content/notifications"
SUFFIX = ".md"
MAX_BYTES = 64 * 1024
SUBJECT = re.compile(r"^subject:[ \t]*(?P<text>.*?)\s*$", re.IGNORECASE)
DOCS = "see docs/notifications.md"


def sandbox(*, autoescape: bool = False, finalize: Any = None) -> SandboxedEnvironment:
    """The one Jinja environment shape templates are checked and rendered with."""
    return SandboxedEnvironment(
        autoescape=autoescape,
        finalize=finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


class TemplateFileError(ValueError):
    def __init__(self, message: str, line: int, hint: str) -> None:
        super().__init__(message)
        self.line = line
        self.hint = hint


def parse_template(kind: str, file: str, text: str) -> NotificationTemplate:
    """Split a template file into subject and body; raises TemplateFileError with the line at fault."""
    lines = text.splitlines()
    if not lines or not (match := SUBJECT.match(lines[0])) or not match.group("text"):
        raise TemplateFileError(
            "a notification template starts with a `Subject:` line",
            1,
            "write `Subject: …` on the first line, then a blank line, then the Markdown body",
        )
    if len(lines) > 1 and lines[1].strip():
        raise TemplateFileError(
            "the subject is one line, followed by a blank line", 2, "insert a blank line after the subject"
        )
    body = "\n".join(lines[2:]) + "\n"
    if not body.strip():
        raise TemplateFileError("the template has no body", 1, "write the message below the subject line")
    return NotificationTemplate(kind, file, match.group("text"), body, 3)


def check_template(template: NotificationTemplate) -> list[Diagnostic]:
    """Jinja syntax errors, unknown filters and unknown variables, each at its line with a fix."""
    found: list[Diagnostic] = []
    env = sandbox()
    known = variables_of(template.kind)
    for source, first_line in ((template.subject, 1), (template.body, template.body_line)):
        try:
            tree = env.parse(source)
            env.compile(tree)  # unknown filters and tests are found at compile time
        except TemplateSyntaxError as exc:
            found.append(
                _error(
                    template.file,
                    first_line + (exc.lineno or 1) - 1,
                    "notifications.template-syntax",
                    f"template syntax error: {exc.message}",
                    "close every `{{ … }}`, `{% … %}` and `{% if/for %}` block, and use Jinja's built-in "
                    f"filters only ({DOCS})",
                )
            )
            continue
        for name in sorted(meta.find_undeclared_variables(tree) - set(known)):
            line = next(
                (n.lineno for n in tree.find_all(nodes.Name) if n.name == name and n.ctx == "load"), 1
            )
            found.append(
                _error(
                    template.file,
                    first_line + line - 1,
                    "notifications.template-variable",
                    f"unknown variable {name!r} in the {template.kind} template",
                    suggest(name, known) or f"{template.kind} templates may use: {', '.join(sorted(known))}",
                )
            )
    return found


def load_templates(
    root: Path, diagnostics: Diagnostics, *, required: bool
) -> dict[str, NotificationTemplate]:
    """Every template under `root/content/notifications`; with `required`, a missing kind is an error."""
    folder = root / FOLDER
    templates: dict[str, NotificationTemplate] = {}
    paths = sorted(folder.glob(f"*{SUFFIX}")) if folder.is_dir() else []
    for path in paths:
        file = f"{FOLDER}/{path.name}"
        kind = path.stem
        if kind not in KINDS:
            hint = suggest(kind, KINDS)
            diagnostics.add(
                _error(
                    file,
                    None,
                    "notifications.unknown-kind",
                    f"no notification kind {kind!r}",
                    f"rename the file: {hint}" if hint else f"known kinds: {', '.join(KINDS)}",
                )
            )
            continue
        try:
            if path.stat().st_size > MAX_BYTES:
                raise TemplateFileError(f"larger than {MAX_BYTES // 1024} KiB", 1, "shorten the message")
            text = path.read_text("utf-8")
            template = parse_template(kind, file, text)
        except UnicodeDecodeError:
            diagnostics.add(_error(file, None, "files.encoding", "not UTF-8 text", "save the file as UTF-8"))
            continue
        except OSError as exc:
            diagnostics.add(
                _error(file, None, "files.unreadable", f"cannot read: {exc.strerror or exc}", None)
            )
            continue
        except TemplateFileError as exc:
            diagnostics.add(_error(file, exc.line, "notifications.template-format", str(exc), exc.hint))
            continue
        problems = check_template(template)
        diagnostics.extend(problems)
        if not problems:
            templates[kind] = template
    if required:
        present = {p.stem for p in paths}
        for kind in KINDS:
            if kind not in present:
                diagnostics.add(
                    _error(
                        f"{FOLDER}/{kind}{SUFFIX}",
                        None,
                        "notifications.template-missing",
                        f"no template for notification kind {kind!r} ({KINDS[kind].summary[:-1].lower()})",
                        f"create {FOLDER}/{kind}{SUFFIX}: a `Subject:` line, a blank line and a Markdown "
                        f"body ({DOCS})",
                    )
                )
    return templates


def template_file(template: NotificationTemplate) -> str:
    """The file text a template was parsed from (what a revision stores and `tariff import` writes)."""
    return f"Subject: {template.subject}\n\n{template.body}"


def template_files(templates: Mapping[str, NotificationTemplate]) -> dict[str, str]:
    return {f"{FOLDER}/{kind}{SUFFIX}": template_file(t) for kind, t in sorted(templates.items())}


def _error(file: str, line: int | None, code: str, message: str, hint: str | None) -> Diagnostic:
    return Diagnostic(
        Severity.ERROR, code, message, file=file, line=line, column=1 if line else None, hint=hint
    )
