"""Reconciliation: Tariff's payments against what PayU says about them.

Pending payments and payments changed since a moment are verified with PayU (`verify_payment`, in batches),
and every disagreement is reported:

  paid_at_payu      PayU captured it, Tariff still has it pending/failed/expired   fix: settle as success
  failed_at_payu    PayU failed it, Tariff has it pending                          fix: settle as failure
  not_at_payu       PayU never saw it, pending here for over an hour               fix: mark expired, giving
                                                                                   back its promotion places
  amount_differs    PayU's amount is not the amount Tariff charged                 never fixed automatically
  status_differs    Tariff has it paid, PayU does not                              never fixed automatically
  fulfilment_failed paid, but granting what was bought failed                      fix: fulfil it again
                    (payments.fulfilment_error)
  discount_not_redeemed  paid at a promotion's price whose place it had given back (a failure before the
                    success) and could not take again: the customer kept the discount    never fixed
  unknown_txnid     PayU reported a txnid Tariff never issued

`fix` applies only the safe corrections; they go through the same idempotent settle_payment as webhooks.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from database.connection import quote_schema
from database.payments import expire, payments, retry_fulfilment, settle
from publishers.payu.client import PayUClient

BATCH = 50
STALE = timedelta(hours=1)


def _amount(minor: int, units: int = 2) -> Decimal:
    return Decimal(minor).scaleb(-units)


def reconcile(
    conn: Connection,
    schema: str,
    client: PayUClient,
    since: datetime,
    now: datetime,
    fix: bool = False,
) -> dict[str, Any]:
    """Compare, report and (with `fix`) correct; returns {checked, mismatches, fixed}."""
    s = quote_schema(schema)
    pending = payments(conn, schema, status="pending", limit=10_000)
    recent = payments(conn, schema, since=since, limit=10_000)
    rows = {r["txnid"]: r for r in [*pending, *recent]}
    units: dict[str, int] = dict(conn.execute(sa.text(f"SELECT code, minor_units FROM {s}.currencies")).all())
    mismatches: list[dict[str, Any]] = []
    fixed = 0
    txnids = sorted(rows)
    for start in range(0, len(txnids), BATCH):
        found = client.verify_payment(txnids[start : start + BATCH])
        for txnid, tx in found.items():
            row = rows[txnid]
            ours = _amount(int(row["amount_minor"]), int(units.get(row["currency"], 2)))
            here = str(row["status"])
            issue: str | None = None
            safe = False
            if tx.found and tx.amount is not None and tx.amount != ours:
                issue = "amount_differs"
            elif tx.succeeded and here in ("pending", "failure", "expired"):
                issue, safe = "paid_at_payu", True
            elif tx.status == "failure" and here == "pending":
                issue, safe = "failed_at_payu", True
            elif not tx.found and here == "pending":
                created = datetime.fromisoformat(str(row["created_at"]))
                if now - created > STALE:
                    issue, safe = "not_at_payu", True
            elif here in ("success", "partially_refunded", "refunded") and tx.found and not tx.succeeded:
                issue = "status_differs"
            elif row.get("fulfilment_error"):
                issue, safe = "fulfilment_failed", here == "success"
            if issue is None:
                continue
            entry = {
                "txnid": txnid,
                "issue": issue,
                "tariff_status": here,
                "payu_status": tx.status,
                "tariff_amount": f"{ours}",
                "payu_amount": None if tx.amount is None else f"{tx.amount}",
                "detail": row.get("fulfilment_error"),
                "fixable": safe,
                "fixed": False,
            }
            if fix and safe:
                if issue == "not_at_payu":
                    expire(conn, schema, txnid, at=now)
                elif issue == "fulfilment_failed":
                    retried = retry_fulfilment(conn, schema, txnid, at=now)
                    if retried["outcome"] != "applied":
                        entry["detail"] = retried.get("detail") or entry["detail"]
                        mismatches.append(entry)
                        continue
                else:
                    settle(
                        conn,
                        schema,
                        txnid,
                        tx.status,
                        mihpayid=tx.mihpayid,
                        amount=None if tx.amount is None else f"{tx.amount}",
                        source="reconcile",
                        payload=dict(tx.raw),
                        verified=tx.succeeded,
                        error=tx.error_message or tx.field9,
                        mode=tx.mode,
                    )
                entry["fixed"] = True
                fixed += 1
            mismatches.append(entry)
    unknown = conn.execute(
        sa.text(
            f"SELECT DISTINCT txnid FROM {s}.payment_events WHERE outcome = 'unknown_txnid' "
            "AND received_at >= :since ORDER BY txnid"
        ),
        {"since": since},
    ).scalars()
    for txnid in unknown:
        mismatches.append(
            {
                "txnid": txnid,
                "issue": "unknown_txnid",
                "tariff_status": None,
                "payu_status": None,
                "tariff_amount": None,
                "payu_amount": None,
                "detail": "PayU reported a payment Tariff never issued",
                "fixable": False,
                "fixed": False,
            }
        )
    unredeemed = conn.execute(
        sa.text(
            f"SELECT txnid, status, amount_minor, currency FROM {s}.payments "
            "WHERE redemption_status = 'refused' AND discount_minor > 0 AND updated_at >= :since "
            "ORDER BY txnid"
        ),
        {"since": since},
    ).all()
    for txnid, status, amount_minor, currency in unredeemed:
        mismatches.append(
            {
                "txnid": txnid,
                "issue": "discount_not_redeemed",
                "tariff_status": status,
                "payu_status": None,
                "tariff_amount": f"{_amount(int(amount_minor), int(units.get(currency, 2)))}",
                "payu_amount": None,
                "detail": "paid at a promotion's price after giving its place back; the promotion was full",
                "fixable": False,
                "fixed": False,
            }
        )
    return {"checked": len(txnids), "since": since.isoformat(), "mismatches": mismatches, "fixed": fixed}
