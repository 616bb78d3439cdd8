"""`tariff tick` as a whole on real PostgreSQL, with an injected clock: rollover, boosts, low-balance alerts,
package renewal orders, promotion notices and grandfathering migrations, across day, month, period, expiry
and time-zone boundaries; idempotency (twice = once) and concurrent runs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.main import app
from database import automation, ledger
from database.automation import run_tick
from tests.ledger_support import S, add_customer, assert_ledger_consistent, publish_shipped

BETA_TESTER = "clx9a2b3c0001pg8h2k3m4n5o"  # listed in pricing/promotions/beta-testers.csv


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    """The shipped catalog (token rules in Asia/Kolkata, alerts at 20% and 5%) with `prem1` on Premium
    (1,000 credits a month, 50% rollover for a month), `pro1` on Pro (500 a month, no rollover) and `solo`
    without a plan; subscriptions run 2026-01-01 .. 2027-01-01 UTC."""
    publish_shipped(engine)
    add_customer(engine, "prem1", "premium")
    add_customer(engine, "pro1", "pro")
    add_customer(engine, "solo")
    yield engine
    assert_ledger_consistent(engine)


def tick(engine: Engine, when: datetime) -> dict[str, Any]:
    with engine.begin() as conn:
        steps: dict[str, Any] = run_tick(conn, S, at=when)["steps"]
        return steps


def changes(steps: dict[str, Any]) -> dict[str, Any]:
    """What a tick did, without the running totals that stay the same on a no-op run."""
    out: dict[str, Any] = {name: dict(result) for name, result in steps.items()}
    out["package_renewals"].pop("orders_pending")
    return out


NOTHING = {
    "rollover": {"rolled_over": 0, "credits": 0},
    "boosts": {"boosts_ended": 0, "credits_unused": 0},
    "ledger": {
        "reservations_released": 0,
        "grants_expired": 0,
        "credits_expired": 0,
        "allowances_granted": 0,
        "credits_granted": 0,
    },
    "low_balance": {"alerts": 0, "customers": 0},
    "package_renewals": {"orders_queued": 0},
    "promotions": {"started": [], "ended": [], "notifications": 0, "customers_notified": 0},
    "price_migrations": {"migrated": 0, "canceled": 0},
    "dunning": {"cases_opened": 0, "reminders_sent": 0, "cases_lapsed": 0, "open_cases": 0},
}


def assert_noop(steps: dict[str, Any]) -> None:
    result = changes(steps)
    for step in result.values():
        step.pop("at", None)
    assert result == NOTHING


def revoke(engine: Engine, customer: str, amount: int, when: datetime) -> None:
    with engine.begin() as conn:
        ledger.revoke(conn, S, customer, amount, reason="used", at=when)


def grants(engine: Engine, customer: str, source: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT g.amount, g.remaining, g.starts_at, g.expires_at, g.reference "
                f"FROM {S}.token_grants g "
                f"JOIN {S}.token_accounts a ON a.id = g.account_id "
                "WHERE a.customer_id = :c AND g.source = :s ORDER BY g.id"
            ),
            {"c": customer, "s": source},
        ).mappings()
        return [dict(r) for r in rows]


def notices(engine: Engine, kind: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT customer_id, channel, payload, idempotency_key FROM {S}.notifications "
                "WHERE kind = :k ORDER BY id"
            ),
            {"k": kind},
        ).mappings()
        return [dict(r) for r in rows]


# ------------------------------------------------------------------------------------------- rollover


def test_rollover_carries_capped_unused_allowance_once_per_period(db: Engine) -> None:
    tick(db, at("2026-01-10T00:00:00+00:00"))
    revoke(db, "prem1", 300, at("2026-01-20T00:00:00+00:00"))  # 700 of January's 1,000 left

    # One second before the period ends (05:29:59 IST on Feb 1st): nothing rolls yet.
    assert tick(db, at("2026-01-31T23:59:59+00:00"))["rollover"]["rolled_over"] == 0
    steps = tick(db, at("2026-02-01T00:00:00+00:00"))
    assert steps["rollover"] == {"rolled_over": 1, "credits": 500}  # 50% of the allowance, not all 700
    # prem1's 700 and pro1's untouched 500 lapse; both get February's allowance
    assert (steps["ledger"]["credits_expired"], steps["ledger"]["credits_granted"]) == (1200, 1500)
    rolled = grants(db, "prem1", "rollover")
    assert [(g["amount"], g["starts_at"], g["expires_at"]) for g in rolled] == [
        (500, at("2026-02-01T00:00:00+00:00"), at("2026-03-01T00:00:00+00:00"))  # expires_after: 1 month
    ]
    assert rolled[0]["reference"] == "rollover:" + grants(db, "prem1", "allowance")[0]["reference"]
    assert_noop(tick(db, at("2026-02-01T00:00:00+00:00")))  # twice = once
    assert_noop(tick(db, at("2026-02-15T00:00:00+00:00")))

    # Pro has no rollover rule: its unused allowance just expires.
    assert grants(db, "pro1", "rollover") == []

    # Rolled credits are drawn first (priority 50), so February's allowance is what is left to roll.
    revoke(db, "prem1", 600, at("2026-02-20T00:00:00+00:00"))  # 500 rolled + 100 of February's
    march = tick(db, at("2026-03-01T00:00:05+00:00"))
    assert march["rollover"] == {"rolled_over": 1, "credits": 500}  # 900 unused, capped at 50%
    assert march["ledger"]["credits_expired"] == 900 + 500
    with db.connect() as conn:
        assert ledger.account_summary(conn, S, "prem1", at=at("2026-03-02T00:00:00+00:00"))["usable"] == 1500


def test_rollover_respects_the_global_cap_and_ends_with_the_subscription(db: Engine) -> None:
    add_customer(db, "prem2", "premium")
    with db.begin() as conn:
        conn.execute(sa.text(f"UPDATE {S}.token_rules SET rollover_max_tokens = 120"))
        conn.execute(sa.text(f"UPDATE {S}.subscriptions SET status = 'canceled' WHERE customer_id = 'prem2'"))
    tick(db, at("2026-05-03T00:00:00+00:00"))  # renewals catch up with the current month only
    assert len(grants(db, "prem1", "allowance")) == 1
    steps = tick(db, at("2026-06-01T00:00:00+00:00"))
    assert steps["rollover"] == {"rolled_over": 1, "credits": 120}
    assert grants(db, "prem2", "rollover") == []  # a canceled subscription has no next period to roll into


def test_monthly_periods_follow_the_rules_time_zone_whatever_the_session_zone(db: Engine) -> None:
    # Subscribed at midnight IST on January 31st: a month later is midnight IST on February 28th (the month
    # is shorter), which is 18:30 UTC on the 27th. Month arithmetic in UTC or New York would say the 28th.
    add_customer(db, "late")
    with db.begin() as conn:
        conn.execute(
            sa.text(
                f"SELECT {S}.register_subscription(p_customer_id => 'late', p_plan_id => 'pro', "
                "p_cycle => 'monthly', p_current_period_start => '2026-01-30T18:30:00Z', "
                "p_current_period_end => '2027-01-30T18:30:00Z')"
            )
        )
    tick(db, at("2026-02-01T00:00:00+00:00"))
    with db.begin() as conn:
        conn.execute(sa.text("SET LOCAL TimeZone = 'America/New_York'"))
        run_tick(conn, S, at=at("2026-02-27T18:29:59+00:00"))
        assert len(grants(db, "late", "allowance")) == 1
    with db.begin() as conn:
        conn.execute(sa.text("SET LOCAL TimeZone = 'America/New_York'"))
        steps = run_tick(conn, S, at=at("2026-02-27T18:30:00+00:00"))["steps"]
    assert steps["ledger"]["allowances_granted"] == 1
    february = grants(db, "late", "allowance")[-1]
    assert february["reference"].endswith(":2026-02-27T18:30:00Z")
    assert february["expires_at"] == at("2026-03-30T18:30:00+00:00")  # midnight IST on March 31st


# ------------------------------------------------------------------------------------------- boosts


def test_boosts_end_when_their_time_is_up_and_are_reported_once(db: Engine) -> None:
    start = at("2026-03-31T20:00:00+00:00")  # 01:30 IST on April 1st
    with db.begin() as conn:
        ledger.boost(conn, S, "solo", 400, timedelta(hours=48), reason="outage", at=start)
        ledger.boost(conn, S, "pro1", 100, timedelta(hours=72), reason="launch", at=start)
    revoke(db, "solo", 150, start + timedelta(hours=1))
    assert tick(db, start + timedelta(hours=47, minutes=59))["boosts"]["boosts_ended"] == 0
    steps = tick(db, start + timedelta(hours=48))
    assert steps["boosts"] == {"boosts_ended": 1, "credits_unused": 250}
    assert steps["ledger"]["grants_expired"] == 1 and steps["ledger"]["credits_expired"] == 250
    assert tick(db, start + timedelta(hours=60))["boosts"]["boosts_ended"] == 0
    assert tick(db, start + timedelta(hours=72))["boosts"]["boosts_ended"] == 1
    [solo, pro] = notices(db, "boost_ended")
    assert (solo["customer_id"], solo["channel"], solo["payload"]["unused"]) == ("solo", "email", 250)
    assert (pro["customer_id"], pro["payload"]["unused"]) == ("pro1", 100)
    with db.connect() as conn:
        assert ledger.account_summary(conn, S, "solo", at=start + timedelta(days=5))["balance"] == 0


# ------------------------------------------------------------------------------------------- low balance


def test_low_balance_alerts_once_per_threshold_per_period_then_rearm(db: Engine) -> None:
    tick(db, at("2026-01-01T00:00:00+00:00"))
    revoke(db, "pro1", 399, at("2026-01-05T00:00:00+00:00"))  # 101 of 500 left: 20.2%, above 20%
    assert tick(db, at("2026-01-05T00:01:00+00:00"))["low_balance"]["alerts"] == 0
    revoke(db, "pro1", 2, at("2026-01-06T00:00:00+00:00"))  # 99: below 20%
    assert tick(db, at("2026-01-06T00:01:00+00:00"))["low_balance"] == {"alerts": 1, "customers": 1}
    assert tick(db, at("2026-01-07T00:00:00+00:00"))["low_balance"]["alerts"] == 0  # never twice a period
    revoke(db, "pro1", 99, at("2026-01-08T00:00:00+00:00"))  # 0 left: below 5% too
    assert tick(db, at("2026-01-08T00:01:00+00:00"))["low_balance"]["alerts"] == 1
    alerts = notices(db, "low_balance")
    assert [(a["customer_id"], a["payload"]["threshold_percent"]) for a in alerts] == [
        ("pro1", 20),
        ("pro1", 5),
    ]
    assert alerts[0]["payload"] | {"period_start": None} == {
        "threshold_percent": 20,
        "allowance": 500,
        "usable": 99,
        "period_start": None,
        "period_end": "2026-02-01T05:30:00+05:30",  # times in the rules' time zone
    }

    # February's allowance re-arms them; a customer who drops straight to zero gets both at once.
    assert tick(db, at("2026-02-01T00:00:00+00:00"))["low_balance"]["alerts"] == 0
    revoke(db, "pro1", 500, at("2026-02-02T00:00:00+00:00"))
    assert tick(db, at("2026-02-02T00:00:01+00:00"))["low_balance"] == {"alerts": 2, "customers": 1}
    assert tick(db, at("2026-02-28T00:00:00+00:00"))["low_balance"]["alerts"] == 0
    assert notices(db, "low_balance")[-1]["idempotency_key"].endswith(":2026-02-01T00:00:00Z:5:email")


def test_other_credits_count_and_customers_without_allowance_get_no_alert(db: Engine) -> None:
    tick(db, at("2026-01-01T00:00:00+00:00"))
    with db.begin() as conn:
        ledger.grant(conn, S, "pro1", 200, reason="goodwill", at=at("2026-01-02T00:00:00+00:00"))
        ledger.grant(conn, S, "solo", 5, reason="trial", at=at("2026-01-02T00:00:00+00:00"))
    revoke(db, "pro1", 500, at("2026-01-03T00:00:00+00:00"))  # 200 usable left: 40% of the allowance
    assert tick(db, at("2026-01-03T00:01:00+00:00"))["low_balance"]["alerts"] == 0


# ------------------------------------------------------------------------------------------- renewals


def buy(engine: Engine, customer: str, payment: str, when: datetime) -> dict[str, Any]:
    with engine.begin() as conn:
        return ledger.purchase(conn, S, customer, "extra-500", payment, at=when)


def orders(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT customer_id, package_id, reason, status, payment_reference, due_at "
                f"FROM {S}.token_renewal_orders ORDER BY id"
            )
        ).mappings()
        return [dict(r) for r in rows]


def test_exhausted_package_queues_one_renewal_order_that_purchase_fulfils(db: Engine) -> None:
    t = at("2026-04-29T12:00:00+00:00")
    buy(db, "pro1", "pay_1", t)
    assert tick(db, t + timedelta(minutes=1))["package_renewals"]["orders_queued"] == 0  # credits left
    revoke(db, "pro1", 1000, t + timedelta(minutes=2))  # April's allowance (drawn first) and the package
    steps = tick(db, t + timedelta(minutes=3))
    assert steps["package_renewals"] == {"orders_queued": 1, "orders_pending": 1}
    assert tick(db, t + timedelta(minutes=4))["package_renewals"] == {"orders_queued": 0, "orders_pending": 1}
    [notice] = notices(db, "package_renewal_due")
    assert (notice["customer_id"], notice["payload"]["package"], notice["payload"]["tokens"]) == (
        "pro1",
        "extra-500",
        500,
    )
    with db.connect() as conn:
        due = conn.execute(
            sa.text(f"SELECT * FROM {S}.renewal_orders_due(:at)"), {"at": t + timedelta(hours=1)}
        )
        assert [(r.customer_id, r.package_id, r.tokens) for r in due] == [("pro1", "extra-500", 500)]

    buy(db, "pro1", "pay_2", t + timedelta(minutes=5))  # the payment integration charged the mandate
    assert [(o["status"], o["payment_reference"]) for o in orders(db)] == [("fulfilled", "pay_2")]

    # max_per_month 2 in the rules' time zone: April 30th IST allows one more, May 1st IST starts afresh.
    revoke(db, "pro1", 500, t + timedelta(minutes=6))
    assert tick(db, t + timedelta(minutes=7))["package_renewals"]["orders_queued"] == 1
    buy(db, "pro1", "pay_3", t + timedelta(minutes=8))
    revoke(db, "pro1", 500, t + timedelta(minutes=9))
    assert tick(db, t + timedelta(minutes=10))["package_renewals"]["orders_queued"] == 0  # third in April
    assert tick(db, at("2026-04-30T18:29:00+00:00"))["package_renewals"]["orders_queued"] == 0
    assert tick(db, at("2026-04-30T18:30:00+00:00"))["package_renewals"]["orders_queued"] == 1  # May 1 IST
    assert [o["status"] for o in orders(db)] == ["fulfilled", "fulfilled", "pending"]


def test_renewal_orders_fail_or_cancel_and_stay_once_per_trigger(db: Engine) -> None:
    t = at("2026-04-10T12:00:00+00:00")
    buy(db, "pro1", "pay_1", t)
    revoke(db, "pro1", 500, t)
    tick(db, t + timedelta(minutes=1))
    with db.begin() as conn:
        order_id = conn.execute(sa.text(f"SELECT id FROM {S}.token_renewal_orders")).scalar_one()
        failed = conn.execute(
            sa.text(f"SELECT {S}.settle_renewal_order(:id, 'failed', 'card declined', :at)"),
            {"id": order_id, "at": t + timedelta(minutes=2)},
        ).scalar_one()
    assert (failed["status"], failed["failure_reason"]) == ("failed", "card declined")
    assert tick(db, t + timedelta(minutes=3))["package_renewals"]["orders_queued"] == 0  # same trigger
    with db.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="already failed"):
        conn.execute(sa.text(f"SELECT {S}.settle_renewal_order(:id, 'cancelled', 'x')"), {"id": order_id})


def test_expiring_package_renews_at_expiry_only_for_eligible_customers(db: Engine) -> None:
    t = at("2026-04-10T12:00:00+00:00")
    with db.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {S}.token_packages SET auto_renew_when = 'expiry' WHERE id = 'extra-500'")
        )
    buy(db, "pro1", "pay_1", t)
    buy(db, "prem1", "pay_2", t)
    with db.begin() as conn:  # prem1 moves to the free plan, which may not buy the package
        conn.execute(sa.text(f"UPDATE {S}.subscriptions SET status = 'canceled' WHERE customer_id = 'prem1'"))
    expiry = t + timedelta(days=30)
    assert tick(db, expiry - timedelta(seconds=1))["package_renewals"]["orders_queued"] == 0
    assert tick(db, expiry)["package_renewals"]["orders_queued"] == 1
    [order] = orders(db)
    assert (order["customer_id"], order["reason"], order["due_at"]) == ("pro1", "expiry", expiry)


# ------------------------------------------------------------------------------------------- promotions


def test_promotion_start_and_end_are_announced_once_to_admins_and_targeted_customers(db: Engine) -> None:
    add_customer(db, BETA_TESTER)
    add_customer(db, "student1")
    with db.begin() as conn:
        conn.execute(sa.text(f"UPDATE {S}.customers SET segments = '{{students}}' WHERE id = 'student1'"))
    before = tick(db, at("2026-10-31T18:29:59+00:00"))["promotions"]  # 23:59:59 IST on Oct 31st
    assert "beta-testers" not in before["started"]
    steps = tick(db, at("2026-10-31T18:30:00+00:00"))["promotions"]  # midnight IST: beta-testers opens
    assert steps["started"] == ["beta-testers", "welcome-code"] and steps["ended"] == []
    beta = [n for n in notices(db, "promotion_started") if n["payload"]["promotion"] == "beta-testers"]
    assert [n["customer_id"] for n in beta] == [None, BETA_TESTER]  # admins, then the listed customer
    assert tick(db, at("2026-11-01T00:00:00+00:00"))["promotions"]["notifications"] == 0

    ended = tick(db, at("2027-07-01T00:00:00+05:30"))["promotions"]
    assert "beta-testers" in ended["ended"]
    assert [n["customer_id"] for n in notices(db, "promotion_ended") if "beta" in n["idempotency_key"]] == [
        None,
        BETA_TESTER,
    ]
    assert tick(db, at("2027-07-02T00:00:00+05:30"))["promotions"]["notifications"] == 0


def test_yearly_promotion_is_announced_every_year(db: Engine) -> None:
    def festive(when: str) -> tuple[bool, bool]:
        result = tick(db, at(when))["promotions"]
        return "festive-season" in result["started"], "festive-season" in result["ended"]

    assert festive("2026-12-19T12:00:00+05:30") == (False, False)
    assert festive("2026-12-20T00:00:00+05:30") == (True, False)
    assert festive("2027-01-05T00:00:00+05:30") == (False, True)
    assert festive("2027-06-01T00:00:00+05:30") == (False, False)
    assert festive("2027-12-20T00:00:00+05:30") == (True, False)
    # A tick that sleeps through a whole window reports its end only: the offer is over.
    assert festive("2029-02-01T00:00:00+05:30") == (False, True)
    assert festive("2029-02-02T00:00:00+05:30") == (False, False)


# ------------------------------------------------------------------------------------------- price migrations


def schedule_price_change(engine: Engine, customer: str, effective: datetime) -> tuple[int, int]:
    """Close the customer's price version, open a dearer one and schedule the customer's move to it."""
    with engine.begin() as conn:
        sub, old, plan, cycle, currency, region, amount = conn.execute(
            sa.text(
                "SELECT s.id, s.price_version_id, s.plan_id, s.cycle, s.currency, pv.region, "
                "pv.amount_minor "
                f"FROM {S}.subscriptions s JOIN {S}.price_versions pv ON pv.id = s.price_version_id "
                "WHERE s.customer_id = :c"
            ),
            {"c": customer},
        ).one()
        closed = conn.execute(
            sa.text(f"UPDATE {S}.price_versions SET valid_to = valid_from WHERE id = :id RETURNING valid_to"),
            {"id": old},
        ).scalar_one()
        new = conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_versions "
                "(plan_id, cycle, currency, region, amount_minor, valid_from) "
                "VALUES (:plan, :cycle, :currency, :region, :amount, :t) RETURNING id"
            ),
            {
                "plan": plan,
                "cycle": cycle,
                "currency": currency,
                "region": region,
                "amount": amount + 100,
                "t": closed,
            },
        ).scalar_one()
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_migrations (subscription_id, from_version, to_version, reason, "
                "effective_at) VALUES (:sub, :old, :new, 'price increase (keep_for)', :eff)"
            ),
            {"sub": sub, "old": old, "new": new, "eff": effective},
        )
    return old, new


def test_due_price_migrations_run_exactly_once(db: Engine) -> None:
    add_customer(db, "pro2", "pro")
    effective = at("2026-06-01T00:00:00+00:00")
    old, new = schedule_price_change(db, "pro1", effective)
    with db.begin() as conn:  # pro2 pays the same version but has left: its move is cancelled
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_migrations (subscription_id, from_version, to_version, reason, "
                f"effective_at) SELECT id, price_version_id, :new, 'price increase', :eff "
                f"FROM {S}.subscriptions WHERE customer_id = 'pro2'"
            ),
            {"new": new, "eff": effective},
        )
        conn.execute(sa.text(f"UPDATE {S}.subscriptions SET status = 'canceled' WHERE customer_id = 'pro2'"))
    assert tick(db, effective - timedelta(seconds=1))["price_migrations"] == {"migrated": 0, "canceled": 0}
    assert tick(db, effective)["price_migrations"] == {"migrated": 1, "canceled": 1}
    assert tick(db, effective + timedelta(days=1))["price_migrations"] == {"migrated": 0, "canceled": 0}
    with db.connect() as conn:
        pays = conn.execute(
            sa.text(f"SELECT customer_id, price_version_id FROM {S}.subscriptions ORDER BY customer_id")
        ).all()
        statuses = conn.execute(
            sa.text(f"SELECT status, completed_at FROM {S}.price_migrations ORDER BY id")
        ).all()
    paying: dict[str, int] = {str(customer): int(version) for customer, version in pays}
    assert paying["pro1"] == new and paying["pro2"] == old
    assert [tuple(s) for s in statuses] == [("done", effective), ("canceled", effective)]
    [notice] = notices(db, "grandfathering_executed")
    assert notice["customer_id"] == "pro1"
    [item] = notice["payload"]["items"]
    assert item["new_amount_minor"] - item["old_amount_minor"] == 100 and item["direction"] == "increase"


# ------------------------------------------------------------------------------------------- the whole run


def busy_month(engine: Engine) -> None:
    """Customers in every situation tick acts on, as of early March 2026."""
    for n in range(15):
        add_customer(engine, f"p{n}", "premium" if n % 2 else "pro")
    tick(engine, at("2026-02-01T00:00:00+00:00"))
    for n in range(15):
        revoke(engine, f"p{n}", 450, at("2026-02-10T00:00:00+00:00"))
    buy(engine, "pro1", "pay_1", at("2026-02-10T00:00:00+00:00"))
    revoke(engine, "pro1", 1000, at("2026-02-11T00:00:00+00:00"))
    with engine.begin() as conn:
        ledger.boost(conn, S, "solo", 50, timedelta(hours=24), reason="x", at=at("2026-02-27T00:00:00+00:00"))
    schedule_price_change(engine, "prem1", at("2026-03-01T00:00:00+00:00"))


def test_a_second_run_at_the_same_time_changes_nothing(db: Engine) -> None:
    busy_month(db)
    first = changes(tick(db, at("2026-03-01T06:00:00+00:00")))
    assert first["rollover"]["rolled_over"] == 8  # prem1 and seven premium subscribers
    assert first["low_balance"]["alerts"] == 0  # a fresh allowance
    assert first["boosts"]["boosts_ended"] == 1
    assert first["price_migrations"]["migrated"] == 1
    assert first["ledger"]["allowances_granted"] == 17
    assert_noop(tick(db, at("2026-03-01T06:00:00+00:00")))
    assert_noop(tick(db, at("2026-03-01T06:05:00+00:00")))


def test_two_concurrent_ticks_do_the_work_once(db: Engine) -> None:
    busy_month(db)
    racer = sa.create_engine(db.url, poolclass=NullPool)
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def work() -> None:
        barrier.wait()
        with racer.begin() as conn:
            results.append(run_tick(conn, S, at=at("2026-03-01T06:00:00+00:00"))["steps"])

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    racer.dispose()
    assert len(results) == 2
    done = [r for r in results if r["rollover"]["rolled_over"]]
    assert len(done) == 1
    assert_noop(next(r for r in results if r is not done[0]))
    with db.connect() as conn:
        duplicates = conn.execute(
            sa.text(f"SELECT count(*) - count(DISTINCT reference) FROM {S}.token_grants WHERE reference > ''")
        ).scalar_one()
    assert duplicates == 0


def test_steps_are_pluggable(db: Engine) -> None:
    seen: list[datetime] = []

    def custom(conn: sa.Connection, schema: str, when: datetime) -> dict[str, Any]:
        seen.append(when)
        return {"checked": conn.execute(sa.text(f"SELECT count(*) FROM {schema}.customers")).scalar_one()}

    with db.begin() as conn:
        summary = run_tick(conn, S, steps=(*automation.STEPS, ("audit", custom)))
    assert list(summary["steps"])[-1] == "audit" and summary["steps"]["audit"] == {"checked": 3}
    assert seen[0].tzinfo is not None  # the database's clock when no time is given
    assert any(line.startswith("  audit") and "checked 3" in line for line in automation.describe(summary))


# ------------------------------------------------------------------------------------------- CLI


def run_cli(pg_url: str, tmp_path: Path, *args: str) -> Any:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["tick", "--no-send", *args, "--config", str(tmp_path), "--database-url", pg_url]
    )
    if isinstance(result.exception, CommandError):
        return result.exception
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def test_tick_command_text_and_json(db: Engine, pg_url: str, tmp_path: Path) -> None:
    text = run_cli(pg_url, tmp_path, "--now", "2026-01-01T05:30").output  # IST: midnight UTC
    assert "tick at 2026-01-01T00:00:00+00:00" in text
    assert "ledger            2 allowance(s) renewed (1500 credits)" in text
    assert "low_balance       0 alert(s)" in text
    again = json.loads(run_cli(pg_url, tmp_path, "--now", "2026-01-01T00:00Z", "--format", "json").output)
    assert again["at"] == "2026-01-01T00:00:00+00:00"
    # The CLI adds the reporting steps (rollups, anomaly alerts) after the database's own.
    assert list(again["steps"]) == [*(name for name, _ in automation.STEPS), "usage_rollups", "anomalies"]
    assert again["steps"]["ledger"]["allowances_granted"] == 0


def test_tick_command_refuses_a_bad_time(db: Engine, pg_url: str, tmp_path: Path) -> None:
    error = run_cli(pg_url, tmp_path, "--now", "next tuesday")
    assert isinstance(error, CommandError)
    assert error.message.startswith("--now: not a valid date/time") and "2026-12-01T00:05" in str(error.fix)
    with db.connect() as conn:
        assert conn.execute(sa.text(f"SELECT count(*) FROM {S}.token_grants")).scalar_one() == 0


def test_tokens_show_at_a_time(db: Engine, pg_url: str, tmp_path: Path) -> None:
    tick(db, at("2026-01-01T00:00:00+00:00"))
    tick(db, at("2026-02-01T00:00:00+00:00"))

    def show(*args: str) -> Any:
        result = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, ["tokens", "show", "prem1", *args, "--config", str(tmp_path), "--database-url", pg_url]
        )
        return result.exception if isinstance(result.exception, CommandError) else result

    february = json.loads(show("--at", "2026-02-15T12:00", "--format", "json").output)
    assert february["at"] == "2026-02-15T06:30:00+00:00"  # in the rules' time zone, IST
    assert [g["source"] for g in february["grants"]] == ["rollover", "allowance"]  # rolled credits go first
    assert february["usable"] == 1500
    error = show("--at", "soon")
    assert isinstance(error, CommandError) and error.message.startswith("--at:")


def test_tick_text_counts_repeated_errors_instead_of_listing_each() -> None:
    from database.automation import describe

    failure = "SMTP smtp.example.com:587: environment variable TARIFF_SMTP_PASSWORD is not set"
    lines = describe(
        {
            "at": "2026-11-26T00:00:00+00:00",
            "steps": {
                "notifications": {
                    "claimed": 21,
                    "sent": 0,
                    "errors": [{"id": n, "error": failure} for n in range(20)]
                    + [{"id": 99, "error": "HTTP 500"}],
                }
            },
        }
    )
    [line] = [line for line in lines if "notifications" in line]
    assert "claimed 21, sent 0" in line
    assert f"errors: 20× {failure}; HTTP 500" in line
    assert "'id'" not in line  # no raw records in the text output
