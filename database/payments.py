"""Payments: a thin, typed Python API over the SQL functions of migrations 0011 and 0024.

The contract is SQL (`payment_checkout`, `settle_payment`, `request_refund`, `record_refund`,
`withdraw_refund`, `run_dunning`),
so the app in any language and Tariff's CLI share one implementation. Nothing here knows the PayU salt:
hashes are made and checked in publishers/payu, and these functions take results already verified.

Every call works on the caller's connection and transaction. Errors raised by the functions (SQLSTATE + HINT)
become `PaymentError`s with a message and a fix; nothing is recorded when one is raised.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from database.connection import quote_schema
from database.errors import DatabaseError
from database.sql_errors import translate

Row = dict[str, Any]
PAYMENT_STATUSES = ("pending", "success", "failure", "expired", "partially_refunded", "refunded")
REFUND_STATUSES = ("requested", "queued", "in_progress", "success", "failure", "error")


class PaymentError(DatabaseError):
    """A payment call the database refused; `sqlstate` is the function's error code."""

    def __init__(self, message: str, fix: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message, fix)
        self.sqlstate = sqlstate


def _call(conn: Connection, query: str, params: dict[str, Any]) -> Row:
    try:
        with conn.begin_nested():
            result = conn.execute(sa.text(query), params).scalar_one()
    except DBAPIError as exc:
        error = translate(exc, PaymentError)
        if error is exc:
            raise
        raise error from exc
    return cast(Row, result)


def checkout(
    conn: Connection,
    schema: str,
    customer: str,
    item: dict[str, str],
    *,
    region: str | None = None,
    codes: list[str] | None = None,
    txnid: str | None = None,
    productinfo: str | None = None,
    environment: str | None = None,
    actor: str | None = None,
    at: datetime | None = None,
    mandate: bool = False,
) -> Row:
    """Price the item with promotions applied and record a pending payment; returns it (no hash).

    With ``mandate`` (plans only) the payment is also an e-mandate consent: it carries ``mandate_terms``,
    PayU's si_details for the standing instruction (payment_checkout_mandate in migration 0016).
    """
    function = "payment_checkout_mandate" if mandate else "payment_checkout"
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.{function}(:customer, CAST(:item AS jsonb), :region, "
        "CAST(:codes AS text[]), :txnid, :productinfo, :environment, :actor, CAST(:at AS timestamptz))",
        {
            "customer": customer,
            "item": json.dumps(item),
            "region": region,
            "codes": list(codes or []),
            "txnid": txnid,
            "productinfo": productinfo,
            "environment": environment,
            "actor": actor,
            "at": at,
        },
    )


def settle(
    conn: Connection,
    schema: str,
    txnid: str,
    status: str,
    *,
    mihpayid: str | None = None,
    amount: str | None = None,
    source: str = "webhook",
    payload: dict[str, Any] | None = None,
    verified: bool = False,
    error: str | None = None,
    mode: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Record one verified payment result and act on it once (see settle_payment in 0011)."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.settle_payment(:txnid, :status, :mihpayid, :amount, :source, "
        "CAST(:payload AS jsonb), :verified, :error, :mode, CAST(:at AS timestamptz))",
        {
            "txnid": txnid,
            "status": status,
            "mihpayid": mihpayid,
            "amount": amount,
            "source": source,
            "payload": json.dumps(payload or {}),
            "verified": verified,
            "error": error,
            "mode": mode,
            "at": at,
        },
    )


def expire(conn: Connection, schema: str, txnid: str, at: datetime | None = None) -> bool:
    """Mark a pending payment PayU never saw as expired, giving back the promotion places it holds (see
    expire_payment in 0024); False when the payment was no longer pending."""
    result = _call(
        conn,
        f"SELECT {quote_schema(schema)}.expire_payment(:txnid, CAST(:at AS timestamptz))",
        {"txnid": txnid, "at": at},
    )
    return bool(result["expired"])


