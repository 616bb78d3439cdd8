"""PayU payment results and refund callbacks, taken in idempotently.

A body is read (JSON first, then form-encoded), checked, confirmed with PayU, then handed to the database,
which stores each event once and acts on it once (settle_payment / record_refund in migration 0011):

* payment results (browser responses and payment webhooks, form-encoded): the reverse hash must match with
  this environment's salt and the merchant key must be ours; a success is confirmed with `verify_payment`
  before anything is granted, and PayU's answer wins over the body's claim. The hash does not cover
  `mihpayid`, `mode` or the error fields, so a success takes them from PayU (a body naming another
  `mihpayid` than PayU's is refused: refunds and mandates go to that id), and an unconfirmed failure or
  pending body only fills in what Tariff does not know yet, never replaces it;
* refund callbacks (JSON, `action: refund`, no hash): the refund must be one Tariff asked for (its token,
  and its request id once PayU gave one); its state is read back from PayU by the refund's own request id
  or token and recorded only if PayU's record is that refund (token, payment, action, amount).

All bodies of a batch are parsed and checked before anything is written: one bad body refuses the batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import parse_qsl

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from database.connection import quote_schema
from database.payments import record_refund, settle
from publishers.payu.client import PayUClient
from publishers.payu.credentials import PayUCredentials
from publishers.payu.errors import HASH_FIX, PayUError
from publishers.payu.hashes import verify_reverse_hash
from publishers.payu.models import RefundStatus, Transaction
from publishers.payu.refunds import AskedRefund, RefundMismatchError, find_at_payu

MAX_BODY = 256 * 1024
PAYMENT_FIELDS = ("txnid", "status", "amount", "hash", "key", "productinfo", "firstname", "email")


BODY_FIX = (
    "Pass PayU's bodies exactly as received: the form POST to surl/furl or a payment webhook (form-encoded), "
    "or a refund callback (JSON); one per line, or a JSON array."
)


class PayloadError(PayUError):
    """A body that is not a PayU result Tariff can accept; nothing was written."""

    def __init__(self, message: str, fix: str | None = None, code: str | None = None) -> None:
        super().__init__(message, fix or BODY_FIX, code)


@dataclass(frozen=True, slots=True)
class Body:
    """One parsed body: where it came from (for messages) and its fields as strings."""

    where: str
    fields: dict[str, str]
    kind: str  # payment | refund
    raw: dict[str, Any] = field(default_factory=dict)


def status_of(body: Body) -> str:
    """A payment body's status as Tariff compares it ("Success" is success); the hashed field is kept."""
    return body.fields["status"].strip().lower()


def _strings(data: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in data.items()}


def _classify(where: str, data: Mapping[str, Any]) -> Body:
    fields = _strings(data)
    if fields.get("action", "").lower() == "refund" or ("request_id" in fields and "token" in fields):
        if not fields.get("request_id") and not fields.get("token"):
            raise PayloadError(
                f"{where}: refund callback without request_id or token",
                "PayU's refund callbacks carry request_id and token; check the sender.",
                code="bad_payload",
            )
        return Body(where, fields, "refund", dict(data))
    missing = [name for name in PAYMENT_FIELDS if not fields.get(name)]
    if missing:
        raise PayloadError(
            f"{where}: not a PayU payment result: missing {', '.join(missing)}",
            "Pass PayU's form POST to surl/furl or its payment webhook body as received "
            "(form-encoded or JSON), one per line.",
            code="bad_payload",
        )
    if fields["status"].strip().lower() not in ("success", "failure", "pending"):
        raise PayloadError(
            f"{where}: unknown status {fields['status']!r}",
            "PayU reports success, failure or pending.",
            code="bad_payload",
        )
    return Body(where, fields, "payment", dict(data))


