"""CSV imports of customers and subscriptions: every row checked before anything is written, then written
set-based in the caller's transaction.

The order is: read and decode the file, check the header, check every row against the live catalog (a
handful of queries in all, never one per row), and only when there is no error at all, write with two
set-based statements per file (INSERT … ON CONFLICT DO NOTHING for new ids, then UPDATE … WHERE IS DISTINCT
FROM for known ones) fed by unnest() of column arrays. With any error the result lists them all and no write
statement runs.

Semantics follow the SQL functions `register_customer` and `register_subscription`, so a row imported here
and the same values registered by the app end up identical:

* an empty cell leaves the stored value alone (a partial file never wipes data); `segments` and
  `attributes`, when given, replace the stored ones;
* a customer's region is the `region` cell, else the published region of its `country`, else the default
  region; subscriptions never create customers;
* a subscription's price is the version whose amount equals `price_paid` (current or historical: how
  existing subscribers on an old price are adopted), else the version on sale now; an existing subscription
  changes status and period dates only, and a row that would change its plan, cycle, currency, region or
  price is refused;
* time stamps are ISO 8601; one without a UTC offset is read in the project's timezone (tariff.yaml
  `timezone`, published in catalog_state; UTC before a catalog is published), the zone in which
  register_subscription does its calendar arithmetic.

Importing the same file twice changes nothing the second time.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compiler.money import Currency, plain
from compiler.timeutil import zone
from database.connection import quote_schema
from database.customers import SUBSCRIPTION_STATUSES, load_currencies

CUSTOMER_COLUMNS = ("id", "email", "region", "country", "segments", "attributes")
CUSTOMER_REQUIRED = ("id",)
SUBSCRIPTION_COLUMNS = (
    "id",
    "customer_id",
    "plan",
    "cycle",
    "currency",
    "region",
    "price_paid",
    "status",
    "current_period_start",
    "current_period_end",
    "trial_end",
)
SUBSCRIPTION_REQUIRED = ("id", "customer_id", "plan", "cycle")

_ID = re.compile(r"\S{1,255}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+")
SEGMENT_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")  # as promotions' eligibility.segments
_AMOUNT = re.compile(r"[0-9]+(\.[0-9]+)?")
_EXPONENT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+")
_MAX_SPELLED_DIGITS = 30
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?)?"
    r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)?"
)
TIME_FORMAT = "an ISO 8601 date or date-time, e.g. 2026-11-01 or 2026-11-01T09:30:00+05:30"
_ENCODING_FIX = "save the file as UTF-8 (in Excel: Save As › CSV UTF-8 (Comma delimited))"
_QUOTING_FIX = 'quote values that contain commas ("a,b") and double quotes inside quoted values ("")'
_PUBLISH_FIX = "publish the catalog first with `tariff apply`"
# Codes Babel lists as territories that are not countries a customer lives in.
_NOT_COUNTRIES = frozenset({"EU", "EZ", "UN", "QO", "ZZ"})
_MAX_LISTED = 8
# Many ids travel as one newline-joined text: ids never hold whitespace (CHECK id ~ '^\S{1,255}$'), and one
# string is far cheaper to send than an array parameter of 100,000 elements.
_ID_LIST = "string_to_array(CAST(:ids AS text), E'\\n')"
# App statuses (PineGenie's Prisma enum among them) that are not Tariff's, and what to write instead.
_STATUS_HINTS = {
    "unpaid": "write past_due (payment failed, access kept until it is resolved) or canceled",
    "incomplete": "an unfinished checkout is not a subscription yet: leave the row out",
    "incomplete_expired": "write expired, or leave the row out",
    "cancelled": "did you mean `canceled`? (one l)",
}


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class RowError:
    """One problem, located: file, line (1-based, the header is line 1) and column name when it has one."""

    file: str
    line: int | None
    column: str | None
    message: str
    expected: str | None = None
    fix: str | None = None

    def location(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where} [{self.column}]" if self.column else where

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "expected": self.expected,
            "fix": self.fix,
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What an import did, or, when `errors` is not empty, why it wrote nothing."""

    kind: str  # "customers" | "subscriptions"
    file: str
    rows: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: tuple[RowError, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        if self.errors:
            return f"{len(self.errors)} error(s) in {self.file}; nothing was imported"
        return f"{self.created} created, {self.updated} updated, {self.unchanged} unchanged"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "ok": self.ok,
            "rows": self.rows,
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "errors": [error.to_json() for error in self.errors],
        }


# ---------------------------------------------------------------------------------------------- imports


def import_customers(conn: Connection, schema: str, path: Path | str) -> ImportResult:
    """Validate a customers CSV completely, then insert new customers and update changed ones."""
    report = _Report(str(path))
    records = _read_csv(Path(path), CUSTOMER_COLUMNS, CUSTOMER_REQUIRED, report)
    if not records and report.errors:
        return report.result("customers", 0)
    catalog = _Catalog.load(conn, schema, plans=())
    rows = _check_customers(records, catalog, report)
    if report.errors:
        return report.result("customers", len(records))
    created, updated = _write_customers(conn, schema, rows)
    return ImportResult("customers", report.file, len(rows), created, updated, len(rows) - created - updated)


