"""A small DOM over the stdlib HTML parser, for structure tests on rendered pages (and its own tests).

Tests read pages the way a browser's accessibility tree would: `text()` skips `.sr-only` helpers and
`aria-hidden` marks unless asked, so an assertion on a price reads what a sighted visitor sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)


@dataclass(eq=False)
class Node:
    tag: str
    attrs: dict[str, str | None] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)
    parent: Node | None = field(default=None, repr=False)

    @property
    def classes(self) -> set[str]:
        return set((self.attrs.get("class") or "").split())

    def get(self, name: str) -> str | None:
        return self.attrs.get(name)

    def iter(self) -> Iterator[Node]:
        for child in self.children:
            if isinstance(child, Node):
                yield child
                yield from child.iter()

    def find_all(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> list[Node]:
        found = []
        for node in self.iter():
            if tag is not None and node.tag != tag:
                continue
            if cls is not None and cls not in node.classes:
                continue
            if any(node.attrs.get(k.replace("_", "-")) != v for k, v in attrs.items()):
                continue
            found.append(node)
        return found

    def find(self, tag: str | None = None, cls: str | None = None, **attrs: str) -> Node:
        found = self.find_all(tag, cls, **attrs)
        assert found, f"no <{tag or '*'}> with class={cls} {attrs} under <{self.tag}>"
        return found[0]

    def text(self, *, visible: bool = True) -> str:
        """Text content with whitespace collapsed; `visible` skips screen-reader-only and hidden parts."""
        parts: list[str] = []
        self._collect(parts, visible)
        return re.sub(r"\s+", " ", "".join(parts)).strip()

    def _collect(self, parts: list[str], visible: bool) -> None:
        for child in self.children:
            if isinstance(child, str):
                parts.append(child)
            elif not (visible and ("sr-only" in child.classes or child.tag in ("script", "style"))):
                child._collect(parts, visible)


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document")
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), parent=self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, dict(attrs), parent=self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def parse_html(html: str) -> Node:
    builder = _Builder()
    builder.feed(html)
    builder.close()
    return builder.root


def plain(text: str) -> str:
    """Babel separates amount and symbol with no-break spaces (`18 €`): compare with ordinary spaces."""
    return text.replace("\u00a0", " ").replace("\u202f", " ")


def test_dom_nests_and_reads_visible_text() -> None:
    root = parse_html(
        '<div class="a"><p>Price <span class="sr-only">Now </span><b>$19</b><br>/ month</p><input id=x></div>'
    )
    paragraph = root.find("p")
    assert paragraph.text() == "Price $19/ month"
    assert paragraph.text(visible=False) == "Price Now $19/ month"
    assert root.find("input").parent is root.find("div", cls="a")


def test_dom_filters_by_attribute() -> None:
    root = parse_html('<a data-plan="pro" href="/x">A</a><a data-plan="free">B</a>')
    assert root.find("a", data_plan="pro").get("href") == "/x"
    assert [a.text() for a in root.find_all("a")] == ["A", "B"]
