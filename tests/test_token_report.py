"""Token metrics on hand-built usage recorded through the ledger's own record_usage: totals, filters, the
hour-of-week heat map, utilisation against allowances, margin against attributable revenue, top consumers,
hints, partial months and empty ranges. gpt-4o costs USD 0.005 per 1,000 tokens in and out; gpt-4 0.03."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import pytest
from sqlalchemy.engine import Engine

from analytics.token_report import TokenFilters
from tests.analytics_support import allowance, customer, period, row_of, setup, states, tokens, usage

INR = Decimal("84.5")
MARCH = period("2026-03-01", "2026-03-31")


@pytest.fixture
def ledger(engine: Engine) -> Engine:
    setup(engine)
    with engine.begin() as conn:
        customer(conn, "a", "IN")
        customer(conn, "b", "US")
        states(conn, "sa", "a", [("pro", "monthly", "INR", "active", 149900, "2026-01-01 00:00", None)])
        states(conn, "sb", "b", [("premium", "monthly", "USD", "active", 3900, "2026-01-01 00:00", None)])
        # 2 March 2026 is a Monday.
        usage(conn, "a", "gpt-4o", "r1", "2026-03-02 10:15", 1000, 1000, 4)  # cost 0.01
        usage(conn, "a", "gpt-4o", "r2", "2026-03-02 10:45", 2000, 0, 4)  # cost 0.01
        usage(conn, "a", "gpt-3.5-turbo", "r3", "2026-03-20 23:30", 500, 500, 1)  # cost 0.002
        usage(conn, "b", "gpt-4", "r4", "2026-03-07 18:00", 1000, 1000, 20)  # Saturday; cost 0.06
        usage(conn, "b", "gpt-4o", "r5", "2026-04-02 09:00", 1000, 0, 2)  # April: cost 0.005
        usage(conn, "a", "gpt-4o", "r6", "2026-02-10 12:00", 1000, 1000, 4)  # February
        allowance(conn, "a", 10, "2026-03-01 00:00")
        allowance(conn, "b", 25, "2026-03-01 00:00")
        allowance(conn, "a", 10, "2026-02-01 00:00")
    return engine


def test_totals_trend_and_breakdowns(ledger: Engine) -> None:
    report = tokens(ledger, MARCH, by="model")
    summary = row_of(report, "summary")
    assert (summary["requests"], summary["credits"], summary["tokens"]) == (4, 29, 7000)
    assert summary["cost"] == Decimal("0.08")  # 0.01 + 0.01 + 0.002 + 0.06 = 0.082
    assert summary["granted"] == 35 and summary["customers"] == 2
    trend = report.section("trend")
    assert len(trend.rows) == 31 and trend.rows[1][1:3] == (2, 8)  # 2 March: two requests, 8 credits
    assert row_of(report, "breakdown", model="gpt-4")["credits"] == 20
    assert row_of(report, "breakdown", model="gpt-4o")["share"] == Decimal("0.2759")  # 8 / 29


def test_peak_hours_are_local_hours_of_the_week(ledger: Engine) -> None:
    peaks = tokens(ledger, MARCH).section("peaks")
    monday = dict(zip([c.key for c in peaks.columns], peaks.rows[0], strict=True))
    assert monday["weekday"] == "Mon" and monday["h10"] == 2 and sum(peaks.rows[0][1:]) == 2  # type: ignore[arg-type]
    saturday = dict(zip([c.key for c in peaks.columns], peaks.rows[5], strict=True))
    assert saturday["h18"] == 1


def test_filters_apply_to_every_section(ledger: Engine) -> None:
    only_a = tokens(ledger, MARCH, TokenFilters(customer="a"))
    assert row_of(only_a, "summary")["credits"] == 9 and row_of(only_a, "summary")["granted"] == 10
    assert [r[0] for r in only_a.section("top_consumers").rows] == ["a"]
    premium = tokens(ledger, MARCH, TokenFilters(plan="premium"))
    assert row_of(premium, "summary")["credits"] == 20
    gpt4o = tokens(ledger, MARCH, TokenFilters(model="gpt-4o"), by="customer")
    assert row_of(gpt4o, "summary")["credits"] == 8
    assert row_of(gpt4o, "breakdown", customer="a")["credits"] == 8


def test_utilisation_margin_and_top_consumers(ledger: Engine) -> None:
    report = tokens(ledger, MARCH)
    pro = row_of(report, "utilisation", plan="pro")
    assert (pro["allocated"], pro["consumed"], pro["utilisation"]) == (10, 9, Decimal("0.9000"))
    premium = row_of(report, "utilisation", plan="premium")
    assert premium["utilisation"] == Decimal("0.8000")
    # Pro earns 1,499 INR a month; March has 31 of an average month's 30.4375 days. a used gpt-4o for 8 of 9
    # credits, so gpt-4o is attributed 8/9 of it.
    pro_revenue = Decimal(1499) / INR * 31 / Decimal("30.4375")
    margin = row_of(report, "margin", plan="pro", model="gpt-4o")
    expected = (pro_revenue * 8 / 9).quantize(Decimal("0.01"), ROUND_HALF_UP)
    assert margin["revenue"] == expected and margin["cost"] == Decimal("0.02")
    assert margin["margin"] == expected - Decimal("0.02")
    top = report.section("top_consumers").rows
    assert [r[0] for r in top] == ["b", "a"] and top[0][5] == Decimal("0.6897")  # 20 / 29


def test_persistent_heavy_users_are_upsell_candidates(ledger: Engine) -> None:
    # a used 9 of 10 in March and 4 of 10 in February; with 9 of 10 in February too a is persistent.
    report = tokens(ledger, period("2026-02-01", "2026-03-31"))
    assert not [r for r in report.section("hints").rows if r[0] == "upsell"]
    from tests.analytics_support import usage as record

    with ledger.begin() as conn:
        record(conn, "a", "gpt-4o", "r7", "2026-02-11 12:00", 1000, 1000, 5)
    hints = tokens(ledger, period("2026-02-01", "2026-03-31")).section("hints").rows
    assert [(r[0], r[1]) for r in hints if r[0] == "upsell"] == [("upsell", "a")]


def test_partial_months_count_exact_days(ledger: Engine) -> None:
    # 2 – 20 March: r1, r2 and r4 (the 20 March request at 23:30 is included: the day is inclusive).
    report = tokens(ledger, period("2026-03-02", "2026-03-20"), by="customer")
    assert row_of(report, "summary")["credits"] == 29
    report = tokens(ledger, period("2026-03-03", "2026-03-19"), by="customer")
    assert row_of(report, "summary")["credits"] == 20
    assert [r[0] for r in report.section("breakdown").rows] == ["b"]


def test_an_empty_range_reports_zeros(ledger: Engine) -> None:
    report = tokens(ledger, period("2025-01-01", "2025-01-31"))
    summary = row_of(report, "summary")
    assert (summary["requests"], summary["credits"], summary["cost"]) == (0, 0, Decimal("0.00"))
    assert summary["cost_per_1k"] is None
    assert report.section("top_consumers").rows == () and report.section("margin").rows == ()


def test_usage_committed_after_a_refresh_is_folded_in_by_the_next(ledger: Engine) -> None:
    assert row_of(tokens(ledger, MARCH), "summary")["requests"] == 4
    with ledger.begin() as conn:
        usage(conn, "b", "gpt-4o", "r8", "2026-03-30 08:00", 100, 100, 1)
    again = tokens(ledger, MARCH)
    assert row_of(again, "summary")["requests"] == 5
    assert row_of(tokens(ledger, MARCH), "summary")["requests"] == 5  # folded in once, not twice


def test_tick_step_folds_the_queue_once(ledger: Engine) -> None:
    from analytics.rollups import refresh_usage_rollups
    from tests.ledger_support import S

    with ledger.begin() as conn:
        first = refresh_usage_rollups(conn, S)
        second = refresh_usage_rollups(conn, S)
    assert first == {"usage_rollup_rows": 6} and second == {"usage_rollup_rows": 0}


def test_a_refresh_never_takes_uncommitted_usage_and_never_counts_twice(ledger: Engine) -> None:
    from analytics.rollups import refresh_usage_rollups
    from tests.ledger_support import S

    with ledger.begin() as conn:
        refresh_usage_rollups(conn, S)
    writer = ledger.connect()
    try:
        open_txn = writer.begin()
        usage(writer, "a", "gpt-4o", "late", "2026-03-03 11:00", 1000, 0, 2)  # not committed yet
        with ledger.begin() as conn:
            assert refresh_usage_rollups(conn, S) == {"usage_rollup_rows": 0}
        open_txn.commit()
    finally:
        writer.close()
    with ledger.begin() as conn:
        assert refresh_usage_rollups(conn, S) == {"usage_rollup_rows": 1}
        assert refresh_usage_rollups(conn, S) == {"usage_rollup_rows": 0}
    assert row_of(tokens(ledger, MARCH), "summary")["requests"] == 5


def test_admitted_and_committed_requests_reach_the_report_and_refusals_do_not(ledger: Engine) -> None:
    import sqlalchemy as sa

    from tests.analytics_support import at
    from tests.ledger_support import S

    before = row_of(tokens(ledger, MARCH), "summary")
    with ledger.begin() as conn:
        customer(conn, "c", "IN")  # no credits: refused
        states(conn, "sc", "c", [("pro", "monthly", "INR", "active", 149900, "2026-01-01 00:00", None)])
        conn.execute(
            sa.text(
                f"SELECT {S}.grant_tokens('a', 1000, 'package', p_reason => 'test', p_actor => 'test', p_at => :at)"
            ),
            {"at": at("2026-03-25 09:00")},
        )

        def call(sql: str, **params: object) -> dict[str, object]:
            return dict(conn.execute(sa.text(f"SELECT {S}.{sql}"), params).scalar_one())

        consumed = call("consume('a', 'gpt-4o', 1000, 1000, 'adm-1', p_at => :at)", at=at("2026-03-25 10:05"))
        held = call("reserve('a', 'gpt-4o', 2000, 2000, 'adm-2', p_at => :at)", at=at("2026-03-25 10:06"))
        settled = call("commit('adm-2', 1000, 500, p_at => :at)", at=at("2026-03-25 10:07"))
        refused = call("consume('c', 'gpt-4o', 1000, 1000, 'adm-3', p_at => :at)", at=at("2026-03-25 10:08"))
    assert consumed["allowed"] and held["allowed"] and not refused["allowed"]
    after = row_of(tokens(ledger, MARCH), "summary")
    assert after["requests"] == before["requests"] + 2
    assert after["credits"] == before["credits"] + consumed["credits"] + settled["charged"]
    assert after["tokens"] == before["tokens"] + 2000 + 1500


def test_edge_days_count_on_the_plan_the_customer_had_that_day(ledger: Engine) -> None:
    with ledger.begin() as conn:
        customer(conn, "c", "IN")
        states(
            conn,
            "sc",
            "c",
            [
                ("pro", "monthly", "INR", "active", 149900, "2026-01-01 00:00", "2026-03-10 12:00"),
                ("premium", "monthly", "INR", "active", 299900, "2026-03-10 12:00", None),
            ],
        )
        usage(conn, "c", "gpt-4o", "c1", "2026-03-05 12:00", 1000, 0, 3)
        usage(conn, "c", "gpt-4o", "c2", "2026-03-15 12:00", 1000, 0, 7)
        # On the day of the change both plans were held: the day counts for the higher-paying one.
        usage(conn, "c", "gpt-4o", "c3", "2026-03-10 08:00", 1000, 0, 5)
    edge_days = period("2026-03-02", "2026-03-20")
    pro = tokens(ledger, edge_days, TokenFilters(plan="pro"), by="customer")
    assert [(r[0], r[2]) for r in pro.section("breakdown").rows] == [("a", 9), ("c", 3)]
    premium = tokens(ledger, edge_days, TokenFilters(plan="premium"), by="customer")
    assert [(r[0], r[2]) for r in premium.section("breakdown").rows] == [("b", 20), ("c", 12)]
    everyone = tokens(ledger, edge_days, by="customer")
    assert row_of(everyone, "top_consumers", customer="c")["plan"] == "premium"
