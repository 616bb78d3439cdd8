"""Fixtures shared by the payment tests: the shipped catalog published, customers with an email address."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.ledger_support import S

AT = datetime.fromisoformat("2026-11-20T10:00:00+05:30")  # WELCOME20 and the launch codes are live


def add_buyer(engine: Engine, customer: str, *, country: str = "IN", plan: str | None = None) -> None:
    """A registered customer with email and phone, optionally on `plan` (monthly, paid outside PayU)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"SELECT {S}.register_customer(p_id => :id, p_email => :email, p_country => :country, "
                "p_attributes => CAST(:attrs AS jsonb))"
            ),
            {
                "id": customer,
                "email": f"{customer}@example.in",
                "country": country,
                "attrs": '{"name": "Asha Rao", "phone": "9876543210"}',
            },
        )
        if plan is not None:
            conn.execute(
                sa.text(
                    f"SELECT {S}.register_subscription(p_customer_id => :id, p_plan_id => :plan, "
                    "p_cycle => 'monthly', p_current_period_start => '2026-11-01T00:00:00Z', "
                    "p_current_period_end => '2026-12-01T00:00:00Z')"
                ),
                {"id": customer, "plan": plan},
            )


def scalar(engine: Engine, query: str, **params: Any) -> Any:
    with engine.begin() as conn:
        return conn.execute(sa.text(query), params).scalar()


def balance(engine: Engine, customer: str) -> int:
    return int(
        scalar(
            engine,
            f"SELECT coalesce(max(balance), 0) FROM {S}.token_accounts WHERE customer_id = :c",
            c=customer,
        )
    )
