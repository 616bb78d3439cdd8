"""The `tariff` command."""

from __future__ import annotations

import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from cli.customer_commands import customers_app, subscriptions_app
from cli.db_commands import db_app
from cli.errors import CommandError, report_error
from cli.mandate_commands import register as register_mandate_commands
from cli.notify_commands import notify_app
from cli.options import ConfigOption, OutputFormat
from cli.output import (
    EXIT_CHANGES,
    EXIT_ERROR,
    changes_signalled,
    print_diagnostics,
    print_json,
    stderr_console,
    stdout_console,
)
from cli.payment_commands import register as register_payment_commands
from cli.payu_commands import payu_app
from cli.plan_commands import register as register_plan_commands
from cli.preview_command import register as register_preview_command
from cli.promo_commands import register as register_promo_commands
from cli.report_commands import demo_app, report_app
from cli.report_more_commands import register as register_report_more_commands
from cli.status_command import status as status_command
from cli.tick_command import tick as tick_command
from cli.token_commands import tokens_app
from database.errors import DatabaseError
from publishers.payu.errors import PayUError

app = typer.Typer(
    name="tariff",
    help="Pricing-as-code for AI products: validate, diff, plan and apply plans, token allowances, "
    "promotions and pricing pages kept as YAML in Git.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class DiffFormat(StrEnum):
    text = "text"
    markdown = "markdown"
    json = "json"


@app.command()
def validate(
    config: ConfigOption = Path("pricing"),
    format_: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.text,
) -> None:
    """Check the config offline: YAML syntax, JSON Schemas, references across files and lint policies.

    Reports every error and warning at once with file, line, column and the path inside the document.
    Exit 0 when there are no errors (warnings allowed), 1 otherwise.
    """
    from compiler.project import compile_config

    result = compile_config(config, cache=True)
    diagnostics = result.diagnostics
    if format_ is OutputFormat.json:
        print_json(
            {
                "format_version": 1,
                "ok": result.ok,
                "errors": len(diagnostics.errors),
                "warnings": len(diagnostics.warnings),
                "fingerprint": result.catalog.fingerprint if result.ok and result.catalog else None,
                "diagnostics": [d.to_json() for d in diagnostics.sorted()],
            }
        )
    else:
        console = stdout_console()
        print_diagnostics(console, diagnostics)
        if result.ok and result.catalog is not None:
            catalog = result.catalog
            console.print(
                f"[green]✓[/green] {config}: {len(catalog.plans)} plans, {len(catalog.packages)} token "
                f"packages, {len(catalog.models)} AI models, {len(catalog.promotions)} promotions, "
                f"{len(catalog.pages)} page(s), {len(catalog.regions)} regions — fingerprint "
                f"{catalog.fingerprint[:19]}"
            )
    if not result.ok:
        raise typer.Exit(EXIT_ERROR)


@app.command()
def diff(
    range_: Annotated[
        str,
        typer.Argument(
            metavar="BASE..HEAD",
            help="Two git revisions (`main..HEAD`, `HEAD~1..`), or two config directories (`old/..new/`). "
            "A missing HEAD means the working tree; a single REV means REV..working tree.",
        ),
    ],
    config: ConfigOption = Path("pricing"),
    format_: Annotated[
        DiffFormat,
        typer.Option("--format", "-f", help="Output format; markdown is what a pull-request comment shows."),
    ] = DiffFormat.text,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Write to this file instead of standard "
            "output (markdown parts beyond the first go to FILE.2.md, …).",
        ),
    ] = None,
) -> None:
    """Compare the config at two revisions, change by change, with no database.

    Lists every added, changed and retired plan, price, package, model, promotion, feature and page,
    field by field (old → new, percent change for prices), with an impact label per change.
    """
    from cli.diff_command import diff as run_diff

    code = run_diff(range_, config, format_.value, out)
    if code:
        raise typer.Exit(code)


app.add_typer(db_app, name="db")
register_plan_commands(app)
register_preview_command(app)
register_promo_commands(app)
app.add_typer(customers_app, name="customers")
app.add_typer(subscriptions_app, name="subscriptions")
app.add_typer(tokens_app, name="tokens")
app.add_typer(report_app, name="report")
register_report_more_commands(report_app)
app.add_typer(demo_app, name="demo")
app.add_typer(payu_app, name="payu")
register_payment_commands(payu_app)
register_mandate_commands(payu_app)
app.command("tick")(tick_command)
app.command("status")(status_command)
app.add_typer(notify_app, name="notify")


def main() -> None:
    """Entry point. Usage errors exit 1, as exit 2 means "changes present" under `--detailed-exitcode`."""
    try:
        app(prog_name="tariff")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else EXIT_ERROR
        if code == EXIT_CHANGES and not changes_signalled():
            code = EXIT_ERROR
        sys.exit(code)
    except (CommandError, DatabaseError, PayUError) as exc:
        report_error(stderr_console(), exc.message, exc.fix)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        stderr_console().print("interrupted")
        sys.exit(EXIT_ERROR)
    except Exception as exc:
        if os.environ.get("TARIFF_DEBUG"):
            raise
        stderr_console().print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
        stderr_console().print("Set TARIFF_DEBUG=1 to see the traceback, and please report it.", markup=False)
        sys.exit(EXIT_ERROR)
