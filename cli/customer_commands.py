"""`tariff customers` and `tariff subscriptions`: register, import, show and list the app's customers and
their subscriptions, for adoption and operations. The app itself registers them through the SQL functions.

Database modules are imported inside the commands: `tariff validate` should not pay for SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console, Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

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
from cli.output import print_json, stdout_console

if TYPE_CHECKING:
    from compiler.money import Currency
    from database.customer_import import ImportResult

customers_app = typer.Typer(
    help="Customers (the app's users, by the app's own ids): register, import from CSV, show, list.",
    no_args_is_help=True,
)
subscriptions_app = typer.Typer(
    help="Subscriptions of registered customers, each on an exact price version: add, import, show.",
    no_args_is_help=True,
)

FileArgument = Annotated[
    Path, typer.Argument(help="A UTF-8 CSV file with a header line.", dir_okay=False, show_default=False)
]
LimitOption = Annotated[
    int, typer.Option("--limit", "-n", min=1, max=BIGINT_MAX, help="Show at most this many rows.")
]
_MAX_PRINTED_ERRORS = 200
_STATUS_STYLE = {
    "active": "green",
    "trialing": "cyan",
    "past_due": "yellow",
    "canceled": "dim",
    "expired": "dim",
}


# ------------------------------------------------------------------------------------------- customers


@customers_app.command("add")
def customers_add(
    customer_id: Annotated[
        str, typer.Argument(metavar="ID", help="The app's own user id.", show_default=False)
    ],
    email: Annotated[str | None, typer.Option("--email", help="Email address.")] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Pricing region (default: from --country).")
    ] = None,
    country: Annotated[str | None, typer.Option("--country", help="ISO 3166 country code, e.g. IN.")] = None,
    segments: Annotated[
        list[str] | None,
        typer.Option("--segment", "-s", help="A segment such as students (repeat for several; replaces)."),
    ] = None,
    attributes: Annotated[
        list[str] | None,
        typer.Option(
            "--attr",
            help="KEY=VALUE attribute (repeat for several; replaces the stored ones). VALUE is read as JSON "
            "when it parses (5, true, [1,2]), else as text.",
        ),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Register a customer, or update the given fields of a registered one (idempotent)."""
    from database.customer_import import SEGMENT_PATTERN
    from database.customers import CustomerInput, register_customer

    bad = [s for s in segments or () if not SEGMENT_PATTERN.fullmatch(s)]
    if bad:
        raise CommandError(
            f"invalid segment {bad[0]!r}", fix="use lowercase letters, digits, - and _ (e.g. students)"
        )
    customer = CustomerInput(
        customer_id,
        email=email,
        region=region,
        country=country,
        segments=tuple(dict.fromkeys(segments)) if segments else None,
        attributes=_parse_attributes(attributes) if attributes else None,
    )
    with database(config, env, database_url) as db:
        row = register_customer(db.conn, db.schema, customer)
        timezone = db.timezone
    if format_ is OutputFormat.json:
        print_json(row)
        return
    console = stdout_console()
    console.print(f"[green]✓[/green] customer {escape(customer_id)} registered")
    _print_customer(console, row, timezone)


