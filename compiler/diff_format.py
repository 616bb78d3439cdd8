"""Render a CatalogDiff for machines (JSON), pull-request comments (Markdown) and terminals (rich)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from compiler.diagnostics import Diagnostic, Severity
from compiler.diff import (
    IMPACTS_BY_SEVERITY,
    PRICE_KINDS,
    CatalogDiff,
    Change,
    FieldChange,
    Impact,
    format_amount,
    format_percent,
    short_value,
)
from compiler.money import plain

FORMAT_VERSION: Final = 1
# GitHub rejects comments over 65,536 characters; stay clear of it with room for the part header.
MARKDOWN_LIMIT: Final = 65_000
VALUE_LIMIT: Final = 200

IMPACT_LABELS: Final = {
    Impact.DESTRUCTIVE: "destructive",
    Impact.BREAKING: "breaking",
    Impact.PRICE_INCREASE: "price increase",
    Impact.PRICE_DECREASE: "price decrease",
    Impact.NEUTRAL: "neutral",
    Impact.ADDITIVE: "additive",
    Impact.COPY_ONLY: "copy only",
}
IMPACT_STYLES: Final = {
    Impact.DESTRUCTIVE: "bold red",
    Impact.BREAKING: "red",
    Impact.PRICE_INCREASE: "yellow",
    Impact.PRICE_DECREASE: "cyan",
    Impact.NEUTRAL: "blue",
    Impact.ADDITIVE: "green",
    Impact.COPY_ONLY: "dim",
}
ACTION_MARKS: Final = {"added": "+", "changed": "~", "retired": "-", "reactivated": "^", "removed": "x"}


@dataclass(frozen=True, slots=True)
class Section:
    title: str
    kinds: tuple[str, ...]
    owner_title: str = ""
    """Non-empty for price sections, which render as a table whose first column is the owner."""


SECTIONS: Final = (
    Section("Plans", ("plan",)),
    Section("Prices", ("price",), owner_title="Plan"),
    Section("Packages", ("package",)),
    Section("Package prices", ("package-price",), owner_title="Package"),
    Section("Promotions", ("promotion",)),
    Section("Features", ("feature",)),
    Section("Tokens and models", ("model", "token-rules", "pool")),
    Section("Content", ("page",)),
    Section("Payments", ("payment-rules",)),
    Section("Settings", ("project", "currency", "cycle", "region", "settings")),
)


def grouped(diff: CatalogDiff) -> Iterator[tuple[Section, list[Change]]]:
    """Non-empty sections in display order, each with its changes in diff order."""
    for section in SECTIONS:
        changes = [c for c in diff.changes if c.kind in section.kinds]
        if changes:
            yield section, changes


def counts_line(diff: CatalogDiff) -> str:
    counts = diff.by_impact()
    parts = [f"{counts[i.value]} {IMPACT_LABELS[i]}" for i in IMPACTS_BY_SEVERITY if counts[i.value]]
    total = len(diff.changes)
    if not parts:
        return "No catalog changes."
    return f"{total} change{'' if total == 1 else 's'}: " + ", ".join(parts)


# ---------------------------------------------------------------------------------------------- JSON


def diff_to_json(diff: CatalogDiff) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "base_fingerprint": diff.base_fingerprint,
        "head_fingerprint": diff.head_fingerprint,
        "has_changes": diff.has_changes,
        "counts": diff.by_impact(),
        "changes": [change_to_json(c) for c in diff.changes],
        "findings": [f.to_json() for f in diff.findings],
    }


def change_to_json(change: Change) -> dict[str, Any]:
    data: dict[str, Any] = {
        "key": change.key,
        "kind": change.kind,
        "id": change.id,
        "action": change.action.value,
        "impact": change.impact.value,
        "label": change.label,
        "summary": change.summary,
        "fields": [_field_to_json(f) for f in change.fields],
    }
    if change.kind in PRICE_KINDS:
        data.update(
            owner=change.owner,
            cycle=change.cycle,
            currency=change.currency,
            region=change.region,
            old_amount=_decimal(change.old_amount),
            new_amount=_decimal(change.new_amount),
            percent=_decimal(change.percent),
        )
    return data


def _field_to_json(item: FieldChange) -> dict[str, Any]:
    return {
        "field": item.field,
        "old": item.old,
        "new": item.new,
        "percent": _decimal(item.percent),
        "impact": item.impact.value,
    }


def _decimal(value: Decimal | None) -> str | None:
    return None if value is None else plain(value)


# ------------------------------------------------------------------------------------------ Markdown


@dataclass(frozen=True, slots=True)
class _Chunk:
    """Lines kept in one part when possible, and what to repeat when a part starts inside their section."""

    lines: tuple[str, ...]
    resume: tuple[str, ...] = ()
    """Reopens the section (heading, table header) when a part starts with this chunk."""
    carry: tuple[str, ...] = ()
    """Also repeated when a part starts in the middle of this chunk, e.g. the entity line of its fields."""
    opens_section: bool = False


def diff_to_markdown(
    diff: CatalogDiff, *, title: str = "Tariff diff", sections: Sequence[Sequence[str]] = ()
) -> list[str]:
    """The PR comment, as one or more parts each shorter than 65,000 characters.

    `sections` are extra blocks of Markdown lines (e.g. a plan's blast radius) placed after the summary;
    each stays in one part when it fits.
    """
    chunks = [*_head_chunks(diff), *_finding_chunks(diff.findings)]
    chunks.extend(_Chunk(("", *block)) for block in sections)
    for section, changes in grouped(diff):
        render = _table_chunks if section.owner_title else _list_chunks
        chunks.extend(render(section, changes))
    header_room = len(f"## {_md_text(title)} (part 9999 of 9999)") + 2
    parts = _pack(chunks, MARKDOWN_LIMIT - header_room - 1)
    total = len(parts)
    rendered = []
    for index, lines in enumerate(parts, start=1):
        heading = f"## {_md_text(title)}" + (f" (part {index} of {total})" if total > 1 else "")
        rendered.append("\n".join([heading, *lines]).rstrip("\n") + "\n")
    return rendered


def _head_chunks(diff: CatalogDiff) -> list[_Chunk]:
    fingerprints = (
        f"Base `{_short_fingerprint(diff.base_fingerprint)}` → head "
        f"`{_short_fingerprint(diff.head_fingerprint)}`"
    )
    return [_Chunk(("", f"**{counts_line(diff)}**", "", fingerprints))]


def _short_fingerprint(value: str) -> str:
    algorithm, _, digest = value.partition(":")
    return f"{algorithm}:{digest[:12]}" if digest else value[:19]


def _finding_chunks(findings: list[Diagnostic]) -> list[_Chunk]:
    if not findings:
        return []
    errors = sum(1 for f in findings if f.severity is Severity.ERROR)
    heading = ("", f"### Policy findings ({errors} error(s), {len(findings) - errors} warning(s))", "")
    resume = ("", "### Policy findings (continued)", "")
    chunks = []
    for index, finding in enumerate(findings):
        where = "" if finding.file is None else f" `{_code_text(finding.location())}`"
        line = f"- **{finding.severity.value}** `{finding.code}`{where}: {_md_prose(finding.message)}" + (
            f" Fix: {_md_prose(finding.hint)}" if finding.hint else ""
        )
        lines = (*heading, line) if index == 0 else (line,)
        chunks.append(_Chunk(lines, resume, opens_section=index == 0))
    return chunks


def _list_chunks(section: Section, changes: list[Change]) -> list[_Chunk]:
    heading = ("", f"### {section.title}", "")
    resume = ("", f"### {section.title} (continued)", "")
    chunks = []
    for index, change in enumerate(changes):
        details = [_field_line(f) for f in change.fields if not _repeats_summary(change, f)]
        # With field lines below, the entity line only names it; the summary would repeat them.
        what = f"**{_md_text(change.label)}**" if details else _md_text(change.summary)
        entity = f"- **{change.action.value}** `{change.key}` — {what} _({IMPACT_LABELS[change.impact]})_"
        lines = (*heading, entity, *details) if index == 0 else (entity, *details)
        chunks.append(_Chunk(lines, resume, (entity,), opens_section=index == 0))
    return chunks


def _repeats_summary(change: Change, item: FieldChange) -> bool:
    """A lone status line under a retired/added entity says nothing the entity line does not."""
    return item.field == "status" and len(change.fields) == 1 and change.action.value != "changed"


def _field_line(item: FieldChange) -> str:
    percent = f", {format_percent(item.percent)}" if item.percent is not None else ""
    return (
        f"  - `{item.field}`: {_md_value(item.old)} → {_md_value(item.new)} "
        f"_({IMPACT_LABELS[item.impact]}{percent})_"
    )


def _table_chunks(section: Section, changes: list[Change]) -> list[_Chunk]:
    columns = (section.owner_title, "Cycle", "Currency/Region", "Old", "New", "Change", "Impact")
    header = ("| " + " | ".join(columns) + " |", "|" + "---|" * (len(columns) - 2) + "--:|---|")
    heading = ("", f"### {section.title}", "", *header)
    resume = ("", f"### {section.title} (continued)", "", *header)
    chunks = []
    for index, change in enumerate(changes):
        row = _price_row(change)
        lines = (*heading, row) if index == 0 else (row,)
        chunks.append(_Chunk(lines, resume, opens_section=index == 0))
    return chunks


def _price_row(change: Change) -> str:
    scope = f"{change.currency} @ {change.region}" if change.region else (change.currency or "")
    if change.percent is not None:
        delta = format_percent(change.percent)
    else:
        delta = {"added": "new", "removed": "removed"}.get(change.action.value, "—")
    cells = (
        _cell(change.label),
        _cell(change.cycle or "one-off"),
        _cell(scope),
        format_amount(change.old_amount),
        format_amount(change.new_amount),
        delta,
        IMPACT_LABELS[change.impact],
    )
    return "| " + " | ".join(cells) + " |"


def _pack(chunks: Iterable[_Chunk], budget: int) -> list[list[str]]:
    """Fill parts greedily, breaking only between chunks, or between lines of a chunk that cannot fit."""
    parts: list[list[str]] = []
    current: list[str] = []
    size = 0

    def start_part(resume: tuple[str, ...]) -> None:
        nonlocal current, size
        parts.append(current)
        current = list(resume)
        size = sum(len(line) + 1 for line in resume)

    for chunk in chunks:
        cost = sum(len(line) + 1 for line in chunk.lines)
        if current and size + cost > budget:
            start_part(() if chunk.opens_section else chunk.resume)
        if size + cost <= budget:
            current.extend(chunk.lines)
            size += cost
            continue
        for raw in chunk.lines:
            # Values are already clipped, so only a pathological name can make one line this long.
            line = raw if len(raw) < budget // 2 else raw[: budget // 2] + "…"
            if current and size + len(line) + 1 > budget:
                start_part((*chunk.resume, *chunk.carry))
            current.append(line)
            size += len(line) + 1
    parts.append(current)
    return [part for part in parts if any(line.strip() for line in part)] or [[]]


def _md_text(text: str) -> str:
    """Escape what Markdown or HTML would otherwise interpret (names and messages come from config)."""
    return _escape(" ".join(text.split()))


def _escape(text: str) -> str:
    for char in "\\`*_[]<>|":
        text = text.replace(char, "\\" + char)
    return text


def _md_prose(text: str) -> str:
    """Like _md_text, but `code` spans written in the message stay code spans."""
    pieces = " ".join(text.split()).split("`")
    if len(pieces) % 2 == 0:
        return _md_text(text)
    return "".join(_escape(piece) if index % 2 == 0 else f"`{piece}`" for index, piece in enumerate(pieces))


def _code_text(text: str) -> str:
    return " ".join(text.split()).replace("`", "'")


def _cell(text: str) -> str:
    return _md_text(text)


def _md_value(value: Any) -> str:
    if value is None:
        return "_none_"
    text = _readable(value)
    if len(text) > VALUE_LIMIT:
        text = text[: VALUE_LIMIT - 1] + "…"
    return f"`{_code_text(text)}`"


def _readable(value: Any) -> str:
    """Plain values as people read them: `1,499`, `pine, json`, `true`."""
    if isinstance(value, str) and _looks_like_amount(value):
        return format_amount(Decimal(value))
    return short_value(value, limit=VALUE_LIMIT)


def _looks_like_amount(text: str) -> bool:
    head, _, tail = text.lstrip("-").partition(".")
    return head.isdigit() and (not tail or tail.isdigit())


# ------------------------------------------------------------------------------------------ terminal


def diff_to_text(diff: CatalogDiff) -> RenderableType:
    """A terse, coloured view for the terminal: counts, findings, then changes grouped by section."""
    items: list[RenderableType] = [Text(counts_line(diff), style="bold")]
    if diff.findings:
        items.append(_findings_text(diff.findings))
    for section, changes in grouped(diff):
        items.append(Text(f"\n{section.title}", style="bold underline"))
        items.append(_price_table(section, changes) if section.owner_title else _changes_text(changes))
    return Group(*items)


def _findings_text(findings: list[Diagnostic]) -> Text:
    text = Text("\nPolicy findings\n", style="bold")
    for finding in findings:
        colour = "red" if finding.severity is Severity.ERROR else "yellow"
        text.append(f"  {finding.severity.value}", style=colour)
        text.append(f" {finding.location()}: {finding.message} ({finding.code})\n")
        if finding.hint:
            text.append(f"    fix: {finding.hint}\n", style="cyan")
    text.rstrip()
    return text


def _changes_text(changes: list[Change]) -> Text:
    text = Text()
    for change in changes:
        style = IMPACT_STYLES[change.impact]
        text.append(f"  {ACTION_MARKS[change.action.value]} ", style=style)
        text.append(change.summary)
        text.append(f"  [{IMPACT_LABELS[change.impact]}]\n", style=style)
        for item in change.fields:
            if _repeats_summary(change, item):
                continue
            style = IMPACT_STYLES[item.impact]
            text.append(
                f"      {item.field}: {_readable_or_none(item.old)} → {_readable_or_none(item.new)}",
                style=style,
            )
            text.append(f"  ({IMPACT_LABELS[item.impact]})\n", style="dim")
    text.rstrip()
    return text


def _readable_or_none(value: Any) -> str:
    return "none" if value is None else _readable(value)


def _price_table(section: Section, changes: list[Change]) -> Table:
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for column in (section.owner_title, "Cycle", "Currency/Region", "Old", "New", "Change", "Impact"):
        table.add_column(column, justify="right" if column in ("Old", "New", "Change") else "left")
    for change in changes:
        scope = f"{change.currency}@{change.region}" if change.region else (change.currency or "")
        delta = format_percent(change.percent) if change.percent is not None else change.action.value
        style = IMPACT_STYLES[change.impact]
        table.add_row(
            change.label,
            change.cycle or "one-off",
            scope,
            format_amount(change.old_amount),
            format_amount(change.new_amount),
            Text(delta, style=style),
            Text(IMPACT_LABELS[change.impact], style=style),
        )
    return table
