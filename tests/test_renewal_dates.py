"""The first renewal on or after a date, computed arithmetically, against stepping renewal by renewal."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from publishers.postgres.grandfather import month_number, renewal_sql

# Period ends at month ends, in leap and common years, around midnight and at DST changes; cycles of months
# and of days; not-before dates from weeks before the period end to two years after it.
GRID = """
WITH period_ends(pe) AS (
    SELECT CAST(x AS timestamptz) FROM unnest(CAST(:period_ends AS text[])) AS x
),
cycles(every, unit) AS (
    VALUES (1, 'month'), (3, 'month'), (12, 'month'), (7, 'day'), (30, 'day'), (365, 'day')
),
offsets(minutes) AS (
    SELECT m FROM unnest(CAST(:offsets AS int[])) AS m
),
cases AS (
    SELECT p.pe, c.every, c.unit, p.pe + make_interval(mins => o.minutes) AS nb
      FROM period_ends p CROSS JOIN cycles c CROSS JOIN offsets o
)
"""

PERIOD_ENDS = [
    "2026-01-31 00:00:00+00",
    "2026-01-31 23:30:00+00",
    "2026-01-30 18:45:00+00",
    "2024-02-29 12:00:00+00",
    "2026-02-28 23:59:59+00",
    "2026-03-08 06:30:00+00",  # the US spring-forward day
    "2026-03-29 01:30:00+00",  # the EU spring-forward day
    "2026-10-25 00:30:00+00",  # the EU fall-back day
    "2026-12-31 20:00:00+00",
    "2026-06-15 09:00:00+00",
]
DAY = 24 * 60
OFFSETS = sorted(
    {
        *range(-60 * DAY, 60 * DAY, 7 * DAY + 61),
        *range(60 * DAY, 800 * DAY, 53 * DAY + 113),
        *(d * DAY + m for d in (0, 1, 27, 28, 29, 30, 31, 59, 60, 89, 90, 91, 365, 366) for m in (-1, 0, 1)),
    }
)


@pytest.mark.parametrize("months", ["computed inline", "passed in"])
@pytest.mark.parametrize("zone", ["Asia/Kolkata", "America/New_York", "Europe/Berlin"])
def test_the_computed_renewal_is_the_first_one_on_or_after_the_date(
    raw_engine: Engine, zone: str, months: str
) -> None:
    if months == "passed in":  # as the blast-radius query does, from columns computed once
        computed = renewal_sql(
            "pe", "every", "unit", "nb", period_end_month="pe_month", not_before_month="nb_month"
        )
    else:
        computed = renewal_sql("pe", "every", "unit", "nb")
    step = (
        "CASE WHEN unit = 'month' THEN make_interval(months => every) ELSE make_interval(days => every) END"
    )
    query = (
        GRID
        + f"""
SELECT count(*) AS cases,
       count(*) FILTER (WHERE computed IS DISTINCT FROM stepped) AS wrong,
       (array_agg(ARRAY[pe::text, every::text, unit, nb::text, computed::text, stepped::text])
            FILTER (WHERE computed IS DISTINCT FROM stepped))[1:3] AS examples
  FROM (SELECT pe, every, unit, nb, {computed} AS computed,
               (SELECT min(pe + g * {step}) FROM generate_series(0, 120) AS g WHERE pe + g * {step} >= nb)
                   AS stepped
          FROM (SELECT *, {month_number("pe")} AS pe_month, {month_number("nb")} AS nb_month FROM cases) AS c
       ) AS both_ways
"""
    )
    with raw_engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SELECT set_config('TimeZone', :zone, true)"), {"zone": zone})
        row = conn.execute(sa.text(query), {"period_ends": PERIOD_ENDS, "offsets": OFFSETS}).one()
    assert row.cases == len(PERIOD_ENDS) * 6 * len(OFFSETS)
    assert row.wrong == 0, row.examples


MONTH = "'month'"


def test_a_keep_for_of_many_years_lands_on_the_first_renewal_after_it(raw_engine: Engine) -> None:
    # Twelve years of monthly renewals: an estimate from 30-day months would overshoot by two.
    query = (
        f"SELECT {renewal_sql('pe', '1', MONTH, 'nb')} "
        "FROM (SELECT CAST(:pe AS timestamptz) AS pe, CAST(:nb AS timestamptz) AS nb) AS t"
    )
    with raw_engine.connect() as conn, conn.begin():
        conn.execute(sa.text("SELECT set_config('TimeZone', 'UTC', true)"))
        found = conn.execute(
            sa.text(query), {"pe": "2026-01-15 10:00+00", "nb": "2038-01-15 00:00+00"}
        ).scalar_one()
    assert found.isoformat() == "2038-01-15T10:00:00+00:00"
