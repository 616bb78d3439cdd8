"""The pages in a real browser: headless system Chromium driven by Playwright.

Skipped (with the reason shown) only where no Chromium is installed and CI is not set; in CI a missing
browser fails the run, so the browser tests cannot silently stop running.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page
from playwright.sync_api import Error as PlaywrightError

from cli.preview_command import build_preview
from compiler.colors import contrast_ratio
from compiler.project import compile_config
from publishers.site import render_site
from publishers.site.preview_server import PreviewServer
from publishers.site.screenshot import DESKTOP, MOBILE, chromium, find_chromium, screenshot_pages

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
DIWALI = datetime(2026, 10, 25, 12, 0, tzinfo=ZoneInfo("Asia/Kolkata"))


@pytest.fixture(scope="module")
def chromium_path() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(
                "CI is set but no Chromium is installed: .ci/run must `apt-get install -y chromium`",
                pytrace=False,
            )
        pytest.skip("no Chromium on this machine: apt-get install chromium (or set TARIFF_CHROMIUM)")
    return found


@pytest.fixture(scope="module")
def browser(chromium_path: str) -> Iterator[Browser]:
    with chromium(chromium_path) as launched:
        yield launched


@pytest.fixture(scope="module")
def site_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = compile_config(REPO / "pricing")
    assert result.catalog is not None
    directory = tmp_path_factory.mktemp("site")
    render_site(result.catalog, at=DIWALI).write(directory)
    return directory


class Watched:
    """A browser tab that records console errors and uncaught exceptions."""

    def __init__(self, browser: Browser, *, width: int = 1280, javascript: bool = True) -> None:
        self.context = browser.new_context(
            viewport={"width": width, "height": 900}, java_script_enabled=javascript
        )
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.errors.append(f"{message.type}: {message.text}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Browser) -> Iterator[Watched]:
    watched = Watched(browser)
    yield watched
    watched.close()


def visible_price(page: Page, plan: str) -> str:
    """The price a sighted visitor reads (the last line: a screen-reader-only "Now" may precede it)."""
    text = page.locator(f'article[data-plan="{plan}"] .price.shown .now').inner_text()
    return text.splitlines()[-1].replace("\u00a0", " ")


def wait_until(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll from Python: the pages' CSP forbids the eval that Playwright's wait_for_function uses."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_page_loads_cleanly_and_the_cycle_toggle_switches_prices(tab: Watched, site_dir: Path) -> None:
    page = tab.page
    page.goto((site_dir / "pricing-in.html").as_uri())
    assert page.locator("h1").inner_text() == "Build TradingView strategies with AI"
    assert visible_price(page, "pro") == "₹1,499"
    assert page.locator('article[data-plan="pro"] .price[data-cycle="annual"]').is_hidden()
    assert page.locator("a.cta").nth(1).get_attribute("href") == (
        "https://pinegenie.app/checkout?plan=pro&cycle=monthly&region=IN&code="
    )

    page.click('label[for="cycle-annual"]')
    assert page.locator("#cycle-annual").is_checked()
    assert visible_price(page, "pro") == "₹10,493"
    assert page.locator('article[data-plan="pro"] .price.shown del').inner_text().endswith("₹14,990")
    assert page.locator('article[data-plan="pro"] .price.shown .offer-badge').inner_text() == "Diwali −30%"
    assert visible_price(page, "premium") == "₹20,986"
    assert page.locator('article[data-plan="pro"] .price[data-cycle="monthly"]').is_hidden()
    assert page.locator("a.cta").nth(1).get_attribute("href") == (
        "https://pinegenie.app/checkout?plan=pro&cycle=annual&region=IN&code="
    )
    assert tab.errors == []


def test_the_toggle_works_from_the_keyboard_with_a_visible_focus(tab: Watched, site_dir: Path) -> None:
    page = tab.page
    page.goto((site_dir / "pricing-us.html").as_uri())
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")  # the checked radio of the cycle group
    assert page.evaluate("document.activeElement.id") == "cycle-monthly"
    outline = page.evaluate(
        "getComputedStyle(document.querySelector('label[for=cycle-monthly]')).outlineStyle"
    )
    assert outline == "solid"
    page.keyboard.press("ArrowRight")
    assert page.locator("#cycle-annual").is_checked()
    assert visible_price(page, "pro") == "$190"
    page.keyboard.press("ArrowLeft")
    assert visible_price(page, "pro") == "$19"
    # Tab reaches the first button, a real link.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className").startswith("cta")
    assert tab.errors == []


def test_without_javascript_every_price_is_visible(browser: Browser, site_dir: Path) -> None:
    watched = Watched(browser, javascript=False)
    try:
        page = watched.page
        page.goto((site_dir / "pricing-eu.html").as_uri())
        assert page.locator('article[data-plan="pro"] .price[data-cycle="annual"]').is_visible()
        assert page.locator('article[data-plan="pro"] .price[data-cycle="monthly"]').is_visible()
        assert page.locator("fieldset.cycles").is_hidden()  # a toggle that could do nothing is not shown
    finally:
        watched.close()


def test_fits_a_360_pixel_screen(browser: Browser, site_dir: Path) -> None:
    watched = Watched(browser, width=360)
    try:
        page = watched.page
        page.goto((site_dir / "pricing-in.html").as_uri())
        assert page.evaluate("document.documentElement.scrollWidth") <= 360
        for box in (page.locator("a.cta").nth(i).bounding_box() for i in range(3)):
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360
        assert watched.errors == []
    finally:
        watched.close()


def _hex(css_color: str) -> str:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_color)[:3])
    return f"#{red:02x}{green:02x}{blue:02x}"


def test_rendered_colours_have_enough_contrast(tab: Watched, site_dir: Path) -> None:
    page = tab.page
    page.goto((site_dir / "pricing-in.html").as_uri())
    pairs = page.evaluate(
        """() => [...document.querySelectorAll('a.cta, .badge, .offer-badge, h1, .tagline, .per')]
             .filter(e => e.offsetParent !== null)
             .map(e => {
               let bg = 'rgba(0, 0, 0, 0)', node = e;
               while (node && bg === 'rgba(0, 0, 0, 0)') {
                 bg = getComputedStyle(node).backgroundColor;
                 node = node.parentElement;
               }
               return [e.className || e.tagName, getComputedStyle(e).color, bg];
             })"""
    )
    assert len(pairs) > 8
    for name, foreground, background in pairs:
        assert contrast_ratio(_hex(foreground), _hex(background)) >= 4.5, (name, foreground, background)


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_screenshots_are_png_files(browser: Browser, site_dir: Path, tmp_path: Path) -> None:
    shots = screenshot_pages([site_dir / "pricing-in.html"], tmp_path, browser=browser)
    assert [s.name for s in shots] == ["pricing-in.png", "pricing-in-mobile.png"]
    width, height = _png_size(shots[0])
    assert width == DESKTOP.width and height > DESKTOP.height  # full page, taller than the window
    assert _png_size(shots[1])[0] == MOBILE.width


def heading(page: Page) -> str:
    try:
        return page.locator("h1").inner_text(timeout=2_000)
    except PlaywrightError:  # the page is between two loads
        return ""


def test_live_reload_in_the_browser(tab: Watched, tmp_path: Path) -> None:
    config = tmp_path / "pricing"
    shutil.copytree(REPO / "pricing", config)
    server = PreviewServer(config, lambda: build_preview(config, DIWALI, ["IN"], None), debounce_ms=50)
    server.start()
    page = tab.page
    try:
        page.goto(server.url + "pricing-in.html")
        assert page.locator("h1").inner_text() == "Build TradingView strategies with AI"
        content = config / "content" / "pricing.yaml"
        original = content.read_text(encoding="utf-8")
        content.write_text(original.replace("headline: Build", "headline: Design"), encoding="utf-8")
        wait_until(lambda: heading(page).startswith("Design"))

        content.write_text(original.replace("headline: Build", "headline: [Build"), encoding="utf-8")
        wait_until(lambda: page.title().startswith("Config error"))
        assert page.locator(".where").first.inner_text().startswith("content/pricing.yaml:")

        content.write_text(original, encoding="utf-8")
        wait_until(lambda: heading(page).startswith("Build"))
        assert all("status of 500" in e for e in tab.errors), tab.errors  # the error page itself is a 500
    finally:
        page.goto("about:blank")
        server.close()


def test_preview_command_writes_screenshots(chromium_path: str, tmp_path: Path) -> None:
    from tests.test_preview_cli import DRIVER

    out, shots = tmp_path / "site", tmp_path / "shots"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            DRIVER,
            "preview",
            "-c",
            str(REPO / "pricing"),
            "-o",
            str(out),
            "--region",
            "IN",
            "--at",
            "2026-10-25T12:00+05:30",
            "--screenshot",
            str(shots),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        check=False,
        env={**os.environ, "TARIFF_CHROMIUM": chromium_path},
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in shots.glob("*.png")) == ["pricing-in-mobile.png", "pricing-in.png"]
    assert _png_size(shots / "pricing-in.png")[0] == DESKTOP.width
    assert "2 screenshot(s)" in done.stdout