@customers_app.command("import")
def customers_import(
    file: FileArgument,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Import customers from CSV: id,email,region,country,segments,attributes (only id is required).

    Every row is checked first; with any error nothing is written. Importing the same file again changes
    nothing. Empty cells keep what is stored.
    """
    from database.customer_import import import_customers

    with database(config, env, database_url) as db:
        result = import_customers(db.conn, db.schema, file)
    _report_import(result, format_)


@customers_app.command("show")
def customers_show(
    customer_id: Annotated[str, typer.Argument(metavar="ID", help="The customer's id.", show_default=False)],
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """A customer and all its subscriptions."""
    from database.customers import get_customer, list_subscriptions, load_currencies

    with database(config, env, database_url) as db:
        schema = db.schema
        customer = get_customer(db.conn, schema, customer_id)
        subscriptions = list_subscriptions(db.conn, schema, customer_id=customer_id, limit=10_000)
        currencies = load_currencies(db.conn, schema)
        timezone = db.timezone
    if format_ is OutputFormat.json:
        print_json({"customer": customer, "subscriptions": _with_amounts(subscriptions, currencies)})
        return
    console = stdout_console()
    _print_customer(console, customer, timezone)
    if subscriptions:
        console.print(
            _subscriptions_table(
                subscriptions, currencies, timezone, show_customer=False, width=console.width
            )
        )
    else:
        console.print("no subscriptions")


@customers_app.command("list")
def customers_list(
    segment: Annotated[
        str | None, typer.Option("--segment", "-s", help="Only customers in this segment.")
    ] = None,
    limit: LimitOption = 50,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Registered customers, newest first."""
    from database.customers import list_customers

    with database(config, env, database_url) as db:
        rows, total = list_customers(db.conn, db.schema, segment=segment, limit=limit)
        timezone = db.timezone
    if format_ is OutputFormat.json:
        print_json({"total": total, "customers": rows})
        return
    console = stdout_console()
    if not rows:
        console.print("no customers" + (f" in segment {escape(segment)}" if segment else ""))
        return
    table = Table(caption=f"{len(rows)} of {total} customer(s); times in {timezone}")
    for name in ("id", "email", "region", "country", "segments", "subscriptions", "registered"):
        table.add_column(name, justify="right" if name == "subscriptions" else "left")
    for row in rows:
        table.add_row(
            escape(row["id"]),
            escape(row.get("email") or ""),
            row.get("region") or "",
            row.get("country") or "",
            escape(", ".join(row.get("segments") or ())),
            str(row.get("subscriptions", 0)),
            _when(row.get("created_at"), timezone),
        )
    console.print(table)


# --------------------------------------------------------------------------------------- subscriptions


@subscriptions_app.command("add")
def subscriptions_add(
    customer: Annotated[
        str, typer.Option("--customer", help="A registered customer id.", show_default=False)
    ],
    plan: Annotated[str, typer.Option("--plan", help="A published plan id.", show_default=False)],
    cycle: Annotated[str, typer.Option("--cycle", help="Billing cycle, e.g. monthly.", show_default=False)],
    region: Annotated[
        str | None, typer.Option("--region", help="Price region (default: the customer's).")
    ] = None,
    currency: Annotated[
        str | None, typer.Option("--currency", help="Currency (default: the region's, then its fallback).")
    ] = None,
    status: Annotated[
        str, typer.Option("--status", help="trialing, active, past_due, canceled or expired.")
    ] = "active",
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            help="Current period start, ISO 8601 (default: now; without an offset: the project's timezone).",
        ),
    ] = None,
    subscription_id: Annotated[
        str | None, typer.Option("--id", help="The app's subscription id (makes the call idempotent).")
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Record a subscription of a registered customer on the price on sale now. Never creates customers."""
    from database.customer_import import TIME_FORMAT, parse_time
    from database.customers import (
        SubscriptionInput,
        get_subscription,
        load_currencies,
        register_subscription,
    )

    with database(config, env, database_url) as db:
        schema, timezone = db.schema, db.timezone
        try:
            period_start = parse_time(start, timezone) if start else None
        except ValueError as exc:
            raise CommandError(f"--start: {exc}", fix=f"write {TIME_FORMAT}") from exc
        sub = SubscriptionInput(
            customer,
            plan,
            cycle,
            status=status,
            current_period_start=period_start,
            id=subscription_id,
            currency=currency.upper() if currency else None,
            region=region,
        )
        row = get_subscription(db.conn, schema, register_subscription(db.conn, schema, sub)["id"])
        currencies = load_currencies(db.conn, schema)
    if format_ is OutputFormat.json:
        print_json(_with_amounts([row], currencies)[0])
        return
    console = stdout_console()
    console.print(f"[green]✓[/green] subscription {escape(row['id'])} recorded")
    console.print(_subscriptions_table([row], currencies, timezone, show_customer=True, width=console.width))


@subscriptions_app.command("import")
def subscriptions_import(
    file: FileArgument,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Import subscriptions from CSV: id,customer_id,plan,cycle,currency,region,price_paid,status,
    current_period_start,current_period_end,trial_end (id, customer_id, plan and cycle are required).

    Customers must be registered first. price_paid attaches the price version with that amount, current or
    historical (grandfathered subscribers); without it, the price on sale now. Every row is checked first;
    with any error nothing is written. Importing the same file again changes nothing.
    """
    from database.customer_import import import_subscriptions

    with database(config, env, database_url) as db:
        result = import_subscriptions(db.conn, db.schema, file)
    _report_import(result, format_)


@subscriptions_app.command("show")
def subscriptions_show(
    subscription_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="One subscription.", show_default=False)
    ] = None,
    customer: Annotated[
        str | None, typer.Option("--customer", help="Subscriptions of this customer.")
    ] = None,
    plan: Annotated[str | None, typer.Option("--plan", help="Subscriptions on this plan.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only this status.")] = None,
    limit: LimitOption = 100,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """One subscription by id, or the subscriptions of a customer or plan, with the price each pays."""
    from database.customers import get_subscription, list_subscriptions, load_currencies

    if subscription_id is not None and (customer or plan or status):
        raise CommandError(
            "give a subscription ID or filters (--customer, --plan, --status), not both",
            fix="drop the ID to list, or the filters to show one subscription",
        )
    with database(config, env, database_url) as db:
        schema = db.schema
        if subscription_id is not None:
            rows = [get_subscription(db.conn, schema, subscription_id)]
        else:
            rows = list_subscriptions(
                db.conn, schema, customer_id=customer, plan_id=plan, status=status, limit=limit
            )
        currencies = load_currencies(db.conn, schema)
        timezone = db.timezone
    if format_ is OutputFormat.json:
        priced = _with_amounts(rows, currencies)
        print_json(priced[0] if subscription_id is not None else {"subscriptions": priced})
        return
    console = stdout_console()
    if not rows:
        console.print("no subscriptions")
        return
    caption = None
    if subscription_id is None:
        caption = f"{len(rows)} subscription(s)" + (f" (limit {limit})" if len(rows) == limit else "")
        caption += f"; dates in {timezone}"
    console.print(
        _subscriptions_table(
            rows, currencies, timezone, show_customer=customer is None, width=console.width, caption=caption
        )
    )