def retry_fulfilment(conn: Connection, schema: str, txnid: str, at: datetime | None = None) -> Row:
    """Deliver a paid payment whose fulfilment failed (payments.fulfilment_error) again; "outcome" says
    applied, fulfilment_failed (with "detail") or not_needed (see retry_fulfilment in 0024)."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.retry_fulfilment(:txnid, CAST(:at AS timestamptz))",
        {"txnid": txnid, "at": at},
    )


def request_refund(
    conn: Connection,
    schema: str,
    txnid: str,
    amount_minor: int | None,
    reason: str,
    actor: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Open a refund, or return the unanswered one of the same amount with its token; commit before PayU."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.request_refund(:txnid, :amount, :reason, :actor, "
        "CAST(:at AS timestamptz))",
        {"txnid": txnid, "amount": amount_minor, "reason": reason, "actor": actor, "at": at},
    )


def withdraw_refund(
    conn: Connection,
    schema: str,
    token: str,
    reason: str,
    actor: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Give up a refund PayU never acknowledged, freeing its amount (SQL withdraw_refund, 0031). Ask PayU
    for a refund under the token first: publishers.payu.refunds.withdraw does."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.withdraw_refund(:token, :reason, :actor, CAST(:at AS timestamptz))",
        {"token": token, "reason": reason, "actor": actor, "at": at},
    )


def record_refund(
    conn: Connection,
    schema: str,
    refund_id: int,
    status: str,
    *,
    request_id: str | None = None,
    source: str = "refund",
    payload: dict[str, Any] | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    bank_ref: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Record what PayU said about a refund and act on it once (see record_refund in 0011)."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.record_refund(:id, :status, :request_id, :source, "
        "CAST(:payload AS jsonb), :code, :message, :bank_ref, CAST(:at AS timestamptz))",
        {
            "id": refund_id,
            "status": status,
            "request_id": request_id,
            "source": source,
            "payload": json.dumps(payload or {}, default=str),
            "code": error_code,
            "message": error_message,
            "bank_ref": bank_ref,
            "at": at,
        },
    )


def run_dunning(conn: Connection, schema: str, at: datetime | None = None) -> Row:
    """Dunning for `tariff tick`: open cases, send due reminders, act on lapsed grace. Idempotent."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.run_dunning(coalesce(CAST(:at AS timestamptz), now()))",
        {"at": at},
    )


def payment(conn: Connection, schema: str, txnid: str) -> Row | None:
    """One payment by txnid, with its refunds and events, or None."""
    s = quote_schema(schema)
    row = (
        conn.execute(
            sa.text(
                f"SELECT to_jsonb(p) || jsonb_build_object("
                f"'refunds', (SELECT coalesce(jsonb_agg(to_jsonb(r) ORDER BY r.id), '[]') FROM {s}.refunds r "
                "WHERE r.payment_id = p.id), "
                f"'invoice', (SELECT to_jsonb(i) FROM {s}.invoices i WHERE i.payment_id = p.id), "
                f"'events', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', e.id, 'status', e.status, "
                "'kind', e.kind, 'source', e.source, 'outcome', e.outcome, 'detail', e.detail, "
                f"'received_at', e.received_at) ORDER BY e.id), '[]') FROM {s}.payment_events e "
                f"WHERE e.payment_id = p.id)) FROM {s}.payments p WHERE p.txnid = :txnid"
            ),
            {"txnid": txnid},
        )
        .scalars()
        .first()
    )
    return cast(Row | None, row)


def payments(
    conn: Connection,
    schema: str,
    *,
    customer: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
) -> list[Row]:
    """Recent payments, newest first, filtered by customer, status and creation time."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            f"SELECT to_jsonb(p) - 'quote' FROM {s}.payments p "
            "WHERE (CAST(:customer AS text) IS NULL OR p.customer_id = :customer) "
            "AND (CAST(:status AS text) IS NULL OR p.status = :status) "
            "AND (CAST(:since AS timestamptz) IS NULL OR p.created_at >= :since OR p.updated_at >= :since) "
            "ORDER BY p.created_at DESC, p.txnid LIMIT :limit"
        ),
        {"customer": customer, "status": status, "since": since, "limit": limit},
    )
    return [cast(Row, r) for r in rows.scalars()]


def refunds(
    conn: Connection,
    schema: str,
    *,
    status: str | None = None,
    open_only: bool = False,
    token: str | None = None,
) -> list[Row]:
    """Refunds with their payment's txnid and mihpayid, oldest first."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            f"SELECT to_jsonb(r) || jsonb_build_object('txnid', p.txnid, 'mihpayid', p.mihpayid) "
            f"FROM {s}.refunds r JOIN {s}.payments p ON p.id = r.payment_id "
            "WHERE (CAST(:status AS text) IS NULL OR r.status = :status) "
            "AND (NOT :open OR r.status IN ('requested', 'queued', 'in_progress')) "
            "AND (CAST(:token AS text) IS NULL OR r.token = :token) ORDER BY r.id"
        ),
        {"status": status, "open": open_only, "token": token},
    )
    return [cast(Row, r) for r in rows.scalars()]
