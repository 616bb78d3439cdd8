"""PNG screenshots of rendered pages with headless Chromium, driven by Playwright for Python.

Tariff drives the system's Chromium (Debian's `chromium` package, or TARIFF_CHROMIUM) and never
downloads a browser: `playwright install` is not needed and not used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM_ENV = "TARIFF_CHROMIUM"
SYSTEM_CHROMIUM = "/usr/bin/chromium"
INSTALL_HINT = f"install Chromium: apt-get install chromium, or set {CHROMIUM_ENV}"
# Headless and quiet: no sandbox (CI runs as root), no GPU, and no background calls home.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a tiny /dev/shm; Chromium then crashes without it
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


class BrowserError(Exception):
    """No usable Chromium, or it failed; the message says what to do."""


@dataclass(frozen=True, slots=True)
class Viewport:
    name: str  # file-name suffix: "" for desktop, "-mobile"
    width: int
    height: int


DESKTOP = Viewport("", 1280, 900)
MOBILE = Viewport("-mobile", 360, 780)


def find_chromium() -> str | None:
    """TARIFF_CHROMIUM, else /usr/bin/chromium, else `chromium` or `chromium-browser` on PATH."""
    configured = os.environ.get(CHROMIUM_ENV)
    if configured:
        found = shutil.which(configured)
        if found is None:
            raise BrowserError(f"{CHROMIUM_ENV}={configured} is not an executable file; {INSTALL_HINT}")
        return found
    if os.access(SYSTEM_CHROMIUM, os.X_OK):
        return SYSTEM_CHROMIUM
    return shutil.which("chromium") or shutil.which("chromium-browser")


def require_chromium() -> str:
    found = find_chromium()
    if found is None:
        raise BrowserError(f"no Chromium found; {INSTALL_HINT}")
    return found


@contextmanager
def chromium(executable: str | None = None) -> Iterator[Browser]:
    """A headless system Chromium under Playwright, closed on exit."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    path = executable or require_chromium()
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(
                executable_path=path, headless=True, args=list(CHROMIUM_ARGS)
            )
        except PlaywrightError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BrowserError(f"cannot start Chromium at {path}: {first_line}; {INSTALL_HINT}") from exc
        try:
            yield browser
        finally:
            browser.close()


def screenshot_pages(
    pages: Sequence[Path],
    out: Path,
    *,
    executable: str | None = None,
    browser: Browser | None = None,
    viewports: Sequence[Viewport] = (DESKTOP, MOBILE),
) -> list[Path]:
    """A full-page PNG of each HTML file per viewport: `pricing-in.png`, `pricing-in-mobile.png`.

    Launches Chromium (`executable`, else the system one) unless a running `browser` is passed.
    """
    if browser is None:
        with chromium(executable) as launched:
            return screenshot_pages(pages, out, browser=launched, viewports=viewports)
    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []
    for viewport in viewports:
        context = browser.new_context(
            viewport={"width": viewport.width, "height": viewport.height}, device_scale_factor=1
        )
        try:
            page = context.new_page()
            for source in pages:
                page.goto(source.resolve().as_uri(), wait_until="load")
                target = out / f"{source.stem}{viewport.name}.png"
                page.screenshot(path=str(target), full_page=True)
                shots.append(target)
        finally:
            context.close()
    return shots
