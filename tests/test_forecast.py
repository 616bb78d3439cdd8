"""Forecasts on synthetic series of known shape, and the daily series they are fed from the database."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from analytics.forecast import (
    MIN_HISTORY_DAYS,
    NotEnoughHistoryError,
    _fit_predict,
    backtest,
    forecast,
    parse_horizon,
    revenue_currencies,
    revenue_series,
    token_series,
)
from tests.ledger_support import S, add_customer, publish_shipped
from tests.reporting_support import WEEKDAY_SHAPE, insert_usage

START = pd.Timestamp("2026-01-05")  # a Monday


def truth(days: np.ndarray) -> np.ndarray:
    """1,000 credits a day growing by 4 a day, shaped by weekday (weekends a quarter of weekdays)."""
    shape = np.array(WEEKDAY_SHAPE)
    values: np.ndarray = (1000 + 4 * days) * shape[days % 7]
    return values


def synthetic(n: int, *, noise: float = 25.0, seed: int = 1) -> pd.Series:
    rng = np.random.default_rng(seed)
    days = np.arange(n)
    return pd.Series(truth(days) + rng.normal(0, noise, n), index=pd.date_range(START, periods=n, freq="D"))


def test_forecast_follows_trend_and_weekly_seasonality() -> None:
    series = synthetic(112)
    result = forecast(series, 28)
    expected = truth(np.arange(112, 140))
    predicted = result.predicted["mean"].to_numpy()
    assert list(result.predicted.index) == list(pd.date_range("2026-04-27", periods=28, freq="D"))
    # Within 10 % of the typical day (5 % on average) of the true curve, every day of four weeks: the
    # weekend dips are forecast on weekends, and the trend carries on.
    typical = expected.mean()
    assert np.all(np.abs(predicted - expected) < 0.10 * typical)
    assert np.mean(np.abs(predicted - expected)) < 0.05 * typical
    saturdays = predicted[5::7]
    mondays = predicted[0::7]
    assert np.all(saturdays < 0.4 * mondays)
    # The upward trend carries on: the last full week is bigger than the first.
    assert predicted[21:28].sum() > predicted[0:7].sum()


def test_intervals_contain_the_mean_and_widen_with_the_horizon() -> None:
    result = forecast(synthetic(112), 56)
    frame = result.predicted
    assert np.all(frame["lower"] <= frame["mean"]) and np.all(frame["mean"] <= frame["upper"])
    width = (frame["upper"] - frame["lower"]).to_numpy()
    # Each week is at least as uncertain as the one before, and eight weeks out clearly more. Compared
    # week by week: a multiplicative model's intervals are simulated (1,000 paths), so one day's width
    # carries a few percent of sampling noise, and its weekend intervals (a quarter of the level) widen
    # far less than its weekdays'.
    weekly = width.reshape(8, 7).mean(axis=1)
    assert np.all(weekly[1:] >= 0.98 * weekly[:-1])
    assert weekly[-1] > 1.5 * weekly[0]


def test_backtest_is_rolling_origin_mae_mape_and_coverage_as_defined() -> None:
    series = synthetic(84, seed=7)
    result = backtest(series, 14, folds=3, level=0.8)
    assert result is not None
    errors, percentages, inside = [], [], 0
    for origin in (84 - 42, 84 - 28, 84 - 14):
        predicted, _ = _fit_predict(series.iloc[:origin], 14, 0.8)
        actual = series.to_numpy()[origin : origin + 14]
        errors += list(np.abs(actual - predicted["mean"].to_numpy()))
        percentages += list(np.abs(actual - predicted["mean"].to_numpy()) / np.abs(actual) * 100)
        inside += int(np.sum((actual >= predicted["lower"]) & (actual <= predicted["upper"])))
    assert (result.window, result.folds) == (14, 3)
    assert result.mae == pytest.approx(np.mean(errors))
    assert result.mape == pytest.approx(np.mean(percentages))
    assert result.coverage == pytest.approx(inside / 42)
    # On a well-behaved series the model is good: a few percent off, at least half the days inside the
    # 80 % interval (42 days of three origins on a growing series).
    assert result.mape is not None and result.mape < 10
    assert result.coverage >= 0.5


def test_backtest_skips_origins_with_too_little_history() -> None:
    series = synthetic(MIN_HISTORY_DAYS + 14)
    result = backtest(series, 14, folds=3)
    assert result is not None and result.folds == 1
    assert backtest(synthetic(MIN_HISTORY_DAYS + 5), 14) is None


def test_noisier_history_reports_a_larger_error() -> None:
    calm = forecast(synthetic(98, noise=10), 14).backtest
    noisy = forecast(synthetic(98, noise=150), 14).backtest
    assert calm is not None and noisy is not None
    assert noisy.mae > 3 * calm.mae


def test_constant_series_forecasts_itself_exactly() -> None:
    series = pd.Series(50.0, index=pd.date_range(START, periods=40, freq="D"))
    result = forecast(series, 10)
    assert list(result.predicted["mean"]) == [50.0] * 10
    assert result.backtest is not None and result.backtest.mae == 0 and result.backtest.coverage == 1


def test_too_short_history_is_a_clear_error() -> None:
    with pytest.raises(
        NotEnoughHistoryError, match="only 20 day\\(s\\) of history, a forecast needs at least 28"
    ):
        forecast(synthetic(20), 30)


@pytest.mark.parametrize(("text", "days"), [("90d", 90), ("90", 90), ("12w", 84), ("3m", 90), (" 7D ", 7)])
def test_horizon_parsing(text: str, days: int) -> None:
    assert parse_horizon(text) == days


@pytest.mark.parametrize("text", ["", "0d", "ninety", "5y", "-3d", "1000d"])
def test_bad_horizons_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a horizon"):
        parse_horizon(text)


def test_token_series_sums_the_rollup_and_fills_quiet_days_with_zero(engine: Engine) -> None:
    publish_shipped(engine)
    add_customer(engine, "alice", "pro")
    add_customer(engine, "bob", "pro")
    insert_usage(
        engine,
        [
            (date(2026, 3, 1), "alice", "gpt-4o", 100),
            (date(2026, 3, 1), "bob", "gpt-3.5-turbo", 50),
            (date(2026, 3, 3), "alice", "gpt-4o", 70),
        ],
    )
    insert_usage(engine, [(date(2026, 3, 3), "alice", "gpt-4o", 5)], request_type="embedding")
    with engine.connect() as conn:
        everything = token_series(conn, S, None, date(2026, 3, 4))
        alice = token_series(conn, S, date(2026, 2, 28), date(2026, 3, 4), customer="alice")
        cheap = token_series(conn, S, None, date(2026, 3, 4), model="gpt-3.5-turbo")
    assert everything.to_dict() == {
        pd.Timestamp("2026-03-01"): 150.0,
        pd.Timestamp("2026-03-02"): 0.0,
        pd.Timestamp("2026-03-03"): 75.0,
        pd.Timestamp("2026-03-04"): 0.0,
    }
    assert list(alice) == [0.0, 100.0, 0.0, 75.0, 0.0]
    assert list(cheap) == [50.0, 0.0, 0.0, 0.0]


def _payment(
    engine: Engine,
    txnid: str,
    customer: str,
    minor: int,
    currency: str,
    paid_at: str | None,
    refunded: int = 0,
) -> None:
    status = "pending" if paid_at is None else ("partially_refunded" if refunded else "success")
    with engine.begin() as conn:
        version = conn.execute(
            sa.text(
                f"SELECT id FROM {S}.price_versions WHERE plan_id = 'pro' AND cycle = 'monthly' "
                "AND currency = :c AND valid_to IS NULL ORDER BY region NULLS FIRST LIMIT 1"
            ),
            {"c": currency},
        ).scalar_one()
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.payments (txnid, customer_id, kind, plan_id, cycle, price_version_id, "
                "currency, list_minor, net_minor, amount_minor, amount_text, quote, redemption_key, "
                "productinfo, status, refunded_minor, paid_at) VALUES (:txnid, :customer, 'plan', 'pro', "
                "'monthly', :version, :currency, :minor, :minor, :minor, '1', '{}', :txnid, 'Pro', "
                ":status, :refunded, :paid_at)"
            ),
            {
                "txnid": txnid,
                "customer": customer,
                "version": version,
                "currency": currency,
                "minor": minor,
                "status": status,
                "refunded": refunded,
                "paid_at": paid_at,
            },
        )


def test_revenue_series_is_collected_money_by_local_day_per_currency(engine: Engine) -> None:
    publish_shipped(engine)
    add_customer(engine, "alice", "pro")
    # 23:00 UTC on 1 March is 2 March in Kolkata, the token rules' time zone.
    _payment(engine, "T1", "alice", 149900, "INR", "2026-03-01T23:00:00Z")
    _payment(engine, "T2", "alice", 149900, "INR", "2026-03-02T10:00:00Z", refunded=49900)
    _payment(engine, "T3", "alice", 1900, "USD", "2026-03-03T10:00:00Z")
    _payment(engine, "T4", "alice", 999900, "INR", None)  # never paid
    with engine.connect() as conn:
        inr = revenue_series(conn, S, date(2026, 3, 1), date(2026, 3, 3), "INR")
        usd = revenue_series(conn, S, None, date(2026, 3, 3), "USD")
        currencies = revenue_currencies(conn, S, None, date(2026, 3, 3))
    assert list(inr) == [0.0, 2499.0, 0.0]
    assert list(usd) == [19.0]
    assert currencies == ["INR", "USD"]


def test_forecast_of_database_series_end_to_end(engine: Engine) -> None:
    publish_shipped(engine)
    add_customer(engine, "alice", "pro")
    days = np.arange(70)
    values = truth(days)
    start = date(2026, 1, 5)
    insert_usage(
        engine,
        [
            (start + timedelta(days=int(d)), "alice", "gpt-4o", round(v))
            for d, v in zip(days, values, strict=True)
        ],
    )
    with engine.connect() as conn:
        series = token_series(conn, S, None, start + timedelta(days=69))
    result = forecast(series, 7)
    expected = truth(np.arange(70, 77))
    # Within 5 % of the typical day, every day (a weekend day is a quarter of a weekday: 5 % of its own
    # value is a few credits).
    assert np.all(np.abs(result.predicted["mean"].to_numpy() - expected) < 0.05 * expected.mean())
    assert result.backtest is not None and result.backtest.mape is not None and result.backtest.mape < 5
