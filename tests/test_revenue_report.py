"""Revenue metrics on a hand-built history: six customers in three currencies, a mid-month upgrade and
downgrade, a churn, a trial conversion, a free sign-up, refunds and a failed payment. Every expected figure
is worked out below from the prices (USD rates: INR 84.5, EUR 0.92, USD 1)."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.analytics_support import (
    at,
    customer,
    payment,
    period,
    revenue,
    row_of,
    setup,
    states,
)
from tests.ledger_support import S

INR, EUR = Decimal("84.5"), Decimal("0.92")
MARCH = period("2026-03-01", "2026-03-31")


def usd(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), ROUND_HALF_UP)


def frac(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.0001"), ROUND_HALF_UP)


@pytest.fixture
def history(engine: Engine) -> Engine:
    setup(engine)
    with engine.begin() as conn:
        for cid, region in (
            ("c1", "US"),
            ("c2", "IN"),
            ("c3", "EU"),
            ("c4", "US"),
            ("c5", "IN"),
            ("c6", "US"),
        ):
            customer(conn, cid, region)
        # c1: Pro monthly USD 19 since January: retained.
        states(conn, "s1", "c1", [("pro", "monthly", "USD", "active", 1900, "2026-01-10 00:00", None)])
        # c2: Pro monthly INR 1,499, upgraded to Premium (INR 2,998) on 15 March: expansion.
        states(
            conn,
            "s2",
            "c2",
            [
                ("pro", "monthly", "INR", "active", 149900, "2026-02-01 00:00", "2026-03-15 00:00"),
                ("premium", "monthly", "INR", "active", 299800, "2026-03-15 00:00", None),
            ],
        )
        # c3: Premium monthly EUR 36, canceled 20 March: churned.
        states(
            conn,
            "s3",
            "c3",
            [
                ("premium", "monthly", "EUR", "active", 3600, "2026-01-05 00:00", "2026-03-20 00:00"),
                ("premium", "monthly", "EUR", "canceled", 3600, "2026-03-20 00:00", None),
            ],
        )
        # c4: a Pro trial from 2 March, then Pro annual USD 190 from 16 March: new (190 / 12 a month).
        states(
            conn,
            "s4",
            "c4",
            [
                ("pro", "monthly", "USD", "trialing", 1900, "2026-03-02 00:00", "2026-03-16 00:00"),
                ("pro", "annual", "USD", "active", 19000, "2026-03-16 00:00", None),
            ],
        )
        # c5: Free since 5 March, never pays.
        states(conn, "s5", "c5", [("free", "monthly", "INR", "active", 0, "2026-03-05 00:00", None)])
        # c6: Premium monthly USD 39, downgraded to Pro (USD 19) on 10 March: contraction.
        states(
            conn,
            "s6",
            "c6",
            [
                ("premium", "monthly", "USD", "active", 3900, "2026-02-01 00:00", "2026-03-10 00:00"),
                ("pro", "monthly", "USD", "active", 1900, "2026-03-10 00:00", None),
            ],
        )
        payment(conn, "T1", "c1", "pro", "USD", 1900, "2026-03-10 09:00")
        payment(
            conn,
            "T2",
            "c2",
            "pro",
            "INR",
            149900,
            "2026-03-01 09:00",
            tax_minor=26982,
            status="refunded",
            refunded_minor=176882,
        )
        payment(conn, "T3", "c3", "premium", "EUR", 3600, "2026-03-05 09:00", status="failure")
        payment(conn, "T4", "c4", "pro", "USD", 19000, "2026-03-16 09:00")
        payment(conn, "T5", "c1", "pro", "USD", 1900, "2026-04-10 09:00")  # after the period
    return engine


def test_mrr_movements_and_churn_over_a_currency_mix(history: Engine) -> None:
    report = revenue(history, MARCH)
    start = Decimal(19) + Decimal(1499) / INR + Decimal(36) / EUR + Decimal(39)
    end = Decimal(19) + Decimal(2998) / INR + Decimal(190) / 12 + Decimal(19)
    summary = row_of(report, "summary")
    assert summary["mrr_start"] == usd(start)
    assert summary["mrr"] == usd(end)
    assert summary["arr"] == usd(end * 12)
    assert summary["paying"] == 4
    assert summary["arpu"] == usd(end / 4)
    assert summary["new"] == usd(Decimal(190) / 12)
    assert summary["expansion"] == usd(Decimal(1499) / INR)
    assert summary["contraction"] == usd(Decimal(20))
    assert summary["churned"] == usd(Decimal(36) / EUR)
    assert summary["logo_churn"] == Decimal("0.2500")  # c3 of c1, c2, c3, c6
    assert summary["revenue_churn"] == frac((20 + Decimal(36) / EUR) / start)
    assert summary["nrr"] == frac((19 + Decimal(2998) / INR + 19) / start)
    # Cash: T1 + T2 (net of GST) + T4; T2 refunded in full; T3 failed; T5 is in April.
    assert summary["collected"] == usd(19 + Decimal(1499) / INR + 190)
    assert summary["refunded"] == usd(Decimal(1499) / INR)
    assert summary["failure_rate"] == Decimal("0.2500")
    march = row_of(report, "movements")
    assert (
        march["start"] + march["new"] + march["expansion"] - march["contraction"] - march["churned"]
        == march["end"]
    )


def test_mrr_per_currency_is_in_its_own_money_and_in_usd(history: Engine) -> None:
    report = revenue(history, MARCH)
    inr = row_of(report, "currencies", currency="INR")
    assert (inr["paying"], inr["mrr_native"], inr["arr_native"]) == (
        1,
        Decimal("2998.00"),
        Decimal("35976.00"),
    )
    assert inr["mrr_usd"] == usd(Decimal(2998) / INR)
    dollars = row_of(report, "currencies", currency="USD")
    assert dollars["paying"] == 3 and dollars["mrr_native"] == usd(19 + Decimal(190) / 12 + 19)
    assert [r[0] for r in report.section("currencies").rows] == ["USD", "INR"]  # largest first


def test_conversion_flows_and_plans(history: Engine) -> None:
    report = revenue(history, MARCH)
    march = row_of(report, "conversion")
    assert (march["trials"], march["trials_converted"], march["trial_rate"]) == (1, 1, Decimal("1.0000"))
    assert (march["free"], march["free_converted"], march["free_rate"]) == (1, 0, Decimal("0.0000"))
    assert march["days"] == Decimal("14.0")
    up = row_of(report, "flows", **{"from": "pro", "to": "premium"})
    assert up["direction"] == "upgrade" and up["moves"] == 1 and up["mrr_delta"] == usd(Decimal(1499) / INR)
    down = row_of(report, "flows", **{"from": "premium", "to": "pro"})
    assert down["direction"] == "downgrade" and down["mrr_delta"] == Decimal("-20.00")
    premium = row_of(report, "plans", plan="premium")
    assert premium["paying"] == 1 and premium["lost"] == 1  # c2 joined by upgrade; c3 churned
    pro = row_of(report, "plans", plan="pro")
    assert pro["paying"] == 3 and pro["collected"] == usd(
        Decimal(19) + 190 + Decimal(1499) / INR - Decimal(1499) / INR
    )


def test_breakdowns_by_region_currency_and_month(history: Engine) -> None:
    by_region = revenue(history, MARCH, "region")
    assert row_of(by_region, "breakdown", region="US")["paying"] == 3
    assert row_of(by_region, "breakdown", region="IN")["mrr"] == usd(Decimal(2998) / INR)
    by_month = revenue(history, period("2026-02-15", "2026-03-31"), "month")
    assert [r[0] for r in by_month.section("breakdown").rows] == ["2026-02-15", "2026-03-01"]


def test_cohort_retention(history: Engine) -> None:
    report = revenue(history, period("2026-01-01", "2026-03-31"))
    january = row_of(report, "cohorts", cohort="2026-01")  # c1 and c3
    assert january["size"] == 2
    assert (january["m0"], january["m1"], january["m2"]) == (Decimal(1), Decimal(1), Decimal("0.5000"))
    assert january["m3"] is None  # April has not begun
    march = row_of(report, "cohorts", cohort="2026-03")  # c4
    assert march["size"] == 1 and march["m0"] == Decimal(1)


def test_pricing_change_is_measured_in_equal_windows(history: Engine) -> None:
    with history.begin() as conn:
        # Pro monthly USD cost 15.00 until the catalog's 19.00 took over on 1 January 2026 (UTC).
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_versions (plan_id, cycle, currency, amount_minor, valid_from, valid_to) "
                "VALUES ('pro', 'monthly', 'USD', 1500, '2025-06-01Z', '2026-01-01Z')"
            )
        )
        for cid in ("p1", "p2", "p3"):
            customer(conn, cid, "US")
        states(conn, "sp1", "p1", [("pro", "monthly", "USD", "active", 1500, "2025-12-15 00:00", None)])
        states(conn, "sp2", "p2", [("pro", "monthly", "USD", "active", 1900, "2026-01-05 00:00", None)])
        states(conn, "sp3", "p3", [("pro", "monthly", "USD", "active", 1900, "2026-01-20 00:00", None)])
    report = revenue(history, period("2025-12-01", "2026-01-31"))
    change = row_of(report, "price_changes", plan="pro", cycle="monthly", currency="USD")
    assert (change["old_price"], change["new_price"]) == (Decimal("15.00"), Decimal("19.00"))
    assert change["change"] == Decimal("0.2667")
    assert change["window_days"] == Decimal("30.0")
    # Before (2 Dec – 1 Jan): p1 at 15.00. After (1 – 31 Jan): c1 (10 Jan), p2 and p3 at 19.00.
    assert (change["new_before"], change["new_after"]) == (1, 3)
    assert (change["mrr_before"], change["mrr_after"]) == (Decimal("15.00"), Decimal("57.00"))


def test_promotion_performance(history: Engine) -> None:
    with history.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.redemption_requests (idempotency_key, customer_id, request, response, created_at) "
                "VALUES ('k4', 'c4', '{}', '{}', :at)"
            ),
            {"at": at("2026-03-16 09:00")},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.redemptions (promotion_id, customer_id, item_kind, item_id, cycle, currency, "
                "list_minor, position, discount_minor, usage_slot, final_minor, duration, idempotency_key, "
                "redeemed_at) VALUES ('students', 'c4', 'plan', 'pro', 'annual', 'USD', 19000, 1, 380, 0, 18620, "
                "'once', 'k4', :at)"
            ),
            {"at": at("2026-03-16 09:00")},
        )
    row = row_of(revenue(history, MARCH), "promotions", promotion="students")
    assert (row["redemptions"], row["reversed"]) == (1, 0)
    assert row["discount"] == Decimal("3.80")
    assert row["revenue"] == Decimal("190.00")  # T4, paid at the redemption
    assert row["roi"] == frac((Decimal(190) - Decimal("3.80")) / Decimal("3.80"))
    assert row["eligible"] == 2  # c4 (trialing) and c5 (free) were not paying during March
    assert row["eligible_conversion"] == Decimal("0.5000")
    assert row["retained"] == Decimal("1.0000")


def test_an_empty_range_reports_zeros_not_errors(history: Engine) -> None:
    report = revenue(history, period("2024-01-01", "2024-01-31"))
    summary = row_of(report, "summary")
    assert summary["mrr"] == Decimal("0.00") and summary["paying"] == 0 and summary["arpu"] is None
    assert summary["logo_churn"] is None and summary["collected"] == Decimal("0.00")
    assert report.section("payments").rows == () and report.section("price_changes").rows == ()


def test_subscription_changes_are_recorded_as_history(engine: Engine) -> None:
    setup(engine)
    with engine.begin() as conn:
        conn.execute(sa.text(f"SELECT {S}.register_customer(p_id => 'h1', p_country => 'IN')"))
        conn.execute(
            sa.text(
                f"SELECT {S}.register_subscription(p_customer_id => 'h1', p_plan_id => 'pro', p_cycle => 'monthly', "
                "p_id => 'sh1', p_status => 'trialing', p_current_period_start => '2026-02-01Z', "
                "p_current_period_end => '2026-02-15Z')"
            )
        )
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {S}.subscriptions SET status = 'active', updated_at = '2026-02-15Z' WHERE id = 'sh1'"
            )
        )
        conn.execute(
            sa.text(f"UPDATE {S}.subscriptions SET current_period_end = '2026-03-15Z' WHERE id = 'sh1'")
        )
        rows = conn.execute(
            sa.text(
                f"SELECT status, mrr_minor, valid_from, valid_to FROM {S}.subscription_history "
                "WHERE subscription_id = 'sh1' ORDER BY valid_from"
            )
        ).all()
    assert [(r[0], r[1]) for r in rows] == [("trialing", 0), ("active", 149900)]
    assert rows[0][3] == rows[1][2] == at("2026-02-15 05:30")  # a renewal alone opens no new state
