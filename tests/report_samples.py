"""A hand-built report exercising every column kind, currency mixes, an empty section and each chart."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from analytics.model import Chart, Column, Report, Section


def sample_report() -> Report:
    trend = Section(
        key="trend",
        title="Daily usage",
        columns=(
            Column("day", "Day", "date"),
            Column("credits", "Credits", "int"),
            Column("cost", "Provider cost", "money"),
        ),
        rows=(
            (date(2026, 1, 1), 1200, Decimal("1.50")),
            (date(2026, 1, 2), 3400, Decimal("4.25")),
            (date(2026, 1, 3), 800, Decimal("0.99")),
        ),
        chart=Chart("line", "day", ("credits",), "Credits per day"),
        currency="USD",
    )
    plans = Section(
        key="plans",
        title="Revenue by plan",
        columns=(
            Column("plan", "Plan", "text"),
            Column("currency", "Currency", "text"),
            Column("mrr", "MRR", "money", currency_key="currency"),
            Column("share", "Share", "percent"),
            Column("arpu", "ARPU", "decimal"),
            Column("seen", "Last payment", "datetime"),
        ),
        rows=(
            (
                "pro",
                "INR",
                Decimal("49900.00"),
                Decimal("0.75"),
                Decimal("499"),
                datetime(2026, 1, 3, 10, 30, tzinfo=UTC),
            ),
            ("team", "USD", Decimal("1234.5"), Decimal("0.25"), Decimal("12.345"), None),
        ),
        chart=Chart("bar", "plan", ("mrr",), "MRR by plan"),
    )
    heat = Section(
        key="heat",
        title="Peak hours",
        columns=(
            Column("weekday", "Weekday", "text"),
            *(Column(f"h{h:02d}", f"{h:02d}", "int") for h in range(3)),
        ),
        rows=(("Mon", 1, 5, 9), ("Tue", 0, 2, 4)),
        chart=Chart("heatmap", "weekday", ("h00", "h01", "h02"), "Requests by hour of week"),
    )
    empty = Section(
        key="empty",
        title="Refunds",
        columns=(Column("id", "Payment", "text"), Column("amount", "Amount", "money")),
        rows=(),
        note="No refunds in this period.",
        currency="INR",
    )
    return Report(
        key="sample",
        title="Sample report",
        period_from=date(2026, 1, 1),
        period_to=date(2026, 1, 3),
        filters={"plan": "pro"},
        sections=(trend, plans, heat, empty),
        generated_at=datetime(2026, 1, 4, 9, 0, tzinfo=UTC),
    )
