"""`tariff quote` and `tariff promo`: price breakdowns with promotions, promotion status, codes, code checks.

They run the same SQL functions the app calls at checkout (`quote()`), so what the CLI shows is what the
customer pays. Database modules are imported inside the commands: `tariff validate` should not pay for
SQLAlchemy.
"""

from __future__ import annotations

import sys
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cli.errors import CommandError
from cli.options import (
    BIGINT_MAX,
    ConfigOption,
    DatabaseUrlOption,
    EnvOption,
    OutputFormat,
    OutputFormatOption,
    database,
)
from cli.output import EXIT_ERROR, print_json, stderr_console, stdout_console

if TYPE_CHECKING:
    from compiler.money import Currency
    from database.promotions import CodeCheck, Item, PromotionStatus, Quote

promo_app = typer.Typer(
    help="Promotions on the live database: status, codes, and whether a code works.", no_args_is_help=True
)
codes_app = typer.Typer(
    help="Codes of a promotion: list, export, generate extra batches.", no_args_is_help=True
)
promo_app.add_typer(codes_app, name="codes")

PlanOption = Annotated[str | None, typer.Option("--plan", "-p", help="Plan id (with --cycle).")]
CycleOption = Annotated[str | None, typer.Option("--cycle", help="Billing cycle of the plan, e.g. annual.")]
PackageOption = Annotated[str | None, typer.Option("--package", help="Token package id.")]
BundleOption = Annotated[str | None, typer.Option("--bundle", help="Bundle (the id of its promotion).")]
RegionOption = Annotated[
    str | None,
    typer.Option("--region", "-r", help="Pricing region (default: the customer's, else the default region)."),
]
CustomerOption = Annotated[
    str | None, typer.Option("--customer", help="Registered customer id (default: an anonymous visitor).")
]
AtOption = Annotated[
    str | None,
    typer.Option(
        "--at",
        help="Moment to price at, ISO 8601 (e.g. 2026-10-25T12:00); without an offset it is read in the "
        "project's time zone. Default: now.",
    ),
]
PromotionArgument = Annotated[str, typer.Argument(metavar="PROMO", help="Promotion id.", show_default=False)]
_MAX_GENERATE = 1_000_000
_STATE_STYLE = {
    "active": "green",
    "scheduled": "cyan",
    "exhausted": "yellow",
    "ended": "dim",
    "retired": "dim",
    "draft": "dim",
}
_LOOKALIKES = set("01OIL")


class ExportFormat(StrEnum):
    csv = "csv"


def register(app: typer.Typer) -> None:
    """Add `tariff quote` and `tariff promo …` to the main app."""
    app.command("quote")(quote_command)
    app.add_typer(promo_app, name="promo")


# ----------------------------------------------------------------------------------------------- quote


