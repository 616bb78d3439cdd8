"""Refunds through PayU that can never pay out twice.

The refund row and its unique token are committed before PayU is called. If PayU cannot be reached, the
refund stays `requested`; running the same refund again sends the same token, and PayU refuses a second
refund under a token it has seen (error 106), which Tariff then resolves by looking the refund up by its
token. Refund states are read from PayU (`check_action_status`) until they settle.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from database.payments import record_refund, refunds, request_refund
from publishers.payu.client import PayUClient
from publishers.payu.errors import PayUError, PayUNetworkError
from publishers.payu.models import RefundStatus


class RefundPendingError(PayUError):
    """PayU did not answer: the refund is recorded as requested and is safe to send again."""


def _record_status(
    engine: Engine, schema: str, refund_id: int, state: RefundStatus, source: str
) -> dict[str, Any]:
    with engine.begin() as conn:
        return record_refund(
            conn,
            schema,
            refund_id,
            state.status,
            request_id=state.request_id or None,
            source=source,
            payload=dict(state.raw) or {"status": state.status, "request_id": state.request_id},
            bank_ref=state.bank_ref_num,
        )


def refund(
    engine: Engine,
    schema: str,
    client: PayUClient,
    txnid: str,
    amount_minor: int | None,
    reason: str,
    actor: str | None = None,
    callback_url: str | None = None,
) -> dict[str, Any]:
    """Refund all (amount None) or part of a payment; returns the refund as recorded after PayU's answer."""
    with engine.begin() as conn:
        opened = request_refund(conn, schema, txnid, amount_minor, reason, actor)
    refund_id = int(opened["id"])
    token = str(opened["token"])
    mihpayid = opened.get("mihpayid")
    if not mihpayid:
        raise PayUError(
            f"payment {txnid} has no PayU id (mihpayid), so PayU cannot refund it",
            "run tariff payu reconcile to read it from PayU",
            code="no_mihpayid",
        )
    try:
        answer = client.cancel_refund_transaction(
            str(mihpayid), token, Decimal(str(opened["amount_text"])), callback_url
        )
    except PayUNetworkError as exc:
        raise RefundPendingError(
            f"PayU did not answer the refund of {opened['amount_text']} {opened['currency']} on {txnid}: "
            f"{exc.message}; it is recorded as requested under token {token}",
            f"run the same command again (it resends token {token}, which PayU never refunds twice), "
            "or tariff payu refunds --poll",
            code="refund_pending",
        ) from exc
    except PayUError as exc:
        if exc.code in ("106", "214"):
            existing = client.refund_by_token(str(mihpayid), token)
            if existing is not None:
                return {**_record_status(engine, schema, refund_id, existing, "refund"), "recovered": True}
        with engine.begin() as conn:
            record_refund(
                conn,
                schema,
                refund_id,
                "error",
                source="refund",
                payload=exc.to_json(),
                error_code=exc.code,
                error_message=exc.message,
            )
        raise
    state = RefundStatus(
        request_id=answer.request_id,
        mihpayid=answer.mihpayid,
        status="QUEUED",
        amount=answer.amount,
        token=token,
        bank_ref_num=answer.bank_ref_num,
        raw={"request_id": answer.request_id, "msg": answer.message, "error_code": answer.error_code},
    )
    if answer.recovered:
        found = client.check_action_status(answer.request_id)
        if found:
            state = found[0]
    return {**_record_status(engine, schema, refund_id, state, "refund"), "recovered": answer.recovered}


def poll(engine: Engine, schema: str, client: PayUClient) -> list[dict[str, Any]]:
    """Read every unsettled refund's state from PayU and record it; returns the refunds after the poll."""
    with engine.begin() as conn:
        open_refunds = refunds(conn, schema, open_only=True)
    out = []
    for row in open_refunds:
        state: RefundStatus | None = None
        if row.get("request_id"):
            states = client.check_action_status(str(row["request_id"]))
            state = states[0] if states else None
        elif row.get("mihpayid"):
            state = client.refund_by_token(str(row["mihpayid"]), str(row["token"]))
        if state is None or not state.status:
            out.append({**row, "changed": False})
            continue
        out.append(_record_status(engine, schema, int(row["id"]), state, "reconcile"))
    return out
