"""Usage anomalies over the daily rollup: injected spikes are found and explained, weekly rhythm is not."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from analytics.anomalies import Thresholds, explain, find_anomalies, raise_anomaly_alerts
from tests.ledger_support import S, add_customer, publish_shipped
from tests.reporting_support import insert_usage, weekly_usage

START = date(2026, 9, 7)  # a Monday; ten weeks of history up to 15 November
DAYS = 70
SPIKE_DAY = date(2026, 11, 10)  # a Tuesday
CUSTOMERS = ("alice", "bob", "carol", "dave", "erin")


@pytest.fixture
def usage(engine: Engine) -> Engine:
    publish_shipped(engine)
    for customer in CUSTOMERS:
        add_customer(engine, customer, "pro")
    rows = []
    for n, customer in enumerate(CUSTOMERS):
        rows += weekly_usage(customer, "gpt-4o", START, DAYS, 400 + 50 * n, noise=0.15)
        rows += weekly_usage(customer, "gpt-3.5-turbo", START, DAYS, 120 + 10 * n, noise=0.2)
    insert_usage(engine, rows)
    return engine


def _spike(engine: Engine, customer: str, model: str, day: date, credits: int) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {S}.token_usage_daily SET credits = :credits "
                "WHERE customer_id = :customer AND model_id = :model AND day = :day"
            ),
            {"credits": credits, "customer": customer, "model": model, "day": day},
        )


def test_weekly_rhythm_with_noise_raises_nothing(usage: Engine) -> None:
    # Weekends are a quarter of weekdays, noise is ±15-20 %: comparing like weekdays finds nothing unusual.
    with usage.connect() as conn:
        found = find_anomalies(conn, S, START + timedelta(days=28), START + timedelta(days=DAYS - 1))
    assert found == []


def test_injected_spike_is_found_ranked_and_explained(usage: Engine) -> None:
    _spike(usage, "bob", "gpt-4o", SPIKE_DAY, 4210)
    # A smaller one on a Saturday: busy-weekday level on a quiet weekend day is unusual for a Saturday.
    _spike(usage, "dave", "gpt-3.5-turbo", date(2026, 11, 14), 600)
    with usage.connect() as conn:
        found = find_anomalies(conn, S, date(2026, 11, 1), date(2026, 11, 15))
    assert [(a.customer, a.model, a.day) for a in found] == [
        ("bob", "gpt-4o", SPIKE_DAY),
        ("dave", "gpt-3.5-turbo", date(2026, 11, 14)),
    ]
    bob = found[0]
    assert bob.credits == 4210
    assert bob.history == 8
    # bob's Tuesdays: 450 × 1.1 ± 15 %.
    assert Decimal(420) < bob.usual < Decimal(570)
    assert bob.ratio is not None and bob.ratio == round(Decimal(4210) / bob.usual, 2)
    text = explain(bob)
    assert text.startswith(
        f"used 4,210 credits of gpt-4o on Tue 10 Nov, {bob.ratio:.1f}× their usual Tuesday (median "
    )
    assert float(text.removesuffix(")").rsplit(" ", 1)[1].replace(",", "")) == pytest.approx(float(bob.usual))


def test_filters_narrow_to_customer_and_model(usage: Engine) -> None:
    _spike(usage, "bob", "gpt-4o", SPIKE_DAY, 4210)
    _spike(usage, "carol", "gpt-4o", SPIKE_DAY, 5000)
    with usage.connect() as conn:
        only_carol = find_anomalies(conn, S, date(2026, 11, 1), date(2026, 11, 15), customer="carol")
        other_model = find_anomalies(conn, S, date(2026, 11, 1), date(2026, 11, 15), model="gpt-3.5-turbo")
    assert [a.customer for a in only_carol] == ["carol"]
    assert other_model == []


def test_spike_below_the_thresholds_is_not_reported(usage: Engine) -> None:
    # Twice the usual Tuesday is a busy day, not an incident (the ratio threshold is 3×).
    _spike(usage, "bob", "gpt-4o", SPIKE_DAY, 990)
    with usage.connect() as conn:
        assert find_anomalies(conn, S, date(2026, 11, 1), date(2026, 11, 15)) == []
        stricter = Thresholds(min_ratio=Decimal("1.5"), min_score=Decimal(3))
        assert [a.customer for a in find_anomalies(conn, S, SPIKE_DAY, SPIKE_DAY, thresholds=stricter)] == [
            "bob"
        ]


def test_too_little_history_is_not_judged(engine: Engine) -> None:
    publish_shipped(engine)
    add_customer(engine, "newbie", "pro")
    rows = weekly_usage("newbie", "gpt-4o", date(2026, 10, 26), 21, 300)
    insert_usage(engine, rows)
    _spike(engine, "newbie", "gpt-4o", date(2026, 11, 10), 9000)  # only two Tuesdays before it
    with engine.connect() as conn:
        assert find_anomalies(conn, S, date(2026, 11, 1), date(2026, 11, 15)) == []
        lenient = Thresholds(min_history=2)
        assert len(find_anomalies(conn, S, date(2026, 11, 1), date(2026, 11, 15), thresholds=lenient)) == 1


def test_a_usual_day_of_none_is_explained_as_such(engine: Engine) -> None:
    publish_shipped(engine)
    add_customer(engine, "weekender", "pro")
    # Uses gpt-4o on Saturdays only, for eight weeks; then a big Wednesday.
    saturdays = [(date(2026, 9, 19) + timedelta(weeks=k), "weekender", "gpt-4o", 200) for k in range(8)]
    insert_usage(engine, [*saturdays, (date(2026, 11, 11), "weekender", "gpt-4o", 800)])
    with engine.connect() as conn:
        (found,) = find_anomalies(conn, S, date(2026, 11, 9), date(2026, 11, 15))
    assert found.ratio is None and found.usual == 0
    assert explain(found) == (
        "used 800 credits of gpt-4o on Wed 11 Nov; on a usual Wednesday they use none "
        "(median 0 over the last 7 Wednesdays)"
    )


def test_alerts_are_written_once_per_anomaly(usage: Engine) -> None:
    _spike(usage, "bob", "gpt-4o", date(2026, 11, 14), 4000)  # Saturday
    at = datetime.fromisoformat("2026-11-15T09:00:00+05:30")
    with usage.begin() as conn:
        first = raise_anomaly_alerts(conn, S, at)
    with usage.begin() as conn:
        again = raise_anomaly_alerts(conn, S, at + timedelta(minutes=5))
        rows = conn.execute(
            sa.text(f"SELECT kind, customer_id, channel, payload, status FROM {S}.notifications")
        ).all()
    assert (first["anomalies"], first["alerts_written"]) == (1, 1)
    assert (again["anomalies"], again["alerts_written"]) == (1, 0)
    assert first["days"] == ["2026-11-14", "2026-11-15"]
    ((kind, customer, channel, payload, status),) = rows
    assert (kind, customer, channel, status) == ("usage_anomaly", None, "email", "pending")
    assert payload["customer"] == "bob" and payload["model"] == "gpt-4o" and payload["day"] == "2026-11-14"
    assert payload["credits"] == 4000


def test_alerts_only_look_at_yesterday_and_today(usage: Engine) -> None:
    _spike(usage, "bob", "gpt-4o", date(2026, 11, 10), 4000)
    with usage.begin() as conn:
        summary = raise_anomaly_alerts(conn, S, datetime.fromisoformat("2026-11-15T09:00:00+05:30"))
    assert summary["alerts_written"] == 0


def test_bad_window_is_refused_with_a_hint(usage: Engine) -> None:
    from sqlalchemy.exc import DBAPIError

    with usage.connect() as conn, pytest.raises(DBAPIError, match="is empty"):
        find_anomalies(conn, S, date(2026, 11, 15), date(2026, 11, 1))


def test_concurrent_alert_runs_write_each_alert_once(usage: Engine) -> None:
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    _spike(usage, "bob", "gpt-4o", date(2026, 11, 14), 4000)
    _spike(usage, "carol", "gpt-3.5-turbo", date(2026, 11, 15), 2000)
    at = datetime.fromisoformat("2026-11-15T20:00:00+05:30")
    barrier = Barrier(4)

    def run(_: int) -> int:
        with usage.begin() as conn:
            barrier.wait()
            return int(raise_anomaly_alerts(conn, S, at)["alerts_written"])

    with ThreadPoolExecutor(4) as pool:
        written = list(pool.map(run, range(4)))
    assert sum(written) == 2
    with usage.connect() as conn:
        keys = (
            conn.execute(sa.text(f"SELECT idempotency_key FROM {S}.notifications ORDER BY 1")).scalars().all()
        )
    assert keys == ["usage-anomaly:bob:gpt-4o:2026-11-14", "usage-anomaly:carol:gpt-3.5-turbo:2026-11-15"]