def quote_command(
    plan: PlanOption = None,
    cycle: CycleOption = None,
    package: PackageOption = None,
    bundle: BundleOption = None,
    region: RegionOption = None,
    codes: Annotated[
        list[str] | None, typer.Option("--code", help="A promotion code (repeat for several).")
    ] = None,
    customer: CustomerOption = None,
    at: AtOption = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="Insist on a currency (the region's or its fallback).")
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Price a plan, token package or bundle with every promotion that could apply, and why each did or
    did not: list price, discounts in order, final price, how long each discount lasts.

    Exit 1 when a code given does not apply (unknown, ended, not eligible, used up), after printing why.
    """
    from database.promotions import quote

    item = _item(plan, cycle, package, bundle, currency)
    with database(config, env, database_url) as db:
        moment = _parse_at(at, db.timezone)
        result = quote(
            db.conn, db.schema, item, region=region, codes=codes or (), customer_id=customer, at=moment
        )
        timezone = db.timezone
    if format_ is OutputFormat.json:
        print_json(result.raw)
    else:
        _print_quote(stdout_console(), result, timezone)
    refused = result.refused_codes
    if refused:
        console = stderr_console()
        for outcome in refused:
            console.print(
                f"[red]error:[/red] code {escape(outcome.code)} does not apply: {outcome.reason}"
                + (f" ({escape(outcome.detail)})" if outcome.detail else "")
            )
        raise typer.Exit(EXIT_ERROR)


def _item(
    plan: str | None, cycle: str | None, package: str | None, bundle: str | None, currency: str | None
) -> Item:
    from database.promotions import Item

    given = [
        name for name, value in (("--plan", plan), ("--package", package), ("--bundle", bundle)) if value
    ]
    if len(given) != 1:
        raise CommandError(
            "say what to price: exactly one of --plan, --package or --bundle"
            + (f" (got {', '.join(given)})" if given else ""),
            fix="e.g. --plan pro --cycle annual",
        )
    if plan and not cycle:
        raise CommandError(f"plan {plan!r} needs a billing cycle", fix="add --cycle monthly (or annual, …)")
    if cycle and not plan:
        raise CommandError("--cycle goes with --plan only", fix="packages and bundles are priced as a whole")
    return Item(plan=plan, cycle=cycle, package=package, bundle=bundle, currency=currency)


def _parse_at(text: str | None, timezone: str) -> datetime | None:
    if text is None or text.strip().lower() == "now":
        return None
    from compiler.timeutil import parse_timestamp

    try:
        return parse_timestamp(text, timezone)
    except ValueError as exc:
        raise CommandError(
            f"--at: {exc}", fix="write e.g. 2026-10-25T12:00 or 2026-10-25T12:00:00+05:30"
        ) from exc


def _money(minor: int, currency: Currency) -> str:
    return f"{currency.from_minor(minor):,} {currency.code}"


def _when(value: datetime | None, timezone: str) -> str:
    if value is None:
        return "—"
    return value.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def _duration(duration: str, cycles: int | None) -> str:
    if duration == "forever":
        return "every payment"
    if duration == "once" or cycles == 1:
        return "first payment"
    return f"{cycles} payments"


def _print_quote(console: Console, q: Quote, timezone: str) -> None:
    who = f"customer {escape(q.customer)}" if q.customer else "anonymous visitor"
    console.print(
        f"[bold]{escape(q.item.label)}[/bold] · region {q.region} · {q.currency.code} · {who} · "
        f"{_when(q.at, timezone)} {timezone}"
    )
    table = Table(title="promotions considered", title_justify="left")
    table.add_column("promotion")
    table.add_column("code")
    table.add_column("applied")
    table.add_column("why / discount")
    steps = {d.promotion: d for d in q.discounts}
    for p in q.promotions:
        if p.applied:
            step = steps[p.id]
            what = f"−{_money(step.discount_minor, q.currency)}" if step.discount_minor else "benefit"
            if step.extra_trial_days:
                what += f", +{step.extra_trial_days} trial days"
            if step.bonus_tokens:
                what += f", +{step.bonus_tokens:,} tokens"
            table.add_row(
                p.id,
                escape(p.code or ""),
                "[green]yes[/green]",
                f"{what} ({_duration(step.duration, step.cycles)})",
            )
        else:
            style = "dim" if p.reason == "not_applicable" else ""
            why = escape(f"{p.reason}" + (f" — {p.detail}" if p.detail else ""))
            table.add_row(
                f"[{style}]{p.id}[/{style}]" if style else p.id,
                escape(p.code or ""),
                "[red]no[/red]" if not style else "[dim]no[/dim]",
                f"[{style}]{why}[/{style}]" if style else why,
            )
    for c in q.codes:
        if c.promotion is None or c.reason == "duplicate_code":
            table.add_row("—", escape(c.code), "[red]no[/red]", escape(f"{c.reason} — {c.detail}"))
    console.print(table)

    lines = Table(show_header=False, box=None, pad_edge=False)
    lines.add_column()
    lines.add_column(justify="right")
    lines.add_column(style="dim")
    for component in q.components:
        what = (
            f"plan {component.plan} ({component.cycle})"
            if component.plan
            else f"package {component.package}"
            + (f" × {component.quantity}" if component.quantity > 1 else "")
        )
        lines.add_row(f"  {escape(what)}", _money(component.list_minor, q.currency), "")
    lines.add_row("list price", _money(q.list_minor, q.currency), "")
    for d in q.discounts:
        label = d.promotion
        if d.percent is not None:
            label += f" ({d.percent.normalize():f}% off)"
        elif d.kind == "fixed_price":
            label += " (special price)"
        elif d.kind == "amount_off":
            label += " (amount off)"
        lines.add_row(
            f"− {escape(label)}", f"−{_money(d.discount_minor, q.currency)}", _duration(d.duration, d.cycles)
        )
    lines.add_row("[bold]final price[/bold]", f"[bold]{_money(q.final_minor, q.currency)}[/bold]", "")
    console.print(lines)
    benefits = []
    if q.extra_trial_days:
        benefits.append(f"+{q.extra_trial_days} trial days")
    if q.bonus_tokens:
        benefits.append(f"+{q.bonus_tokens:,} bonus tokens")
    if benefits:
        console.print("benefits: " + ", ".join(benefits))


# ---------------------------------------------------------------------------------------- promo list


@promo_app.command("list")
def list_command(
    at: AtOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Every published promotion with its state at --at (scheduled, active, ended, exhausted; draft and
    retired), its current or next window, and redemptions so far against its limit."""
    from database.promotions import list_promotions

    with database(config, env, database_url) as db:
        moment = _parse_at(at, db.timezone)
        rows = list_promotions(db.conn, db.schema, moment)
        timezone = db.timezone
    if format_ is OutputFormat.json:
        print_json([_status_json(r) for r in rows])
        return
    console = stdout_console()
    if not rows:
        console.print("no promotions are published (run `tariff apply`)")
        return
    table = Table(caption=f"times in {timezone} unless noted")
    for name in ("promotion", "state", "discount", "window", "redemptions", "codes"):
        table.add_column(name, justify="right" if name in ("redemptions", "codes") else "left")
    for r in rows:
        style = _STATE_STYLE.get(r.state, "")
        window = (
            "always"
            if r.window_starts is None and r.window_ends is None
            else (
                f"{_when(r.window_starts, timezone)} → {_when(r.window_ends, timezone)}"
                + (" (yearly)" if r.yearly else "")
            )
        )
        limit = f" / {r.max_redemptions:,}" if r.max_redemptions is not None else ""
        table.add_row(
            r.id,
            f"[{style}]{r.state}[/{style}]" if style else r.state,
            escape(r.summary),
            window,
            f"{r.redemptions:,}{limit}",
            f"{r.codes:,}" if r.needs_code else "auto",
        )
    console.print(table)


