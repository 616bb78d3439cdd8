"""The reporting period and the filters every report applies the same way in every format.

Periods are whole local days in the ledger's time zone (token_rules.timezone, the zone the usage rollups
are bucketed in): `--from 2026-01-01 --to 2026-01-31` is from midnight on the 1st to midnight after the
31st, local time. Without --to, the period ends today; without --from, it starts 179 days before --to
(never before FIRST_DAY). Both ends must lie between FIRST_DAY and LAST_DAY.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

DEFAULT_DAYS = 180
# The dates a period may cover. Python's dates run from year 1 to 9999-12-31, and the reports step past
# the period's last day (the exclusive end, the first of the month after it) and before its first (the
# default --from, local midnight converted to UTC), so dates near either limit overflow mid-report. A year
# of slack at the top, and 1900 at the bottom (before any ledger), keep every such step valid.
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(9998, 12, 31)


class PeriodError(ValueError):
    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass(frozen=True)
class Period:
    start: date  # first day, inclusive
    end: date  # last day, inclusive
    timezone: str

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def params(self) -> dict[str, object]:
        """SQL parameters: :from_day / :to_day (inclusive dates), :until_day (exclusive), :tz."""
        return {
            "from_day": self.start,
            "to_day": self.end,
            "until_day": self.end + timedelta(days=1),
            "tz": self.timezone,
        }


def use_schema(conn: Connection, schema: str) -> None:
    """Point this transaction's search_path at the Tariff schema (analytics SQL never names it).

    JIT is switched off for the transaction: report queries are many short aggregations whose compile
    time (seconds on a busy machine) would exceed their run time.
    """
    conn.execute(sa.text("SELECT set_config('search_path', :path, true)"), {"path": f'"{schema}", public'})
    conn.execute(sa.text("SET LOCAL jit = off"))


def resolve_period(
    conn: Connection, start: date | None, end: date | None, *, today: date | None = None
) -> Period:
    timezone = conn.execute(sa.text("SELECT token_timezone()")).scalar_one()
    if today is None:
        today = conn.execute(sa.text("SELECT (now() AT TIME ZONE token_timezone())::date")).scalar_one()
    for option, day in (("--from", start), ("--to", end)):
        if day is not None and not FIRST_DAY <= day <= LAST_DAY:
            raise PeriodError(
                f"{option} {day.isoformat()} is outside the dates reports cover "
                f"({FIRST_DAY.isoformat()} to {LAST_DAY.isoformat()})",
                fix=f"give a {option} between {FIRST_DAY.isoformat()} and {LAST_DAY.isoformat()} "
                f"(YYYY-MM-DD), or leave {option} out "
                + ("to end the period today" if option == "--to" else f"for the last {DEFAULT_DAYS} days"),
            )
    last = end or today
    first = start or max(FIRST_DAY, last - timedelta(days=DEFAULT_DAYS - 1))
    if first > last:
        raise PeriodError(
            f"--from {first.isoformat()} is after --to {last.isoformat()}",
            fix="give a --from on or before --to (both are inclusive local dates, YYYY-MM-DD)",
        )
    return Period(first, last, timezone)


def generated_now(conn: Connection) -> datetime:
    value: datetime = conn.execute(sa.text("SELECT now()")).scalar_one()
    return value
