"""A strict, located YAML reader for config files.

PyYAML implements YAML 1.1, where `NO` is false, `1e3` may be a float and `2026-10-20` a
date. Config is money, so scalars are resolved here instead, by a deliberately small rule
set: `true`/`false`, `null`/`~`, plain integers and plain decimals (read as `Decimal`, never
`float`); everything else stays a string for the schema to judge.
"""

from __future__ import annotations

import errno
import re
import stat
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from compiler.diagnostics import Diagnostic, Severity, format_path

MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_NODES = 200_000
MAX_DEPTH = 64

PathKey = tuple[str | int, ...]

_INT = re.compile(r"[-+]?[0-9]+")
_DECIMAL = re.compile(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)")
_TRUE = {"true", "True", "TRUE"}
_FALSE = {"false", "False", "FALSE"}
_NULL = {"null", "Null", "NULL", "~", ""}
_STR_TAG = "tag:yaml.org,2002:str"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MAP_TAG = "tag:yaml.org,2002:map"
# Untagged plain scalars get this private tag, so an explicit `!!str 123` stays the text "123".
_PLAIN_TAG = "tag:tariff,2026:plain"
_ALLOWED_TAGS = {_PLAIN_TAG, _STR_TAG, _SEQ_TAG, _MAP_TAG, "tag:yaml.org,2002:merge"}

_BaseLoader: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _UnresolvedLoader(_BaseLoader):  # type: ignore[misc]
    """Composes nodes without implicit typing, so every plain scalar keeps its text."""

    yaml_implicit_resolvers: dict[str, Any] = {}  # noqa: RUF012 - class-level table PyYAML reads

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN_TAG
        return super().resolve(kind, value, implicit)  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """One YAML file as plain data, with the position of every value and key."""

    file: str
    data: Any
    value_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: PathKey, *, key: bool = False) -> tuple[int, int] | None:
        """Nearest known position for `path`, walking up to the parent when needed."""
        table = self.key_positions if key else self.value_positions
        probe = path
        while True:
            if probe in table:
                return table[probe]
            if not probe:
                return None
            if key and probe in self.value_positions:
                return self.value_positions[probe]
            probe = probe[:-1]

    def locate(self, path: PathKey, *, key: bool = False) -> dict[str, Any]:
        """Keyword arguments for a Diagnostic pointing at `path`."""
        pos = self.position(path, key=key)
        line, column = pos if pos else (None, None)
        return {"file": self.file, "line": line, "column": column, "path": format_path(path)}


class YamlLoadError(Exception):
    def __init__(self, diagnostic: Diagnostic) -> None:
        self.diagnostic = diagnostic
        super().__init__(diagnostic.message)


def _fail(
    file: str,
    code: str,
    message: str,
    *,
    line: int | None = None,
    column: int | None = None,
    hint: str | None = None,
    path: PathKey = (),
) -> YamlLoadError:
    return YamlLoadError(
        Diagnostic(
            Severity.ERROR,
            code,
            message,
            file=file,
            line=line,
            column=column,
            path=format_path(path),
            hint=hint,
        )
    )


def read_config_bytes(path: Path, display: str) -> bytes:
    """Read a file defensively: size cap, no symlink loops, no device files."""
    try:
        status = path.stat()  # follows symlinks: a loop or a dangling link raises OSError here
        if not stat.S_ISREG(status.st_mode):
            raise _fail(
                display,
                "file.not-regular",
                "not a regular file",
                hint="config files must be plain files (not directories, devices or sockets)",
            )
        size = status.st_size
        if size > MAX_FILE_BYTES:
            raise _fail(
                display,
                "file.too-large",
                f"file is {size / 1024 / 1024:.1f} MB; config files may be at most "
                f"{MAX_FILE_BYTES // 1024 // 1024} MB",
                hint="split it into several files, or move bulk data (customer lists) to a CSV file",
            )
        with path.open("rb") as handle:
            return handle.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _fail(
                display,
                "file.symlink-loop",
                "symlink loop: the link points back at itself",
                hint="point the symlink at a real file, or replace it with the file",
            ) from exc
        if exc.errno == errno.ENOENT and path.is_symlink():
            raise _fail(
                display,
                "file.broken-symlink",
                "broken symlink: its target does not exist",
                hint="point the symlink at an existing file, or delete it",
            ) from exc
        reason = exc.strerror or str(exc)
        raise _fail(
            display,
            "file.unreadable",
            f"cannot read file: {reason}",
            hint="check that the file exists and is readable",
        ) from exc


