"""`tariff tokens`: admin operations on customers' AI-credit accounts (show, grant, revoke, set-limit,
boost) and on shared pools (`tariff tokens pool create|add|remove|grant|show`).

Every change goes through the same SQL functions the app calls (database/ledger.py), so the CLI cannot
bypass the ledger's locks, caps or audit trail; each is recorded with the actor (TARIFF_ACTOR, else git's
user, else the login name) and the mandatory reason. Database modules are imported inside the commands:
`tariff validate` should not pay for SQLAlchemy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
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
    INTEGER_MAX,
    ConfigOption,
    DatabaseUrlOption,
    EnvOption,
    OutputFormat,
    OutputFormatOption,
    database,
)
from cli.output import print_json, stdout_console

if TYPE_CHECKING:
    from cli.session import Transaction

tokens_app = typer.Typer(
    help="AI-credit accounts: show balances and usage; grant, revoke, boost and limit (audited).",
    no_args_is_help=True,
)

CustomerArgument = Annotated[
    str, typer.Argument(metavar="CUSTOMER", help="The app's own user id.", show_default=False)
]
AmountArgument = Annotated[
    int,
    typer.Argument(
        metavar="AMOUNT", min=1, max=BIGINT_MAX, help="Credits (a whole number).", show_default=False
    ),
]
ActorOption = Annotated[
    str | None,
    typer.Option(
        "--actor",
        help="Who makes the change, for the audit trail. Default: TARIFF_ACTOR, else git's user, else the "
        "login name.",
        show_default=False,
    ),
]
PoolArgument = Annotated[
    str, typer.Argument(metavar="POOL", help="The pool's id, e.g. acme-team.", show_default=False)
]
ReasonOption = Annotated[
    str, typer.Option("--reason", "-r", help="Why (kept in the ledger's audit trail).", show_default=False)
]
ExpiresOption = Annotated[
    str | None,
    typer.Option(
        "--expires",
        help="When the credits lapse: a duration (30d), a date (valid through it) or a date and time, "
        "in the token rules' time zone. Default: never.",
        show_default=False,
    ),
]

_DURATION = re.compile(
    r"(?P<n>[1-9][0-9]{0,5})\s*(?P<unit>m|mins?|minutes?|h|hours?|d|days?|w|weeks?)", re.IGNORECASE
)
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """`48h`, `90m`, `3d`, `2w`, `72 hours`: what --for and --expires accept as a length of time."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    return timedelta(seconds=int(match["n"]) * _UNIT_SECONDS[match["unit"][0].lower()])


def _expiry(text: str | None, timezone: str) -> datetime | None:
    """--expires: a duration from now (30d), a date (valid through that day) or a date and time."""
    if text is None:
        return None
    from compiler.timeutil import parse_timestamp

    try:
        return datetime.now(ZoneInfo(timezone)) + parse_duration(text)
    except ValueError:
        pass
    try:
        value = parse_timestamp(text, timezone)
    except ValueError as exc:
        raise CommandError(
            f"--expires: {exc}", fix="write a duration (30d, 48h), a date (2026-12-31) or 2026-12-31T18:00"
        ) from exc
    # A bare date reads as "through that day": the grant ends at the following midnight.
    return value + timedelta(days=1) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text.strip()) else value


def _timezone(db: Transaction) -> str:
    import sqlalchemy as sa

    from database.connection import quote_schema

    zone = db.conn.execute(sa.text(f"SELECT {quote_schema(db.schema)}.token_timezone()")).scalar_one()
    return str(zone)


def _actor(config: Path, given: str | None = None) -> str:
    from cli.revision_context import actor

    if given is not None:
        if not given.strip():
            raise CommandError(
                "--actor must not be empty", fix="name who makes the change, e.g. --actor asha"
            )
        return given.strip()
    return actor(config)


def _reason(reason: str) -> str:
    if not reason.strip():
        raise CommandError("--reason must not be empty", fix='say why, e.g. --reason "support ticket 4411"')
    return reason.strip()


# ------------------------------------------------------------------------------------------- commands


