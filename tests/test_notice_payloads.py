"""The notices the database writes render with their figures: each payload as its SQL writer stores it
(a failed payment, a dunning reminder and its last notice, a low balance), through the shipped templates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from database import ledger
from database.automation import run_tick
from database.payments import checkout, run_dunning, settle
from publishers.notify.context import Recipient
from publishers.notify.deliver import render_notification
from publishers.notify.render import Message
from tests.ledger_support import S, add_customer, publish_shipped
from tests.notify_support import shipped_catalog
from tests.payment_support import AT, add_buyer


@pytest.fixture
def shop(engine: Engine) -> Engine:
    publish_shipped(engine)
    return engine


def _rendered(engine: Engine, kind: str) -> list[Message]:
    with engine.begin() as conn:
        rows = conn.execute(
            sa.text(f"SELECT customer_id, payload FROM {S}.notifications WHERE kind = :kind ORDER BY id"),
            {"kind": kind},
        ).all()
    catalog = shipped_catalog()
    return [
        render_notification(catalog, kind, payload, Recipient(customer, f"{customer}@example.in", "IN"))
        for customer, payload in rows
    ]


def _settle(engine: Engine, pay: dict[str, Any], status: str, **kw: Any) -> None:
    with engine.begin() as conn:
        settle(conn, S, str(pay["txnid"]), status, amount=str(pay["amount_text"]), **kw)


def test_a_failed_payment_names_the_amount_the_item_and_the_providers_reason(shop: Engine) -> None:
    add_buyer(shop, "asha", plan="pro")
    with shop.begin() as conn:
        pay = checkout(conn, S, "asha", {"package": "extra-500"}, at=AT)
    _settle(shop, pay, "failure", error="Bank declined the card", at=AT)
    [message] = _rendered(shop, "payment_failed")
    assert "₹1,768.82" in message.subject
    assert "₹1,768.82" in message.text and str(pay["productinfo"]) in message.text
    assert "The payment provider said: Bank declined the card." in message.text


def test_dunning_notices_name_the_amount_and_the_day_service_lapses(shop: Engine) -> None:
    add_buyer(shop, "asha")
    with shop.begin() as conn:
        first = checkout(conn, S, "asha", {"plan": "pro", "cycle": "monthly"}, at=AT)
    _settle(shop, first, "success", verified=True, at=AT)
    later = AT + timedelta(days=30)
    with shop.begin() as conn:
        renewal = checkout(conn, S, "asha", {"plan": "pro", "cycle": "monthly"}, at=later)
    _settle(shop, renewal, "failure", at=later)
    with shop.begin() as conn:
        run_dunning(conn, S, later + timedelta(days=1, minutes=1))
        run_dunning(conn, S, later + timedelta(days=20))
        grace = conn.execute(sa.text(f"SELECT grace_ends_at FROM {S}.dunning_cases")).scalar_one()
    failed, reminder, lapsed = _rendered(shop, "payment_failed")
    assert "₹1,768.82" in failed.subject
    # The reminder names what the renewal charges (price + 18% GST), as the failed payment did.
    assert "₹1,768.82" in reminder.subject and "Pro" in reminder.text
    # The reminder speaks of the grace period, and its case's reason is not passed off as the provider's.
    assert f"stays active until {grace.astimezone(AT.tzinfo).day} " in reminder.text
    assert "provider said" not in reminder.text
    assert lapsed.subject.endswith("payment did not go through") and "****" not in lapsed.text


def test_a_low_balance_alert_shows_the_credits_left(shop: Engine) -> None:
    add_customer(shop, "pro1", "pro")
    start = datetime(2026, 1, 1, tzinfo=UTC)  # the first day of its plan's period
    with shop.begin() as conn:
        run_tick(conn, S, start)
        allowance = ledger.account_summary(conn, S, "pro1", at=start)["balance"]
        ledger.revoke(conn, S, "pro1", allowance - 1, reason="test", at=start + timedelta(hours=1))
        run_tick(conn, S, start + timedelta(hours=2))
    messages = _rendered(shop, "low_balance")
    assert messages, "no low-balance alert was written"
    assert all("You have 1 " in m.subject and "down to **1**" in m.text for m in messages)
