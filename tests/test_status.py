"""`tariff status` figures on a hand-built dataset, and proof that it reads no raw event table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from analytics.model import Report, validate
from analytics.status import Drift, collect_status
from tests.ledger_support import S, add_customer, publish_shipped
from tests.reporting_support import insert_usage

AT = datetime.fromisoformat("2026-11-15T12:00:00+05:30")
RAW_TABLES = {"token_usage", "token_entries", "token_requests", "redemptions", "payment_events"}


def _set(engine: Engine, customer: str, **values: Any) -> None:
    assignments = ", ".join(f"{column} = :{column}" for column in values)
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {S}.subscriptions SET {assignments} WHERE customer_id = :customer"),
            {**values, "customer": customer},
        )


@pytest.fixture
def shop(engine: Engine) -> Engine:
    publish_shipped(engine)
    for customer in ("old", "new", "trial", "converted", "lapsed", "churned"):
        add_customer(engine, customer, "premium" if customer == "trial" else "pro")
    add_customer(engine, "nobody")  # a customer without a subscription
    _set(engine, "old", created_at=datetime.fromisoformat("2026-10-10T10:00:00+05:30"))
    _set(engine, "new", created_at=datetime.fromisoformat("2026-11-05T10:00:00+05:30"))
    _set(
        engine,
        "trial",
        status="trialing",
        trial_end=datetime.fromisoformat("2026-11-25T00:00:00+05:30"),
        created_at=datetime.fromisoformat("2026-11-11T00:00:00+05:30"),
    )
    _set(
        engine,
        "converted",
        trial_end=datetime.fromisoformat("2026-11-03T00:00:00+05:30"),
        created_at=datetime.fromisoformat("2026-10-20T00:00:00+05:30"),
    )
    _set(
        engine,
        "lapsed",
        status="canceled",
        trial_end=datetime.fromisoformat("2026-11-04T00:00:00+05:30"),
        canceled_at=datetime.fromisoformat("2026-11-04T00:00:00+05:30"),
        created_at=datetime.fromisoformat("2026-10-21T00:00:00+05:30"),
    )
    _set(
        engine,
        "churned",
        status="canceled",
        canceled_at=datetime.fromisoformat("2026-11-08T00:00:00+05:30"),
        created_at=datetime.fromisoformat("2026-09-01T00:00:00+05:30"),
    )
    insert_usage(
        engine,
        [
            (date(2026, 10, 31), "old", "gpt-4o", 9999),  # last month: not this month's
            (date(2026, 11, 2), "old", "gpt-4o", 300),
            (date(2026, 11, 15), "old", "gpt-4o", 120),
            (date(2026, 11, 15), "new", "gpt-3.5-turbo", 80),
            (date(2026, 11, 10), "trial", "gpt-4", 700),
            (date(2026, 11, 16), "new", "gpt-4o", 5000),  # tomorrow (a clock in the past): not counted
        ],
    )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"SELECT {S}.grant_tokens(p_customer => 'old', p_amount => 800, p_source => 'admin', "
                "p_reason => 'goodwill', p_actor => 'ops')"
            )
        )
        conn.execute(
            sa.text(
                f"UPDATE {S}.promotion_usage SET redeemed = 3 WHERE promotion_id = 'launch-codes' "
                "AND slot = (SELECT min(slot) FROM "
                + S
                + ".promotion_usage WHERE promotion_id = 'launch-codes')"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.notifications (kind, channel, idempotency_key, status, next_attempt_at, "
                "created_at) VALUES "
                "('a', 'email', 'k1', 'pending', '2026-11-15T05:00:00Z', '2026-11-15T04:00:00Z'), "
                "('a', 'email', 'k2', 'pending', '2026-11-14T05:00:00Z', '2026-11-14T04:00:00Z'), "
                "('a', 'email', 'k3', 'pending', '2026-12-01T00:00:00Z', '2026-11-14T04:00:00Z'), "
                "('a', 'email', 'k4', 'failed', '2026-11-14T05:00:00Z', '2026-11-14T04:00:00Z')"
            )
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_migrations (subscription_id, from_version, to_version, reason, "
                "effective_at) SELECT s.id, s.price_version_id, "
                f"(SELECT min(id) FROM {S}.price_versions WHERE id <> s.price_version_id), 'price increase', "
                f"'2027-01-01T00:00:00Z' FROM {S}.subscriptions s WHERE s.customer_id = 'old'"
            )
        )
    return engine


def _status(engine: Engine, drift: Drift | None = None) -> Report:
    with engine.connect() as conn:
        report = collect_status(conn, S, AT, drift=drift)
    validate(report)
    return report


def _table(report: Report, key: str) -> list[dict[str, object]]:
    section = report.section(key)
    return [dict(zip([c.key for c in section.columns], row, strict=True)) for row in section.rows]


def test_plans_show_subscribers_trials_and_mrr(shop: Engine) -> None:
    plans = {(r["plan"], r["currency"]): r for r in _table(_status(shop), "plans")}
    pro = plans[("pro", "INR")]
    # old, new and converted pay 1,499 INR a month; lapsed and churned canceled.
    assert (pro["active"], pro["trials"], pro["mrr"]) == (3, 0, Decimal("4497.00"))
    premium = plans[("premium", "INR")]
    assert (premium["active"], premium["trials"], premium["mrr"]) == (0, 1, Decimal("0.00"))
    free = plans[("free", None)]
    assert (free["active"], free["trials"], free["mrr"]) == (0, 0, None)


def test_live_prices_per_region(shop: Engine) -> None:
    prices = {
        (r["plan"], r["cycle"], r["region"], r["currency"]): r["price"]
        for r in _table(_status(shop), "prices")
    }
    assert prices[("pro", "monthly", "base", "INR")] == Decimal("1499.00")
    assert prices[("pro", "annual", "base", "USD")] == Decimal("190.00")


def test_month_conversion_and_churn(shop: Engine) -> None:
    (month,) = _table(_status(shop), "month")
    # New this month: new and trial. Trials ended: converted (now paying) and lapsed (canceled).
    assert (month["new"], month["trials_ended"], month["converted"]) == (2, 2, 1)
    assert month["conversion"] == Decimal("0.5")
    # At the start of November: old, converted, lapsed and churned existed; lapsed and churned canceled since.
    assert (month["base"], month["churned"], month["churn"]) == (4, 2, Decimal("0.5"))


def test_tokens_today_month_allocated_and_outstanding(shop: Engine) -> None:
    (tokens,) = _table(_status(shop), "tokens")
    assert (tokens["today"], tokens["month"]) == (200, 1200)
    # pro: 500 a month × 3 active; premium: its monthly allowance for the trial.
    with shop.connect() as conn:
        premium = conn.execute(
            sa.text(f"SELECT allowance_amount FROM {S}.plans WHERE id = 'premium'")
        ).scalar_one()
    assert tokens["allocated"] == 3 * 500 + premium
    assert tokens["used"] == (Decimal(1200) / (1500 + premium)).quantize(Decimal("0.0001"))
    assert (tokens["outstanding"], tokens["accounts"]) == (800, 1)


def test_top_models_and_customers(shop: Engine) -> None:
    report = _status(shop)
    assert [(r["model"], r["credits"]) for r in _table(report, "top_models")] == [
        ("gpt-4", 700),
        ("gpt-4o", 420),
        ("gpt-3.5-turbo", 80),
    ]
    assert [(r["customer"], r["plan"], r["credits"]) for r in _table(report, "top_customers")] == [
        ("trial", "premium", 700),
        ("old", "pro", 420),
        ("new", "pro", 80),
    ]


def test_promotions_active_and_scheduled_with_redemptions(shop: Engine) -> None:
    promotions = {r["promotion"]: r for r in _table(_status(shop), "promotions")}
    assert "diwali-2026" not in promotions  # ended on 6 November
    assert promotions["free-to-pro"]["state"] == "scheduled"
    launch = promotions["launch-codes"]
    assert (launch["state"], launch["redeemed"], launch["limit"]) == ("active", 3, 500)


def test_operations_revision_migrations_notifications_drift(shop: Engine) -> None:
    (ops,) = _table(_status(shop, Drift(2, ("plan:pro.name", "price:pro/monthly/INR"))), "operations")
    assert ops["revision"] == 1 and ops["actor"] == "test"
    assert ops["migrations"] == 1
    assert ops["next_migration"] == datetime.fromisoformat("2027-01-01T00:00:00+00:00")
    assert (ops["undelivered"], ops["failed"]) == (2, 1)
    assert ops["oldest"] == datetime.fromisoformat("2026-11-14T04:00:00+00:00")
    assert ops["drift"] == "2 change(s): plan:pro.name, price:pro/monthly/INR"
    (unchecked,) = _table(_status(shop), "operations")
    assert unchecked["drift"] == "not checked"


@pytest.fixture
def statements(shop: Engine) -> Iterator[tuple[Connection, list[tuple[str, Any]]]]:
    seen: list[tuple[str, Any]] = []
    with shop.connect() as conn:

        def remember(
            _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool
        ) -> None:
            seen.append((statement, parameters))

        event.listen(conn, "before_cursor_execute", remember)
        collect_status(conn, S, AT)
        event.remove(conn, "before_cursor_execute", remember)
        yield conn, seen


def _relations(plan: Any) -> Iterator[tuple[str, str]]:
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            yield plan["Relation Name"], plan["Node Type"]
        for value in plan.values():
            yield from _relations(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from _relations(item)


def test_status_never_reads_raw_event_tables(statements: tuple[Connection, list[tuple[str, Any]]]) -> None:
    conn, seen = statements
    assert len(seen) >= 8
    touched: set[str] = set()
    for statement, parameters in seen:
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
        touched |= {name for name, _node in _relations(plan if isinstance(plan, list) else json.loads(plan))}
    assert "token_usage_daily" in touched and "subscriptions" in touched
    assert not touched & RAW_TABLES


def test_the_rollup_is_read_through_its_day_index(
    statements: tuple[Connection, list[tuple[str, Any]]],
) -> None:
    # On a table this small the planner would scan it whole anyway; with sequential scans priced out, every
    # statement still finds an index path, so on a large rollup only this month's rows are read.
    conn, seen = statements
    conn.exec_driver_sql("SET enable_seqscan = off")
    nodes = []
    for statement, parameters in seen:
        plan = conn.exec_driver_sql("EXPLAIN (FORMAT JSON) " + statement, parameters).scalar_one()
        nodes += [node for name, node in _relations(plan) if name == "token_usage_daily"]
    assert nodes and "Seq Scan" not in nodes
