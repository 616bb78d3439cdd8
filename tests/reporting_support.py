"""Hand-built usage for the report tests: daily rollup rows with a known weekly shape and seeded noise."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tests.ledger_support import S

# Weekday shape of a working-week product: busy Monday to Friday, quiet weekends (Monday = 0).
WEEKDAY_SHAPE = (1.0, 1.1, 1.05, 1.0, 0.9, 0.25, 0.2)


def weekly_usage(
    customer: str,
    model: str,
    start: date,
    days: int,
    level: float,
    *,
    noise: float = 0.1,
    seed: int = 0,
) -> list[tuple[date, str, str, int]]:
    """`days` days of credits with the weekday shape times `level`, ±`noise` (relative, uniform)."""
    rng = random.Random(f"{customer}/{model}/{seed}")
    rows = []
    for offset in range(days):
        day = start + timedelta(days=offset)
        value = level * WEEKDAY_SHAPE[day.weekday()] * (1 + rng.uniform(-noise, noise))
        rows.append((day, customer, model, max(round(value), 0)))
    return rows


def insert_usage(
    engine: Engine, rows: Iterable[tuple[date, str, str, int]], request_type: str = "chat"
) -> None:
    """Rollup rows as record_usage() would have left them (one request per row, cost at 0.001 USD/credit)."""
    params = [
        {"day": day, "customer": customer, "model": model, "credits": credits, "type": request_type}
        for day, customer, model, credits in rows
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.token_usage_daily AS d (day, customer_id, model_id, request_type, "
                "requests, input_tokens, output_tokens, credits, cost, cost_currency) "
                "VALUES (:day, :customer, :model, :type, 1, :credits * 100, 0, :credits, "
                ":credits * 0.001, 'USD') "
                "ON CONFLICT (customer_id, day, model_id, request_type) DO UPDATE "
                "SET credits = d.credits + EXCLUDED.credits, requests = d.requests + 1"
            ),
            params,
        )
