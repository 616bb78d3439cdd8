"""Performing the PayU actions `tariff apply` recorded for subscribers on e-mandates (table payu_actions).

pre_debit    PayU's pre-debit notification with the new amount and the debit date (pre_debit_SI)
new_mandate  the new price is above the mandate's maximum: PayU cannot debit it, so the customer was asked
             (a `mandate_required` notification, queued by apply) to authorise a new mandate

An action PayU could not be reached for stays pending and is tried again on the next run; one PayU refused
is marked failed with PayU's message.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from database.connection import quote_schema
from publishers.payu.client import PayUClient
from publishers.payu.errors import PayUError, PayUNetworkError


def perform_actions(engine: Engine, schema: str, client: PayUClient) -> dict[str, Any]:
    """Perform every pending action; returns counts {done, failed, pending}."""
    s = quote_schema(schema)
    with engine.begin() as conn:
        pending = [
            dict(r)
            for r in conn.execute(
                sa.text(
                    f"SELECT pa.id, pa.kind, pa.amount_minor, pa.debit_on, m.authpayuid, c.minor_units "
                    f"FROM {s}.payu_actions pa JOIN {s}.mandates m ON m.id = pa.mandate_id "
                    f"JOIN {s}.currencies c ON c.code = pa.currency "
                    "WHERE pa.status = 'pending' ORDER BY pa.id"
                )
            ).mappings()
        ]
    counts = {"done": 0, "failed": 0, "pending": 0}
    for action in pending:
        status, detail, request_id = "done", None, None
        if action["kind"] == "pre_debit":
            request_id = f"PD{action['id']}"
            try:
                notice = client.pre_debit_si(
                    str(action["authpayuid"]),
                    request_id,
                    action["debit_on"],
                    Decimal(int(action["amount_minor"])).scaleb(-int(action["minor_units"])),
                )
                detail = notice.message or None
            except PayUNetworkError:
                counts["pending"] += 1
                continue
            except PayUError as exc:
                status, detail = "failed", exc.message
        else:
            detail = "the customer was asked to authorise a new mandate"
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"UPDATE {s}.payu_actions SET status = :status, detail = :detail, "
                    "request_id = :request_id, done_at = now() WHERE id = :id AND status = 'pending'"
                ),
                {"status": status, "detail": detail, "request_id": request_id, "id": action["id"]},
            )
        counts[status] += 1
    return counts
