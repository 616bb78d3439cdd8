"""`tariff payu checkout|ingest|webhook|refund|refunds|reconcile|payments`: payments through PayU, priced by
Tariff, recorded idempotently in the database (database/payments.py, migration 0011).

The PayU key and salt come from the environment variables the environment's `payu` settings name; they are
read before anything is written, so a missing secret never leaves a half-made payment behind.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
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
from cli.output import print_json, stderr_console, stdout_console

if TYPE_CHECKING:
    from publishers.payu.client import PayUClient
    from publishers.payu.config import PayUConfig
    from publishers.payu.credentials import PayUCredentials

TxnidArgument = Annotated[str, typer.Argument(metavar="TXNID", help="Tariff's txnid of the payment.")]


def _payu(config: Path, env: str | None) -> tuple[PayUConfig, PayUCredentials, PayUClient]:
    from cli.payu_commands import payu_settings
    from publishers.payu.client import PayUClient
    from publishers.payu.errors import PayUError

    settings = payu_settings(config, env)
    try:
        credentials = settings.credentials()
    except PayUError as exc:
        raise CommandError(exc.message, exc.fix) from exc
    return settings, credentials, PayUClient(settings.api_url, credentials)


# request_refund's SQLSTATE (object_in_use) for a refund of the payment still unanswered by PayU.
UNANSWERED_REFUND = "55006"
WITHDRAW_FIX = "withdraw it with tariff payu refund-withdraw TOKEN --reason ..."


def _payu_error(exc: Exception) -> CommandError:
    message = getattr(exc, "message", str(exc))
    return CommandError(message, getattr(exc, "fix", None))


def _actor(config: Path) -> str:
    from cli.revision_context import actor

    return actor(config)


def _money(minor: Any, currency: str, units: int = 2) -> str:
    return f"{Decimal(int(minor)).scaleb(-units):.{units}f} {currency}"


def register(app: typer.Typer) -> None:
    """Add the payment commands to `tariff payu`."""
    app.command("checkout")(checkout)
    app.command("ingest")(ingest)
    app.command("webhook")(webhook)
    app.command("refund")(refund)
    app.command("refunds")(refunds)
    app.command("refund-withdraw")(refund_withdraw)
    app.command("reconcile")(reconcile)
    app.command("payments")(payments)


# --------------------------------------------------------------------------------------------- checkout


def checkout(
    customer: Annotated[str, typer.Option("--customer", help="The app's own user id.", show_default=False)],
    plan: Annotated[str | None, typer.Option("--plan", help="Plan to buy (with --cycle).")] = None,
    cycle: Annotated[str | None, typer.Option("--cycle", help="Billing cycle of the plan.")] = None,
    package: Annotated[str | None, typer.Option("--package", help="Token package to buy.")] = None,
    bundle: Annotated[str | None, typer.Option("--bundle", help="Bundle (its promotion id) to buy.")] = None,
    region: Annotated[
        str | None, typer.Option("--region", help="Pricing region; default: the customer's region.")
    ] = None,
    code: Annotated[
        list[str] | None, typer.Option("--code", help="Promotion code (repeatable).", show_default=False)
    ] = None,
    txnid: Annotated[
        str | None,
        typer.Option("--txnid", help="Use this txnid (≤ 25 letters and digits); default: a fresh one."),
    ] = None,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write a self-contained page that posts the form to PayU at once."),
    ] = None,
    mandate: Annotated[
        bool,
        typer.Option(
            "--mandate",
            help="Also ask the customer for an e-mandate (PayU standing instruction, si=1) for the plan's "
            "later debits, up to the recurring price plus payments.mandates.headroom_percent. Plans only.",
        ),
    ] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="Price as of this moment (ISO 8601; without an offset, in the project's time zone): the "
            "promotions live then apply. Default: now.",
            show_default=False,
        ),
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Price an item with promotions and tax, record a pending payment and print the signed PayU form.

    Exactly one of --plan (with --cycle), --package or --bundle. The amount posted is the exact string
    hashed; udf1..udf5 carry item, cycle, customer, payment id and promotions. With --mandate the payment is
    also the consent for an e-mandate; once it succeeds, the mandate is recorded for the subscription.
    """
    from database.payments import PaymentError
    from publishers.payu.checkout import form_for

    chosen = [
        name for name, value in (("--plan", plan), ("--package", package), ("--bundle", bundle)) if value
    ]
    if len(chosen) != 1:
        raise CommandError(
            "name exactly one item to buy" + (f" (got {', '.join(chosen)})" if chosen else ""),
            fix="pass --plan pro --cycle annual, --package extra-500 or --bundle creator-bundle",
        )
    if plan and not cycle:
        raise CommandError(f"--plan {plan} needs --cycle", fix="add --cycle monthly or --cycle annual")
    if cycle and not plan:
        raise CommandError("--cycle goes with --plan only", fix="packages and bundles have no billing cycle")
    if mandate and not plan:
        raise CommandError(
            "--mandate goes with --plan only: packages and bundles do not recur",
            fix="leave out --mandate, or buy a plan: --plan pro --cycle monthly --mandate",
        )
    item = {"plan": plan, "cycle": cycle} if plan else {"package": package} if package else {"bundle": bundle}
    settings, credentials, _client = _payu(config, env)
    if html is not None and html.exists() and html.is_dir():
        raise CommandError(f"--html {html} is a directory", fix="name a file, e.g. --html checkout.html")
    with database(config, env, database_url) as db:
        priced_at = None
        if at is not None:
            from compiler.timeutil import parse_timestamp

            try:
                priced_at = parse_timestamp(at, db.timezone)
            except ValueError as exc:
                raise CommandError(f"--at: {exc}", fix="write e.g. 2026-11-20T10:00+05:30") from exc
        try:
            payment = _checkout(
                db,
                customer,
                item,
                region,
                code,
                txnid,
                settings.environment,
                _actor(config),
                priced_at,
                mandate=mandate,
            )
        except PaymentError as exc:
            raise CommandError(exc.message, exc.fix) from exc
        try:
            form = form_for(payment, settings, credentials)
        except ValueError as exc:
            raise CommandError(
                f"cannot sign the checkout: {exc}",
                fix=f"register it, e.g. tariff customers add {customer} --attr phone=98XXXXXXXX",
            ) from exc
        if html is not None:
            try:
                html.write_text(form.html(), encoding="utf-8")
            except OSError as exc:
                raise CommandError(
                    f"cannot write {html}: {exc.strerror}", fix="choose a writable path"
                ) from exc
    if format_ is OutputFormat.json:
        print_json(form.to_json())
        return
    console = stdout_console()
    console.print(
        f"payment [bold]{payment['txnid']}[/bold] pending: {escape(payment['productinfo'])} for "
        f"{payment['customer_id']} — {payment['amount_text']} {payment['currency']}"
        + (
            f" (incl. {payment['tax_name']} {_money(payment['tax_minor'], payment['currency'])})"
            if payment["tax_minor"]
            else ""
        ),
        highlight=False,
    )
    if payment["discount_minor"]:
        console.print(
            f"  list {_money(payment['list_minor'], payment['currency'])}, discount "
            f"{_money(payment['discount_minor'], payment['currency'])} "
            f"({', '.join(payment['promotion_ids'])})",
            highlight=False,
        )
    terms = payment.get("mandate_terms")
    if terms:
        console.print(
            f"  e-mandate: {terms['billingCycle'].lower()} debits (interval {terms['billingInterval']}) "
            "of at most "
            f"{terms['billingAmount']} {terms['billingCurrency']} from {terms['paymentStartDate']} to "
            f"{terms['paymentEndDate']}",
            highlight=False,
            markup=False,
        )
    console.print(f"  POST {form.action}", highlight=False, markup=False)
    for name, value in form.fields.items():
        console.print(f"    {name}={value}", highlight=False, markup=False)
    if html is not None:
        console.print(f"  wrote {html}", highlight=False, markup=False)