def _form(where: str, text: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except ValueError as exc:
        raise PayloadError(
            f"{where}: neither JSON nor a form-encoded body ({exc})",
            "Pass the body exactly as PayU posted it: key=value&key=value…, or a JSON object.",
            code="bad_payload",
        ) from exc
    fields: dict[str, str] = {}
    for name, value in pairs:
        if name in fields and fields[name] != value:
            raise PayloadError(f"{where}: field {name!r} given twice", code="bad_payload")
        fields[name] = value
    return fields


def parse_body(text: str, where: str = "body", content_type: str | None = None) -> Body:
    """One body as a webhook receives it: JSON first (refund callbacks), then form-encoded."""
    text = text.strip()
    if not text:
        raise PayloadError(f"{where}: empty body", "PayU posts a non-empty body.", code="bad_payload")
    if len(text) > MAX_BODY:
        raise PayloadError(f"{where}: body larger than {MAX_BODY} bytes", code="bad_payload")
    if text.startswith("{") or (content_type or "").startswith("application/json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PayloadError(
                f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                code="bad_payload",
            ) from exc
        if not isinstance(data, dict):
            raise PayloadError(f"{where}: a JSON body must be an object", code="bad_payload")
        return _classify(where, data)
    return _classify(where, _form(where, text))


def parse_bodies(text: str, source: str = "input") -> list[Body]:
    """Every body in a file: a JSON object or array of objects, JSON lines, or form bodies one per line."""
    stripped = text.strip()
    if not stripped:
        raise PayloadError(f"{source}: no bodies", "Pass one PayU body per line.", code="bad_payload")
    if stripped.startswith("["):
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise PayloadError(
                f"{source}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                code="bad_payload",
            ) from exc
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise PayloadError(f"{source}: a JSON array must hold objects", code="bad_payload")
        return [_classify(f"{source} item {n}", item) for n, item in enumerate(items, 1)]
    if stripped.startswith("{"):
        try:
            return [parse_body(stripped, source)]
        except PayloadError:
            pass  # perhaps JSON lines
    bodies = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            bodies.append(parse_body(line, f"{source}:{number}"))
    return bodies


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.strip())
    except InvalidOperation:
        return None


def check_payment_hash(body: Body, credentials: PayUCredentials) -> None:
    if body.fields.get("key") != credentials.key:
        raise PayloadError(
            f"{body.where}: result for another merchant key (txnid {body.fields.get('txnid')})",
            HASH_FIX,
            code="wrong_key",
        )
    if not verify_reverse_hash(credentials.salt, body.fields):
        raise PayloadError(
            f"{body.where}: the hash does not match (txnid {body.fields.get('txnid')}): tampered, or "
            "signed with another salt",
            HASH_FIX,
            code="invalid_hash",
        )


@dataclass(frozen=True, slots=True)
class PaymentWrite:
    """A checked payment body and what settle_payment is to record for it."""

    body: Body
    status: str
    verified: bool
    mihpayid: str | None
    mode: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class RefundWrite:
    """A checked refund callback and the state PayU confirmed for Tariff's refund."""

    body: Body
    refund_id: int
    state: RefundStatus


def _confirmed_write(body: Body, tx: Transaction) -> PaymentWrite:
    """A success body checked against PayU's verify_payment answer; PayU's fields win."""
    f = body.fields
    if not tx.found:
        raise PayloadError(
            f"{body.where}: PayU has no payment {f['txnid']}, though the body says success",
            "Do not trust this body; compare with PayU's dashboard.",
            code="not_confirmed",
        )
    if tx.amount is not None and tx.amount != _decimal(f["amount"]):
        raise PayloadError(
            f"{body.where}: amount mismatch for {f['txnid']}: PayU confirms {tx.amount}, "
            f"the body says {f['amount']}",
            "Do not trust this body; compare with PayU's dashboard (tariff payu reconcile).",
            code="amount_mismatch",
        )
    claimed = f.get("mihpayid", "").strip()
    if claimed and claimed != tx.mihpayid:
        raise PayloadError(
            f"{body.where}: mihpayid mismatch for {f['txnid']}: PayU's payment is {tx.mihpayid}, "
            f"the body says {claimed}",
            "Do not trust this body (mihpayid is not covered by PayU's hash); nothing was recorded. "
            "Compare with PayU's dashboard (tariff payu reconcile).",
            code="mihpayid_mismatch",
        )
    return PaymentWrite(
        body, tx.status, tx.succeeded, tx.mihpayid, tx.mode, tx.error_message or tx.field9 or None
    )


def _stored_payment(conn: Connection, schema: str, txnid: str) -> dict[str, Any]:
    row = (
        conn.execute(
            sa.text(
                f"SELECT mihpayid, payment_mode, error_message FROM {quote_schema(schema)}.payments "
                "WHERE txnid = :txnid"
            ),
            {"txnid": txnid},
        )
        .mappings()
        .first()
    )
    return {} if row is None else dict(row)


def _unconfirmed_write(conn: Connection, schema: str, body: Body) -> PaymentWrite:
    """A failure or pending body: its unhashed fields only fill in what Tariff does not know yet."""
    f = body.fields
    stored = _stored_payment(conn, schema, f["txnid"])

    def gap(name: str, value: str | None) -> str | None:
        return None if stored.get(name) else (value or None)

    return PaymentWrite(
        body,
        status_of(body),
        False,
        gap("mihpayid", f.get("mihpayid")),
        gap("payment_mode", f.get("mode")),
        gap("error_message", f.get("error_Message") or f.get("field9")),
    )


