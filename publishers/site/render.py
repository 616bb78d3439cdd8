"""Catalog → a static site: one self-contained HTML page (and its JSON) per page × region, plus an index.

Pages inline their CSS, icons and the few lines of toggle script, so they open from disk, from a pull
request artifact or from the database without any network. A Content-Security-Policy in each page
allows exactly those inline blocks (by hash) and nothing else: even markup that slipped past the
sanitiser could neither run script nor load anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup

from compiler.catalog import Catalog, Theme
from compiler.diagnostics import Diagnostic
from publishers.site.icons import icon_svg
from publishers.site.model import aware, build_page_model
from publishers.site.palette import Palette
from publishers.site.values import YES
from publishers.site.views import CardView, PageModel

INDEX_FILE = "index.html"
MANIFEST_FILE = "index.json"
EVENTS_PATH = "/__tariff/events"  # the live-reload stream of `tariff preview --serve` (see reload.js)


@cache
def _environment() -> Environment:
    # Autoescape everything: the only HTML inserted unescaped is Markup from the sanitiser and the icons.
    return Environment(
        loader=PackageLoader("publishers.site", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


@cache
def _asset(name: str) -> str:
    loader = _environment().loader
    assert loader is not None
    source, _filename, _uptodate = loader.get_source(_environment(), name)
    return source.strip()


def _raw_block(text: str) -> Markup:
    """CSS or JS for a <style>/<script> element, which HTML does not unescape."""
    if "</" in text:  # would end the element early; our templates and hex colours never contain it
        raise ValueError("inline CSS/JS must not contain '</'")
    return Markup(text)


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def content_security_policy(styles: Sequence[str], scripts: Sequence[str], *, live_reload: bool) -> Markup:
    """Allow exactly these inline blocks; no other script, style, font, frame or request."""
    script_src = " ".join(_sha256(s) for s in scripts) or "'none'"
    parts = [
        "default-src 'none'",
        "style-src " + (" ".join(_sha256(s) for s in styles) or "'none'"),
        "script-src " + script_src,
        "img-src data:",
        "base-uri 'none'",
        "form-action 'none'",
    ]
    if live_reload:
        parts.append("connect-src 'self'")
    # Markup: only fixed words and base64 hashes, and quotes inside the attribute read better unescaped.
    return Markup("; ".join(parts))


@dataclass(frozen=True, slots=True)
class SitePage:
    """One rendered page for one region: what the preview writes and what a publisher stores."""

    page_id: str
    region: str
    region_name: str
    locale: str
    currency: str
    file_name: str  # `pricing-in.html`
    json_name: str  # `pricing-in.json`
    html: str
    data: Mapping[str, Any]  # the page as JSON types (`PageModel.to_json()`)
    model: PageModel = field(repr=False, compare=False)

    @property
    def json_text(self) -> str:
        return json.dumps(self.data, indent=2, ensure_ascii=False) + "\n"

    @property
    def promotions(self) -> tuple[str, ...]:
        return tuple(offer.id for offer in self.model.offers)


@dataclass(frozen=True, slots=True)
class Site:
    at: datetime
    fingerprint: str  # the catalog fingerprint the site was rendered from
    pages: tuple[SitePage, ...]
    index_html: str
    warnings: tuple[str, ...]

    def page(self, page_id: str, region: str) -> SitePage:
        for page in self.pages:
            if page.page_id == page_id and page.region == region:
                return page
        raise KeyError(f"no page {page_id!r} for region {region!r}")

    def manifest(self) -> dict[str, Any]:
        return {
            "format_version": 1,
            "as_of": self.at.isoformat(),
            "fingerprint": self.fingerprint,
            "pages": [
                {
                    "page": p.page_id,
                    "region": p.region,
                    "locale": p.locale,
                    "currency": p.currency,
                    "html": p.file_name,
                    "json": p.json_name,
                    "promotions": list(p.promotions),
                }
                for p in self.pages
            ],
            "warnings": list(self.warnings),
        }

    def files(self) -> dict[str, str]:
        """Every file of the site by relative name: index, manifest, and HTML + JSON per page."""
        files = {INDEX_FILE: self.index_html, MANIFEST_FILE: json.dumps(self.manifest(), indent=2) + "\n"}
        for page in self.pages:
            files[page.file_name] = page.html
            files[page.json_name] = page.json_text
        return files

    def write(self, directory: Path) -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in self.files().items():
            target = directory / name
            target.write_text(text, encoding="utf-8")
            written.append(target)
        return written


def _css(palette: Palette, cards: Sequence[CardView] = ()) -> str:
    # Button colours become `.cta-N` rules (N = the card's position): no style="" attributes, which the
    # page's Content-Security-Policy would refuse.
    return _environment().get_template("page.css.j2").render(p=palette, cards=cards).strip()


def _default_palette() -> Palette:
    return Palette.from_theme(Theme(), [], "index")


def _scripts(live_reload: bool) -> tuple[str | None, str | None]:
    return _asset("toggle.js"), (_asset("reload.js") if live_reload else None)


def render_page(model: PageModel, *, live_reload: bool = False) -> str:
    """The HTML of one page model."""
    css = _css(model.palette, model.cards)
    toggle_js, reload_js = _scripts(live_reload)
    scripts = [s for s in (toggle_js, reload_js) if s]
    return (
        _environment()
        .get_template("page.html.j2")
        .render(
            m=model,
            lang=model.locale.replace("_", "-"),
            csp=content_security_policy([css], scripts, live_reload=live_reload),
            css=_raw_block(css),
            toggle_js=_raw_block(toggle_js or ""),
            reload_js=_raw_block(reload_js) if reload_js else None,
            icon=icon_svg,
            yes=YES,
        )
    )


def _file_stem(page_id: str, region: str) -> str:
    return f"{page_id}-{region.lower()}"


def render_site(
    catalog: Catalog,
    *,
    at: datetime,
    regions: Sequence[str] | None = None,
    locale: str | None = None,
    pages: Sequence[str] | None = None,
    live_reload: bool = False,
) -> Site:
    """Render every page (or `pages`) for every region (or `regions`) as a visitor sees it at `at`.

    `at` without a time zone is UTC. `locale` None uses each region's own locale. `live_reload` adds
    the `tariff preview --serve` reload script; leave it off for anything published. Raises ValueError
    for an unknown page, region or locale.
    """
    moment = aware(at)
    chosen_regions = list(regions) if regions else list(catalog.regions)
    chosen_pages = list(pages) if pages else list(catalog.pages)
    for code in chosen_regions:
        if code not in catalog.regions:
            raise ValueError(f"unknown region {code!r}: the config has {', '.join(catalog.regions)}")
    for page_id in chosen_pages:
        if page_id not in catalog.pages:
            raise ValueError(f"unknown page {page_id!r}: the config has {', '.join(catalog.pages) or 'none'}")
    rendered: list[SitePage] = []
    warnings: list[str] = []
    for page_id in chosen_pages:
        for code in chosen_regions:
            model = build_page_model(catalog, page_id, code, locale, moment)
            warnings.extend(model.warnings)
            stem = _file_stem(page_id, code)
            rendered.append(
                SitePage(
                    page_id=page_id,
                    region=code,
                    region_name=model.region_name,
                    locale=model.locale,
                    currency=model.currency,
                    file_name=f"{stem}.html",
                    json_name=f"{stem}.json",
                    html=render_page(model, live_reload=live_reload),
                    data=model.to_json(),
                    model=model,
                )
            )
    unique_warnings = tuple(dict.fromkeys(warnings))
    index = render_index(
        catalog.name or catalog.project, moment, rendered, unique_warnings, live_reload=live_reload
    )
    return Site(moment, catalog.fingerprint, tuple(rendered), index, unique_warnings)


def render_index(
    project: str,
    at: datetime,
    pages: Sequence[SitePage],
    warnings: Sequence[str],
    *,
    live_reload: bool = False,
) -> str:
    css = _css(_default_palette())
    _toggle, reload_js = _scripts(live_reload)
    groups: dict[str, list[SitePage]] = {}
    for page in pages:
        groups.setdefault(page.page_id, []).append(page)
    return (
        _environment()
        .get_template("index.html.j2")
        .render(
            project=project,
            as_of=at.isoformat(),
            groups=list(groups.items()),
            warnings=list(warnings),
            csp=content_security_policy([css], [reload_js] if reload_js else [], live_reload=live_reload),
            css=_raw_block(css),
            reload_js=_raw_block(reload_js) if reload_js else None,
        )
    )


@dataclass(frozen=True, slots=True)
class _ErrorLine:
    where: str
    path: str
    message: str
    hint: str | None


def render_error_page(
    problems: Iterable[Diagnostic | str], *, summary: str | None = None, live_reload: bool = False
) -> str:
    """A page naming each error's file, line and message (all HTML-escaped), for the live preview."""
    lines = [
        _ErrorLine(p.location(), p.path, p.message, p.hint)
        if isinstance(p, Diagnostic)
        else _ErrorLine("error", "", p, None)
        for p in problems
    ]
    css = _css(_default_palette())
    _toggle, reload_js = _scripts(live_reload)
    return (
        _environment()
        .get_template("error.html.j2")
        .render(
            errors=lines,
            summary=summary or f"{len(lines)} error(s).",
            csp=content_security_policy([css], [reload_js] if reload_js else [], live_reload=live_reload),
            css=_raw_block(css),
            reload_js=_raw_block(reload_js) if reload_js else None,
        )
    )