def _checkout(
    db: Any,
    customer: str,
    item: dict[str, Any],
    region: str | None,
    codes: list[str] | None,
    txnid: str | None,
    environment: str,
    actor: str,
    at: datetime | None,
    *,
    mandate: bool = False,
) -> dict[str, Any]:
    from database.payments import checkout as run_checkout

    return run_checkout(
        db.conn,
        db.schema,
        customer,
        {k: v for k, v in item.items() if v is not None},
        region=region,
        codes=codes,
        txnid=txnid,
        environment=environment,
        actor=actor,
        at=at,
        mandate=mandate,
    )


# ------------------------------------------------------------------------------------------- results


def ingest(
    file: Annotated[
        str,
        typer.Argument(
            metavar="FILE|-",
            help="PayU bodies, one per line (form or JSON), or a JSON array; - reads standard input.",
        ),
    ] = "-",
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Take in PayU payment results and refund callbacks: check hashes, confirm with PayU, act once each.

    All bodies are checked before anything is written; one bad body refuses the whole file.
    """
    from database.payments import PaymentError
    from publishers.payu.errors import PayUError
    from publishers.payu.results import parse_bodies, take_in

    if file == "-":
        text, source = sys.stdin.read(), "stdin"
    else:
        path = Path(file)
        try:
            text, source = path.read_text(encoding="utf-8"), str(path)
        except FileNotFoundError as exc:
            raise CommandError(
                f"{file}: no such file", fix="pass a file of PayU bodies, or - for stdin"
            ) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(
                f"{file}: cannot read it as UTF-8 text ({exc})", fix="pass a text file"
            ) from exc
    try:
        bodies = parse_bodies(text, source)
    except PayUError as exc:
        raise _payu_error(exc) from exc
    _settings, credentials, client = _payu(config, env)
    with database(config, env, database_url) as db:
        try:
            results = take_in(db.conn, db.schema, bodies, client, credentials, source="ingest")
        except (PayUError, PaymentError) as exc:
            raise _payu_error(exc) from exc
    if format_ is OutputFormat.json:
        print_json(results)
        return
    _print_results(results)


def _print_results(results: list[dict[str, Any]]) -> None:
    console = stdout_console()
    for r in results:
        if r["kind"] == "payment":
            extra = ""
            if r.get("subscription"):
                extra += f", subscription {r['subscription']}"
            if r.get("tokens_granted"):
                extra += f", {r['tokens_granted']} credits"
            if r.get("invoice"):
                extra += f", invoice {r['invoice']}"
            console.print(
                f"{r['where']}: {r['txnid']} {r['status']} → {r['outcome']} "
                f"(payment {r.get('payment_status', '-')}"
                f"{extra})" + (f" — {r['detail']}" if r.get("detail") else ""),
                highlight=False,
                markup=False,
            )
        else:
            console.print(
                f"{r['where']}: refund {r['token']} of {r['txnid']} → {r['status']}"
                + (" (duplicate)" if r.get("duplicate") else ""),
                highlight=False,
                markup=False,
            )


def webhook(
    port: Annotated[
        int, typer.Option("--port", min=0, max=65535, help="Port to listen on (0: any free one).")
    ] = 8787,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Receive PayU payment webhooks and refund callbacks over HTTP until interrupted.

    Each POST is taken in like `tariff payu ingest`: 200 when recorded (or already recorded), 400 for a body
    refused (nothing written), 503 when PayU or the database cannot be reached or is briefly busy (a lock
    timeout, a deadlock: nothing written, PayU delivers again).
    """
    from cli.session import open_session
    from publishers.payu.webhook import WebhookServer

    _settings, credentials, client = _payu(config, env)
    session = open_session(config, env, database_url, stderr_console())
    try:
        server = WebhookServer((host, port), session.engine, session.schema, client, credentials, _print_one)
    except OSError as exc:
        session.engine.dispose()
        raise CommandError(
            f"cannot listen on {host}:{port}: {exc.strerror}", fix="choose another --port"
        ) from exc
    stderr_console().print(f"listening on {server.url} (Ctrl-C to stop)", highlight=False, markup=False)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        session.engine.dispose()


def _print_one(result: dict[str, Any]) -> None:
    _print_results([result])


# ------------------------------------------------------------------------------------------- refunds


# The database keeps amounts in minor units as bigint; nothing larger was ever paid, so none is refunded.
MAX_MINOR = 2**63 - 1


def _minor(amount: str, units: int) -> int:
    try:
        value = Decimal(amount.strip())
    except InvalidOperation as exc:
        raise CommandError(f"--amount {amount!r} is not a number", fix="write e.g. --amount 749.50") from exc
    try:
        # quantize fails on amounts too large to carry `units` decimals (1e30): refuse them like any other
        exact = value.is_finite() and value > 0 and value == value.quantize(Decimal(1).scaleb(-units))
    except InvalidOperation:
        exact = False
    if not exact or value.scaleb(units) > MAX_MINOR:
        raise CommandError(
            f"--amount {amount} must be positive with at most {units} decimals, no more than the payment",
            fix="write e.g. --amount 749.50",
        )
    return int(value.scaleb(units))


def refund(
    txnid: TxnidArgument,
    reason: Annotated[
        str, typer.Option("--reason", "-r", help="Why (kept with the refund).", show_default=False)
    ],
    amount: Annotated[
        str | None, typer.Option("--amount", help="Amount to refund; default: everything left to refund.")
    ] = None,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Refund a payment in full or in part through PayU, never twice.

    The refund and its unique token are recorded before PayU is called. Only PayU's refusal records it as
    error. After a network failure or an answer that does not say whether PayU refunded (an HTTP error,
    a body that is not JSON), it stays requested: run the same command again (it resends the same token,
    which PayU never refunds twice) or tariff payu refunds --poll. Credits the payment granted are taken
    back in proportion and, once the payment is refunded in full, its promotion redemption is released.
    """
    from cli.session import open_session
    from database.payments import PaymentError, payment
    from publishers.payu.errors import PayUError
    from publishers.payu.refunds import refund as run_refund

    if not reason.strip():
        raise CommandError("--reason must not be empty", fix='say why, e.g. --reason "duplicate charge"')
    settings, _credentials, client = _payu(config, env)
    session = open_session(config, env, database_url, stderr_console())
    try:
        with session.engine.begin() as conn:
            found = payment(conn, session.schema, txnid)
            units = 2
            if found is not None:
                from sqlalchemy import text

                from database.connection import quote_schema

                units = int(
                    conn.execute(
                        text(
                            f"SELECT minor_units FROM {quote_schema(session.schema)}.currencies "
                            "WHERE code = :c"
                        ),
                        {"c": found["currency"]},
                    ).scalar_one()
                )
        minor = None if amount is None else _minor(amount, units)
        try:
            result = run_refund(
                session.engine,
                session.schema,
                client,
                txnid,
                minor,
                reason.strip(),
                _actor(config),
                settings.webhook_url,
            )
        except (PayUError, PaymentError) as exc:
            if isinstance(exc, PaymentError) and exc.sqlstate == UNANSWERED_REFUND:
                raise CommandError(
                    exc.message, f"{exc.fix}; or, when it is no longer wanted, {WITHDRAW_FIX}"
                ) from exc
            raise _payu_error(exc) from exc
    finally:
        session.engine.dispose()
    _report_refund(
        result,
        format_,
        f"{result['status']}"
        + (f" (request {result['request_id']})" if result.get("request_id") else "")
        + (" — recovered from an earlier attempt" if result.get("recovered") else ""),
    )


def _report_refund(result: dict[str, Any], format_: OutputFormat, outcome: str) -> None:
    if format_ is OutputFormat.json:
        print_json(result)
        return
    stdout_console().print(
        f"refund {result['token']} of {result['amount_text']} {result['currency']} on {result['txnid']}: "
        + outcome,
        highlight=False,
        markup=False,
    )


def refunds(
    status: Annotated[str | None, typer.Option("--status", help="Only refunds in this state.")] = None,
    poll: Annotated[
        bool, typer.Option("--poll", help="Ask PayU for the state of every unsettled refund first.")
    ] = False,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """List refunds with their state (requested, queued, in_progress, success, failure, error).

    With --poll, a refund PayU reports in a state Tariff does not know, or whose record at PayU is not the
    refund Tariff asked for, is left as it was with a warning on stderr; the others are still updated.
    """
    from cli.session import open_session
    from database.payments import REFUND_STATUSES, PaymentError
    from database.payments import refunds as list_refunds
    from publishers.payu.errors import PayUError
    from publishers.payu.refunds import poll as run_poll

    if status is not None and status not in REFUND_STATUSES:
        raise CommandError(
            f"unknown refund status {status!r}", fix=f"use one of {', '.join(REFUND_STATUSES)}"
        )
    client = _payu(config, env)[2] if poll else None
    session = open_session(config, env, database_url, stderr_console())
    polled: list[dict[str, Any]] = []
    try:
        if client is not None:
            try:
                polled = run_poll(session.engine, session.schema, client)
            except (PayUError, PaymentError) as exc:
                raise _payu_error(exc) from exc
        with session.engine.begin() as conn:
            rows = list_refunds(conn, session.schema, status=status)
    finally:
        session.engine.dispose()
    _warn_unpolled(polled)
    if format_ is OutputFormat.json:
        print_json(rows)
        return
    table = Table("token", "txnid", "amount", "status", "request id", "reason", box=None)
    for r in rows:
        table.add_row(
            r["token"],
            r["txnid"],
            f"{r['amount_text']} {r['currency']}",
            r["status"],
            r.get("request_id") or "-",
            r["reason"],
        )
    stdout_console().print(table)


def refund_withdraw(
    token: Annotated[
        str, typer.Argument(help="The refund's token (tariff payu refunds lists them).", show_default=False)
    ],
    reason: Annotated[
        str,
        typer.Option("--reason", "-r", help="Why it is given up (kept with the refund).", show_default=False),
    ],
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Give up a refund PayU never acknowledged, so its amount can be refunded again (or not at all).

    A refund without a clear answer from PayU stays requested, and no other refund of the payment can be
    made while it does. When that refund is still wanted, run tariff payu refund again (same token). When it
    is not, this command asks PayU for the payment's actions: if PayU has one under the refund's token, it
    records what PayU says and withdraws nothing; if PayU's answer lists the payment and nothing under the
    token, the refund becomes error (withdrawn), with your reason and name in its history. A refund PayU
    acknowledged (queued, in progress), or one sent to PayU less than 15 minutes ago, cannot be withdrawn.
    """
    from cli.session import open_session
    from database.payments import PaymentError
    from publishers.payu.errors import PayUError
    from publishers.payu.refunds import withdraw

    if not reason.strip():
        raise CommandError(
            "--reason must not be empty", fix='say why, e.g. --reason "paid back by bank transfer"'
        )
    client = _payu(config, env)[2]
    session = open_session(config, env, database_url, stderr_console())
    try:
        result = withdraw(session.engine, session.schema, client, token, reason.strip(), _actor(config))
    except (PayUError, PaymentError) as exc:
        raise _payu_error(exc) from exc
    finally:
        session.engine.dispose()
    _report_refund(result, format_, "withdrawn; its amount can be refunded again")


def _warn_unpolled(polled: list[dict[str, Any]]) -> None:
    console = stderr_console()
    for r in polled:
        if r.get("problem"):
            console.print(
                f"warning: refund {r['token']} of {r['txnid']} left {r['status']}: {r['problem']}",
                highlight=False,
                markup=False,
            )


# ------------------------------------------------------------------------------------- reconciliation


def reconcile(
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Also check payments changed since this date or time (default: 7 days ago)."
        ),
    ] = None,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Apply the safe corrections (settle as PayU says; expire never-paid, giving back their "
            "promotion places; fulfil failed deliveries again).",
        ),
    ] = False,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """Compare pending and recent payments with PayU and report every mismatch.

    Reports payments paid at PayU but pending here, failed at PayU, never seen by PayU, amounts that
    differ, fulfilment failures, discounts whose promotion place was lost and txnids Tariff never issued;
    --fix applies the safe corrections.
    """
    from compiler.timeutil import parse_timestamp
    from database.payments import PaymentError
    from publishers.payu.errors import PayUError
    from publishers.payu.reconcile import reconcile as run_reconcile

    now = datetime.now(UTC)
    if since is None:
        start = now - timedelta(days=7)
    else:
        try:
            start = parse_timestamp(since, "UTC")
        except ValueError as exc:
            raise CommandError(
                f"--since: {exc}", fix="write e.g. 2026-11-01 or 2026-11-01T09:00+05:30"
            ) from exc
    _settings, _credentials, client = _payu(config, env)
    with database(config, env, database_url) as db:
        try:
            report = run_reconcile(db.conn, db.schema, client, start, now, fix=fix)
        except (PayUError, PaymentError) as exc:
            raise _payu_error(exc) from exc
    if format_ is OutputFormat.json:
        print_json(report)
    else:
        console = stdout_console()
        console.print(
            f"checked {report['checked']} payment(s) since {report['since']}: {len(report['mismatches'])} "
            f"mismatch(es), {report['fixed']} fixed",
            highlight=False,
            markup=False,
        )
        for m in report["mismatches"]:
            console.print(
                f"  {m['txnid']}: {m['issue']} "
                f"(Tariff {m['tariff_status'] or '-'} {m['tariff_amount'] or ''}, "
                f"PayU {m['payu_status'] or '-'} {m['payu_amount'] or ''})"
                + (" — fixed" if m["fixed"] else " — fixable with --fix" if m["fixable"] else ""),
                highlight=False,
                markup=False,
            )


