"""`tariff preview`: the pricing pages as visitors see them, written to disk, served live, or as PNGs."""

from __future__ import annotations

import tempfile
import time
import webbrowser
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from cli.errors import CommandError
from cli.options import ConfigOption
from cli.output import check_output_directory, output_error, print_diagnostics, stderr_console, stdout_console

if TYPE_CHECKING:
    from publishers.site.preview_server import Build
    from publishers.site.render import Site

DEFAULT_OUT = Path("out/preview")
DEFAULT_PORT = 8000

RegionOption = Annotated[
    list[str] | None,
    typer.Option(
        "--region",
        "-r",
        help="Render only this region (repeat for several). Default: every region.",
        show_default=False,
    ),
]


def parse_at(text: str | None) -> datetime | None:
    """`--at` as an aware datetime: ISO 8601, `Z` allowed, no offset meaning UTC."""
    if text is None:
        return None
    cleaned = text.strip()
    try:
        moment = datetime.fromisoformat(cleaned[:-1] + "+00:00" if cleaned.endswith(("Z", "z")) else cleaned)
    except ValueError:
        raise CommandError(
            f"--at {text!r} is not an ISO 8601 date or time",
            fix="write e.g. 2026-10-25, 2026-10-25T18:00 (UTC) or 2026-10-25T18:00+05:30",
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check_locale(locale: str | None) -> None:
    from publishers.site.formatting import locale_for

    if locale is None:
        return
    try:
        locale_for(locale)
    except ValueError as exc:
        raise CommandError(str(exc), fix="pass --locale en_IN, en_US, de_DE, …") from None


def _render(config: Path, at: datetime, regions: list[str] | None, locale: str | None) -> Site:
    from compiler.project import compile_config
    from publishers.site.render import render_site

    result = compile_config(config)
    if not result.ok or result.catalog is None:
        print_diagnostics(stderr_console(), result.diagnostics)
        raise CommandError(f"{config} does not compile", fix="fix the errors above (see `tariff validate`)")
    if result.diagnostics.warnings:
        stderr_console().print(
            f"{len(result.diagnostics.warnings)} config warning(s); `tariff validate` lists them",
            style="yellow",
        )
    if not result.catalog.pages:
        raise CommandError(f"{config} has no pages", fix="add a page under content/ (see pricing/content/)")
    try:
        return render_site(result.catalog, at=at, regions=regions, locale=locale)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def _print_warnings(console: Console, warnings: tuple[str, ...]) -> None:
    for warning in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")


def _screenshots(site: Site, site_dir: Path | None, out: Path, chromium: str, console: Console) -> None:
    from publishers.site.screenshot import BrowserError, screenshot_pages

    with tempfile.TemporaryDirectory(prefix="tariff-shots-") as scratch:
        directory = site_dir or Path(scratch)
        if site_dir is None:
            site.write(directory)
        try:
            shots = screenshot_pages([directory / p.file_name for p in site.pages], out, executable=chromium)
        except BrowserError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise output_error(out, "--screenshot", exc) from exc
    console.print(f"[green]✓[/green] {len(shots)} screenshot(s) in {escape(str(out))}")
    for shot in shots:
        console.print(f"  {escape(str(shot))}")


def build_preview(config: Path, at: datetime | None, regions: list[str] | None, locale: str | None) -> Build:
    """One rebuild of the live preview: the site, or an error page naming file, line and message."""
    from compiler.project import compile_config
    from publishers.site.preview_server import Build
    from publishers.site.render import render_error_page, render_site

    result = compile_config(config)
    if not result.ok or result.catalog is None:
        errors = sorted(result.diagnostics.errors, key=lambda d: d.sort_key())
        first = f"{errors[0].location()}: {errors[0].message}" if errors else "the config does not compile"
        summary = f"{len(errors)} error(s) in {config}."
        return Build(error_html=render_error_page(errors, summary=summary, live_reload=True), message=first)
    try:
        # Without --at the preview follows the clock, so a long session sees promotions start and end.
        site = render_site(
            result.catalog, at=at or datetime.now(UTC), regions=regions, locale=locale, live_reload=True
        )
    except ValueError as exc:
        return Build(error_html=render_error_page([str(exc)], live_reload=True), message=str(exc))
    return Build(files=site.files(), message=f"{len(site.pages)} page(s)")


def _serve(
    config: Path, at: datetime | None, regions: list[str] | None, locale: str | None, port: int, open_: bool
) -> None:
    from publishers.site.preview_server import PreviewServer

    console = stdout_console()

    def report(build: Build, changed: set[str]) -> None:
        names = ", ".join(sorted(Path(p).name for p in changed)) or "config"
        if build.ok:
            console.print(f"[green]rebuilt[/green] after {escape(names)} changed: {escape(build.message)}")
        else:
            console.print(f"[red]config error[/red] after {escape(names)} changed: {escape(build.message)}")

    server = PreviewServer(
        config, lambda: build_preview(config, at, regions, locale), port=port, on_rebuild=report
    )
    try:
        first = server.start()
    except OSError as exc:
        raise CommandError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}",
            fix="pass --port with a free port (or --port 0 for any free one)",
        ) from None
    try:
        if not first.ok:
            console.print(f"[red]config error:[/red] {escape(first.message)} (the page shows it until fixed)")
        console.print(f"Serving the preview at [bold]{server.url}[/bold] — watching {escape(str(config))}/")
        console.print("Edit the config and the page reloads. Press Ctrl-C to stop.")
        if open_:
            webbrowser.open(server.url)
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopped")
    finally:
        server.close()