def import_subscriptions(conn: Connection, schema: str, path: Path | str) -> ImportResult:
    """Validate a subscriptions CSV completely (customers must already be registered), then insert new
    subscriptions and update the status and dates of known ones."""
    report = _Report(str(path))
    records = _read_csv(Path(path), SUBSCRIPTION_COLUMNS, SUBSCRIPTION_REQUIRED, report)
    if not records and report.errors:
        return report.result("subscriptions", 0)
    plans = sorted({plan for r in records if (plan := r.cells.get("plan"))})
    catalog = _Catalog.load(conn, schema, plans=plans)
    known = _Known.load(conn, schema, records)
    rows = _check_subscriptions(records, catalog, known, report)
    if report.errors:
        return report.result("subscriptions", len(records))
    created, updated = _write_subscriptions(conn, schema, rows)
    return ImportResult(
        "subscriptions", report.file, len(rows), created, updated, len(rows) - created - updated
    )


# ------------------------------------------------------------------------------------------ reading CSV


@dataclass(frozen=True, slots=True)
class _Record:
    line: int
    cells: dict[str, str | None]  # recognised columns only; "" is read as None


@dataclass
class _Report:
    file: str
    errors: list[RowError] = field(default_factory=list)

    def add(
        self,
        line: int | None,
        column: str | None,
        message: str,
        expected: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.errors.append(RowError(self.file, line, column, message, expected, fix))

    def result(self, kind: str, rows: int) -> ImportResult:
        return ImportResult(kind, self.file, rows, errors=tuple(self.errors))


def _read_csv(path: Path, columns: Sequence[str], required: Sequence[str], report: _Report) -> list[_Record]:
    text = _decode(path, report)
    if text is None:
        return []
    if not text.strip():
        report.add(
            None,
            None,
            "the file is empty",
            expected=f"a header line: {','.join(columns)}",
            fix="export the data again, with the header line first",
        )
        return []
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    names: list[str] | None = None
    records: list[_Record] = []
    unnamed: set[int] = set()  # nameless columns already reported; empty ones (spreadsheet padding) are fine
    end = 0
    try:
        for cells in reader:
            start, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank lines and the all-empty rows spreadsheets leave at the end
            if names is None:
                names = _check_header(cells, start, columns, required, report)
                if names is None:
                    return []
                continue
            if len(cells) != len(names):
                report.add(
                    start,
                    None,
                    f"this row has {len(cells)} values but the header has {len(names)} columns",
                    expected=f"{len(names)} comma-separated values",
                    fix=_QUOTING_FIX,
                )
                continue
            values: dict[str, str | None] = {}
            for position, (name, cell) in enumerate(zip(names, cells, strict=True), start=1):
                if name in columns and name not in values:
                    values[name] = cell.strip() or None
                elif not name and cell.strip() and position not in unnamed:
                    unnamed.add(position)
                    report.add(
                        start,
                        f"#{position}",
                        f"a value {cell.strip()!r} under column {position}, which has no name in the header",
                        expected=f"columns {', '.join(columns)}",
                        fix="name the column in the header, or move the value to its column",
                    )
            records.append(_Record(start, values))
    except csv.Error as exc:
        problem = (
            "a quoted value starts here and is never closed"
            if "end of data" in str(exc)
            else f"malformed CSV ({exc})"
        )
        report.add(end + 1, None, problem, fix=_QUOTING_FIX)
    if names is not None and not records and not report.errors:
        report.add(
            None,
            None,
            "the file has a header but no rows",
            expected="one line per record after the header",
            fix="check that the export selected any records",
        )
    return records


def _decode(path: Path, report: _Report) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        report.add(None, None, "file not found", fix="check the path (relative to the current directory)")
        return None
    except OSError as exc:
        report.add(None, None, f"cannot read the file: {exc.strerror or exc}")
        return None
    if data.startswith(b"PK\x03\x04") or data.startswith(b"\xd0\xcf\x11\xe0"):
        report.add(
            None, None, "this is a spreadsheet workbook (.xlsx/.xls), not a CSV file", fix=_ENCODING_FIX
        )
        return None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        report.add(1, None, "the file is encoded as UTF-16", expected="UTF-8 text", fix=_ENCODING_FIX)
        return None
    try:
        text = data.decode("utf-8-sig")  # a UTF-8 byte order mark (Excel writes one) is dropped
    except UnicodeDecodeError:
        for number, raw in enumerate(data.split(b"\n"), start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                byte = raw[exc.start]
                report.add(
                    number,
                    None,
                    f"byte 0x{byte:02x} at character {exc.start + 1} is not UTF-8 "
                    "(Latin-1 or Windows-1252 text?)",
                    expected="UTF-8 text",
                    fix=_ENCODING_FIX,
                )
        return None
    for number, line in enumerate(text.split("\n"), start=1):
        if "\x00" in line:
            report.add(number, None, "the line contains a NUL byte", expected="plain text", fix=_ENCODING_FIX)
    return None if report.errors else text


def _check_header(
    cells: list[str], line: int, columns: Sequence[str], required: Sequence[str], report: _Report
) -> list[str] | None:
    names = [cell.strip().lower() for cell in cells]
    expected = f"columns {', '.join(columns)} (required: {', '.join(required)})"
    if len(names) == 1:
        separator = next((sep for sep in (";", "\t", "|") if sep in names[0]), None)
        if separator is not None:
            report.add(
                line,
                None,
                f"the header is separated by {separator!r}, not by commas",
                expected=expected,
                fix="export the file with commas as the separator",
            )
            return None
    seen: set[str] = set()
    for name in names:
        if not name:
            continue  # spreadsheets pad rows with empty columns; a value under one is reported per row
        if name not in columns:
            report.add(
                line,
                name,
                f"unknown column {name!r}",
                expected=expected,
                fix=_suggest(name, columns) or "remove the column (or rename it to one of the expected ones)",
            )
        elif name in seen:
            report.add(
                line, name, f"column {name!r} appears twice", expected=expected, fix="keep one of them"
            )
        seen.add(name)
    for name in required:
        if name not in seen:
            report.add(
                line,
                name,
                f"required column {name!r} is missing",
                expected=expected,
                fix=f"add a {name!r} column to the header and fill it on every row",
            )
    # Without a required column every row would repeat the header's error: report it once.
    return names if all(name in seen for name in required) else None


# ------------------------------------------------------------------------------------- the live catalog


@dataclass(frozen=True, slots=True)
class _Version:
    id: int
    region: str | None
    amount_minor: int
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class _Region:
    currency: str
    fallback: str | None


@dataclass(frozen=True, slots=True)
class _Plan:
    status: str


@dataclass(frozen=True, slots=True)
class _Catalog:
    """The published catalog an import checks against: a few small queries, read once."""

    regions: Mapping[str, _Region]
    currencies: Mapping[str, Currency]
    cycles: frozenset[str]
    plans: Mapping[str, _Plan]
    versions: Mapping[tuple[str, str, str], Sequence[_Version]]  # (plan, cycle, currency) → versions
    timezone: str
    now: datetime

    @classmethod
    def load(cls, conn: Connection, schema: str, plans: Sequence[str]) -> _Catalog:
        s = quote_schema(schema)
        regions = {
            str(code): _Region(str(currency).strip(), str(fallback).strip() if fallback else None)
            for code, currency, fallback in conn.execute(
                sa.text(f"SELECT code, currency, fallback_currency FROM {s}.regions")
            )
        }
        cycles = frozenset(
            str(c) for c in conn.execute(sa.text(f"SELECT id FROM {s}.billing_cycles")).scalars()
        )
        plan_rows = {
            str(pid): _Plan(str(status))
            for pid, status in conn.execute(sa.text(f"SELECT id, status FROM {s}.plans"))
        }
        versions: dict[tuple[str, str, str], list[_Version]] = {}
        for row in conn.execute(
            sa.text(
                "SELECT id, plan_id, cycle, currency, region, amount_minor, valid_from, valid_to "
                f"FROM {s}.price_versions WHERE plan_id = ANY(CAST(:plans AS text[])) "
                "ORDER BY valid_from DESC, id"
            ),
            {"plans": list(plans)},
        ):
            key = (str(row.plan_id), str(row.cycle), str(row.currency).strip())
            versions.setdefault(key, []).append(
                _Version(int(row.id), row.region, int(row.amount_minor), row.valid_from, row.valid_to)
            )
        timezone, now = conn.execute(
            sa.text(f"SELECT coalesce((SELECT timezone FROM {s}.catalog_state), 'UTC'), now()")
        ).one()
        return cls(regions, load_currencies(conn, schema), cycles, plan_rows, versions, str(timezone), now)


@dataclass(frozen=True, slots=True)
class _Subscription:
    customer_id: str
    plan_id: str
    cycle: str
    currency: str
    region: str | None
    price_version_id: int
    amount_minor: int
    status: str
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class _Known:
    """The customers and subscriptions a subscriptions file names that already exist: two queries."""

    customer_regions: Mapping[str, str | None]
    subscriptions: Mapping[str, _Subscription]

    @classmethod
    def load(cls, conn: Connection, schema: str, records: Iterable[_Record]) -> _Known:
        s = quote_schema(schema)
        customer_ids = sorted({c for r in records if (c := r.cells.get("customer_id"))})
        ids = sorted({i for r in records if (i := r.cells.get("id"))})
        customers = {
            str(cid): region
            for cid, region in conn.execute(
                sa.text(f"SELECT id, region FROM {s}.customers WHERE id = ANY({_ID_LIST})"),
                {"ids": "\n".join(customer_ids)},
            )
        }
        subscriptions = {
            str(row.id): _Subscription(
                row.customer_id,
                row.plan_id,
                row.cycle,
                str(row.currency).strip(),
                row.region,
                int(row.price_version_id),
                int(row.amount_minor),
                row.status,
                row.current_period_start,
                row.current_period_end,
            )
            for row in conn.execute(
                sa.text(
                    f"SELECT s.*, pv.amount_minor FROM {s}.subscriptions s "
                    f"JOIN {s}.price_versions pv ON pv.id = s.price_version_id "
                    f"WHERE s.id = ANY({_ID_LIST})"
                ),
                {"ids": "\n".join(ids)},
            )
        }
        return cls(customers, subscriptions)


# ------------------------------------------------------------------------------------------- customers


@dataclass(frozen=True, slots=True)
class _CustomerRow:
    id: str
    email: str | None
    region: str | None
    country: str | None
    segments: list[str] | None  # None keeps the stored segments
    attributes: str | None  # JSON object text; None keeps the stored attributes


def _check_customers(records: Sequence[_Record], catalog: _Catalog, report: _Report) -> list[_CustomerRow]:
    rows: list[_CustomerRow] = []
    first_line: dict[str, int] = {}
    for record in records:
        cells, line = record.cells, record.line
        before = len(report.errors)
        customer_id = _check_id(cells.get("id"), line, "id", "customer", report, first_line)
        email = cells.get("email")
        if email is not None and not _EMAIL.fullmatch(email):
            report.add(
                line, "email", f"invalid email {email!r}", expected="an address such as name@example.com"
            )
        region = _check_choice(
            cells.get("region"), line, "region", "region", catalog.regions, report, empty_fix=_PUBLISH_FIX
        )
        country = _check_country(cells.get("country"), line, report)
        segments = _check_segments(cells.get("segments"), line, report)
        attributes = _check_attributes(cells.get("attributes"), line, report)
        if len(report.errors) == before and customer_id is not None:
            rows.append(_CustomerRow(customer_id, email, region, country, segments, attributes))
    return rows


def _check_country(value: str | None, line: int, report: _Report) -> str | None:
    if value is None:
        return None
    code = value.upper()
    countries = _countries()
    if code in countries:
        return code
    by_name = {name.lower(): c for c, name in countries.items()}
    if code == "UK":
        fix = "write GB (the ISO code of the United Kingdom)"
    elif code in _NOT_COUNTRIES:
        fix = f"{code} is not a country: put a pricing region in the region column and a country code here"
    elif value.lower() in by_name:
        fix = f"write {by_name[value.lower()]} ({value})"
    else:
        fix = "use the ISO 3166-1 alpha-2 code, e.g. IN, US, DE"
    report.add(
        line, "country", f"unknown country {value!r}", expected="a two-letter ISO country code", fix=fix
    )
    return None


@cache
def _countries() -> dict[str, str]:
    from babel import Locale

    territories = Locale("en").territories
    return {
        str(code): str(name)
        for code, name in territories.items()
        if len(code) == 2 and code.isalpha() and code not in _NOT_COUNTRIES
    }


def _check_segments(value: str | None, line: int, report: _Report) -> list[str] | None:
    if value is None:
        return None
    segments: list[str] = []
    for segment in (part.strip() for part in value.split(";")):
        if not segment or segment in segments:
            continue
        if not SEGMENT_PATTERN.fullmatch(segment):
            cleaned = re.sub(r"[^a-z0-9_-]+", "-", segment.lower()).strip("-_")
            report.add(
                line,
                "segments",
                f"invalid segment {segment!r}",
                expected="lowercase letters, digits, - and _, separated by ';' (e.g. students;traders)",
                fix=f"write `{cleaned}`" if cleaned else "remove it",
            )
            continue
        segments.append(segment)
    return segments


def _check_attributes(value: str | None, line: int, report: _Report) -> str | None:
    if value is None:
        return None
    expected = 'a JSON object, e.g. {"source": "prisma"} (in CSV: "{""source"": ""prisma""}")'
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        report.add(
            line,
            "attributes",
            f"attributes are not valid JSON: {exc.msg} at character {exc.pos + 1}",
            expected=expected,
            fix='quote the whole cell and double the quotes inside it ("")',
        )
        return None
    if not isinstance(parsed, dict):
        report.add(
            line,
            "attributes",
            f"attributes must be a JSON object, not {type(parsed).__name__}",
            expected=expected,
            fix='wrap the values in an object: {"key": value}',
        )
        return None
    return json.dumps(parsed)


def _write_customers(conn: Connection, schema: str, rows: Sequence[_CustomerRow]) -> tuple[int, int]:
    s = quote_schema(schema)
    _stage(
        conn,
        "tariff_import_customers",
        "id text PRIMARY KEY, email text, region text, country text, segments text[], attributes jsonb",
        ((r.id, r.email, r.region, r.country, r.segments, r.attributes) for r in rows),
    )
    # The region rules of register_customer: the region given, else the country's published region (the
    # first by code), else — only when a country is given — the default region; NULL keeps what is stored.
    resolved = f"""
        WITH country_region AS (
            SELECT DISTINCT ON (c.country) c.country, c.region_code
              FROM {s}.region_countries c JOIN {s}.regions r ON r.code = c.region_code
             WHERE r.retired_at IS NULL
             ORDER BY c.country, c.region_code
        ), resolved AS (
            SELECT i.id, i.email, i.country, i.segments, i.attributes,
                   coalesce(i.region, CASE WHEN i.country IS NOT NULL
                                           THEN coalesce(cr.region_code, st.default_region) END) AS region,
                   st.default_region
              FROM pg_temp.tariff_import_customers i
              LEFT JOIN country_region cr ON cr.country = i.country
              LEFT JOIN {s}.catalog_state st ON true
        )"""
    # Insert first, then update: an id another session registers in between is then updated, not skipped.
    created = conn.execute(
        sa.text(f"""{resolved}
            INSERT INTO {s}.customers (id, email, region, country, segments, attributes)
            SELECT r.id, r.email, coalesce(r.region, r.default_region), r.country,
                   coalesce(r.segments, '{{}}'), coalesce(r.attributes, '{{}}')
              FROM resolved r
             WHERE NOT EXISTS (SELECT 1 FROM {s}.customers c WHERE c.id = r.id)
            ON CONFLICT (id) DO NOTHING""")
    ).rowcount
    updated = conn.execute(
        sa.text(f"""{resolved}
            UPDATE {s}.customers AS c
               SET email      = coalesce(r.email, c.email),
                   region     = coalesce(r.region, c.region),
                   country    = coalesce(r.country, c.country),
                   segments   = coalesce(r.segments, c.segments),
                   attributes = coalesce(r.attributes, c.attributes),
                   updated_at = now()
              FROM resolved r
             WHERE c.id = r.id
               AND (c.email, c.region, c.country, c.segments, c.attributes)
                   IS DISTINCT FROM (coalesce(r.email, c.email), coalesce(r.region, c.region),
                                     coalesce(r.country, c.country), coalesce(r.segments, c.segments),
                                     coalesce(r.attributes, c.attributes))""")
    ).rowcount
    return created, updated


def _stage(conn: Connection, table: str, columns: str, rows: Iterable[Sequence[Any]]) -> None:
    """Load checked rows into a temporary table with COPY (one stream, no per-row statements or parameter
    arrays); it is dropped at commit and only ever created once every row has passed its checks."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS pg_temp.{table}")
        cursor.execute(f"CREATE TEMPORARY TABLE {table} ({columns}) ON COMMIT DROP")
        with cursor.copy(f"COPY pg_temp.{table} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(f"ANALYZE pg_temp.{table}")  # row estimates for the joins that follow


# --------------------------------------------------------------------------------------- subscriptions


@dataclass(frozen=True, slots=True)
class _SubscriptionRow:
    id: str
    customer_id: str
    plan_id: str
    cycle: str
    currency: str
    region: str | None
    price_version_id: int
    status: str | None  # None keeps an existing subscription's status; new ones start 'active'
    start: datetime | None
    end: datetime | None
    trial_end: datetime | None
    existing: bool


@dataclass(frozen=True, slots=True)
class _Cells:
    """One subscription row's cells after the per-cell checks (None: empty or invalid)."""

    line: int
    id: str | None
    customer_id: str | None
    plan: str | None
    cycle: str | None
    currency: str | None
    region: str | None
    price_paid: Decimal | None
    status: str | None
    start: datetime | None
    end: datetime | None
    trial_end: datetime | None


def _check_subscriptions(
    records: Sequence[_Record], catalog: _Catalog, known: _Known, report: _Report
) -> list[_SubscriptionRow]:
    rows: list[_SubscriptionRow] = []
    first_line: dict[str, int] = {}
    for record in records:
        before = len(report.errors)
        cells = _check_subscription_cells(record, catalog, known, report, first_line)
        if len(report.errors) != before or cells.id is None:
            continue
        assert cells.customer_id is not None and cells.plan is not None and cells.cycle is not None
        existing = known.subscriptions.get(cells.id)
        if existing is not None:
            row = _check_existing(cells, existing, catalog, report)
        else:
            row = _check_new(cells, known.customer_regions[cells.customer_id], catalog, report)
        if row is not None:
            rows.append(row)
    return rows


def _check_subscription_cells(
    record: _Record, catalog: _Catalog, known: _Known, report: _Report, first_line: dict[str, int]
) -> _Cells:
    cells, line = record.cells, record.line
    sub_id = _check_id(cells.get("id"), line, "id", "subscription", report, first_line)
    customer_id = _check_id(cells.get("customer_id"), line, "customer_id", "customer", report, None)
    if customer_id is not None and customer_id not in known.customer_regions:
        report.add(
            line,
            "customer_id",
            f'unknown customer "{customer_id}"',
            expected="the id of a customer registered with Tariff",
            fix="import the customers file first (`tariff customers import`), or correct the id; "
            "Tariff never creates customers implicitly",
        )
    plan = _check_choice(
        cells.get("plan"), line, "plan", "plan", catalog.plans, report, empty_fix=_PUBLISH_FIX
    )
    cycle = _check_choice(
        cells.get("cycle"), line, "cycle", "billing cycle", catalog.cycles, report, empty_fix=_PUBLISH_FIX
    )
    raw_currency = cells.get("currency")
    currency = _check_choice(
        raw_currency.upper() if raw_currency else None,
        line,
        "currency",
        "currency",
        catalog.currencies,
        report,
        empty_fix=_PUBLISH_FIX,
    )
    region = _check_choice(
        cells.get("region"), line, "region", "region", catalog.regions, report, empty_fix=_PUBLISH_FIX
    )
    raw_status = cells.get("status")
    status = _check_choice(
        raw_status.lower() if raw_status else None,
        line,
        "status",
        "status",
        SUBSCRIPTION_STATUSES,
        report,
        hints=_STATUS_HINTS,
    )
    return _Cells(
        line,
        sub_id,
        customer_id,
        plan,
        cycle,
        currency,
        region,
        _check_amount(cells.get("price_paid"), line, report),
        status,
        _check_time(cells.get("current_period_start"), line, "current_period_start", catalog, report),
        _check_time(cells.get("current_period_end"), line, "current_period_end", catalog, report),
        _check_time(cells.get("trial_end"), line, "trial_end", catalog, report),
    )


def _check_existing(
    cells: _Cells, existing: _Subscription, catalog: _Catalog, report: _Report
) -> _SubscriptionRow | None:
    """A known subscription may change status and dates; anything that would move its price is refused."""
    assert cells.id is not None and cells.customer_id is not None
    line, sub = cells.line, f'subscription "{cells.id}"'
    before = len(report.errors)
    fixed = "a subscription's plan and price change only through `tariff apply` and its grandfathering rules"
    if existing.customer_id != cells.customer_id:
        report.add(
            line,
            "customer_id",
            f'{sub} belongs to customer "{existing.customer_id}", not "{cells.customer_id}"',
            expected=existing.customer_id,
            fix="correct customer_id (subscriptions never move between customers), or use a new id",
        )
    for column, stored, given in (
        ("plan", existing.plan_id, cells.plan),
        ("cycle", existing.cycle, cells.cycle),
        ("currency", existing.currency, cells.currency),
        ("region", existing.region, cells.region),
    ):
        if given is not None and given != stored:
            report.add(
                line,
                column,
                f"{sub} is already recorded with {column} {stored}; this row says {given}",
                expected=f"{stored} (or an empty cell)",
                fix=fixed,
            )
    if cells.price_paid is not None:
        money = catalog.currencies.get(existing.currency)
        paid = _to_minor(cells.price_paid, money, line, report) if money is not None else None
        if paid is not None and paid != existing.amount_minor:
            stored = _show(existing.amount_minor, money)
            report.add(
                line,
                "price_paid",
                f"{sub} pays {stored} {existing.currency} (price version {existing.price_version_id}); "
                f"price_paid {plain(cells.price_paid)} would change its price",
                expected=f"{stored} (or an empty cell)",
                fix=fixed,
            )
    start = cells.start or existing.start
    end = cells.end or existing.end
    if (cells.start or cells.end) and end <= start:
        column = "current_period_end" if cells.end else "current_period_start"
        report.add(
            line,
            column,
            f"the period would end ({end.isoformat()}) before it starts ({start.isoformat()})",
            expected="current_period_end after current_period_start",
            fix="correct the dates (or give both)",
        )
    if len(report.errors) != before:
        return None
    return _SubscriptionRow(
        cells.id,
        existing.customer_id,
        existing.plan_id,
        existing.cycle,
        existing.currency,
        existing.region,
        existing.price_version_id,
        cells.status,
        cells.start,
        cells.end,
        cells.trial_end,
        existing=True,
    )


def _check_new(
    cells: _Cells, customer_region: str | None, catalog: _Catalog, report: _Report
) -> _SubscriptionRow | None:
    assert cells.id is not None and cells.customer_id is not None
    assert cells.plan is not None and cells.cycle is not None
    line = cells.line
    region = cells.region or customer_region
    # As register_subscription: the currency given, else the region's, then the region's fallback currency.
    if cells.currency is not None:
        currencies = [cells.currency]
    elif region is not None and region in catalog.regions:
        home = catalog.regions[region]
        currencies = [home.currency] if home.fallback is None else [home.currency, home.fallback]
    else:
        report.add(
            line,
            "currency",
            f'cannot choose a currency: customer "{cells.customer_id}" has no region',
            expected="a currency or a region",
            fix="fill the currency or region column, or register the customer with a country",
        )
        return None
    if cells.price_paid is not None:
        version = _version_paid(cells, currencies, region, catalog, report)
    else:
        version = _version_on_sale(cells, currencies, region, catalog, report)
    if version is None:
        return None
    currency, chosen = version
    start = cells.start or catalog.now
    if cells.end is not None and cells.end <= start:
        report.add(
            line,
            "current_period_end",
            f"current_period_end {cells.end.isoformat()} is not after current_period_start "
            f"{start.isoformat()}" + ("" if cells.start else " (now: the start was left empty)"),
            expected="current_period_end after current_period_start",
            fix="correct the dates",
        )
        return None
    if cells.end is None and cells.status == "trialing" and cells.trial_end and cells.trial_end <= start:
        report.add(
            line,
            "trial_end",
            f"a trialing subscription's period ends at its trial end, {cells.trial_end.isoformat()}, "
            f"which is not after current_period_start {start.isoformat()}",
            expected="trial_end after current_period_start",
            fix="correct trial_end, or give current_period_end",
        )
        return None
    return _SubscriptionRow(
        cells.id,
        cells.customer_id,
        cells.plan,
        cells.cycle,
        currency,
        region,
        chosen.id,
        cells.status or "active",
        cells.start,
        cells.end,
        cells.trial_end,
        existing=False,
    )


def _version_on_sale(
    cells: _Cells, currencies: Sequence[str], region: str | None, catalog: _Catalog, report: _Report
) -> tuple[str, _Version] | None:
    assert cells.plan is not None and cells.cycle is not None
    if catalog.plans[cells.plan].status != "active":
        report.add(
            cells.line,
            "plan",
            f'plan "{cells.plan}" is {catalog.plans[cells.plan].status} and not on sale',
            expected="an active plan, or price_paid naming an existing price",
            fix="fill price_paid with the amount this subscriber pays to attach that price version",
        )
        return None
    for currency in currencies:
        on_sale = [
            v
            for v in catalog.versions.get((cells.plan, cells.cycle, currency), ())
            if v.valid_to is None and (v.region is None or v.region == region)
        ]
        if on_sale:
            return currency, min(on_sale, key=lambda v: v.region is None)  # the region's override first
    report.add(
        cells.line,
        "plan",
        f'plan "{cells.plan}" has no {cells.cycle} price on sale in {" or ".join(currencies)} '
        f"for region {region or '(none)'}",
        expected="a plan × cycle × currency with a published price",
        fix="choose another currency or region, or publish the price with `tariff apply`",
    )
    return None


def _version_paid(
    cells: _Cells, currencies: Sequence[str], region: str | None, catalog: _Catalog, report: _Report
) -> tuple[str, _Version] | None:
    """The version whose amount is what the subscriber pays: current first, then the region's override,
    then the most recent, so a price that went back to an old amount attaches to the one on sale."""
    assert cells.plan is not None and cells.cycle is not None and cells.price_paid is not None
    listed: list[str] = []
    for currency in currencies:
        money = catalog.currencies[currency]
        amount = _to_minor(cells.price_paid, money, cells.line, report)
        if amount is None:
            return None
        versions = [
            v
            for v in catalog.versions.get((cells.plan, cells.cycle, currency), ())
            if v.region is None or v.region == region
        ]
        matching = [v for v in versions if v.amount_minor == amount]
        if matching:
            best = min(
                matching, key=lambda v: (v.valid_to is not None, v.region is None, -v.valid_from.timestamp())
            )
            return currency, best
        listed.extend(_describe(v, currency, money) for v in versions[:_MAX_LISTED])
    report.add(
        cells.line,
        "price_paid",
        f"{plain(cells.price_paid)} is not a price of {cells.plan} ({cells.cycle}) in "
        f"{' or '.join(currencies)} for region {region or '(none)'}, now or in the past",
        expected="; ".join(listed)
        if listed
        else f"a published price ({cells.plan} has no {cells.cycle} prices in {' or '.join(currencies)})",
        fix="correct price_paid, or leave it empty to attach the price on sale now",
    )
    return None


def _describe(version: _Version, currency: str, money: Currency) -> str:
    when = "on sale" if version.valid_to is None else f"until {version.valid_to.date().isoformat()}"
    where = f", region {version.region}" if version.region else ""
    return f"{_show(version.amount_minor, money)} {currency} ({when}{where})"


def _write_subscriptions(conn: Connection, schema: str, rows: Sequence[_SubscriptionRow]) -> tuple[int, int]:
    s = quote_schema(schema)
    _stage(
        conn,
        "tariff_import_subscriptions",
        "id text PRIMARY KEY, customer_id text, plan_id text, cycle text, currency text, region text, "
        "price_version_id bigint, status text, period_start timestamptz, period_end timestamptz, "
        "trial_end timestamptz, existing boolean",
        (
            (
                r.id,
                r.customer_id,
                r.plan_id,
                r.cycle,
                r.currency,
                r.region,
                r.price_version_id,
                r.status,
                r.start,
                r.end,
                r.trial_end,
                r.existing,
            )
            for r in rows
        ),
    )
    # Trial and period ends as register_subscription computes them: calendar arithmetic in the project's
    # timezone, a trialing subscription's period ending with its trial.
    created = conn.execute(
        sa.text(f"""
            WITH settings AS (
                SELECT coalesce((SELECT timezone FROM {s}.catalog_state), 'UTC') AS tz
            ), started AS (
                SELECT i.*, coalesce(i.period_start, now()) AS v_start, p.trial_days, b.unit, b.every
                  FROM pg_temp.tariff_import_subscriptions i
                  JOIN {s}.plans p ON p.id = i.plan_id
                  JOIN {s}.billing_cycles b ON b.id = i.cycle
                 WHERE NOT i.existing
            ), trial AS (
                SELECT x.*, settings.tz,
                       CASE WHEN x.trial_end IS NULL AND x.status = 'trialing' AND x.trial_days > 0
                            THEN ((x.v_start AT TIME ZONE settings.tz) + make_interval(days => x.trial_days))
                                 AT TIME ZONE settings.tz
                            ELSE x.trial_end END AS v_trial
                  FROM started x, settings
            )
            INSERT INTO {s}.subscriptions (id, customer_id, plan_id, cycle, currency, region,
                                           price_version_id, status, current_period_start,
                                           current_period_end, trial_end)
            SELECT t.id, t.customer_id, t.plan_id, t.cycle, t.currency, t.region, t.price_version_id,
                   t.status, t.v_start,
                   coalesce(t.period_end, CASE
                       WHEN t.status = 'trialing' AND t.v_trial IS NOT NULL THEN t.v_trial
                       WHEN t.unit = 'month'
                           THEN ((t.v_start AT TIME ZONE t.tz) + make_interval(months => t.every))
                                AT TIME ZONE t.tz
                       ELSE ((t.v_start AT TIME ZONE t.tz) + make_interval(days => t.every)) AT TIME ZONE t.tz
                   END),
                   t.v_trial
              FROM trial t
            ON CONFLICT (id) DO NOTHING""")
    ).rowcount
    # All rows, new ones included: one registered by another session since the checks is then updated, and
    # the identity columns make sure a subscription is only ever matched on the very price it pays.
    updated = conn.execute(
        sa.text(f"""
            UPDATE {s}.subscriptions AS s
               SET status               = coalesce(i.status, s.status),
                   current_period_start = coalesce(i.period_start, s.current_period_start),
                   current_period_end   = coalesce(i.period_end, s.current_period_end),
                   trial_end            = coalesce(i.trial_end, s.trial_end),
                   updated_at           = now()
              FROM pg_temp.tariff_import_subscriptions i
             WHERE s.id = i.id AND s.customer_id = i.customer_id AND s.plan_id = i.plan_id
               AND s.cycle = i.cycle AND s.price_version_id = i.price_version_id
               AND (s.status, s.current_period_start, s.current_period_end, s.trial_end)
                   IS DISTINCT FROM (coalesce(i.status, s.status),
                                     coalesce(i.period_start, s.current_period_start),
                                     coalesce(i.period_end, s.current_period_end),
                                     coalesce(i.trial_end, s.trial_end))""")
    ).rowcount
    return created, updated


# ------------------------------------------------------------------------------------------ cell checks


def parse_time(text: str, timezone: str) -> datetime:
    """An ISO 8601 date or date-time; without a UTC offset it is read in `timezone` (the project's).
    Raises ValueError saying what is wrong."""
    value = text.strip()
    if _TIMESTAMP.fullmatch(value):
        try:
            parsed = datetime.fromisoformat(value.replace(" ", "T", 1))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date ({exc})") from None
        return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=zone(timezone))
    raise ValueError(f"{text!r} is not a valid date")


def _check_id(
    value: str | None,
    line: int,
    column: str,
    what: str,
    report: _Report,
    first_line: dict[str, int] | None,
) -> str | None:
    if value is None:
        report.add(line, column, f"the {what} id is empty", expected=f"the app's {what} id", fix="fill it in")
        return None
    if not _ID.fullmatch(value):
        report.add(
            line,
            column,
            f"invalid {what} id {value!r}",
            expected="1 to 255 characters without spaces",
            fix="use the app's own id, unchanged",
        )
        return None
    if first_line is not None:
        if value in first_line:
            report.add(
                line,
                column,
                f'{what} "{value}" appears again (first on line {first_line[value]})',
                expected=f"one row per {what}",
                fix="remove or merge the duplicate rows",
            )
            return None
        first_line[value] = line
    return value


def _check_choice(
    value: str | None,
    line: int,
    column: str,
    what: str,
    options: Collection[str],
    report: _Report,
    empty_fix: str | None = None,
    hints: Mapping[str, str] | None = None,
) -> str | None:
    """A value that must be one of the catalog's ids; a did-you-mean otherwise."""
    if value is None or value in options:
        return value
    known = sorted(options)
    fix: str | None
    if known:
        listed = ", ".join(known[:_MAX_LISTED]) + (", …" if len(known) > _MAX_LISTED else "")
        hint = (hints or {}).get(value)
        expected, fix = f"one of {listed}", hint or _suggest(value, known) or f"use one of {listed}"
    else:
        expected, fix = f"a published {what} (none are published yet)", empty_fix
    report.add(line, column, f"unknown {what} {value!r}", expected=expected, fix=fix)
    return None


def _check_amount(value: str | None, line: int, report: _Report) -> Decimal | None:
    if value is None:
        return None
    if not _AMOUNT.fullmatch(value):
        digits = re.sub(r"[^0-9.]", "", value)
        if _EXPONENT.fullmatch(value):
            # Dropping the letters from 1e3 would suggest 13: spell the number out instead (as the YAML
            # checker does), unless it is too long to be a price anyway.
            written = _spelled_out(value)
            fix = (
                f"write {written} (plain digits, no sign or exponent)"
                if written is not None
                else "write the amount in plain digits, without an exponent"
            )
        elif _AMOUNT.fullmatch(digits):
            fix = f"write {digits} (no currency symbols, signs or thousands separators)"
        else:
            fix = "write the amount in the currency's major unit, e.g. 1499"
        report.add(
            line,
            "price_paid",
            f"price_paid {value!r} is not an amount",
            expected="digits with an optional decimal point, e.g. 1499 or 19.99",
            fix=fix,
        )
        return None
    try:
        return Decimal(value)
    except InvalidOperation:  # pragma: no cover - the pattern admits only decimals
        return None


def _spelled_out(value: str) -> str | None:
    """`1e3` as `1000`; None when the digits would be too many to be any price (`1e999999`)."""
    number = abs(Decimal(value))
    exponent = number.adjusted()
    if not -_MAX_SPELLED_DIGITS < exponent < _MAX_SPELLED_DIGITS:
        return None
    return plain(number)


def _to_minor(amount: Decimal, money: Currency, line: int, report: _Report) -> int | None:
    if not money.in_range(amount):
        report.add(
            line,
            "price_paid",
            f"{plain(amount)} {money.code} is more than the database can store",
            expected=f"at most {plain(money.max_amount)} {money.code}",
            fix="correct price_paid (a typo? count the digits), or leave it empty for the price on sale now",
        )
        return None
    if not money.fits(amount):
        report.add(
            line,
            "price_paid",
            f"{plain(amount)} {money.code} has more than {money.minor_units} decimal places",
            expected=f"at most {money.minor_units} decimals for {money.code}",
            fix=f"write {plain(money.round(amount))}",
        )
        return None
    return money.to_minor(amount)


def _check_time(
    value: str | None, line: int, column: str, catalog: _Catalog, report: _Report
) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, catalog.timezone)
    except ValueError as exc:
        slashed = re.fullmatch(r"([0-9]{1,2})[/.-]([0-9]{1,2})[/.-]([0-9]{4})", value)
        report.add(
            line,
            column,
            str(exc),
            expected=f"{TIME_FORMAT} (without an offset: {catalog.timezone}, the project's timezone)",
            fix="day/month order is ambiguous: write YYYY-MM-DD" if slashed else "write YYYY-MM-DD",
        )
        return None


def _show(amount_minor: int, money: Currency | None) -> str:
    return plain(money.from_minor(amount_minor)) if money is not None else str(amount_minor)


def _suggest(word: str, options: Iterable[str]) -> str | None:
    """`did you mean …?` for a misspelt or miscased id."""
    choices = list(options)
    by_case = {option.lower(): option for option in choices}
    if word.lower() in by_case:
        return f"did you mean `{by_case[word.lower()]}`?"
    close = difflib.get_close_matches(word.lower(), list(by_case), n=1, cutoff=0.6)
    return f"did you mean `{by_case[close[0]]}`?" if close else None