def decode_text(raw: bytes, display: str) -> str:
    if b"\x00" in raw:
        offset = raw.index(b"\x00")
        line = raw.count(b"\n", 0, offset) + 1
        # Columns count characters, as editors do, not the bytes of the UTF-8 before the NUL.
        start = raw.rfind(b"\n", 0, offset) + 1
        column = len(raw[start:offset].decode("utf-8", errors="replace").lstrip("\ufeff")) + 1
        raise _fail(
            display,
            "file.binary",
            "file contains binary data (a NUL byte), not YAML text",
            line=line,
            column=column,
            hint="config files must be UTF-8 text; was a binary file saved with a .yaml name?",
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _fail(
            display,
            "file.encoding",
            f"invalid UTF-8 byte 0x{raw[exc.start]:02x}",
            line=line,
            column=column,
            hint="save the file as UTF-8",
        ) from exc


def load_yaml_file(path: Path, display: str) -> LoadedDocument:
    return load_yaml_text(decode_text(read_config_bytes(path, display), display), display)


def load_yaml_text(text: str, display: str) -> LoadedDocument:
    if not text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in text.splitlines()
    ):
        raise _fail(
            display,
            "yaml.empty",
            "file is empty",
            line=1,
            column=1,
            hint="add the document's content, or delete the file",
        )
    try:
        node = yaml.compose(text, Loader=_UnresolvedLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "invalid YAML"
        opened = exc.context_mark
        if exc.context and opened is not None and (mark is None or opened.line != mark.line):
            problem = f"{problem} ({exc.context} that starts on line {opened.line + 1})"
        elif exc.context:
            problem = f"{problem} ({exc.context})"
        hint = _syntax_hint(problem, text, mark.line if mark else None)
        raise _fail(
            display,
            "yaml.syntax",
            f"YAML syntax error: {problem}",
            line=mark.line + 1 if mark else None,
            column=mark.column + 1 if mark else None,
            hint=hint,
        ) from exc
    except yaml.YAMLError as exc:
        raise _fail(display, "yaml.syntax", f"YAML syntax error: {exc}") from exc
    except RecursionError as exc:
        raise _fail(display, "yaml.too-deep", "document is nested too deeply") from exc
    blank = isinstance(node, yaml.ScalarNode) and node.value == "" and node.tag == _PLAIN_TAG
    if node is None or blank:  # `---` alone is an empty document too
        raise _fail(
            display,
            "yaml.empty",
            "file is empty",
            line=1,
            column=1,
            hint="add the document's content, or delete the file",
        )
    builder = _Builder(display)
    data = builder.build(node, (), 0)
    return LoadedDocument(display, data, builder.value_positions, builder.key_positions)


def _syntax_hint(problem: str, text: str, line: int | None) -> str | None:
    if "\t" in problem or "tab" in problem.lower():
        return "YAML indentation must use spaces, not tabs"
    if line is not None:
        lines = text.splitlines()
        if 0 <= line < len(lines) and "\t" in lines[line][: len(lines[line]) - len(lines[line].lstrip())]:
            return "YAML indentation must use spaces, not tabs"
    if "mapping values are not allowed" in problem:
        return "a value containing ': ' must be quoted, or a key is missing its indentation"
    if "found character" in problem and "'@'" in problem:
        return "values starting with @ or ` must be quoted"
    if "flow sequence" in problem:
        return "a list opened with `[` must be closed with `]`, its items separated by commas"
    if "flow mapping" in problem:
        return "a mapping opened with `{` must be closed with `}`, its entries separated by commas"
    if "quoted scalar" in problem:
        return "a quoted value must end with the same quote it starts with"
    return "check indentation and quoting near this position"


class _Builder:
    def __init__(self, display: str) -> None:
        self.display = display
        self.value_positions: dict[PathKey, tuple[int, int]] = {}
        self.key_positions: dict[PathKey, tuple[int, int]] = {}
        self.nodes = 0
        self.active: set[int] = set()

    def _mark(self, node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def build(self, node: yaml.Node, path: PathKey, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            # An aliased node sits where its anchor is; name the top-level entry being expanded instead.
            top = path[:1]
            line, column = self.key_positions.get(top) or self.value_positions.get(top) or self._mark(node)
            raise _fail(
                self.display,
                "yaml.too-large",
                f"document expands to more than {MAX_NODES:,} values (aliases repeated too often?)",
                line=line,
                column=column,
                path=top,
                hint="each alias (*name) copies its whole anchored value, so nested aliases multiply; "
                "write the values out or nest fewer aliases",
            )
        if depth > MAX_DEPTH:
            line, column = self._mark(node)
            raise _fail(
                self.display,
                "yaml.too-deep",
                f"document is nested more than {MAX_DEPTH} levels deep",
                line=line,
                column=column,
                path=path,
            )
        if id(node) in self.active:
            # The node's own mark is its anchor; the key holding the alias is where the loop closes.
            line, column = self.key_positions.get(path) or self._mark(node)
            raise _fail(
                self.display,
                "yaml.recursive-alias",
                "an alias refers to the value that contains it",
                line=line,
                column=column,
                path=path,
                hint="an alias (*name) cannot sit inside its own anchored value (&name); copy the values",
            )
        if node.tag not in _ALLOWED_TAGS:
            line, column = self._mark(node)
            raise _fail(
                self.display,
                "yaml.tag",
                f"YAML tag {node.tag!r} is not supported",
                line=line,
                column=column,
                path=path,
                hint="remove the tag; Tariff reads plain YAML values only",
            )
        self.value_positions.setdefault(path, self._mark(node))
        if isinstance(node, yaml.ScalarNode):
            self._check_text(node, path)
            return self._scalar(node)
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, index), depth + 1) for index, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)
            return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))

    def _check_text(self, node: yaml.ScalarNode, path: PathKey) -> None:
        # A raw NUL byte is refused with the file (decode_text), but a quoted escape writes one too, and
        # PostgreSQL cannot store U+0000 in text or jsonb: refused here, before it reaches `apply`.
        if "\x00" not in node.value:
            return
        line, column = self._mark(node)
        raise _fail(
            self.display,
            "yaml.nul-character",
            "text contains the NUL character (U+0000), which the database cannot store",
            line=line,
            column=column,
            path=path,
            hint="remove the escape that writes it (\\0, \\x00 or \\u0000) from this quoted text",
        )

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        text: str = node.value
        if node.style or node.tag != _PLAIN_TAG:
            return text
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if text in _NULL:
            return None
        if _INT.fullmatch(text):
            return int(text)
        if _DECIMAL.fullmatch(text):
            return Decimal(text)
        return text

    def _mapping(self, node: yaml.MappingNode, path: PathKey, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        explicit: set[str] = set()
        merged: list[dict[str, Any]] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == "<<" and not key_node.style:
                value = self.build(value_node, path, depth + 1)
                sources = value if isinstance(value, list) else [value]
                for source in sources:
                    if not isinstance(source, dict):
                        line, column = self._mark(value_node)
                        raise _fail(
                            self.display,
                            "yaml.merge",
                            "a merge key (<<) must name a mapping",
                            line=line,
                            column=column,
                            path=path,
                        )
                    merged.append(source)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                line, column = self._mark(key_node)
                raise _fail(
                    self.display,
                    "yaml.complex-key",
                    "mapping keys must be plain text",
                    line=line,
                    column=column,
                    path=path,
                )
            self._check_text(key_node, path)
            key = key_node.value
            if key in explicit:
                line, column = self._mark(key_node)
                first = self.key_positions.get((*path, key))
                where = f" (first defined on line {first[0]})" if first else ""
                raise _fail(
                    self.display,
                    "yaml.duplicate-key",
                    f"duplicate key {key!r}{where}",
                    line=line,
                    column=column,
                    path=(*path, key),
                    hint="each key may appear once per mapping; remove or merge the duplicate",
                )
            explicit.add(key)
            self.key_positions[(*path, key)] = self._mark(key_node)
            result[key] = self.build(value_node, (*path, key), depth + 1)
        for source in merged:
            for key, value in source.items():
                result.setdefault(key, value)
        return result