def payments(
    txnid: Annotated[str | None, typer.Argument(metavar="[TXNID]", help="Show one payment in full.")] = None,
    customer: Annotated[str | None, typer.Option("--customer", help="Only this customer's payments.")] = None,
    status: Annotated[str | None, typer.Option("--status", help="Only payments in this state.")] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=BIGINT_MAX, help="At most this many.")
    ] = 50,
    config: ConfigOption = Path("pricing"),
    env: EnvOption = None,
    database_url: DatabaseUrlOption = None,
    format_: OutputFormatOption = OutputFormat.text,
) -> None:
    """List payments, newest first, or show one with its events, refunds and invoice."""
    from database.payments import PAYMENT_STATUSES, payment
    from database.payments import payments as list_payments

    if status is not None and status not in PAYMENT_STATUSES:
        raise CommandError(
            f"unknown payment status {status!r}", fix=f"use one of {', '.join(PAYMENT_STATUSES)}"
        )
    with database(config, env, database_url) as db:
        if txnid is not None:
            one = payment(db.conn, db.schema, txnid)
            if one is None:
                raise CommandError(
                    f"no payment with txnid {txnid!r}", fix="list them with tariff payu payments"
                )
            rows = [one]
        else:
            rows = list_payments(db.conn, db.schema, customer=customer, status=status, limit=limit)
    if format_ is OutputFormat.json:
        print_json(rows[0] if txnid is not None else rows)
        return
    if txnid is not None:
        _print_payment(rows[0])
        return
    table = Table("txnid", "customer", "item", "amount", "status", "created", box=None, pad_edge=False)
    for column in table.columns:
        column.no_wrap = True
    for r in rows:
        table.add_row(
            r["txnid"],
            r["customer_id"],
            _item(r),
            f"{r['amount_text']} {r['currency']}",
            r["status"],
            str(r["created_at"])[:10],
        )
    stdout_console().print(table)