# ------------------------------------------------------------------------------------------- rendering


def _report_import(result: ImportResult, format_: OutputFormat) -> None:
    if format_ is OutputFormat.json:
        print_json(result.to_json())
        if not result.ok:
            raise typer.Exit(1)
        return
    console = stdout_console()
    if result.ok:
        console.print(
            f"[green]✓[/green] {escape(result.file)}: {result.rows} {result.kind} — {result.summary()}"
        )
        return
    for error in result.errors[:_MAX_PRINTED_ERRORS]:
        console.print(f"[bold]{escape(error.location())}[/bold]: [red]error[/red]: {escape(error.message)}")
        if error.expected:
            console.print(f"    expected: {escape(error.expected)}")
        if error.fix:
            console.print(f"    [cyan]fix:[/cyan] {escape(error.fix)}")
    hidden = len(result.errors) - _MAX_PRINTED_ERRORS
    if hidden > 0:
        console.print(f"… and {hidden} more error(s); `--format json` lists them all")
    console.print(f"[red]{len(result.errors)} error(s)[/red] in {escape(result.file)}; nothing was imported")
    raise typer.Exit(1)


def _print_customer(console: Console, row: Mapping[str, Any], timezone: str) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    attributes = row.get("attributes") or {}
    for label, value in (
        ("customer", row["id"]),
        ("email", row.get("email") or "—"),
        ("region", row.get("region") or "—"),
        ("country", row.get("country") or "—"),
        ("segments", ", ".join(row.get("segments") or ()) or "—"),
        ("attributes", json.dumps(attributes, ensure_ascii=False) if attributes else "—"),
        ("registered", _when(row.get("created_at"), timezone)),
        ("updated", _when(row.get("updated_at"), timezone)),
    ):
        table.add_row(label, escape(str(value)))
    console.print(table)


