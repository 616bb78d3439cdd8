"""Forecasts of daily token consumption and revenue, with the error they made on their own recent past.

Series come from SQL aggregates of small tables (token_usage_daily, payments by day); the model is an
exponential-smoothing state-space model (statsmodels ETSModel: additive error, an additive trend, damped or
not, and weekly seasonality, additive or multiplicative, chosen by AICc), which gives prediction intervals
that widen with the horizon. Each forecast is back-tested by rolling origin: choose and refit on the
history up to an earlier day, forecast the following window, compare with what happened, several times;
MAE, MAPE and the interval's coverage say how far to trust it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from database.connection import quote_schema

SEASON = 7  # days: the weekly rhythm of a working-week product
MIN_HISTORY_DAYS = 4 * SEASON  # fewer days cannot separate trend from weekday pattern
BACKTEST_FOLDS = 3
BACKTEST_MAX_WINDOW = 14
DEFAULT_LEVEL = 0.8


class NotEnoughHistoryError(ValueError):
    """The series is too short to forecast; `days` it has, `needed` it would need."""

    def __init__(self, days: int, needed: int) -> None:
        super().__init__(f"only {days} day(s) of history, a forecast needs at least {needed}")
        self.days = days
        self.needed = needed


@dataclass(frozen=True, slots=True)
class Backtest:
    """Errors of forecasts made from earlier origins against what then happened.

    window: days forecast from each origin; folds: origins tried (each `window` days before the next);
    mae: mean absolute error per day; mape: mean absolute percentage error over days whose actual value is
    not zero (None when all were zero); coverage: share of actual days inside the prediction interval.
    """

    window: int
    folds: int
    mae: float
    mape: float | None
    coverage: float


@dataclass(frozen=True, slots=True)
class Forecast:
    history: pd.Series  # actual daily values, indexed by day
    predicted: pd.DataFrame  # index: days after the history; columns mean, lower, upper
    level: float  # the prediction interval's probability
    backtest: Backtest | None  # None: too little history to hold some back
    method: str


# Candidate models, chosen per series by AICc (as R's forecast::ets does): additive error and weekly
# seasonality with a damped or a straight trend, and, for series that never touch zero, multiplicative
# seasonality: a weekday pattern that grows with the level, like usage with quiet weekends.
_CANDIDATES: tuple[tuple[bool, str], ...] = ((True, "add"), (False, "add"), (True, "mul"))


def _fit_predict(series: pd.Series, horizon: int, level: float) -> tuple[pd.DataFrame, str]:
    """The forecast (mean, lower, upper per day) and the model that made it."""
    values = series.to_numpy(dtype=float)
    index = pd.date_range(series.index[-1] + pd.Timedelta(days=1), periods=horizon, freq="D")
    if float(np.ptp(values)) == 0.0:
        # A constant series has no variance to estimate: ETS cannot fit it, and the answer is obvious.
        flat = np.full(horizon, values[-1])
        return pd.DataFrame(
            {"mean": flat, "lower": flat, "upper": flat}, index=index
        ), "the last value (the series is constant)"
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    endog = pd.Series(values, index=pd.date_range(series.index[0], periods=len(values), freq="D"))
    best: tuple[float, str, Any] | None = None
    with warnings.catch_warnings():
        # Convergence chatter from the optimiser: the back-test, not a warning, says how good the fit is.
        warnings.simplefilter("ignore")
        for damped, seasonal in _CANDIDATES:
            if seasonal == "mul" and float(values.min()) <= 0.0:
                continue
            fitted = ETSModel(
                endog,
                error="add",
                trend="add",
                damped_trend=damped,
                seasonal=seasonal,
                seasonal_periods=SEASON,
            ).fit(disp=False)
            name = (
                f"ETS(A,{'Ad' if damped else 'A'},{'M' if seasonal == 'mul' else 'A'}) with weekly "
                "seasonality (statsmodels), chosen by AICc"
            )
            if np.isfinite(fitted.aicc) and (best is None or fitted.aicc < best[0]):
                best = (float(fitted.aicc), name, fitted)
        if best is None:
            raise ValueError("no exponential-smoothing model could be fitted to the series")
        # A multiplicative model's intervals are simulated: a fixed seed gives the same answer every run.
        frame = best[2].get_prediction(
            start=len(values), end=len(values) + horizon - 1, rng=np.random.default_rng(0)
        )
        frame = frame.summary_frame(alpha=1 - level)
    result = pd.DataFrame(
        {
            "mean": frame["mean"].to_numpy(),
            "lower": frame["pi_lower"].to_numpy(),
            "upper": frame["pi_upper"].to_numpy(),
        },
        index=index,
    )
    # Usage and revenue are never negative: an interval reaching below zero means "possibly nothing".
    return result.clip(lower=0.0), best[1]


def backtest(
    series: pd.Series,
    window: int,
    *,
    folds: int = BACKTEST_FOLDS,
    level: float = DEFAULT_LEVEL,
) -> Backtest | None:
    """Rolling-origin back-test: origins at n − window, n − 2·window, …, each fit on the days before it."""
    values = series.to_numpy(dtype=float)
    n = len(values)
    errors: list[float] = []
    percentages: list[float] = []
    inside = 0
    used = 0
    for k in range(folds, 0, -1):
        origin = n - k * window
        if origin < MIN_HISTORY_DAYS:
            continue
        predicted, _ = _fit_predict(series.iloc[:origin], window, level)
        actual = values[origin : origin + window]
        mean = predicted["mean"].to_numpy()
        errors.extend(np.abs(actual - mean).tolist())
        percentages.extend(abs(a - m) / abs(a) * 100 for a, m in zip(actual, mean, strict=True) if a != 0)
        inside += int(
            np.sum((actual >= predicted["lower"].to_numpy()) & (actual <= predicted["upper"].to_numpy()))
        )
        used += 1
    if not used:
        return None
    return Backtest(
        window=window,
        folds=used,
        mae=float(np.mean(errors)),
        mape=float(np.mean(percentages)) if percentages else None,
        coverage=inside / len(errors),
    )


def forecast(series: pd.Series, horizon: int, *, level: float = DEFAULT_LEVEL) -> Forecast:
    """Forecast `horizon` days after the series (daily values indexed by consecutive days)."""
    if horizon < 1:
        raise ValueError("the horizon must be at least one day")
    if len(series) < MIN_HISTORY_DAYS:
        raise NotEnoughHistoryError(len(series), MIN_HISTORY_DAYS)
    window = min(horizon, BACKTEST_MAX_WINDOW)
    predicted, model = _fit_predict(series, horizon, level)
    return Forecast(
        history=series,
        predicted=predicted,
        level=level,
        backtest=backtest(series, window, level=level),
        method=model,
    )


# ------------------------------------------------------------------------------------------- series


def _zero_filled(rows: list[tuple[date, float]], start: date | None, end: date) -> pd.Series:
    """Days without rows are days with nothing: the series runs from `start` (or the first row) to `end`.

    A row outside that range is refused rather than added: pandas would append it to the series, and a
    partial today (or a day before --from) would then be fitted as if it were a complete day.
    """
    first = start if start is not None else (min(day for day, _ in rows) if rows else end)
    outside = sorted(day for day, _ in rows if not first <= day <= end)
    if outside:
        raise ValueError(
            f"daily rows outside the series {first.isoformat()} to {end.isoformat()}: "
            + ", ".join(day.isoformat() for day in outside[:3])
        )
    index = pd.date_range(first, end, freq="D")
    series = pd.Series(0.0, index=index)
    for day, value in rows:
        series[pd.Timestamp(day)] = float(value)
    return series


def _local_midnight(schema: str, day_sql: str) -> str:
    """SQL for the instant a local day starts in token_rules.timezone.

    The date goes through `timestamp` first: `date AT TIME ZONE` would cast the date to timestamptz in the
    *session's* time zone and return a local timestamp, which then compares with timestamptz in the
    session zone again, shifting the bound by the zones' difference (5 h 30 for a UTC session and an IST
    ledger, enough to count this morning as part of yesterday).
    """
    return f"(CAST({day_sql} AS timestamp) AT TIME ZONE {quote_schema(schema)}.token_timezone())"


def token_series(
    conn: Connection,
    schema: str,
    start: date | None,
    end: date,
    *,
    customer: str | None = None,
    model: str | None = None,
) -> pd.Series:
    """Credits consumed per day from the daily rollup (summed over customers, models, request types)."""
    rows = conn.execute(
        sa.text(
            f"SELECT day, sum(credits) FROM {quote_schema(schema)}.token_usage_daily "
            "WHERE day <= :end AND (CAST(:start AS date) IS NULL OR day >= :start) "
            "AND (CAST(:customer AS text) IS NULL OR customer_id = :customer) "
            "AND (CAST(:model AS text) IS NULL OR model_id = :model) "
            "GROUP BY day ORDER BY day"
        ),
        {"start": start, "end": end, "customer": customer, "model": model},
    ).all()
    return _zero_filled([(r[0], float(r[1])) for r in rows], start, end)


# Currencies are ranked by their amount in USD (major units at currencies.usd_rate, as the revenue report
# converts): raw minor units would rank ₹1,499 (149,900 paise) above $1,400 (140,000 cents). A currency
# without a published rate cannot be compared, so it comes after those with one.
_USD_ORDER = "sum(({amount}) / 10 ^ cu.minor_units / cu.usd_rate) DESC NULLS LAST, {currency}"


def revenue_currencies(conn: Connection, schema: str, start: date | None, end: date) -> list[str]:
    """Currencies with collected payments in the window, most collected (in USD) first."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            f"SELECT p.currency FROM {s}.payments p JOIN {s}.currencies cu ON cu.code = p.currency "
            "WHERE p.paid_at IS NOT NULL "
            f"AND p.paid_at < {_local_midnight(schema, 'CAST(:end AS date) + 1')} "
            "AND (CAST(:start AS date) IS NULL "
            f"OR p.paid_at >= {_local_midnight(schema, 'CAST(:start AS date)')}) "
            "GROUP BY p.currency ORDER BY "
            + _USD_ORDER.format(amount="p.amount_minor - p.refunded_minor", currency="p.currency")
        ),
        {"start": start, "end": end},
    ).all()
    return [str(r[0]) for r in rows]


