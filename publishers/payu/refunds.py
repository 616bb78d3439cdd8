"""Refunds through PayU that can never pay out twice.

The refund row and its unique token are committed before PayU is called. Only PayU's definite refusal of
the refund (105, 116, 214, a token it holds for another amount) is recorded as `error`, which frees the
amount for a new refund under a new token. When PayU cannot be reached, or answers without saying whether
it acted (an HTTP error, a body that is not JSON, a 106 whose refund it cannot show), the refund stays
`requested`: running the same refund again sends the same token, which PayU never refunds twice, and
`poll` looks it up by that token. `withdraw` gives up such a refund once PayU shows none under its token.

Whatever PayU reports about a refund (by request id or by token) is recorded only when it is the refund
Tariff asked for: same token, same payment, a refund action, same amount.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from database.payments import PaymentError, record_refund, refunds, request_refund, withdraw_refund
from publishers.payu.client import PayUClient, PayUUnclearAnswerError
from publishers.payu.errors import PayUError, PayUNetworkError
from publishers.payu.models import RefundStatus

MISMATCH_FIX = "Do not trust it: compare the refund with PayU's dashboard first; Tariff recorded nothing."


class RefundPendingError(PayUError):
    """PayU did not say whether it made the refund: it stays requested and is safe to send again."""


class RefundAtPayUError(PayUError):
    """A refund asked to be withdrawn is at PayU after all: what PayU says was recorded instead."""


class RefundMismatchError(PayUError):
    """What PayU reports under a refund's request id or token is not the refund Tariff asked for."""


@dataclass(frozen=True, slots=True)
class AskedRefund:
    """A refund as Tariff asked PayU for it: what PayU's record of it must match."""

    token: str
    mihpayid: str
    amount: Decimal
    request_id: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AskedRefund:
        """From a refunds row joined with its payment's mihpayid (request_refund, refunds(), callbacks)."""
        return cls(
            token=str(row["token"]),
            mihpayid=str(row.get("mihpayid") or ""),
            amount=Decimal(str(row["amount_text"])),
            request_id=str(row.get("request_id") or "") or None,
        )


def _differences(state: RefundStatus, asked: AskedRefund) -> list[str]:
    expected = (
        ("action", state.action, "refund"),
        ("token", state.token, asked.token),
        ("mihpayid", state.mihpayid, asked.mihpayid),
        ("amount", state.amount, asked.amount),
        ("request id", state.request_id, asked.request_id or state.request_id),
    )
    return [f"{name} {got or '-'} (Tariff's: {want})" for name, got, want in expected if got != want]


def find_at_payu(client: PayUClient, asked: AskedRefund) -> RefundStatus | None:
    """PayU's record of this refund (by its request id, else by its token), or None when PayU has none.

    Raises RefundMismatchError when PayU's record under that request id or token differs from the refund
    Tariff asked for: a forged callback or a mixed-up id must never settle (or pay out) a refund.
    """
    if asked.request_id:
        found = [s for s in client.check_action_status(asked.request_id) if s.request_id == asked.request_id]
    elif asked.mihpayid:
        found = [s for s in client.check_action_status_by_mihpayid(asked.mihpayid) if s.token == asked.token]
    else:
        return None
    if not found:
        return None
    _check_ours(found[0], asked)
    return found[0]


def _check_ours(state: RefundStatus, asked: AskedRefund) -> None:
    differences = _differences(state, asked)
    if differences:
        raise RefundMismatchError(
            f"PayU's refund {state.request_id or '-'} is not Tariff's refund {asked.token}: "
            + ", ".join(differences),
            MISMATCH_FIX,
            code="refund_mismatch",
        )


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


def _record_refusal(engine: Engine, schema: str, refund_id: int, exc: PayUError) -> None:
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


