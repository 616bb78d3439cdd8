"""Who counts as a paying ("existing") customer for new-customer promotions (migration 0026): a trial that
was canceled or ran out does not, a subscription that was ever paying does, and `tariff plan`'s eligibility
count judges by the same rule as checkout."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from database.promotions import Item, promotion_impact, quote
from tests.promo_support import DIWALI, PUBLISHED_AT, SCHEMA, customers, publish

NEW_ONLY = "diwali-2026"  # eligibility: customers: new
TRIAL_END = datetime.fromisoformat("2026-10-08T00:00:00+00:00")


def _subscribe(conn: Connection, customer: str, status: str, **extra: object) -> None:
    conn.execute(
        sa.text(
            f"SELECT {SCHEMA}.register_subscription(p_customer_id => :customer, p_plan_id => 'pro', "
            "p_cycle => 'monthly', p_status => :status, p_id => :id, "
            "p_current_period_start => CAST(:start AS timestamptz), "
            "p_trial_end => CAST(:trial AS timestamptz))"
        ),
        {"customer": customer, "status": status, "id": f"sub_{customer}", "start": PUBLISHED_AT, **extra},
    )


def _gets_offer(conn: Connection, customer: str) -> bool:
    found = quote(
        conn, SCHEMA, Item(plan="pro", cycle="annual"), customer_id=customer, region="IN", at=DIWALI
    )
    considered = found.promotion(NEW_ONLY)
    assert considered is not None
    return considered.applied


def test_only_customers_who_ever_paid_are_existing(engine: Engine) -> None:
    publish(engine)
    customers(
        engine, "fresh", "trial-canceled", "trial-ran-out", "paid-then-left", "imported-ended", "trialing"
    )
    with engine.begin() as conn:
        for status in ("trialing", "canceled"):
            _subscribe(conn, "trial-canceled", status, trial=TRIAL_END)
        for status in ("trialing", "expired"):
            _subscribe(conn, "trial-ran-out", status, trial=TRIAL_END)
        for status in ("trialing", "active", "canceled"):
            _subscribe(conn, "paid-then-left", status, trial=TRIAL_END)
        _subscribe(conn, "imported-ended", "canceled", trial=None)
        _subscribe(conn, "trialing", "trialing", trial=TRIAL_END)

        offered = {
            customer: _gets_offer(conn, customer)
            for customer in (
                "fresh",
                "trial-canceled",
                "trial-ran-out",
                "paid-then-left",
                "imported-ended",
                "trialing",
            )
        }
        assert offered == {
            "fresh": True,
            "trial-canceled": True,
            "trial-ran-out": True,
            "paid-then-left": False,
            "imported-ended": False,
            "trialing": True,
        }
        # `tariff plan` counts the same customers as eligible (new, in India) as checkout would offer it to.
        impact = promotion_impact(conn, SCHEMA, [NEW_ONLY])
    assert impact[NEW_ONLY]["eligible_customers"] == sum(offered.values())