def preview(
    config: ConfigOption = Path("pricing"),
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Where to write the pages, their JSON and index.html.")
    ] = DEFAULT_OUT,
    region: RegionOption = None,
    locale: Annotated[
        str | None,
        typer.Option(
            "--locale",
            "-l",
            help="Format numbers and dates for this locale (default: each region's own).",
            show_default=False,
        ),
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            metavar="DATETIME",
            help="Show the pages as they look at this moment (ISO 8601; without an offset: UTC), "
            "e.g. to see a scheduled promotion. Default: now.",
            show_default=False,
        ),
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open the index page in your browser.")] = False,
    serve: Annotated[
        bool,
        typer.Option("--serve", help="Serve on localhost and reload the browser when the config changes."),
    ] = False,
    port: Annotated[
        int, typer.Option("--port", "-p", help="Port for --serve.", min=0, max=65535)
    ] = DEFAULT_PORT,
    screenshot: Annotated[
        Path | None,
        typer.Option(
            "--screenshot",
            metavar="DIR",
            help="Also save a PNG of each page (desktop and 360 px mobile) with headless Chromium.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Render the pricing pages: one self-contained HTML page (and JSON) per page and region.

    Prices, savings, promotions (struck-through list prices while an automatic promotion runs) and
    the comparison matrix all come from the plans and promotions, so the page shows what is sold.
    """
    from publishers.site.screenshot import BrowserError, require_chromium

    moment = parse_at(at)
    _check_locale(locale)
    if not serve:
        check_output_directory(out, "--out")
    if screenshot is not None:
        check_output_directory(screenshot, "--screenshot")
    chromium = None
    if screenshot is not None:
        try:
            chromium = require_chromium()  # before any work: a missing browser is the likely failure
        except BrowserError as exc:
            raise CommandError(str(exc)) from None
    console = stdout_console()
    if serve:
        if screenshot is not None and chromium is not None:
            site = _render(config, moment or datetime.now(UTC), region, locale)
            _screenshots(site, None, screenshot, chromium, console)
        _serve(config, moment, region, locale, port, open_)
        return
    site = _render(config, moment or datetime.now(UTC), region, locale)
    try:
        site.write(out)
    except OSError as exc:
        raise output_error(out, "--out", exc) from exc
    index = (out / "index.html").resolve()
    console.print(
        f"[green]✓[/green] {len(site.pages)} page(s) as of {site.at.isoformat(timespec='seconds')} "
        f"written to {escape(str(out))}/"
    )
    for page in site.pages:
        offers = f" — promotions: {', '.join(page.promotions)}" if page.promotions else ""
        console.print(
            f"  {escape(page.file_name)} ({page.region_name}, {page.currency}, {page.locale}){offers}"
        )
    _print_warnings(stderr_console(), site.warnings)
    if chromium is not None and screenshot is not None:
        _screenshots(site, out, screenshot, chromium, console)
    console.print(f"Open {index.as_uri()}")
    if open_:
        webbrowser.open(index.as_uri())


def register(app: typer.Typer) -> None:
    app.command("preview")(preview)