def _subscriptions_table(
    rows: Sequence[Mapping[str, Any]],
    currencies: Mapping[str, Currency],
    timezone: str,
    *,
    show_customer: bool,
    width: int,
    caption: str | None = None,
) -> RenderableType:
    """Dates only (in the project's timezone), so a subscription fits a terminal line; JSON has the times.

    Ids are copied from here into other commands, so they are never wrapped or cut, and no column may
    vanish: a table too wide for `width` (80 columns when piped) drops its frame and wraps the other
    columns at spaces, each at least as wide as its longest word; when even that does not fit, each
    subscription is listed as a block of `field value` lines instead."""
    caption = caption or f"dates in {timezone}"
    cells = [_subscription_cells(row, currencies, timezone, show_customer) for row in rows]
    names = ["id", *(["customer"] if show_customer else []), "plan", "price", "status", "period"]
    plain = [[Text.from_markup(cell).plain for cell in row] for row in cells]
    natural = [max(cell_len(name), *(cell_len(row[i]) for row in plain)) for i, name in enumerate(names)]
    floors = [
        max(cell_len(name), *(cell_len(word) for row in plain for word in row[i].split()))
        for i, name in enumerate(names)
    ]
    fixed = [name in ("id", "customer") for name in names]
    # The framed table's borders and padding: three characters per column and one more; the frameless
    # one's: a rule and a space between neighbours.
    framed_width = sum(natural) + 3 * len(names) + 1
    spare = width - 2 * (len(names) - 1) - sum(w for w, keep in zip(natural, fixed, strict=True) if keep)
    floor_width = sum(f for f, keep in zip(floors, fixed, strict=True) if not keep)
    if framed_width > width and floor_width > spare:
        return _subscription_blocks(names, cells, caption)
    if framed_width <= width:
        table = Table(caption=caption)
        widths: list[int | None] = [None] * len(names)
    else:
        table = Table(
            caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
        )
        widths = [
            None if keep else w for w, keep in zip(_share(spare, natural, floors, fixed), fixed, strict=True)
        ]
    for name, keep, floor, column_width in zip(names, fixed, floors, widths, strict=True):
        table.add_column(
            name,
            justify="right" if name == "price" else "left",
            no_wrap=keep,
            min_width=floor,
            width=column_width,
        )
    for row in cells:
        table.add_row(*row)
    return table


def _share(spare: int, natural: list[int], floors: list[int], fixed: list[bool]) -> list[int]:
    """Widths for the wrapping columns: each its floor, then what is left goes to the columns that need
    least more first, so as many as possible stay on one line."""
    widths = list(floors)
    left = spare - sum(w for w, keep in zip(widths, fixed, strict=True) if not keep)
    needs = sorted(
        (n - f, i) for i, (n, f, keep) in enumerate(zip(natural, floors, fixed, strict=True)) if not keep
    )
    for need, index in needs:
        grant = min(need, left)
        widths[index] += grant
        left -= grant
    return widths


def _subscription_blocks(names: list[str], cells: list[list[str]], caption: str) -> RenderableType:
    blocks: list[RenderableType] = []
    for row in cells:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column()
        for name, cell in zip(names, row, strict=True):
            grid.add_row(name, cell)
        blocks.extend([grid, ""])
    return Group(*blocks, Text(caption, style="dim"))


def _subscription_cells(
    row: Mapping[str, Any], currencies: Mapping[str, Currency], timezone: str, show_customer: bool
) -> list[str]:
    price = _money(int(row["amount_minor"]), row["currency"], currencies)
    if row.get("price_current") is False:
        price += " [yellow](old price)[/yellow]"
    style = _STATUS_STYLE.get(row["status"], "")
    status = f"[{style}]{row['status']}[/{style}]" if style else row["status"]
    start, end = (
        _day(row.get("current_period_start"), timezone),
        _day(row.get("current_period_end"), timezone),
    )
    trial = _day(row.get("trial_end"), timezone)
    if trial and trial != end:
        status += f" (trial ends {trial})"
    return [
        escape(row["id"]),
        *([escape(row["customer_id"])] if show_customer else []),
        f"{row['plan_id']} {row['cycle']}",
        price,
        status,
        f"{start} → {end}",
    ]


def _with_amounts(
    rows: Sequence[Mapping[str, Any]], currencies: Mapping[str, Currency]
) -> list[dict[str, Any]]:
    """Rows for JSON with the amount as a decimal string next to its minor units ("1499.00")."""
    out = []
    for row in rows:
        money = currencies.get(str(row["currency"]).strip())
        amount = money.from_minor(int(row["amount_minor"])) if money else None
        out.append({**row, "amount": str(amount) if amount is not None else None})
    return out


def _money(amount_minor: int, code: str, currencies: Mapping[str, Currency]) -> str:
    code = code.strip()
    money = currencies.get(code)
    if money is None:
        return f"{amount_minor} minor units of {code}"
    return f"{money.from_minor(amount_minor):,} {code}"


def _when(value: str | None, timezone: str) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def _day(value: str | None, timezone: str) -> str:
    return _when(value, timezone)[:10]


def _parse_attributes(pairs: Sequence[str]) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise CommandError(f"--attr {pair!r} is not KEY=VALUE", fix="write e.g. --attr source=prisma")
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text
        attributes[key.strip()] = value
    return attributes
