"""What a price change means for subscribers who pay by PayU e-mandate (standing instruction).

A mandate authorises debits up to a maximum. For every subscriber a price change reaches (the grandfathering
query of grandfather.py) who has an active mandate, the amount the new price will debit — with the region's
tax added when prices exclude it — either exceeds the maximum (PayU cannot debit it: the customer must
authorise a new mandate) or fits (the next pre-debit notification must carry the new amount, before the
debit on the date the new price applies). `plan` counts these; `apply` records them as `payu_actions` in the
same transaction, with the debit's date; `tariff tick` sends each pre-debit notice through PayU in the window
before its debit (publishers/payu/mandates.py), and a new mandate the customer authorises resolves the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from publishers.postgres.grandfather import affected_sql


@dataclass(frozen=True, slots=True)
class MandateImpact:
    """Subscribers on e-mandates a plan reaches: who needs a new mandate, who gets a new pre-debit amount."""

    new_mandates: int
    pre_debits: int
    subscriptions: tuple[dict[str, Any], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "new_mandates": self.new_mandates,
            "pre_debits": self.pre_debits,
            "subscriptions": list(self.subscriptions),
        }


def mandate_sql(s: str, affected: str | None = None) -> str:
    """One row per reached subscription with an active mandate: the action it needs and the amount.

    `affected`: the reached subscriptions as a query, when the caller computed them already (apply does,
    before it reschedules their migrations, after which the grandfathering query no longer finds them).
    """
    return f"""
WITH affected AS ({affected or affected_sql(s)}),
debits AS (
    SELECT a.subscription_id, a.customer_id, a.new_minor, a.effective_at, m.id AS mandate_id,
           m.max_amount_minor, m.currency,
           -- The first debit at the new price: the renewal at or after the change (a change that applies
           -- at once still debits the new amount only when the current period ends).
           greatest(a.effective_at, sub.current_period_end) AS debit_at,
           CASE WHEN r.tax_percent > 0 AND NOT r.tax_inclusive
                THEN a.new_minor + {s}.round_minor(a.new_minor * r.tax_percent / 100, c.rounding)
                ELSE a.new_minor END AS debit_minor
      FROM affected a
      JOIN {s}.subscriptions sub ON sub.id = a.subscription_id
      JOIN {s}.mandates m ON m.subscription_id = a.subscription_id AND m.status = 'active'
      JOIN {s}.currencies c ON c.code = a.currency
      LEFT JOIN {s}.regions r ON r.code = sub.region
     WHERE a.effective_at IS NOT NULL AND a.direction <> 'same' AND m.currency = a.currency
)
SELECT subscription_id, customer_id, mandate_id, currency, debit_minor, max_amount_minor, effective_at,
       debit_at, CASE WHEN debit_minor > max_amount_minor THEN 'new_mandate' ELSE 'pre_debit' END AS kind
  FROM debits
 ORDER BY subscription_id
"""


def mandate_impact(conn: Connection, s: str, params: dict[str, Any]) -> MandateImpact:
    rows = [dict(r) for r in conn.execute(sa.text(mandate_sql(s)), params).mappings()]
    return MandateImpact(
        sum(1 for r in rows if r["kind"] == "new_mandate"),
        sum(1 for r in rows if r["kind"] == "pre_debit"),
        tuple(
            {
                "subscription": r["subscription_id"],
                "customer": r["customer_id"],
                "action": r["kind"],
                "currency": r["currency"],
                "debit_minor": int(r["debit_minor"]),
                "mandate_max_minor": int(r["max_amount_minor"]),
                "effective_at": r["effective_at"].isoformat() if r["effective_at"] else None,
            }
            for r in rows
        ),
    )


def record_actions(
    conn: Connection,
    s: str,
    params: dict[str, Any],
    revision_id: int,
    channel: str,
    affected: str | None = None,
) -> int:
    """Record the PayU actions of an apply (idempotent), and tell customers who must sign a new mandate.

    A notice not sent yet for the same subscription and mandate is superseded: the customer is told one
    amount per debit, the one this apply schedules.
    """
    actions = mandate_sql(s, affected)
    conn.execute(
        sa.text(
            f"UPDATE {s}.payu_actions pa SET status = 'skipped', done_at = now(), "
            "detail = 'superseded by revision ' || :rev "
            f"FROM ({actions}) x WHERE pa.kind = 'pre_debit' AND pa.status = 'pending' "
            "AND pa.subscription_id = x.subscription_id AND pa.mandate_id = x.mandate_id "
            "AND pa.amount_minor <> x.debit_minor"
        ),
        {**params, "rev": revision_id},
    )
    recorded = conn.execute(
        sa.text(
            f"INSERT INTO {s}.payu_actions (kind, subscription_id, mandate_id, revision_id, amount_minor, "
            f"currency, debit_on, debit_at) SELECT kind, subscription_id, mandate_id, :rev, debit_minor, "
            # The debit's date where PayU debits: the catalog's time zone, not the session's.
            f"currency, CAST(debit_at AT TIME ZONE (SELECT timezone FROM {s}.catalog_state) AS date), "
            "debit_at "
            f"FROM ({actions}) x "
            "ON CONFLICT (kind, subscription_id, mandate_id, amount_minor) DO NOTHING"
        ),
        {**params, "rev": revision_id},
    ).rowcount
    conn.execute(
        sa.text(
            f"INSERT INTO {s}.notifications (kind, customer_id, channel, payload, idempotency_key) "
            "SELECT 'mandate_required', sub.customer_id, :channel, jsonb_build_object("
            "'subscription', pa.subscription_id, 'amount_minor', pa.amount_minor, 'currency', pa.currency, "
            "'from', pa.debit_on), 'mandate-required:' || pa.id "
            f"FROM {s}.payu_actions pa JOIN {s}.subscriptions sub ON sub.id = pa.subscription_id "
            "WHERE pa.revision_id = :rev AND pa.kind = 'new_mandate' "
            "ON CONFLICT (idempotency_key) DO NOTHING"
        ),
        {"rev": revision_id, "channel": channel},
    )
    return int(recorded or 0)
