"""`tariff payu mandates|actions`: the e-mandates Tariff knows and the PayU actions price changes caused
(pre-debit notices `tariff tick` sends, new mandates customers must authorise), with every failure visible."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.errors import CommandError
from cli.options import ConfigOption, DatabaseUrlOption, EnvOption, OutputFormat, OutputFormatOption, database
from cli.output import print_json, stdout_console


def register(app: typer.Typer) -> None:
    """Add the mandate commands to `tariff payu`."""
    app.command("mandates")(mandates)
    app.command("actions")(actions)


def _amount(minor: Any, units: Any, currency: str) -> str:
    return f"{Decimal(int(minor)).scaleb(-int(units)):.{int(units)}f} {currency}"


def _json(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows as JSON: dates and times in ISO 8601, without the currency's minor units."""
    return [
        {k: v.isoformat() if isinstance(v, date) else v for k, v in r.items() if k != "minor_units"}
        for r in rows
    ]


def _when(value: Any) -> str:
    return "-" if value is None else str(value)[:16]


def mandates(
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer's mandates.")] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """List e-mandates (PayU standing instructions), newest first: authpayuid, maximum, cycle, status.

    Mandates come from successful `tariff payu checkout --mandate` payments; a newer one replaces the
    subscription's earlier mandate.
    """
    from publishers.payu.mandates import list_mandates

    with database(config, env, database_url) as db:
        rows = list_mandates(db.conn, db.schema, customer=customer)
    if format_ is OutputFormat.json:
        print_json(_json(rows))
        return
    # The end date (usually years away) is in --format json; the rest fits 80 columns.
    table = Table("authpayuid", "customer", "maximum", "cycle", "from", "status", box=None, pad_edge=False)
    for column in table.columns:
        column.no_wrap = True
    for r in rows:
        table.add_row(
            r["authpayuid"] or "-",
            r["customer_id"],
            _amount(r["max_amount_minor"], r["minor_units"], r["currency"]),
            r["billing_cycle"]
            if r["billing_interval"] == 1
            else f"{r['billing_cycle']} ×{r['billing_interval']}",
            _when(r["starts_on"]),
            r["status"],
        )
    stdout_console().print(table)


def actions(
    status: Annotated[
        str | None,
        typer.Option("--status", help="Only actions in this state: pending, sending, done, failed, skipped."),
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only pre_debit notices or new_mandate requests.")
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """List the PayU actions of price changes for subscribers on e-mandates, by debit date.

    pre_debit: the notice with the new amount that `tariff tick` sends from `send from` until 24 hours
    before the debit (`send_by` in --format json); a failed attempt shows its error and is retried on a
    later tick.
    new_mandate: the new price exceeds the mandate; pending until the customer authorises a new one.
    """
    from publishers.payu.mandates import ACTION_KINDS, ACTION_STATUSES, list_actions

    if status is not None and status not in ACTION_STATUSES:
        raise CommandError(
            f"unknown action status {status!r}", fix=f"use one of {', '.join(ACTION_STATUSES)}"
        )
    if kind is not None and kind not in ACTION_KINDS:
        raise CommandError(f"unknown action kind {kind!r}", fix=f"use one of {', '.join(ACTION_KINDS)}")
    with database(config, env, database_url) as db:
        rows = list_actions(db.conn, db.schema, status=status, kind=kind)
    if format_ is OutputFormat.json:
        print_json(_json(rows))
        return
    table = Table(
        "id",
        "kind",
        "customer",
        "mandate",
        "amount",
        "debit",
        "send from",
        "status",
        "tries",
        "detail",
        box=None,
    )
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["kind"],
            r["customer_id"],
            r["authpayuid"] or "-",
            _amount(r["amount_minor"], r["minor_units"], r["currency"]),
            _when(r["debit_at"] or r["debit_on"]),
            _when(r["send_from"]) if r["kind"] == "pre_debit" else "-",
            r["status"],
            str(r["attempts"]),
            r["detail"] or "",
        )
    stdout_console().print(table)
