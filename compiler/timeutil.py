"""Durations and time stamps as written in config."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_DURATION = re.compile(r"([1-9][0-9]*) (minute|hour|day|week|month|year)s?")


@dataclass(frozen=True, slots=True)
class Duration:
    """A calendar-aware length: months and years are not a fixed number of days."""

    count: int
    unit: str  # minute | hour | day | week | month | year

    @classmethod
    def parse(cls, text: str) -> Duration:
        match = _DURATION.fullmatch(text.strip())
        if not match:
            raise ValueError(f"not a duration: {text!r} (write e.g. `30 days` or `12 months`)")
        return cls(int(match.group(1)), match.group(2))

    def __str__(self) -> str:
        return f"{self.count} {self.unit}{'' if self.count == 1 else 's'}"

    @property
    def months(self) -> int:
        return self.count * (12 if self.unit == "year" else 1) if self.unit in ("month", "year") else 0

    @property
    def fixed(self) -> timedelta:
        """The length when it has one (minutes to weeks); months and years have none."""
        seconds = {"minute": 60, "hour": 3600, "day": 86400, "week": 604800}.get(self.unit)
        if seconds is None:
            raise ValueError(f"{self} has no fixed length")
        return timedelta(seconds=seconds * self.count)

    def after(self, start: datetime) -> datetime:
        if self.unit in ("month", "year"):
            return add_months(start, self.months)
        return start + self.fixed


def add_months(start: datetime, months: int) -> datetime:
    """Same day-of-month `months` later, clamped to the month's last day (Jan 31 + 1 month = Feb 28/29)."""
    total = start.month - 1 + months
    year, month = start.year + total // 12, total % 12 + 1
    day = min(start.day, _days_in_month(year, month))
    return start.replace(year=year, month=month, day=day)


def _days_in_month(year: int, month: int) -> int:
    if month == 12:
        return 31
    return (datetime(year, month + 1, 1) - datetime(year, month, 1)).days


def zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {name!r}") from exc


def parse_timestamp(text: str, default_zone: str | None) -> datetime:
    """Parse an ISO 8601 time stamp; without an offset it is read in `default_zone`."""
    try:
        value = datetime.fromisoformat(text.strip().replace(" ", "T", 1) if "T" not in text else text.strip())
    except ValueError as exc:
        raise ValueError(f"not a valid date/time: {text!r} ({exc})") from exc
    if value.tzinfo is None:
        if default_zone is None:
            raise ValueError(f"{text!r} has no UTC offset and no `timezone` is set")
        value = value.replace(tzinfo=zone(default_zone))
    return value


def has_offset(text: str) -> bool:
    return bool(re.search(r"(Z|[+-][0-9]{2}:?[0-9]{2})$", text.strip()))