def _refund_row(conn: Connection, schema: str, body: Body) -> dict[str, Any]:
    s = quote_schema(schema)
    row = (
        conn.execute(
            sa.text(
                f"SELECT r.id, r.request_id, r.token, r.amount_text, p.mihpayid, p.txnid FROM {s}.refunds r "
                f"JOIN {s}.payments p ON p.id = r.payment_id "
                "WHERE (r.request_id = :request_id AND :request_id <> '') "
                "OR (r.token = :token AND :token <> '') "
                "ORDER BY r.id LIMIT 1"
            ),
            {"request_id": body.fields.get("request_id", ""), "token": body.fields.get("token", "")},
        )
        .mappings()
        .first()
    )
    if row is None:
        raise PayloadError(
            f"{body.where}: refund callback for a refund Tariff did not ask for "
            f"(request_id {body.fields.get('request_id') or '-'}, token {body.fields.get('token') or '-'})",
            "Refunds made in PayU's dashboard are not Tariff's; make refunds with tariff payu refund.",
            code="unknown_refund",
        )
    _check_callback_ids(body, dict(row))
    return dict(row)


def _check_callback_ids(body: Body, row: Mapping[str, Any]) -> None:
    """The callback's token and request id must both name this refund (once it has a request id)."""
    token = body.fields.get("token", "")
    request_id = body.fields.get("request_id", "")
    if (token and token != row["token"]) or (row["request_id"] and request_id != row["request_id"]):
        raise PayloadError(
            f"{body.where}: refund callback with token {token or '-'} and request_id {request_id or '-'} "
            f"does not match Tariff's refund {row['token']} (request_id {row['request_id'] or '-'})",
            "Do not trust this callback; compare with PayU's dashboard. Nothing was recorded.",
            code="refund_mismatch",
        )


def _refund_write(conn: Connection, schema: str, body: Body, client: PayUClient) -> RefundWrite:
    row = _refund_row(conn, schema, body)
    try:
        state = find_at_payu(client, AskedRefund.from_row(row))
    except RefundMismatchError as exc:
        raise PayloadError(f"{body.where}: {exc.message}", exc.fix, code=exc.code) from exc
    if state is None:
        raise PayloadError(
            f"{body.where}: PayU has no refund {row['token']} on payment {row['txnid']}",
            "Do not trust this callback; compare with PayU's dashboard.",
            code="not_confirmed",
        )
    claimed = body.fields.get("request_id", "")
    if claimed and claimed != state.request_id:
        raise PayloadError(
            f"{body.where}: refund callback names request_id {claimed}, but PayU made Tariff's refund "
            f"{row['token']} as request {state.request_id or '-'}",
            "Do not trust this callback; compare with PayU's dashboard. Nothing was recorded.",
            code="refund_mismatch",
        )
    return RefundWrite(body, int(row["id"]), state)


def _checked(
    conn: Connection, schema: str, bodies: Sequence[Body], client: PayUClient, credentials: PayUCredentials
) -> list[PaymentWrite | RefundWrite]:
    """Every body checked and confirmed with PayU, before anything is written."""
    for body in bodies:
        if body.kind == "payment":
            check_payment_hash(body, credentials)
    successes = sorted(
        {b.fields["txnid"] for b in bodies if b.kind == "payment" and status_of(b) == "success"}
    )
    confirmed = client.verify_payment(successes) if successes else {}
    writes: list[PaymentWrite | RefundWrite] = []
    for body in bodies:
        if body.kind == "refund":
            writes.append(_refund_write(conn, schema, body, client))
        elif status_of(body) == "success":
            writes.append(_confirmed_write(body, confirmed[body.fields["txnid"]]))
        else:
            writes.append(_unconfirmed_write(conn, schema, body))
    return writes


def _write(conn: Connection, schema: str, write: PaymentWrite | RefundWrite, source: str) -> dict[str, Any]:
    body = write.body
    if isinstance(write, RefundWrite):
        result = record_refund(
            conn,
            schema,
            write.refund_id,
            write.state.status,
            request_id=write.state.request_id,
            source=source,
            payload=body.raw,
            bank_ref=write.state.bank_ref_num,
        )
    else:
        result = settle(
            conn,
            schema,
            body.fields["txnid"],
            write.status,
            mihpayid=write.mihpayid,
            amount=body.fields["amount"],
            source=source,
            payload=body.raw,
            verified=write.verified,
            error=write.error,
            mode=write.mode,
        )
    return {"where": body.where, "kind": body.kind, **result}


def take_in(
    conn: Connection,
    schema: str,
    bodies: Sequence[Body],
    client: PayUClient,
    credentials: PayUCredentials,
    source: str = "ingest",
) -> list[dict[str, Any]]:
    """Check every body, confirm with PayU, then record and act on each once; returns one result per body."""
    writes = _checked(conn, schema, bodies, client, credentials)
    return [_write(conn, schema, write, source) for write in writes]