def _item(r: dict[str, Any]) -> str:
    if r.get("plan_id"):
        return f"{r['plan_id']} ({r['cycle']})"
    return str(r.get("package_id") or r.get("bundle_id"))


def _print_payment(one: dict[str, Any]) -> None:
    currency = one["currency"]
    lines = [
        f"payment {one['txnid']} ({one['id']}): {one['status']}",
        f"  customer   {one['customer_id']}, {one['kind']} {_item(one)}, {one['purpose']}",
        f"  price      list {_money(one['list_minor'], currency)} − discount "
        f"{_money(one['discount_minor'], currency)} = net {_money(one['net_minor'], currency)}"
        + (f" ({', '.join(one['promotion_ids'])})" if one["promotion_ids"] else ""),
        f"  charged    {one['amount_text']} {currency}"
        + (f" incl. {one['tax_name']} {_money(one['tax_minor'], currency)}" if one["tax_minor"] else ""),
        f"  PayU       mihpayid {one.get('mihpayid') or '-'}, mode {one.get('payment_mode') or '-'}",
        f"  created    {one['created_at']}; paid {one.get('paid_at') or '-'}",
    ]
    if one.get("subscription_id"):
        lines.append(f"  subscription {one['subscription_id']}")
    terms = one.get("mandate_terms")
    if terms:
        lines.append(
            f"  e-mandate  consent for {terms['billingCycle']} debits up to {terms['billingAmount']} "
            f"{terms['billingCurrency']}, {terms['paymentStartDate']} to {terms['paymentEndDate']}"
        )
    if one["tokens_granted"]:
        lines.append(f"  credits    {one['tokens_granted']} granted, {one['tokens_revoked']} taken back")
    if one.get("fulfilment_error"):
        lines.append(f"  fulfilment failed: {one['fulfilment_error']}")
    for e in one["events"]:
        lines.append(f"  event      {e['kind']} {e['status']} via {e['source']}: {e['outcome']}")
    for rf in one["refunds"]:
        lines.append(f"  refund     {rf['token']} {rf['amount_text']} {currency}: {rf['status']}")
    if one.get("invoice"):
        inv = one["invoice"]
        lines.append(
            f"  invoice    {inv['number']}: net {_money(inv['net_minor'], currency)} + "
            f"{inv['tax_name'] or 'tax'} {_money(inv['tax_minor'], currency)} = "
            f"{_money(inv['total_minor'], currency)}"
        )
    console = stdout_console()
    for line in lines:
        console.print(line, highlight=False, markup=False)
