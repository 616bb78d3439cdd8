"""Pre-debit notices for subscribers on e-mandates, sent close to their debit (table payu_actions).

`tariff apply` records a `pre_debit` action for every mandate subscriber whose next debit carries a new
price, with the debit's date (`debit_at`). PayU (and RBI) want the notice, with the amount, at least 24 hours
before the debit; Tariff sends it when the window opens, `payments.mandates.pre_debit_notice` before the
debit. `send_due_pre_debits` is what `tariff tick` runs after its transaction commits:

1. in one short transaction: notices whose mandate was replaced or revoked are `skipped`; notices still
   unsent 24 hours before their debit are `failed` (the debit cannot be made on that date); due ones
   (window open, retry time reached) are leased — status `sending`, a token and an expiry — with
   FOR UPDATE SKIP LOCKED, so concurrent runs never send the same notice;
2. with no transaction open, each leased notice goes to PayU (`pre_debit_SI`, requestId `PD<id>`);
3. PayU's answer is recorded under the lease token: `done` with the answer, or back to `pending` with the
   error and a retry time (1 minute, doubling, at most an hour) for the next tick.

A sender that dies mid-send leaves a lease that expires; the next run sends again with the same requestId,
and PayU's "duplicate requestId" then means the first attempt got through. `new_mandate` actions wait for
the customer: a mandate authorised through `tariff payu checkout --mandate` resolves them (migration 0016).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from database.connection import quote_schema
from publishers.payu.client import PayUClient
from publishers.payu.errors import PayUError

# PayU's minimum: a notice must reach the customer this long before the debit.
MIN_NOTICE = timedelta(hours=24)
LEASE = timedelta(minutes=10)
FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY = timedelta(hours=1)
BATCH = 100
ACTION_STATUSES = ("pending", "sending", "done", "failed", "skipped")
ACTION_KINDS = ("pre_debit", "new_mandate")


def retry_delay(attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed send: 1 minute, doubling, at most an hour."""
    delay: timedelta = FIRST_RETRY * 2 ** max(attempts - 1, 0)
    return min(delay, MAX_RETRY)


# When the announced debit happens (rows recorded before migration 0016 have only its date).
DEBIT_AT = "coalesce(pa.debit_at, CAST(pa.debit_on AS timestamptz))"


def _settle_stale(conn: Connection, s: str, at: datetime) -> dict[str, int]:
    """Skip notices whose mandate is gone; fail those that can no longer go out 24 hours ahead.

    Rows another sender holds are left to it (SKIP LOCKED), so concurrent runs neither wait nor deadlock.
    """
    open_rows = (
        f"SELECT pa.id FROM {s}.payu_actions pa JOIN {s}.mandates m ON m.id = pa.mandate_id "
        "WHERE pa.kind = 'pre_debit' "
        "AND (pa.status = 'pending' OR (pa.status = 'sending' AND pa.lease_until <= clock_timestamp())) AND "
    )
    skipped = conn.execute(
        sa.text(
            f"UPDATE {s}.payu_actions pa SET status = 'skipped', done_at = :at, lease_token = NULL, "
            "lease_until = NULL, detail = 'mandate ' || coalesce(m.authpayuid, '?') || ' is ' || m.status "
            "|| ': the notice is not needed' "
            f"FROM {s}.mandates m WHERE m.id = pa.mandate_id AND pa.id IN ("
            f"{open_rows} m.status <> 'active' ORDER BY pa.id FOR UPDATE OF pa SKIP LOCKED)"
        ),
        {"at": at},
    ).rowcount
    failed = conn.execute(
        sa.text(
            f"UPDATE {s}.payu_actions pa SET status = 'failed', done_at = :at, lease_token = NULL, "
            "lease_until = NULL, detail = 'not sent 24 hours before the debit on ' || pa.debit_on "
            "|| ', so PayU cannot debit this amount then' "
            "|| coalesce(' (last error: ' || pa.detail || ')', '') "
            f"WHERE pa.id IN ({open_rows} {DEBIT_AT} - :min_notice < :at "
            "ORDER BY pa.id FOR UPDATE OF pa SKIP LOCKED)"
        ),
        {"at": at, "min_notice": MIN_NOTICE},
    ).rowcount
    return {"skipped": int(skipped or 0), "expired": int(failed or 0)}