def _status_json(r: PromotionStatus) -> dict[str, Any]:
    return {
        "id": r.id,
        "name": r.name,
        "state": r.state,
        "kind": r.kind,
        "discount": r.summary,
        "window_starts": r.window_starts.isoformat() if r.window_starts else None,
        "window_ends": r.window_ends.isoformat() if r.window_ends else None,
        "yearly": r.yearly,
        "timezone": r.timezone,
        "redemptions": r.redemptions,
        "max_redemptions": r.max_redemptions,
        "per_customer": r.per_customer,
        "codes": r.codes,
        "needs_code": r.needs_code,
    }


# --------------------------------------------------------------------------------------- promo codes


@codes_app.command("list")
def codes_list_command(
    promotion: PromotionArgument,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=BIGINT_MAX, help="Show at most this many codes.")
    ] = 50,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """A promotion's codes: the vanity code, then generated batches oldest first."""
    from database.promotions import list_codes

    with database(config, env, database_url) as db:
        rows, total, used = list_codes(db.conn, db.schema, promotion, limit=limit)
        timezone = db.timezone
    if format_ is OutputFormat.json:
        print_json(
            {
                "promotion": promotion,
                "total": total,
                "used": used,
                "codes": [{**row, "created_at": row["created_at"].isoformat()} for row in rows],
            }
        )
        return
    console = stdout_console()
    table = Table(caption=f"{len(rows):,} of {total:,} code(s), {used:,} used · times in {timezone}")
    for name in ("code", "kind", "batch", "used", "created"):
        table.add_column(name)
    for row in rows:
        kind = (
            "vanity" + (" (retired)" if row["retired"] else "") if row["batch_id"] is None else "single-use"
        )
        table.add_row(
            row["code"],
            kind,
            f"#{row['batch_id']} ({row['source']})" if row["batch_id"] is not None else "—",
            "[yellow]used[/yellow]" if row["used"] else "",
            _when(row["created_at"], timezone),
        )
    console.print(table)


