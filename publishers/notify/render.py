"""A template + variables → subject, plain-text part and HTML part.

The body is Markdown with Jinja tags. The text part is the rendered Markdown as it stands (Markdown reads as
plain text). For the HTML part every value a tag prints is escaped for Markdown first (so a customer name
such as `[x](https://evil)` or `<b>` stays text), then markdown-it renders with raw HTML off and nh3 keeps
only an allow-list of tags: values are escaped, and only the template author's own Markdown becomes markup.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import TemplateError
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt
from markupsafe import Markup, escape

from compiler.catalog import NotificationTemplate
from compiler.notification_templates import sandbox
from publishers.site.markdown import sanitise_html

_MARKDOWN_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")
_SPACES = re.compile(r"\s+")


class RenderError(ValueError):
    """A template that failed at render time (the compiler catches what can be caught before)."""


@dataclass(frozen=True, slots=True)
class Message:
    subject: str
    text: str
    html: str


def _plain(value: Any) -> str:
    return "" if value is None else str(value)


def _markdown_literal(value: Any) -> str:
    # CommonMark lets a backslash escape any ASCII punctuation, so the value renders as the text it is.
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", _SPACES.sub(" ", _plain(value)))


@cache
def _text_env() -> SandboxedEnvironment:
    return sandbox(finalize=_plain)


@cache
def _markdown_env() -> SandboxedEnvironment:
    return sandbox(finalize=_markdown_literal)


@cache
def _parser() -> MarkdownIt:
    return MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


HTML_SHELL = (
    '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title></head>\n'
    '<body style="font-family: -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif; '
    'font-size: 15px; line-height: 1.5; color: #1f2937; max-width: 600px; margin: 0 auto; padding: 24px;">\n'
    "{body}\n</body></html>\n"
)


def render(template: NotificationTemplate, variables: Mapping[str, Any]) -> Message:
    try:
        subject = _SPACES.sub(" ", _text_env().from_string(template.subject).render(variables)).strip()
        text = _text_env().from_string(template.body).render(variables)
        markdown = _markdown_env().from_string(template.body).render(variables)
    except TemplateError as exc:
        raise RenderError(f"{template.file}: {type(exc).__name__}: {exc}") from exc
    body = sanitise_html(_parser().render(markdown))
    html = HTML_SHELL.format(title=escape(subject), body=Markup(body))
    return Message(subject, _tidy(text), html)


def _tidy(text: str) -> str:
    """Blank lines that `{% if %}` blocks leave behind collapse to one."""
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