def minor_units(conn: Connection, schema: str, currency: str) -> int:
    value = conn.execute(
        sa.text(f"SELECT minor_units FROM {quote_schema(schema)}.currencies WHERE code = :c"), {"c": currency}
    ).scalar()
    return 2 if value is None else int(value)


def revenue_series(conn: Connection, schema: str, start: date | None, end: date, currency: str) -> pd.Series:
    """Money collected per day in `currency`, in major units: payments charged less what was refunded,
    on the day they were paid (days in token_rules.timezone)."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            f"SELECT (paid_at AT TIME ZONE {s}.token_timezone())::date AS day, "
            "sum(amount_minor - refunded_minor) "
            f"FROM {s}.payments WHERE paid_at IS NOT NULL AND currency = :currency "
            f"AND paid_at < {_local_midnight(schema, 'CAST(:end AS date) + 1')} "
            "AND (CAST(:start AS date) IS NULL "
            f"OR paid_at >= {_local_midnight(schema, 'CAST(:start AS date)')}) "
            "GROUP BY 1 ORDER BY 1"
        ),
        {"start": start, "end": end, "currency": currency},
    ).all()
    scale = 10 ** minor_units(conn, schema, currency)
    return _zero_filled([(r[0], float(r[1]) / scale) for r in rows], start, end)


def mrr_currencies(conn: Connection, schema: str) -> list[str]:
    """Currencies of paying subscriptions in the subscription history, most MRR (in USD) first."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(
            f"SELECT h.currency FROM {s}.subscription_history h "
            f"JOIN {s}.currencies cu ON cu.code = h.currency "
            "WHERE h.mrr_minor > 0 GROUP BY h.currency ORDER BY "
            + _USD_ORDER.format(amount="h.mrr_minor", currency="h.currency")
        )
    ).all()
    return [str(r[0]).strip() for r in rows]


