"""Unusual usage: customer × model × day spikes against the customer's own same-weekday history.

The statistics run in PostgreSQL (`usage_anomalies()` of migration 0013, percentile_cont over the daily
rollup); Python only shapes the few rows it returns into explanations, a report, and admin alerts.
Thresholds and their meaning are documented in docs/reports.md and at the top of the migration.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from database.connection import quote_schema

if TYPE_CHECKING:
    from analytics.model import Report


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a day counts as unusual (defaults documented in docs/reports.md)."""

    weeks: int = 8  # same weekdays looked back on
    min_history: int = 4  # fewer same weekdays of history: not judged
    min_score: Decimal = Decimal(5)  # robust z-score: (credits - median) / (1.4826 × MAD), floored
    min_ratio: Decimal = Decimal(3)  # and at least this many times the usual day
    min_excess: int = 100  # and at least this many credits above it

    def problems(self) -> list[str]:
        found = []
        if self.weeks < 1 or not 1 <= self.min_history <= self.weeks:
            found.append(f"need 1 <= minimum history ({self.min_history}) <= weeks ({self.weeks})")
        if self.min_score <= 0:
            found.append("the score threshold must be positive")
        if self.min_ratio < 1:
            found.append("the ratio threshold must be at least 1")
        if self.min_excess < 1:
            found.append("the minimum excess must be at least 1 credit")
        return found


@dataclass(frozen=True, slots=True)
class Anomaly:
    day: date
    customer: str
    model: str
    credits: int
    usual: Decimal
    mad: Decimal
    history: int
    ratio: Decimal | None
    score: Decimal

    @property
    def explanation(self) -> str:
        return explain(self)


def _credits(value: Decimal | int) -> str:
    number = Decimal(value)
    if number == number.to_integral_value():
        return f"{int(number):,}"
    return f"{number:,.1f}"


def explain(anomaly: Anomaly) -> str:
    """ "used 4,210 credits of gpt-4 on Tue 12 Nov, 9.3× their usual Tuesday (median 450)"."""
    when = f"{anomaly.day:%a} {anomaly.day.day} {anomaly.day:%b}"
    weekday = f"{anomaly.day:%A}"
    head = f"used {_credits(anomaly.credits)} credits of {anomaly.model} on {when}"
    if anomaly.ratio is None:
        return (
            f"{head}; on a usual {weekday} they use none "
            f"(median 0 over the last {anomaly.history} {weekday}s)"
        )
    return f"{head}, {anomaly.ratio:.1f}× their usual {weekday} (median {_credits(anomaly.usual)})"


def find_anomalies(
    conn: Connection,
    schema: str,
    since: date,
    until: date,
    *,
    customer: str | None = None,
    model: str | None = None,
    thresholds: Thresholds = Thresholds(),
) -> list[Anomaly]:
    """Anomalies between `since` and `until` (inclusive), strongest first."""
    rows = conn.execute(
        sa.text(
            f"SELECT * FROM {quote_schema(schema)}.usage_anomalies(p_from => :since, p_to => :until, "
            "p_customer => :customer, p_model => :model, p_weeks => :weeks, p_min_history => :min_history, "
            "p_min_score => :min_score, p_min_ratio => :min_ratio, p_min_excess => :min_excess)"
        ),
        {
            "since": since,
            "until": until,
            "customer": customer,
            "model": model,
            "weeks": thresholds.weeks,
            "min_history": thresholds.min_history,
            "min_score": thresholds.min_score,
            "min_ratio": thresholds.min_ratio,
            "min_excess": thresholds.min_excess,
        },
    ).all()
    return [
        Anomaly(r.day, r.customer_id, r.model_id, int(r.credits), r.usual, r.mad, r.history, r.ratio, r.score)
        for r in rows
    ]


def raise_anomaly_alerts(
    conn: Connection, schema: str, at: datetime | None = None, *, channel: str = "email"
) -> dict[str, Any]:
    """Write one admin notification per new anomaly of yesterday and today into the outbox (idempotent).

    Meant for `tariff tick`: returns {at, days, anomalies, alerts_written}.
    """
    s = quote_schema(schema)
    if at is None:
        result = conn.execute(
            sa.text(f"SELECT {s}.raise_anomaly_alerts(p_channel => :channel)"), {"channel": channel}
        )
    else:
        result = conn.execute(
            sa.text(f"SELECT {s}.raise_anomaly_alerts(p_at => :at, p_channel => :channel)"),
            {"at": at, "channel": channel},
        )
    summary: dict[str, Any] = result.scalar_one()
    return summary


def anomaly_report(
    anomalies: list[Anomaly],
    since: date,
    until: date,
    *,
    customer: str | None = None,
    model: str | None = None,
    thresholds: Thresholds = Thresholds(),
    now: datetime | None = None,
) -> Report:
    """The anomalies, strongest first, each with its plain-language explanation."""
    from analytics.model import Column, Report, Section

    filters = {k: v for k, v in (("customer", customer), ("model", model)) if v}
    section = Section(
        key="anomalies",
        title="Unusual usage, strongest first",
        columns=(
            Column("rank", "#", "int"),
            Column("day", "Day", "date"),
            Column("customer", "Customer", "text"),
            Column("model", "Model", "text"),
            Column("credits", "Credits", "int"),
            Column("usual", "Usual (median)", "decimal"),
            Column("ratio", "× usual", "decimal"),
            Column("score", "Score", "decimal"),
            Column("explanation", "What happened", "text"),
        ),
        rows=tuple(
            (n, a.day, a.customer, a.model, a.credits, a.usual, a.ratio, a.score, explain(a))
            for n, a in enumerate(anomalies, 1)
        ),
        note=(
            f"A day is unusual when it is at least {thresholds.min_ratio}× the usual day and "
            f"{thresholds.min_excess} credits above it, the usual day being the median of the same weekday "
            f"over the previous {thresholds.weeks} weeks (at least {thresholds.min_history} of them), with a "
            f"robust score (distance from the median in scaled MADs) of {thresholds.min_score} or more."
            if anomalies
            else "Nothing unusual: every customer's usage stayed within their own weekday pattern."
        ),
    )
    return Report(
        key="anomalies",
        title="Usage anomalies",
        period_from=since,
        period_to=until,
        filters=filters,
        sections=(section,),
        generated_at=now or datetime.now(UTC),
    )