@tokens_app.command("show")
def tokens_show(
    customer: CustomerArgument,
    entries: Annotated[
        int, typer.Option("--entries", "-n", min=0, max=BIGINT_MAX, help="Recent ledger entries to show.")
    ] = 10,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Show the account as of this time (ISO 8601; without an offset, in the token rules' time "
            "zone). Default: now.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Balance by grant (in draw order), limits in force, usage today and this month, recent entries."""
    from compiler.timeutil import parse_timestamp
    from database.ledger import account_summary

    with database(config, env, database_url) as db:
        when = None
        if at is not None:
            try:
                when = parse_timestamp(at, _timezone(db))
            except ValueError as exc:
                raise CommandError(
                    f"--at: {exc}", fix="write e.g. 2026-12-01T09:30 or 2026-12-01T04:00Z"
                ) from exc
        summary = account_summary(db.conn, db.schema, customer, at=when, entries=entries)
    if format_ is OutputFormat.json:
        print_json(summary)
        return
    _print_summary(stdout_console(), summary)


@tokens_app.command("grant")
def tokens_grant(
    customer: CustomerArgument,
    amount: AmountArgument,
    reason: ReasonOption,
    expires: ExpiresOption = None,
    reference: Annotated[
        str | None,
        typer.Option("--reference", help="Ticket or idempotency key: the same reference grants once."),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Grant credits to a customer (an audited admin grant)."""
    from database.ledger import grant

    why = _reason(reason)
    with database(config, env, database_url) as db:
        row = grant(
            db.conn,
            db.schema,
            customer,
            amount,
            source="admin",
            expires_at=_expiry(expires, _timezone(db)),
            reason=why,
            actor=_actor(config),
            reference=reference,
        )
        timezone = _timezone(db)

    def granted() -> str:
        verb = "was already granted" if row.get("replayed") else "granted"
        until = f", expires {_when(row.get('expires_at'), timezone)}" if row.get("expires_at") else ""
        return f"{amount} credits {verb} to {escape(customer)}{escape(until)}; balance {row['balance']}"

    _output(format_, row, granted)


@tokens_app.command("revoke")
def tokens_revoke(
    customer: CustomerArgument,
    amount: AmountArgument,
    reason: ReasonOption,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Take credits away (never below zero), drawn in the same order as consumption."""
    from database.ledger import revoke

    why = _reason(reason)
    with database(config, env, database_url) as db:
        row = revoke(db.conn, db.schema, customer, amount, reason=why, actor=_actor(config))
    _output(
        format_, row, lambda: f"{amount} credits revoked from {escape(customer)}; balance {row['balance']}"
    )


@tokens_app.command("set-limit")
def tokens_set_limit(
    customer: CustomerArgument,
    reason: ReasonOption,
    daily: Annotated[
        int | None, typer.Option("--daily", min=0, max=BIGINT_MAX, help="Credits per day.")
    ] = None,
    monthly: Annotated[
        int | None, typer.Option("--monthly", min=0, max=BIGINT_MAX, help="Credits per month.")
    ] = None,
    per_request: Annotated[
        int | None, typer.Option("--per-request", min=0, max=BIGINT_MAX, help="Credits per request.")
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Override the plan's limits for one customer; a limit not given keeps the plan's value."""
    from database.ledger import set_limits

    if daily is None and monthly is None and per_request is None:
        raise CommandError("nothing to set", fix="pass --daily, --monthly and/or --per-request")
    why = _reason(reason)
    with database(config, env, database_url) as db:
        limits = set_limits(
            db.conn,
            db.schema,
            customer,
            per_request=per_request,
            daily=daily,
            monthly=monthly,
            reason=why,
            actor=_actor(config),
        )
    _output(format_, limits, lambda: f"limits of {escape(customer)}: {_limits_text(limits)}")


@tokens_app.command("boost")
def tokens_boost(
    customer: CustomerArgument,
    amount: AmountArgument,
    reason: ReasonOption,
    for_: Annotated[
        str, typer.Option("--for", help="How long the boost lasts: 48h, 3d, 90m.", show_default=False)
    ],
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Emergency credits for a limited time, drawn first, within the token rules' boost caps."""
    from database.ledger import boost

    try:
        duration = parse_duration(for_)
    except ValueError as exc:
        raise CommandError(f"--for: {exc}", fix="write e.g. 48h, 3d or 90m") from exc
    why = _reason(reason)
    with database(config, env, database_url) as db:
        row = boost(db.conn, db.schema, customer, amount, duration, reason=why, actor=_actor(config))
        timezone = _timezone(db)
    _output(
        format_,
        row,
        lambda: (
            f"{amount} boost credits for {escape(customer)} until "
            f"{_when(row.get('expires_at'), timezone)}; balance {row['balance']}"
        ),
    )


# ------------------------------------------------------------------------------------------- output


def _output(format_: OutputFormat, result: Mapping[str, Any], text: Callable[[], str]) -> None:
    """A change's result: the database's answer as JSON, or `text()` (worked out only then) after a tick."""
    if format_ is OutputFormat.json:
        print_json(result)
        return
    stdout_console().print(f"[green]✓[/green] {text()}")


def _when(value: Any, timezone: str) -> str:
    if not value:
        return "—"
    moment = datetime.fromisoformat(str(value))
    return moment.astimezone(ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M")


def _limits_text(limits: Mapping[str, Any]) -> str:
    parts = [
        f"{label} {limits[key] if limits.get(key) is not None else 'none'}"
        for key, label in (("per_request", "per request"), ("daily", "daily"), ("monthly", "monthly"))
    ]
    return ", ".join(parts) + (" (overridden)" if limits.get("overridden") else "")


def _membership_text(pool: Mapping[str, Any] | None) -> str:
    if not pool:
        return "—"
    caps = ", ".join(
        f"{label} {pool[key] if pool.get(key) is not None else 'no cap'} ({pool[used]} used)"
        for key, used, label in (("daily", "daily_used", "daily"), ("monthly", "monthly_used", "monthly"))
    )
    return f"{pool['pool']} ({pool['role']}; {pool['pool_usable']} credits usable in the pool; {caps})"


def _print_summary(console: Console, summary: Mapping[str, Any]) -> None:
    timezone = str(summary["timezone"])
    limits = summary["limits"]
    today, month = summary["usage_today"], summary["usage_month"]
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    for label, value in (
        ("customer", summary["customer"]),
        ("plan", limits.get("plan") or "—"),
        ("balance", f"{summary['balance']} credits ({summary['usable']} usable now)"),
        ("limits", _limits_text(limits)),
        ("pool", _membership_text(summary.get("pool"))),
        ("today", f"{today['credits']} credits in {today['requests']} requests"),
        ("this month", f"{month['credits']} credits in {month['requests']} requests"),
    ):
        head.add_row(label, escape(str(value)))
    console.print(head)

    grants = Table(title="grants (in draw order)", caption=f"times in {timezone}")
    for name in ("source", "remaining", "amount", "priority", "expires", "reason"):
        grants.add_column(name, justify="right" if name in ("remaining", "amount", "priority") else "left")
    for g in summary["grants"]:
        grants.add_row(
            g["source"],
            str(g["remaining"]),
            str(g["amount"]),
            str(g["priority"]),
            _when(g.get("expires_at"), timezone),
            escape(g.get("reason") or "—"),
        )
    console.print(grants)

    entries = Table(title="recent entries")
    for name in ("when", "kind", "amount", "balance", "request", "actor", "reason"):
        entries.add_column(name, justify="right" if name in ("amount", "balance") else "left")
    for e in summary["entries"]:
        entries.add_row(
            _when(e.get("created_at"), timezone),
            e["kind"],
            f"{e['amount']:+d}",
            str(e["balance_after"]),
            escape(e.get("request_id") or "—"),
            escape(e.get("actor") or "—"),
            escape(e.get("reason") or "—"),
        )
    console.print(entries)


# ------------------------------------------------------------------------------------------- pools

pool_app = typer.Typer(
    help="Shared credit pools: a team's credits, drawn after each member's own, within per-member caps.",
    no_args_is_help=True,
)
tokens_app.add_typer(pool_app, name="pool")


@pool_app.command("create")
def pool_create(
    pool: PoolArgument,
    owner: Annotated[str, typer.Option("--owner", help="The customer who owns the pool (its first member).")],
    reason: ReasonOption,
    template: Annotated[
        str, typer.Option("--template", "-t", help="Pool template id from pricing/tokens/ `pools:`.")
    ] = "team",
    name: Annotated[
        str | None, typer.Option("--name", help="Display name (default: the template's).", show_default=False)
    ] = None,
    actor: ActorOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Create a pool from a template for an owner on one of the template's plans (audited)."""
    from database.pools import create_pool

    why = _reason(reason)
    with database(config, env, database_url) as db:
        row = create_pool(
            db.conn, db.schema, pool, template, owner, reason=why, actor=_actor(config, actor), name=name
        )
    verb = "already exists" if row.get("replayed") else "created"
    _output(
        format_,
        row,
        lambda: (
            f"pool {escape(pool)} {verb}: template {escape(str(row['template']))}, owner {escape(owner)}, "
            f"up to {row['max_members']} members"
        ),
    )


@pool_app.command("add")
def pool_add(
    pool: PoolArgument,
    customer: CustomerArgument,
    reason: ReasonOption,
    daily: Annotated[
        int | None,
        typer.Option(
            "--daily",
            min=0,
            max=BIGINT_MAX,
            help="Credits per day from the pool (≤ the template's; default it).",
        ),
    ] = None,
    monthly: Annotated[
        int | None,
        typer.Option(
            "--monthly",
            min=0,
            max=BIGINT_MAX,
            help="Credits per month from the pool (≤ the template's; default it).",
        ),
    ] = None,
    actor: ActorOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Add a member (or change a member's caps), within the template's max_members and member limits."""
    from database.pools import add_member

    why = _reason(reason)
    with database(config, env, database_url) as db:
        row = add_member(
            db.conn,
            db.schema,
            pool,
            customer,
            reason=why,
            actor=_actor(config, actor),
            daily=daily,
            monthly=monthly,
        )

    def added() -> str:
        member = next(m for m in row["members"] if m["customer"] == customer)
        return (
            f"{escape(customer)} in pool {escape(pool)}: daily {_cap(member['daily'])}, "
            f"monthly {_cap(member['monthly'])}; {_members_text(row)}"
        )

    _output(format_, row, added)


@pool_app.command("remove")
def pool_remove(
    pool: PoolArgument,
    customer: CustomerArgument,
    reason: ReasonOption,
    actor: ActorOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Remove a member (not the owner); their open reservations still settle against the pool."""
    from database.pools import remove_member

    why = _reason(reason)
    with database(config, env, database_url) as db:
        row = remove_member(db.conn, db.schema, pool, customer, reason=why, actor=_actor(config, actor))
    _output(
        format_, row, lambda: f"{escape(customer)} removed from pool {escape(pool)}; {_members_text(row)}"
    )


@pool_app.command("grant")
def pool_grant(
    pool: PoolArgument,
    amount: AmountArgument,
    reason: ReasonOption,
    expires: ExpiresOption = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference", help="Ticket, payment or idempotency key: the same reference grants once."
        ),
    ] = None,
    actor: ActorOption = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Grant credits to a pool (an audited admin grant)."""
    from database.pools import grant_pool

    why = _reason(reason)
    with database(config, env, database_url) as db:
        row = grant_pool(
            db.conn,
            db.schema,
            pool,
            amount,
            expires_at=_expiry(expires, _timezone(db)),
            reason=why,
            actor=_actor(config, actor),
            reference=reference,
        )
    verb = "was already granted" if row.get("replayed") else "granted"
    _output(format_, row, lambda: f"{amount} credits {verb} to pool {escape(pool)}; balance {row['balance']}")


@pool_app.command("show")
def pool_show(
    pool: PoolArgument,
    entries: Annotated[
        int,
        typer.Option(
            "--entries", "-n", min=0, max=INTEGER_MAX, help="Recent ledger entries and events to show."
        ),
    ] = 10,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Pool balance, members with their caps and use today and this month, grants, entries and changes."""
    from database.pools import pool_summary

    with database(config, env, database_url) as db:
        summary = pool_summary(db.conn, db.schema, pool, entries=entries)
    if format_ is OutputFormat.json:
        print_json(summary)
        return
    _print_pool(stdout_console(), summary)


def _cap(value: Any) -> str:
    return "no cap" if value is None else str(value)


def _members_text(pool: Mapping[str, Any]) -> str:
    return f"{len(pool['members'])} of {pool['max_members']} members"


def _print_pool(console: Console, summary: Mapping[str, Any]) -> None:
    timezone = str(summary["timezone"])
    head = Table(show_header=False, box=None, pad_edge=False)
    head.add_column(style="bold")
    head.add_column()
    for label, value in (
        ("pool", f"{summary['pool']} ({summary.get('name') or '—'})"),
        ("template", summary["template"]),
        ("owner", summary["owner"]),
        ("balance", f"{summary['balance']} credits ({summary['usable']} usable now)"),
        ("members", f"{len(summary['members'])} of {summary['max_members']}"),
    ):
        head.add_row(label, escape(str(value)))
    console.print(head)
    members = Table(title="members (caps on credits from the pool)", caption=f"days in {timezone}")
    for name in ("customer", "role", "daily", "used today", "monthly", "used this month"):
        members.add_column(name, justify="left" if name in ("customer", "role") else "right")
    for m in summary["members"]:
        members.add_row(
            escape(m["customer"]),
            m["role"],
            _cap(m["daily"]),
            str(m["used_today"]),
            _cap(m["monthly"]),
            str(m["used_month"]),
        )
    console.print(members)
    grants = Table(title="grants (in draw order)")
    for name in ("source", "remaining", "amount", "expires", "reason"):
        grants.add_column(name, justify="right" if name in ("remaining", "amount") else "left")
    for g in summary["grants"]:
        grants.add_row(
            g["source"],
            str(g["remaining"]),
            str(g["amount"]),
            _when(g.get("expires_at"), timezone),
            escape(g.get("reason") or "—"),
        )
    console.print(grants)
    events = Table(title="changes")
    for name in ("when", "change", "customer", "actor", "reason"):
        events.add_column(name)
    for e in summary["events"]:
        events.add_row(
            _when(e.get("created_at"), timezone),
            e["kind"],
            escape(e.get("customer_id") or "—"),
            escape(e["actor"]),
            escape(e["reason"]),
        )
    console.print(events)