def mrr_series(conn: Connection, schema: str, start: date | None, end: date, currency: str) -> pd.Series:
    """MRR in force at the end of each day in `currency` (major units), from subscription_history."""
    s = quote_schema(schema)
    if start is None:
        start = conn.execute(
            sa.text(
                f"SELECT (min(valid_from) AT TIME ZONE {s}.token_timezone())::date "
                f"FROM {s}.subscription_history WHERE currency = :currency AND mrr_minor > 0"
            ),
            {"currency": currency},
        ).scalar()
        if start is None or start > end:
            return pd.Series(dtype=float)
    rows = conn.execute(
        sa.text(
            f"""
            SELECT d.day, coalesce(sum(h.mrr_minor), 0)
              FROM (SELECT g::date AS day, {_local_midnight(schema, "g::date + 1")} AS day_end
                      FROM generate_series(CAST(:start AS date), CAST(:end AS date), interval '1 day') g) d
              LEFT JOIN {s}.subscription_history h
                     ON h.currency = :currency AND h.mrr_minor > 0 AND h.valid_from < d.day_end
                    AND (h.valid_to IS NULL OR h.valid_to >= d.day_end)
             GROUP BY d.day ORDER BY d.day
            """
        ),
        {"start": start, "end": end, "currency": currency},
    ).all()
    scale = 10 ** minor_units(conn, schema, currency)
    return _zero_filled([(r[0], float(r[1]) / scale) for r in rows], start, end)


def parse_horizon(text: str) -> int:
    """`90d`, `12w`, `3m` (30-day months) or a bare number of days."""
    cleaned = text.strip().lower()
    units = {"d": 1, "w": 7, "m": 30}
    number, unit = (cleaned[:-1], cleaned[-1]) if cleaned and cleaned[-1] in units else (cleaned, "d")
    if not number.isdigit() or not 1 <= int(number) * units[unit] <= 730:
        raise ValueError(f"not a horizon: {text!r}")
    return int(number) * units[unit]


def today_in(conn: Connection, schema: str) -> date:
    """Today in token_rules.timezone (the days the rollup is kept in)."""
    value = conn.execute(
        sa.text(f"SELECT (now() AT TIME ZONE {quote_schema(schema)}.token_timezone())::date")
    ).scalar_one()
    assert isinstance(value, date)
    return value


def last_complete_day(conn: Connection, schema: str) -> date:
    """Yesterday: today's partial total would read as a collapse and drag the forecast down."""
    return today_in(conn, schema) - timedelta(days=1)
