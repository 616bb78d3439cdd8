"""`tariff report forecast tokens|revenue`: a forecast, the recent history it continues and its back-test."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from sqlalchemy.engine import Connection

from analytics.forecast import (
    Forecast,
    NotEnoughHistoryError,
    forecast,
    last_complete_day,
    minor_units,
    mrr_currencies,
    mrr_series,
    revenue_currencies,
    revenue_series,
    token_series,
)
from analytics.model import Chart, Column, Report, Section

Subject = Literal["tokens", "revenue"]
Basis = Literal["auto", "collected", "mrr"]
HISTORY_SHOWN = 56  # days of actuals printed before the forecast: enough to see the weekly rhythm


class NoRevenueError(ValueError):
    """No collected payments (in the currency asked for) to forecast from."""


def build_forecast_report(
    conn: Connection,
    schema: str,
    subject: Subject,
    horizon: int,
    *,
    start: date | None = None,
    currency: str | None = None,
    basis: Basis = "auto",
    customer: str | None = None,
    model: str | None = None,
    level: float = 0.8,
    now: datetime | None = None,
) -> Report:
    """Fit on the complete days from `start` (default: all history) to yesterday and forecast `horizon` days.

    Revenue is money collected per day (payments less refunds) or, with basis "mrr", the MRR in force each
    day (subscription_history); "auto" takes collected money when there is any, else MRR.
    Raises NotEnoughHistoryError for a too-short series and NoRevenueError when there is nothing to fit.
    """
    end = last_complete_day(conn, schema)
    filters: dict[str, str] = {"horizon": f"{horizon}d"}
    if subject == "tokens":
        series = token_series(conn, schema, start, end, customer=customer, model=model)
        filters |= {k: v for k, v in (("customer", customer), ("model", model)) if v}
        places = 0
    else:
        collected = revenue_currencies(conn, schema, start, end)
        if basis == "auto":
            basis = "collected" if collected and (currency is None or currency in collected) else "mrr"
        found = collected if basis == "collected" else mrr_currencies(conn, schema)
        if currency is None:
            if not found:
                raise NoRevenueError(
                    "no collected payments to forecast revenue from"
                    if basis == "collected"
                    else "no paying subscriptions to forecast MRR from"
                )
            currency = found[0]
        loader = revenue_series if basis == "collected" else mrr_series
        series = loader(conn, schema, start, end, currency)
        if not series.any():
            what = "collected payments" if basis == "collected" else "paying subscriptions"
            raise NoRevenueError(f"no {what} in {currency} to forecast revenue from")
        filters |= {"currency": currency, "basis": basis}
        places = minor_units(conn, schema, currency)
    if start is not None:
        filters["from"] = start.isoformat()
    result = forecast(series, horizon, level=level)
    return forecast_report(result, subject, filters, currency=currency, places=places, now=now)


def _value(value: float, subject: Subject, places: int) -> int | Decimal:
    if subject == "tokens":
        return round(value)
    return Decimal(repr(value)).quantize(Decimal(1).scaleb(-places), ROUND_HALF_UP)


def forecast_report(
    result: Forecast,
    subject: Subject,
    filters: Mapping[str, str],
    *,
    currency: str | None = None,
    places: int = 2,
    now: datetime | None = None,
) -> Report:
    kind: Literal["int", "money"] = "int" if subject == "tokens" else "money"
    unit = "credits" if subject == "tokens" else (currency or "")
    noun = {"tokens": "Credits", "collected": "Collected", "mrr": "MRR"}[
        "tokens" if subject == "tokens" else filters.get("basis", "collected")
    ]
    history = result.history.iloc[-HISTORY_SHOWN:]
    history_section = Section(
        key="history",
        title=f"{noun} per day, last {len(history)} complete days",
        columns=(Column("day", "Day", "date"), Column("actual", noun, kind)),
        rows=tuple((stamp.date(), _value(float(v), subject, places)) for stamp, v in history.items()),
        chart=Chart("line", "day", ("actual",), f"{noun} per day"),
        currency=currency if kind == "money" else None,
    )
    level = f"{round(result.level * 100)} %"
    predicted = result.predicted
    forecast_section = Section(
        key="forecast",
        title=f"Forecast, next {len(predicted)} days",
        columns=(
            Column("day", "Day", "date"),
            Column("forecast", "Forecast", kind),
            Column("lower", f"Low ({level})", kind),
            Column("upper", f"High ({level})", kind),
        ),
        rows=tuple(
            (
                stamp.date(),
                _value(float(row["mean"]), subject, places),
                _value(float(row["lower"]), subject, places),
                _value(float(row["upper"]), subject, places),
            )
            for stamp, row in predicted.iterrows()
        ),
        chart=Chart(
            "line", "day", ("forecast", "lower", "upper"), f"{noun} forecast with its {level} interval"
        ),
        note=f"Low and high bound the {level} prediction interval; it widens the further ahead the day is.",
        currency=currency if kind == "money" else None,
    )
    totals: list[tuple[int, int | Decimal]] = []
    for days in (7, 30, len(predicted)):
        if days <= len(predicted) and days not in {t[0] for t in totals}:
            totals.append((days, _value(float(predicted["mean"].iloc[:days].sum()), subject, places)))
    totals_section = Section(
        key="totals",
        title="Forecast totals",
        columns=(Column("days", "Next days", "int"), Column("total", f"Forecast {unit}".strip(), kind)),
        rows=tuple(totals),
        currency=currency if kind == "money" else None,
    )
    sections = [history_section, forecast_section, totals_section]
    notes = [f"Model: {result.method}, fitted on {len(result.history)} complete days."]
    test = result.backtest
    if test is None:
        notes.append("Not enough history to back-test: treat this forecast as a rough guide.")
    else:
        mape = Decimal(repr(test.mape / 100)).quantize(Decimal("0.0001")) if test.mape is not None else None
        sections.append(
            Section(
                key="accuracy",
                title="Back-test: how far off earlier forecasts were",
                columns=(
                    Column("window", "Days ahead", "int"),
                    Column("folds", "Forecasts tried", "int"),
                    Column("mae", f"Mean error per day ({unit})".replace(" ()", ""), kind),
                    Column("mape", "Mean error %", "percent"),
                    Column("coverage", f"Days inside the {level} interval", "percent"),
                ),
                rows=(
                    (
                        test.window,
                        test.folds,
                        _value(test.mae, subject, places),
                        mape,
                        Decimal(repr(test.coverage)).quantize(Decimal("0.0001")),
                    ),
                ),
                note="Rolling origin: the model was refitted on the history before each of the last "
                f"{test.folds} windows of {test.window} days and its forecast compared with what happened. "
                "MAE is the mean absolute error per day, MAPE the mean absolute percentage error over days "
                "with a non-zero actual.",
                currency=currency if kind == "money" else None,
            )
        )
        mape_text = f"{test.mape:.1f} %" if test.mape is not None else "n/a"
        notes.append(
            f"Trust: forecasts {test.window} days ahead were off by {test.mae:,.0f} {unit} a day on average "
            f"(MAPE {mape_text}); {test.coverage:.0%} of actual days fell inside the {level} interval."
        )
    first = result.history.index[0].date()
    last = predicted.index[-1].date()
    return Report(
        key=f"forecast-{subject}",
        title=f"{'Token' if subject == 'tokens' else 'Revenue'} forecast",
        period_from=first,
        period_to=last,
        filters=dict(filters),
        sections=tuple(sections),
        generated_at=now or datetime.now(UTC),
        notes=tuple(notes),
    )


__all__ = ["NoRevenueError", "NotEnoughHistoryError", "build_forecast_report", "forecast_report"]
