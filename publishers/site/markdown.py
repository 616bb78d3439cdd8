"""Content Markdown → sanitised HTML: the only HTML from config that reaches a page.

Two independent layers, so a gap in one does not open the page: markdown-it-py renders with raw HTML
disabled (tags in the source come out as text), then nh3 (Ammonia) keeps only a small allow-list of
tags and attributes and only absolute http/https/mailto links.
"""

from __future__ import annotations

from functools import cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_TAGS = frozenset({"p", "a", "strong", "em", "code", "ul", "ol", "li", "br", "h3", "h4", "blockquote"})
ALLOWED_ATTRIBUTES: dict[str, set[str]] = {"a": {"href"}}
ALLOWED_SCHEMES = frozenset({"http", "https", "mailto"})
LINK_REL = "noopener noreferrer"
# Tags whose text is never meant for readers: drop them with their content instead of unwrapping.
DROP_WITH_CONTENT = frozenset({"script", "style", "template", "noscript", "iframe", "object", "svg", "math"})


@cache
def _parser() -> MarkdownIt:
    # commonmark, no raw HTML, no linkify: only what the author wrote explicitly becomes a link.
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


@cache
def _cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=ALLOWED_TAGS,
        clean_content_tags=DROP_WITH_CONTENT,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=ALLOWED_SCHEMES,
        # Relative and protocol-relative links are refused: the page may be served from any origin.
        url_relative="deny",
        link_rel=LINK_REL,
        strip_comments=True,
    )


def sanitise_html(html: str) -> Markup:
    """Any HTML → the allow-listed subset, as Markup (safe to insert without escaping)."""
    return Markup(_cleaner().clean(html).strip())


# The page owns h1 (headline) and h2 (sections): headings in content copy sit below them.
_HEADING_LEVELS = {"h1": "h3", "h2": "h3", "h3": "h3", "h4": "h4", "h5": "h4", "h6": "h4"}


def render_markdown(text: str | None) -> Markup:
    """Markdown from content files → sanitised HTML; empty for None."""
    if not text:
        return Markup("")
    parser = _parser()
    env: dict[str, object] = {}
    tokens = parser.parse(text, env)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = _HEADING_LEVELS.get(token.tag, "h4")
    return sanitise_html(parser.renderer.render(tokens, parser.options, env))