# The previous attempt may have reached PayU: its sender's lease ran out, or the network failed.
_UNKNOWN = "(due.was = 'sending' OR pa.response->>'code' = 'network')"


def _claim(conn: Connection, s: str, at: datetime, token: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    return [
        dict(r)
        for r in conn.execute(
            sa.text(
                f"WITH due AS (SELECT pa.id, pa.status AS was FROM {s}.payu_actions pa "
                f"JOIN {s}.mandates m ON m.id = pa.mandate_id CROSS JOIN {s}.payment_rules r "
                "WHERE pa.kind = 'pre_debit' AND m.status = 'active' "
                "AND (pa.status = 'pending' "
                "OR (pa.status = 'sending' AND pa.lease_until <= clock_timestamp())) "
                f"AND {DEBIT_AT} - CAST(r.pre_debit_notice AS interval) <= :at "
                "AND (pa.next_attempt_at IS NULL OR pa.next_attempt_at <= :at) "
                "ORDER BY pa.debit_at, pa.id LIMIT :limit FOR UPDATE OF pa SKIP LOCKED) "
                # Leases are about live senders, so real time, whatever --now a tick runs at. When the
                # previous attempt may have reached PayU its request id is used again, and PayU's "duplicate"
                # answer then means sent; after a definite answer (a refusal) a retry is a new request.
                f"UPDATE {s}.payu_actions pa SET status = 'sending', lease_token = :token, "
                "lease_until = clock_timestamp() + :lease, attempts = pa.attempts + 1, "
                "last_attempt_at = :at, request_id = CASE "
                f"WHEN pa.request_id IS NOT NULL AND {_UNKNOWN} THEN pa.request_id "
                "WHEN pa.attempts = 0 THEN 'PD' || pa.id "
                "ELSE 'PD' || pa.id || '-' || (pa.attempts + 1) END "
                f"FROM due, {s}.mandates m, {s}.currencies c "
                "WHERE pa.id = due.id AND m.id = pa.mandate_id AND c.code = pa.currency "
                "RETURNING pa.id, pa.amount_minor, pa.currency, pa.debit_on, pa.attempts, pa.request_id, "
                f"{_UNKNOWN} AS outcome_unknown, m.authpayuid, c.minor_units"
            ),
            {"at": at, "token": token, "lease": LEASE, "limit": limit},
        ).mappings()
    ]


def _record(
    engine: Engine,
    s: str,
    action_id: int,
    token: uuid.UUID,
    at: datetime,
    *,
    done: bool,
    detail: str | None,
    response: dict[str, Any],
    request_id: str,
    attempts: int,
) -> bool:
    with engine.begin() as conn:
        changed = conn.execute(
            sa.text(
                f"UPDATE {s}.payu_actions SET status = CASE WHEN :done THEN 'done' ELSE 'pending' END, "
                "done_at = CASE WHEN :done THEN CAST(:at AS timestamptz) END, "
                "next_attempt_at = CASE WHEN :done THEN NULL ELSE CAST(:at AS timestamptz) + :delay END, "
                "detail = :detail, response = CAST(:response AS jsonb), request_id = :request_id, "
                "lease_token = NULL, lease_until = NULL "
                "WHERE id = :id AND status = 'sending' AND lease_token = :token"
            ),
            {
                "done": done,
                "at": at,
                "delay": retry_delay(attempts),
                "detail": detail,
                "response": json.dumps(response, default=str),
                "request_id": request_id,
                "id": action_id,
                "token": token,
            },
        ).rowcount
    return bool(changed)


def send_due_pre_debits(
    engine: Engine, schema: str, client: PayUClient, at: datetime, limit: int = BATCH
) -> dict[str, Any]:
    """Send the pre-debit notices that are due at `at`; returns what happened, with each error.

    Safe to run again and concurrently: each notice is leased to one sender and recorded once.
    """
    s = quote_schema(schema)
    token = uuid.uuid4()
    with engine.begin() as conn:
        stale = _settle_stale(conn, s, at)
        claimed = _claim(conn, s, at, token, limit)
    summary: dict[str, Any] = {"sent": 0, "failed": 0, **stale, "errors": []}
    for action in claimed:
        request_id = str(action["request_id"])
        amount = Decimal(int(action["amount_minor"])).scaleb(-int(action["minor_units"]))
        try:
            notice = client.pre_debit_si(str(action["authpayuid"]), request_id, action["debit_on"], amount)
        except PayUError as exc:
            if exc.code == "duplicate_request" and action["outcome_unknown"]:
                # An earlier attempt whose answer was lost reached PayU: the notice is out.
                done, detail, response = True, "sent by an earlier attempt (PayU: duplicate requestId)", {}
            else:
                done, detail, response = False, exc.message, exc.to_json()
        else:
            done, detail, response = True, notice.message or "sent", dict(notice.raw)
        _record(
            engine,
            s,
            int(action["id"]),
            token,
            at,
            done=done,
            detail=detail,
            response=response,
            request_id=request_id,
            attempts=int(action["attempts"]),
        )
        if done:
            summary["sent"] += 1
        else:
            summary["failed"] += 1
            summary["errors"].append({"action": int(action["id"]), "error": detail})
    with engine.begin() as conn:
        summary["pending"] = int(
            conn.execute(
                sa.text(
                    f"SELECT count(*) FROM {s}.payu_actions WHERE kind = 'pre_debit' "
                    "AND status IN ('pending', 'sending')"
                )
            ).scalar_one()
        )
    return summary


def pending_pre_debits(conn: Connection, schema: str) -> int:
    """Pre-debit notices not sent yet (what tick reports when the environment has no PayU settings)."""
    return int(
        conn.execute(
            sa.text(
                f"SELECT count(*) FROM {quote_schema(schema)}.payu_actions WHERE kind = 'pre_debit' "
                "AND status IN ('pending', 'sending')"
            )
        ).scalar_one()
    )


def list_actions(
    conn: Connection, schema: str, *, status: str | None = None, kind: str | None = None
) -> list[dict[str, Any]]:
    """PayU actions with their subscription, customer, mandate and send window, oldest debit first."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            "SELECT pa.id, pa.kind, pa.status, pa.subscription_id, sub.customer_id, m.authpayuid, "
            "pa.amount_minor, pa.currency, c.minor_units, pa.debit_on, pa.debit_at, "
            f"{DEBIT_AT} - CAST(r.pre_debit_notice AS interval) AS send_from, "
            f"{DEBIT_AT} - :min_notice AS send_by, pa.attempts, pa.next_attempt_at, "
            "pa.last_attempt_at, pa.request_id, pa.detail, pa.response, pa.created_at, pa.done_at "
            f"FROM {s}.payu_actions pa JOIN {s}.subscriptions sub ON sub.id = pa.subscription_id "
            f"JOIN {s}.mandates m ON m.id = pa.mandate_id JOIN {s}.currencies c ON c.code = pa.currency "
            f"CROSS JOIN {s}.payment_rules r "
            "WHERE (CAST(:status AS text) IS NULL OR pa.status = :status) "
            "AND (CAST(:kind AS text) IS NULL OR pa.kind = :kind) "
            "ORDER BY pa.debit_at NULLS LAST, pa.id"
        ),
        {"status": status, "kind": kind, "min_notice": MIN_NOTICE},
    ).mappings()
    return [dict(r) for r in rows]


def list_mandates(conn: Connection, schema: str, *, customer: str | None = None) -> list[dict[str, Any]]:
    """E-mandates, newest first, with their consent payment's txnid."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            "SELECT m.id, m.customer_id, m.subscription_id, m.authpayuid, m.status, m.currency, "
            "m.max_amount_minor, c.minor_units, m.billing_cycle, m.billing_interval, m.billing_rule, "
            "m.starts_on, m.ends_on, p.txnid AS consent_txnid, m.created_at "
            f"FROM {s}.mandates m JOIN {s}.currencies c ON c.code = m.currency "
            f"LEFT JOIN {s}.payments p ON p.id = m.consent_payment "
            "WHERE CAST(:customer AS text) IS NULL OR m.customer_id = :customer "
            "ORDER BY m.created_at DESC, m.id DESC"
        ),
        {"customer": customer},
    ).mappings()
    return [dict(r) for r in rows]