@codes_app.command("export")
def codes_export_command(
    promotion: PromotionArgument,
    format_: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ExportFormat.csv,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write to this file instead of standard output.")
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Every code of a promotion as CSV (code, promotion, batch, source, single_use, used, created_at,
    retired), streamed: a million codes take seconds."""
    from database.promotions import export_codes

    del format_  # CSV is the only format: spreadsheets and mail-merge tools read it
    with database(config, env, database_url) as db:
        if out is None:
            export_codes(db.conn, db.schema, promotion, sys.stdout.buffer)
            sys.stdout.flush()
            return
        partial = out.with_name(out.name + ".partial")
        try:
            with partial.open("wb") as handle:
                export_codes(db.conn, db.schema, promotion, handle)
            partial.replace(out)
        except OSError as exc:
            raise CommandError(f"cannot write {out}: {exc.strerror or exc}") from exc
        finally:
            partial.unlink(missing_ok=True)
    stderr_console().print(f"[green]✓[/green] wrote the codes of {escape(promotion)} to {escape(str(out))}")


@codes_app.command("generate")
def codes_generate_command(
    promotion: PromotionArgument,
    count: Annotated[int, typer.Option("--count", "-n", help=f"How many codes (1 to {_MAX_GENERATE:,}).")],
    length: Annotated[
        int | None,
        typer.Option(
            "--length", help="Random characters after the prefix (6–24; default: the config's, else 10)."
        ),
    ] = None,
    prefix: Annotated[
        str | None,
        typer.Option("--prefix", help="Fixed start of every code (default: the config's batch prefix)."),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Generate an extra batch of single-use codes, recorded with source 'cli' and the live revision."""
    import sqlalchemy as sa

    from database.connection import quote_schema
    from database.promo_codes import DEFAULT_LENGTH, check_batch, generate_codes

    if not 1 <= count <= _MAX_GENERATE:
        raise CommandError(f"--count {count} is out of range", fix=f"ask for 1 to {_MAX_GENERATE:,} codes")
    with database(config, env, database_url) as db:
        s = quote_schema(db.schema)
        row = db.conn.execute(
            sa.text(
                f"SELECT status, code_length, code_prefix, vanity_code IS NOT NULL OR code_count IS NOT NULL "
                f"AS needs_code, (SELECT revision_id FROM {s}.catalog_state) AS revision "
                f"FROM {s}.promotions WHERE id = :id"
            ),
            {"id": promotion},
        ).one_or_none()
        if row is None:
            raise CommandError(f"unknown promotion {promotion!r}", fix="list them with `tariff promo list`")
        if row.status == "retired":
            raise CommandError(f"promotion {promotion!r} is retired", fix="codes for it would never apply")
        if not row.needs_code:
            raise CommandError(
                f"promotion {promotion!r} applies automatically (its config has no codes), so codes would "
                "change nothing",
                fix="add `codes:` to its config and apply, then generate extra batches here",
            )
        chosen_length = length if length is not None else (row.code_length or DEFAULT_LENGTH)
        chosen_prefix = (prefix if prefix is not None else row.code_prefix or "").upper()
        from database.promo_codes import CodeError

        try:
            check_batch(count, chosen_length, chosen_prefix)
        except CodeError as exc:
            raise CommandError(exc.message, exc.fix) from exc
        batch = generate_codes(
            db.conn, db.schema, promotion, count, chosen_length, chosen_prefix, "cli", row.revision
        )
    if format_ is OutputFormat.json:
        print_json(
            {
                "promotion": promotion,
                "batch": batch.batch_id,
                "count": batch.count,
                "length": batch.length,
                "prefix": batch.prefix,
                "source": batch.source,
                "revision": row.revision,
            }
        )
        return
    stdout_console().print(
        f"[green]✓[/green] generated {batch.count:,} code(s) for {escape(promotion)} "
        f"(batch #{batch.batch_id}, {batch.prefix or 'no prefix'} + {batch.length} characters); "
        f"export them with `tariff promo codes export {escape(promotion)}`"
    )


# --------------------------------------------------------------------------------------- promo check


@promo_app.command("check")
def check_command(
    code: Annotated[str, typer.Argument(metavar="CODE", help="The code as the customer typed it.")],
    customer: CustomerOption = None,
    plan: PlanOption = None,
    cycle: CycleOption = None,
    package: PackageOption = None,
    bundle: BundleOption = None,
    region: RegionOption = None,
    at: AtOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Explain whether a code works: its promotion, schedule, limits and single use; with --plan (or
    --package/--bundle) also whether it applies to that purchase for --customer in --region.
    Exit 0 when it works, 1 when it does not."""
    from database.promo_codes import PASTED_BLANKS, normalize_code
    from database.promotions import check_code, quote

    item = _item(plan, cycle, package, bundle, None) if (plan or package or bundle or cycle) else None
    with database(config, env, database_url) as db:
        moment = _parse_at(at, db.timezone)
        found = check_code(db.conn, db.schema, code, customer_id=customer, at=moment)
        timezone = db.timezone
        priced = None
        if found is not None and item is not None:
            priced = quote(
                db.conn, db.schema, item, region=region, codes=[code], customer_id=customer, at=moment
            )
    if found is None:
        typed = normalize_code(code)
        hint = "codes are case-insensitive; check it for typos"
        if any(c.isspace() or c in PASTED_BLANKS for c in typed):
            hint += " and for a space, tab or line break inside it"
        if _LOOKALIKES & set(typed):
            hint += " (generated codes never contain 0, O, 1, I or L)"
        if format_ is OutputFormat.json:
            print_json(
                {"code": typed, "valid": False, "reason": "unknown_code", "problems": ["unknown code"]}
            )
            raise typer.Exit(EXIT_ERROR)
        raise CommandError(f"unknown code {typed!r}: no promotion has it", fix=hint)
    problems = found.problems
    outcome = priced.code(code) if priced is not None else None
    if outcome is not None and not outcome.applied:
        problems.append(f"{outcome.reason}" + (f": {outcome.detail}" if outcome.detail else ""))
    if format_ is OutputFormat.json:
        print_json(
            {
                "code": found.code,
                "valid": not problems,
                "promotion": found.promotion,
                "state": found.state,
                "single_use": found.single_use,
                "used": found.used,
                "window_starts": found.window_starts.isoformat() if found.window_starts else None,
                "window_ends": found.window_ends.isoformat() if found.window_ends else None,
                "redemptions": found.redemptions,
                "max_redemptions": found.max_redemptions,
                "problems": problems,
                "quote": priced.raw if priced is not None else None,
            }
        )
    else:
        _print_check(stdout_console(), found, problems, priced, timezone)
    if problems:
        raise typer.Exit(EXIT_ERROR)


def _print_check(
    console: Console, found: CodeCheck, problems: list[str], priced: Quote | None, timezone: str
) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    style = _STATE_STYLE.get(found.state, "")
    limit = f" / {found.max_redemptions:,}" if found.max_redemptions is not None else ""
    for label, value in (
        (
            "code",
            found.code
            + (
                " (single-use" + (", used)" if found.used else ", unused)")
                if found.single_use
                else " (shared)"
            ),
        ),
        ("promotion", f"{found.promotion} — {escape(found.name)}"),
        ("state", f"[{style}]{found.state}[/{style}]" if style else found.state),
        (
            "window",
            f"{_when(found.window_starts, found.timezone)} → {_when(found.window_ends, found.timezone)} "
            f"{found.timezone}",
        ),
        ("redemptions", f"{found.redemptions:,}{limit}"),
    ):
        table.add_row(label, value)
    if found.customer_redemptions is not None:
        per = f" / {found.per_customer}" if found.per_customer is not None else ""
        table.add_row("by customer", f"{found.customer_redemptions}{per}")
    console.print(table)
    if priced is not None:
        _print_quote(console, priced, timezone)
    if problems:
        for problem in problems:
            console.print(f"[red]✗[/red] {escape(problem)}")
    else:
        console.print(
            "[green]✓[/green] the code works"
            + ("" if priced else " (eligibility depends on the purchase: add --plan/--cycle)")
        )