def _pending(opened: Mapping[str, Any], exc: PayUError) -> RefundPendingError:
    what = f"the refund of {opened['amount_text']} {opened['currency']} on {opened['txnid']}"
    if isinstance(exc, PayUNetworkError):
        said = f"PayU did not answer {what}: {exc.message}"
    else:
        said = f"PayU's answer to {what} does not say whether it made it ({exc.message})"
    token = opened["token"]
    return RefundPendingError(
        f"{said}; it is recorded as requested (not failed) under token {token}",
        f"run the same command again (it resends token {token}, which PayU never refunds twice), "
        "or tariff payu refunds --poll",
        code="refund_pending",
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
    if not opened.get("mihpayid"):
        raise PayUError(
            f"payment {txnid} has no PayU id (mihpayid), so PayU cannot refund it",
            "run tariff payu reconcile to read it from PayU",
            code="no_mihpayid",
        )
    asked = AskedRefund.from_row(opened)
    try:
        answer = client.cancel_refund_transaction(asked.mihpayid, asked.token, asked.amount, callback_url)
    except (PayUNetworkError, PayUUnclearAnswerError) as exc:
        raise _pending(opened, exc) from exc
    except PayUError as exc:
        _record_refusal(engine, schema, refund_id, exc)
        raise
    state = RefundStatus(
        request_id=answer.request_id,
        mihpayid=answer.mihpayid,
        status="QUEUED",
        amount=answer.amount,
        token=asked.token,
        bank_ref_num=answer.bank_ref_num,
        raw={"request_id": answer.request_id, "msg": answer.message, "error_code": answer.error_code},
    )
    if answer.recovered:
        state = find_at_payu(client, replace(asked, request_id=answer.request_id)) or state
    return {**_record_status(engine, schema, refund_id, state, "refund"), "recovered": answer.recovered}


def _poll_one(engine: Engine, schema: str, client: PayUClient, row: dict[str, Any]) -> dict[str, Any]:
    try:
        state = find_at_payu(client, AskedRefund.from_row(row))
        if state is None or not state.status:
            return {**row, "changed": False}
        return _record_status(engine, schema, int(row["id"]), state, "reconcile")
    except PayUNetworkError:
        raise  # PayU is unreachable for every refund alike: stop and say so once
    except (PayUError, PaymentError) as exc:
        # One refund PayU reports in a state Tariff does not know (or that is not Tariff's) must not keep
        # every other refund from being read: report it with the refund and go on.
        return {**row, "changed": False, "problem": exc.message}


def poll(engine: Engine, schema: str, client: PayUClient) -> list[dict[str, Any]]:
    """Read every unsettled refund's state from PayU and record it; returns the refunds after the poll.

    A refund that could not be updated comes back unchanged with `problem` saying why.
    """
    with engine.begin() as conn:
        open_refunds = refunds(conn, schema, open_only=True)
    return [_poll_one(engine, schema, client, row) for row in open_refunds]


def withdraw(
    engine: Engine,
    schema: str,
    client: PayUClient,
    token: str,
    reason: str,
    actor: str | None = None,
    at: datetime | None = None,
) -> dict[str, Any]:
    """Give up an unanswered refund (requested, no request id) that is no longer wanted, freeing its amount.

    PayU must first show that it has no refund under the token: its list of the payment's actions has to
    include the payment itself (so the answer is about this payment, not an error or an empty reply) and
    nothing under the token. When PayU has an action under the token, what it says is recorded (the refund
    moves on as a poll would move it) and nothing is withdrawn; when PayU cannot be reached or does not
    list the payment, nothing changes. The database then checks again under the refund's lock
    (withdraw_refund, migration 0031).
    """
    with engine.begin() as conn:
        found = refunds(conn, schema, token=token)
    if found and found[0]["status"] == "requested" and not found[0].get("request_id"):
        _show_none_at_payu(engine, schema, client, found[0])
    with engine.begin() as conn:
        return withdraw_refund(conn, schema, token, reason, actor, at)


def _show_none_at_payu(engine: Engine, schema: str, client: PayUClient, row: dict[str, Any]) -> None:
    """Raise unless PayU's answer about the refund's payment positively shows no action under its token."""
    asked = AskedRefund.from_row(row)
    what = f"refund {asked.token} of {row['amount_text']} {row['currency']} on {row['txnid']}"
    if not asked.mihpayid:
        return  # PayU never knew the payment by its id, so no refund of it can have been sent (refund())
    actions = client.check_action_status_by_mihpayid(asked.mihpayid)
    if not any(a.action == "capture" for a in actions):
        raise PayUUnclearAnswerError(
            f"PayU's answer does not list payment {asked.mihpayid} itself, so it cannot show that {what} "
            "was never made; nothing was withdrawn",
            "try again later; if PayU keeps answering so, compare with PayU's dashboard first",
            code="refund_unproven",
        )
    mine = [a for a in actions if a.action != "capture" and a.token == asked.token]
    if not mine:
        return
    state = mine[0]
    _check_ours(state, asked)
    done = "left it requested"
    if state.status:
        recorded = _record_status(engine, schema, int(row["id"]), state, "reconcile")
        done = f"recorded it as {recorded['status']}"
    raise RefundAtPayUError(
        f"PayU has {what} ({state.status or 'no status given'}, request {state.request_id or '-'}): "
        f"{done} instead of withdrawing it",
        "follow it to its end with tariff payu refunds --poll",
        code="refund_at_payu",
    )
