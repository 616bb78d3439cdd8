"""Customers and subscriptions: the Python API over the SQL functions, CSV imports (validation, idempotency,
grandfathered prices) and the `tariff customers|subscriptions` commands. Real PostgreSQL (embedded, or
TARIFF_TEST_DATABASE_URL); the catalog is published by direct INSERTs, so no publisher is involved."""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.customer_commands import customers_app, subscriptions_app
from cli.errors import CommandError
from compiler.project import compile_config
from database.customer_import import ImportResult, RowError, import_customers, import_subscriptions
from database.customers import (
    CustomerInput,
    InvalidValueError,
    NoPriceError,
    SubscriptionConflictError,
    SubscriptionInput,
    UnknownCustomerError,
    UnknownReferenceError,
    get_customer,
    list_customers,
    list_subscriptions,
    register_customer,
    register_subscription,
)
from database.errors import DatabaseError

REPO = Path(__file__).resolve().parents[1]
S = "tariff"
# (plan, cycle, currency) → amount in major units: the shipped PineGenie prices.
PRICES = {
    ("free", "monthly", "INR"): 0,
    ("pro", "monthly", "INR"): 1499,
    ("pro", "monthly", "USD"): 19,
    ("pro", "annual", "INR"): 14990,
    ("premium", "monthly", "INR"): 2998,
    ("premium", "monthly", "USD"): 39,
    ("premium", "monthly", "EUR"): 36,
}
CUSTOMERS_HEADER = "id,email,region,country,segments,attributes\n"
SUBS_HEADER = (
    "id,customer_id,plan,cycle,currency,region,price_paid,status,"
    "current_period_start,current_period_end,trial_end\n"
)


# ------------------------------------------------------------------------------------------- fixtures


def _publish(engine: Engine, prices: dict[tuple[str, str, str], int] | None = None) -> dict[str, int]:
    """A small published catalog: INR/USD/EUR; regions IN, US (default) and EU (EUR, falling back to USD);
    plans free, pro (14-day trial), premium and a retired legacy plan; one base price per entry of `prices`.
    Returns price version ids keyed "plan/cycle/currency"."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"""
            INSERT INTO {S}.currencies (code, minor_units) VALUES ('INR', 2), ('USD', 2), ('EUR', 2);
            INSERT INTO {S}.billing_cycles (id, every, unit)
                VALUES ('monthly', 1, 'month'), ('annual', 12, 'month');
            INSERT INTO {S}.regions (code, currency) VALUES ('IN', 'INR'), ('US', 'USD');
            INSERT INTO {S}.regions (code, currency, fallback_currency) VALUES ('EU', 'EUR', 'USD');
            INSERT INTO {S}.region_countries
                VALUES ('IN', 'IN', 0), ('US', 'US', 0), ('US', 'GB', 1), ('EU', 'DE', 0), ('EU', 'FR', 1);
            INSERT INTO {S}.catalog_state (project, timezone, default_region, fingerprint)
                VALUES ('pinegenie', 'Asia/Kolkata', 'US', 'sha256:' || repeat('0', 64));
            INSERT INTO {S}.plans (id, name, trial_days) VALUES ('free', 'Free', 0), ('pro', 'Pro', 14),
                ('premium', 'Premium', 30);
            INSERT INTO {S}.plans (id, name, status, retired_at)
                VALUES ('legacy', 'Legacy', 'retired', now());
        """)
        )
        ids = {}
        for (plan, cycle, currency), amount in (prices or PRICES).items():
            ids[f"{plan}/{cycle}/{currency}"] = conn.execute(
                sa.text(
                    f"INSERT INTO {S}.price_versions (plan_id, cycle, currency, amount_minor, valid_from) "
                    "VALUES (:p, :c, :cur, :a, '2026-01-01T00:00:00Z') RETURNING id"
                ),
                {"p": plan, "c": cycle, "cur": currency, "a": amount * 100},
            ).scalar_one()
    return ids


def _publish_shipped(engine: Engine) -> None:
    """The shipped PineGenie config's currencies, regions, plans and prices, as `tariff apply` writes them."""
    result = compile_config(REPO / "pricing")
    assert result.ok and result.catalog is not None
    catalog = result.catalog
    with engine.begin() as conn:

        def run(query: str, rows: list[dict[str, Any]]) -> None:
            if rows:
                conn.execute(sa.text(query), rows)

        run(
            f"INSERT INTO {S}.currencies (code, minor_units, rounding) VALUES (:c, :m, :r)",
            [{"c": c.code, "m": c.minor_units, "r": c.rounding} for c in catalog.currencies.values()],
        )
        run(
            f"INSERT INTO {S}.billing_cycles (id, every, unit) VALUES (:id, :e, :u)",
            [{"id": c.id, "e": c.every, "u": c.unit} for c in catalog.cycles.values()],
        )
        run(
            f"INSERT INTO {S}.regions (code, currency, fallback_currency) VALUES (:c, :cur, :f)",
            [{"c": r.code, "cur": r.currency, "f": r.fallback_currency} for r in catalog.regions.values()],
        )
        run(
            f"INSERT INTO {S}.region_countries VALUES (:r, :c, :p)",
            [
                {"r": r.code, "c": country, "p": i}
                for r in catalog.regions.values()
                for i, country in enumerate(r.countries)
            ],
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.catalog_state (project, timezone, default_region, fingerprint) "
                "VALUES (:p, :tz, :d, :f)"
            ),
            {
                "p": catalog.project,
                "tz": catalog.timezone,
                "d": catalog.default_region,
                "f": catalog.fingerprint,
            },
        )
        run(
            f"INSERT INTO {S}.plans (id, name, trial_days) VALUES (:id, :n, :t)",
            [{"id": p.id, "n": p.name, "t": p.trial_days} for p in catalog.plans.values()],
        )
        run(
            f"INSERT INTO {S}.price_versions (plan_id, cycle, currency, region, amount_minor) "
            "VALUES (:p, :c, :cur, :r, :a)",
            [
                {
                    "p": plan.id,
                    "c": price.cycle,
                    "cur": price.currency,
                    "r": price.region,
                    "a": catalog.currencies[price.currency].to_minor(price.amount),
                }
                for plan in catalog.plans.values()
                for price in plan.prices
            ],
        )


def _count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {S}.{table}")).scalar_one())


def _snapshot(engine: Engine) -> tuple[Any, ...]:
    """Everything an import may touch, to prove a refused import changed nothing."""
    with engine.connect() as conn:
        return tuple(
            conn.execute(
                sa.text(f"SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM {S}.{table} t")
            )
            .scalar_one()
            .__repr__()
            for table in ("customers", "subscriptions")
        )


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def _import(engine: Engine, kind: str, path: Path) -> ImportResult:
    with engine.begin() as conn:
        if kind == "customers":
            return import_customers(conn, S, path)
        return import_subscriptions(conn, S, path)


def _customers(engine: Engine, *ids_and_countries: tuple[str, str | None]) -> None:
    with engine.begin() as conn:
        for customer_id, country in ids_and_countries:
            register_customer(conn, S, CustomerInput(customer_id, country=country))


# ------------------------------------------------------------------------------------ the Python API


def test_register_customer_is_idempotent_and_never_wipes(engine: Engine) -> None:
    _publish(engine)
    customer = CustomerInput(
        "ck_1", email="a@example.com", country="gb", segments=("students",), attributes={"source": "ads"}
    )
    with engine.begin() as conn:
        first = register_customer(conn, S, customer)
    with engine.begin() as conn:
        second = register_customer(conn, S, customer)
        partial = register_customer(conn, S, CustomerInput("ck_1", email="b@example.com"))
    assert first == second  # updated_at included: the second call changed nothing
    assert (first["region"], first["country"], first["segments"]) == ("US", "GB", ["students"])
    assert (partial["email"], partial["country"], partial["attributes"]) == (
        "b@example.com",
        "GB",
        {"source": "ads"},
    )
    assert _count(engine, "customers") == 1


def test_unknown_customer_is_refused_with_a_clear_message(engine: Engine) -> None:
    _publish(engine)
    with pytest.raises(UnknownCustomerError) as caught, engine.begin() as conn:
        register_subscription(conn, S, SubscriptionInput("ghost", "pro", "monthly"))
    assert str(caught.value) == 'unknown customer "ghost"'
    assert caught.value.fix is not None and "never creates customers implicitly" in caught.value.fix
    assert isinstance(caught.value, DatabaseError)
    with engine.connect() as conn:
        with pytest.raises(UnknownCustomerError, match='unknown customer "ghost"'):
            get_customer(conn, S, "ghost")
        with pytest.raises(UnknownCustomerError):
            list_subscriptions(conn, S, customer_id="ghost")
        with pytest.raises(UnknownReferenceError, match='unknown plan "gold"'):
            list_subscriptions(conn, S, plan_id="gold")
    assert _count(engine, "customers") == _count(engine, "subscriptions") == 0


@pytest.mark.parametrize(
    ("sub", "error", "message"),
    [
        (SubscriptionInput("u1", "gold", "monthly"), UnknownReferenceError, 'unknown plan "gold"'),
        (SubscriptionInput("u1", "pro", "weekly"), UnknownReferenceError, 'unknown billing cycle "weekly"'),
        (
            SubscriptionInput("u1", "pro", "monthly", status="paused"),
            InvalidValueError,
            "invalid subscription status",
        ),
        (
            SubscriptionInput("u1", "pro", "annual", currency="USD"),
            NoPriceError,
            "has no annual price on sale in USD",
        ),
        (SubscriptionInput("u1", "legacy", "monthly"), InvalidValueError, 'plan "legacy" is retired'),
        (
            SubscriptionInput("u2", "pro", "monthly", id="s1"),
            SubscriptionConflictError,
            'belongs to customer "u1"',
        ),
        (
            SubscriptionInput("u1", "premium", "monthly", id="s1"),
            SubscriptionConflictError,
            "does not change plans",
        ),
    ],
)
def test_sql_function_errors_become_clear_python_errors(
    engine: Engine, sub: SubscriptionInput, error: type[DatabaseError], message: str
) -> None:
    _publish(engine)
    _customers(engine, ("u1", "IN"), ("u2", "IN"))
    with engine.begin() as conn:
        register_subscription(conn, S, SubscriptionInput("u1", "pro", "monthly", id="s1"))
    with pytest.raises(error, match=message), engine.begin() as conn:
        register_subscription(conn, S, sub)
    assert _count(engine, "subscriptions") == 1


def test_register_customer_errors(engine: Engine) -> None:
    _publish(engine)
    with pytest.raises(InvalidValueError, match='invalid email "nope"'), engine.begin() as conn:
        register_customer(conn, S, CustomerInput("u1", email="nope"))
    with (
        pytest.raises(UnknownReferenceError, match='unknown region "MARS"') as caught,
        engine.begin() as conn,
    ):
        register_customer(conn, S, CustomerInput("u1", region="MARS"))
    assert caught.value.fix and "tariff apply" in caught.value.fix


def test_subscriptions_report_amount_and_whether_the_price_is_current(engine: Engine) -> None:
    _publish(engine)
    _customers(engine, ("u1", "IN"), ("u2", "DE"))
    with engine.begin() as conn:
        indian = register_subscription(conn, S, SubscriptionInput("u1", "pro", "monthly", id="s1"))
        # EU sells in EUR, which pro lacks: the region's fallback currency applies.
        european = register_subscription(conn, S, SubscriptionInput("u2", "pro", "monthly", id="s2"))
    assert (indian["amount_minor"], indian["currency"]) == (149900, "INR")
    assert (european["amount_minor"], european["currency"]) == (1900, "USD")
    with engine.connect() as conn:
        rows = list_subscriptions(conn, S, plan_id="pro")
        customers, total = list_customers(conn, S)
    assert [(r["id"], r["price_current"]) for r in rows] == [("s1", True), ("s2", True)]
    assert total == 2 and {c["id"]: c["subscriptions"] for c in customers} == {"u1": 1, "u2": 1}


# ---------------------------------------------------------------------------------------- CSV: happy


def test_import_customers_then_reimport_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    _publish(engine)
    # Excel's UTF-8 with a byte order mark and CRLF line ends; a quoted JSON cell; a blank trailing row.
    text = (
        "\ufeffid,email,region,country,segments,attributes\r\n"
        'ck_in,asha@example.in,,in,students; traders,"{""source"": ""prisma"", ""seats"": 2}"\r\n'
        "ck_us,bob@example.com,,US,,\r\n"
        "ck_eu,,EU,DE,team,\r\n"
        "ck_jp,,,JP,,\r\n"
        "ck_none,,,,,\r\n"
        ",,,,,\r\n"
    )
    path = _write(tmp_path, "customers.csv", text)
    first = _import(engine, "customers", path)
    assert first.ok, first.errors
    assert (first.rows, first.created, first.updated, first.unchanged) == (5, 5, 0, 0)
    with engine.connect() as conn:
        asha = get_customer(conn, S, "ck_in")
        regions = {c: get_customer(conn, S, c)["region"] for c in ("ck_us", "ck_eu", "ck_jp", "ck_none")}
    assert (asha["region"], asha["country"], asha["segments"]) == ("IN", "IN", ["students", "traders"])
    assert asha["attributes"] == {"source": "prisma", "seats": 2}
    assert regions == {"ck_us": "US", "ck_eu": "EU", "ck_jp": "US", "ck_none": "US"}
    before = _snapshot(engine)
    second = _import(engine, "customers", path)
    assert second.summary() == "0 created, 0 updated, 5 unchanged"
    assert _snapshot(engine) == before  # updated_at included


def test_spreadsheet_padding_columns_are_ignored(engine: Engine, tmp_path: Path) -> None:
    _publish(engine)
    result = _import(engine, "customers", _write(tmp_path, "c.csv", "id,email,,\nc1,a@b.io,,\nc2,,,\n"))
    assert result.summary() == "2 created, 0 updated, 0 unchanged"


def test_import_customers_updates_changed_rows_and_keeps_empty_cells(engine: Engine, tmp_path: Path) -> None:
    _publish(engine)
    _import(
        engine,
        "customers",
        _write(tmp_path, "a.csv", CUSTOMERS_HEADER + "c1,a@x.io,,IN,students,\nc2,,,US,,\n"),
    )
    changed = _import(engine, "customers", _write(tmp_path, "b.csv", "id,email\nc1,\nc2,new@x.io\n"))
    assert changed.summary() == "0 created, 1 updated, 1 unchanged"
    with engine.connect() as conn:
        assert get_customer(conn, S, "c1")["email"] == "a@x.io"  # an empty cell keeps the stored value
        assert get_customer(conn, S, "c1")["segments"] == ["students"]
        assert get_customer(conn, S, "c2")["email"] == "new@x.io"


def test_import_customers_matches_register_customer(engine: Engine, tmp_path: Path) -> None:
    """Set-based SQL and the function the app calls must store the same row."""
    _publish(engine)
    cases = [
        CustomerInput("f1", email="a@b.io", country="GB", segments=("traders",), attributes={"k": [1, 2]}),
        CustomerInput("f2", region="EU", country="US"),
        CustomerInput("f3", country="FR"),
        CustomerInput("f4"),
    ]
    with engine.begin() as conn:
        via_function = [register_customer(conn, S, c) for c in cases]
        conn.execute(sa.text(f"DELETE FROM {S}.customers"))
    lines = [
        f"{c.id},{c.email or ''},{c.region or ''},{c.country or ''},{';'.join(c.segments or ())},"
        + ('"' + json.dumps(c.attributes).replace('"', '""') + '"' if c.attributes else "")
        for c in cases
    ]
    assert _import(engine, "customers", _write(tmp_path, "c.csv", CUSTOMERS_HEADER + "\n".join(lines))).ok
    volatile = ("created_at", "updated_at")
    with engine.connect() as conn:
        via_import = [get_customer(conn, S, c.id) for c in cases]
    assert [{k: v for k, v in r.items() if k not in volatile} for r in via_import] == [
        {k: v for k, v in r.items() if k not in volatile} for r in via_function
    ]


def test_import_subscriptions_then_reimport_changes_nothing(engine: Engine, tmp_path: Path) -> None:
    ids = _publish(engine)
    _customers(engine, ("u_in", "IN"), ("u_us", "US"), ("u_eu", "DE"))
    text = SUBS_HEADER + (
        "s1,u_in,pro,monthly,INR,,1499,active,2026-11-01,2026-12-01,\n"
        "s2,u_us,pro,monthly,,,,trialing,2026-11-05T10:00:00Z,,\n"
        "s3,u_eu,premium,monthly,,,,,2026-11-03T09:30:00+01:00,,\n"
        "s4,u_in,pro,annual,,,14990.00,canceled,2026-01-15T00:00:00+05:30,2027-01-15T00:00:00+05:30,\n"
    )
    path = _write(tmp_path, "subs.csv", text)
    first = _import(engine, "subscriptions", path)
    assert first.ok, first.errors
    assert first.summary() == "4 created, 0 updated, 0 unchanged"
    with engine.connect() as conn:
        rows = {r["id"]: r for r in list_subscriptions(conn, S)}
    assert rows["s1"]["price_version_id"] == ids["pro/monthly/INR"]
    # No offset: midnight in the project's timezone (Asia/Kolkata), i.e. 18:30 UTC the day before.
    assert datetime.fromisoformat(rows["s1"]["current_period_start"]) == datetime(
        2026, 10, 31, 18, 30, tzinfo=UTC
    )
    # A trial of pro's 14 days, the period ending with it, as register_subscription computes it.
    assert rows["s2"]["trial_end"] == rows["s2"]["current_period_end"]
    assert datetime.fromisoformat(rows["s2"]["trial_end"]) == datetime(2026, 11, 19, 10, 0, tzinfo=UTC)
    assert (rows["s3"]["currency"], rows["s3"]["amount_minor"], rows["s3"]["status"]) == (
        "EUR",
        3600,
        "active",
    )
    assert datetime.fromisoformat(rows["s3"]["current_period_end"]) == datetime(
        2026, 12, 3, 8, 30, tzinfo=UTC
    )
    before = _snapshot(engine)
    assert _import(engine, "subscriptions", path).summary() == "0 created, 0 updated, 4 unchanged"
    assert _snapshot(engine) == before
    # A renewal and a cancellation update status and dates; the rest stays as it is.
    renewed = text.replace("2026-11-01,2026-12-01", "2026-12-01,2027-01-01").replace("trialing", "canceled")
    result = _import(engine, "subscriptions", _write(tmp_path, "renewed.csv", renewed))
    assert result.summary() == "0 created, 2 updated, 2 unchanged"
    with engine.connect() as conn:
        rows = {r["id"]: r for r in list_subscriptions(conn, S)}
    assert rows["s2"]["status"] == "canceled" and rows["s1"]["price_version_id"] == ids["pro/monthly/INR"]


def test_price_paid_attaches_a_historical_version(engine: Engine, tmp_path: Path) -> None:
    """Adoption of grandfathered subscribers: 2,499 was pro's INR price until it dropped to 1,499."""
    ids = _publish(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"UPDATE {S}.price_versions SET valid_to = '2026-06-01T00:00:00Z' WHERE id = :id"),
            {"id": ids["pro/monthly/INR"]},
        )
        old = ids["pro/monthly/INR"]
        new = conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_versions (plan_id, cycle, currency, amount_minor, valid_from) "
                "VALUES ('pro', 'monthly', 'INR', 99900, '2026-06-01T00:00:00Z') RETURNING id"
            )
        ).scalar_one()
    _customers(engine, ("u1", "IN"), ("u2", "IN"))
    text = SUBS_HEADER + "s_old,u1,pro,monthly,INR,,1499,active,,,\ns_new,u2,pro,monthly,,,,active,,,\n"
    path = _write(tmp_path, "subs.csv", text)
    assert _import(engine, "subscriptions", path).ok
    with engine.connect() as conn:
        rows = {r["id"]: r for r in list_subscriptions(conn, S)}
    assert (rows["s_old"]["price_version_id"], rows["s_old"]["price_current"]) == (old, False)
    assert (rows["s_new"]["price_version_id"], rows["s_new"]["amount_minor"]) == (new, 99900)
    assert _import(engine, "subscriptions", path).summary() == "0 created, 0 updated, 2 unchanged"
    # Re-importing a grandfathered subscriber with the current amount must not silently move it.
    before = _snapshot(engine)
    moved = _import(engine, "subscriptions", _write(tmp_path, "moved.csv", text.replace(",1499,", ",999,")))
    assert _only(moved).column == "price_paid"
    assert 'subscription "s_old" pays 1499 INR (price version' in _only(moved).message
    assert _snapshot(engine) == before
    # A price that was never charged lists the ones that were.
    wrong = _import(
        engine, "subscriptions", _write(tmp_path, "w.csv", SUBS_HEADER + "s9,u1,pro,monthly,,,2000,,,,\n")
    )
    assert _only(wrong).expected == "999 INR (on sale); 1499 INR (until 2026-06-01)"


def test_demo_subscriber_base_imports_against_the_shipped_catalog(engine: Engine) -> None:
    _publish_shipped(engine)
    customers = _import(engine, "customers", REPO / "demo" / "customers.csv")
    assert customers.ok, "\n".join(f"{e.location()}: {e.message}" for e in customers.errors)
    subscriptions = _import(engine, "subscriptions", REPO / "demo" / "subscriptions.csv")
    assert subscriptions.ok, "\n".join(f"{e.location()}: {e.message}" for e in subscriptions.errors)
    assert customers.created >= 50 and subscriptions.created >= 40
    assert _import(engine, "subscriptions", REPO / "demo" / "subscriptions.csv").created == 0
    with engine.connect() as conn:
        currencies = conn.execute(sa.text(f"SELECT DISTINCT currency FROM {S}.subscriptions")).scalars().all()
        statuses = conn.execute(sa.text(f"SELECT DISTINCT status FROM {S}.subscriptions")).scalars().all()
    assert {c.strip() for c in currencies} == {"INR", "USD", "EUR"}
    assert {"active", "trialing", "canceled"} <= set(statuses)


# ------------------------------------------------------------------------------------------ CSV: bad


@dataclass(frozen=True)
class Bad:
    kind: str
    content: str | bytes
    line: int | None
    column: str | None
    message: str
    fix: str | None = None


_GOOD_SUB = "s1,u1,pro,monthly,INR,,1499,active,2026-11-01,2026-12-01,"
BAD_FILES = {
    "empty file": Bad("customers", "", None, None, "the file is empty"),
    "header only": Bad("customers", CUSTOMERS_HEADER, None, None, "has a header but no rows"),
    "misspelt column": Bad(
        "customers", "id,emial\nc1,a@b.io\n", 1, "emial", "unknown column 'emial'", "did you mean `email`?"
    ),
    "missing required column": Bad(
        "subscriptions", "id,plan,cycle\ns1,pro,monthly\n", 1, "customer_id", "required column 'customer_id'"
    ),
    "duplicate column": Bad("customers", "id,email,email\nc1,a@b.io,a@b.io\n", 1, "email", "appears twice"),
    "latin-1 file": Bad(
        "customers", b"id,email\nc1,a@b.io\nc2,jos\xe9@b.io\n", 3, None, "byte 0xe9", "save the file as UTF-8"
    ),
    "utf-16 file": Bad("customers", codecs.BOM_UTF16_LE + "id\nc1\n".encode("utf-16-le"), 1, None, "UTF-16"),
    "workbook": Bad("customers", b"PK\x03\x04\x14\x00\x06\x00", None, None, "spreadsheet workbook"),
    "semicolons": Bad("customers", "id;email\nc1;a@b.io\n", 1, None, "separated by ';'"),
    "duplicate id": Bad(
        "customers", "id\nc1\nc2\nc1\n", 4, "id", 'customer "c1" appears again (first on line 2)'
    ),
    "invalid email": Bad(
        "customers", "id,email\nc1,not-an-email\n", 2, "email", "invalid email 'not-an-email'"
    ),
    "unknown region": Bad(
        "customers", "id,region\nc1,in\n", 2, "region", "unknown region 'in'", "did you mean `IN`?"
    ),
    "country name": Bad(
        "customers", "id,country\nc1,India\n", 2, "country", "unknown country 'India'", "write IN"
    ),
    "uk is gb": Bad("customers", "id,country\nc1,UK\n", 2, "country", "unknown country 'UK'", "write GB"),
    "bad segment": Bad(
        "customers", "id,segments\nc1,Students\n", 2, "segments", "invalid segment", "`students`"
    ),
    "attributes not json": Bad(
        "customers", "id,attributes\nc1,{source: x}\n", 2, "attributes", "not valid JSON"
    ),
    "attributes not object": Bad(
        "customers", 'id,attributes\nc1,"[1, 2]"\n', 2, "attributes", "must be a JSON object, not list"
    ),
    "value under a nameless column": Bad(
        "customers", "id,email,\nc1,a@b.io,oops\n", 2, "#3", "which has no name in the header"
    ),
    "extra value": Bad(
        "customers",
        "id,email\nc1,a@b.io,extra\n",
        2,
        None,
        "has 3 values but the header has 2",
        "quote values",
    ),
    "unclosed quote": Bad("customers", 'id,email\nc1,"a@b.io\nc2,b@b.io\n', 2, None, "never closed"),
    "unknown customer": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,ghost,pro,monthly,,,,,,,\n",
        2,
        "customer_id",
        'unknown customer "ghost"',
        "never creates customers implicitly",
    ),
    "unknown plan": Bad(
        "subscriptions", SUBS_HEADER + "s1,u1,prp,monthly,,,,,,,\n", 2, "plan", "unknown plan 'prp'", "`pro`"
    ),
    "unknown cycle": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthy,,,,,,,\n",
        2,
        "cycle",
        "unknown billing cycle",
        "`monthly`",
    ),
    "unknown currency": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthly,RUP,,,,,,\n",
        2,
        "currency",
        "unknown currency 'RUP'",
    ),
    "ambiguous date": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthly,,,,,01/11/2026,,\n",
        2,
        "current_period_start",
        "'01/11/2026' is not a valid date",
        "ambiguous",
    ),
    "impossible date": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthly,,,,,2026-02-30,,\n",
        2,
        "current_period_start",
        "day is out of range",
    ),
    "period ends before it starts": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthly,,,,,2026-11-01,2026-10-01,\n",
        2,
        "current_period_end",
        "is not after current_period_start",
    ),
    "too precise": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthly,INR,,1499.999,,,,\n",
        2,
        "price_paid",
        "more than 2 decimal places",
        "write 1500",
    ),
    "formatted amount": Bad(
        "subscriptions",
        SUBS_HEADER + 's1,u1,pro,monthly,INR,,"₹1,499",,,,\n',
        2,
        "price_paid",
        "not an amount",
        "write 1499",
    ),
    "never charged": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthly,INR,,2499,,,,\n",
        2,
        "price_paid",
        "is not a price of pro",
    ),
    "prisma status": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,monthly,,,,UNPAID,,,\n",
        2,
        "status",
        "unknown status",
        "past_due",
    ),
    "retired plan without price": Bad(
        "subscriptions", SUBS_HEADER + "s1,u1,legacy,monthly,,,,,,,\n", 2, "plan", 'plan "legacy" is retired'
    ),
    "no price on sale": Bad(
        "subscriptions",
        SUBS_HEADER + "s1,u1,pro,annual,USD,,,,,,\n",
        2,
        "plan",
        "has no annual price on sale in USD",
    ),
    "duplicate subscription": Bad(
        "subscriptions",
        SUBS_HEADER + _GOOD_SUB + "\n" + _GOOD_SUB + "\n",
        3,
        "id",
        "appears again (first on line 2)",
    ),
}


def _only(result: ImportResult) -> RowError:
    assert not result.ok and len(result.errors) == 1, result.errors
    return result.errors[0]


@pytest.mark.parametrize("case", BAD_FILES.values(), ids=list(BAD_FILES))
def test_bad_csv_is_refused_with_a_located_error_and_changes_nothing(
    engine: Engine, tmp_path: Path, case: Bad
) -> None:
    _publish(engine)
    _customers(engine, ("u1", "IN"))
    before = _snapshot(engine)
    counts = (_count(engine, "customers"), _count(engine, "subscriptions"))
    path = _write(tmp_path, f"{case.kind}.csv", case.content)
    error = _only(_import(engine, case.kind, path))
    assert (error.file, error.line, error.column) == (str(path), case.line, case.column)
    assert case.message in error.message
    if case.fix is not None:
        assert error.fix is not None and case.fix in error.fix, error.fix
    assert error.fix or error.expected  # every error says what to do or what was expected
    assert (_count(engine, "customers"), _count(engine, "subscriptions")) == counts
    assert _snapshot(engine) == before


def test_every_error_is_reported_at_once_and_good_rows_are_not_written(
    engine: Engine, tmp_path: Path
) -> None:
    _publish(engine)
    _customers(engine, ("u1", "IN"))
    text = SUBS_HEADER + (
        f"{_GOOD_SUB}\n"
        "s2,ghost,pro,monthly,,,,,,,\n"
        "s3,u1,gold,weekly,,,,paused,yesterday,,\n"
        "s4,u1,pro,monthly,,,,,,,\n"
    )
    result = _import(engine, "subscriptions", _write(tmp_path, "subs.csv", text))
    located = sorted((e.line or 0, e.column or "") for e in result.errors)
    assert located == [
        (3, "customer_id"),
        (4, "current_period_start"),
        (4, "cycle"),
        (4, "plan"),
        (4, "status"),
    ]
    assert result.created == 0 and _count(engine, "subscriptions") == 0


def test_existing_subscription_cannot_change_plan_or_customer(engine: Engine, tmp_path: Path) -> None:
    _publish(engine)
    _customers(engine, ("u1", "IN"), ("u2", "IN"))
    assert _import(engine, "subscriptions", _write(tmp_path, "a.csv", SUBS_HEADER + _GOOD_SUB + "\n")).ok
    before = _snapshot(engine)
    changed = SUBS_HEADER + "s1,u2,premium,monthly,USD,,,,2026-11-01,2026-12-01,\n"
    result = _import(engine, "subscriptions", _write(tmp_path, "b.csv", changed))
    assert sorted(e.column or "" for e in result.errors) == ["currency", "customer_id", "plan"]
    assert all(e.line == 2 for e in result.errors)
    assert _snapshot(engine) == before


def test_import_before_any_catalog_is_published_says_so(engine: Engine, tmp_path: Path) -> None:
    with engine.begin() as conn:
        register_customer(conn, S, CustomerInput("u1"))
    result = _import(
        engine, "subscriptions", _write(tmp_path, "s.csv", SUBS_HEADER + "s1,u1,pro,monthly,,,,,,,\n")
    )
    assert {e.column for e in result.errors} == {"plan", "cycle"}
    assert all(e.fix == "publish the catalog first with `tariff apply`" for e in result.errors)


@pytest.mark.slow
def test_a_hundred_thousand_rows_import_then_import_again_unchanged(engine: Engine, tmp_path: Path) -> None:
    _publish(engine)
    n = 100_000
    customers = CUSTOMERS_HEADER + "".join(
        f"c{i},u{i}@example.com,,{'IN' if i % 2 else 'US'},traders,\n" for i in range(n)
    )
    subs = SUBS_HEADER + "".join(
        f"s{i},c{i},pro,monthly,,,{'1499' if i % 2 else '19'},active,2026-11-01,,\n" for i in range(n)
    )
    for kind, text in (("customers", customers), ("subscriptions", subs)):
        path = _write(tmp_path, f"{kind}.csv", text)
        result = _import(engine, kind, path)
        assert result.ok and result.created == n, result.errors[:3]
        assert _import(engine, kind, path).unchanged == n


# ------------------------------------------------------------------------------------------------ CLI


@pytest.fixture
def cli(engine: Engine, pg_url: str, tmp_path: Path) -> Callable[..., Any]:
    """Run a command of the mounted sub-apps against the test database (schema `tariff`, as the CLI uses)."""
    _publish(engine)
    app = typer.Typer()
    app.add_typer(customers_app, name="customers")
    app.add_typer(subscriptions_app, name="subscriptions")

    def run(*args: str, code: int = 0) -> Any:
        result = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, [*args, "--config", str(tmp_path), "--database-url", pg_url]
        )
        if isinstance(result.exception, CommandError):
            assert code == 1, f"{result.exception.message} ({result.exception.fix})"
            return result.exception
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return run


def test_cli_customers_add_show_list(cli: Callable[..., Any]) -> None:
    added = cli(
        "customers",
        "add",
        "ck_1",
        "--email",
        "a@b.io",
        "--country",
        "IN",
        "--segment",
        "students",
        "--segment",
        "traders",
        "--attr",
        "seats=5",
        "--attr",
        "source=prisma",
    )
    assert "customer ck_1 registered" in added.stdout and "students, traders" in added.stdout
    shown = json.loads(cli("customers", "show", "ck_1", "--format", "json").stdout)
    assert shown["customer"]["attributes"] == {"seats": 5, "source": "prisma"}
    assert shown["customer"]["region"] == "IN" and shown["subscriptions"] == []
    listed = cli("customers", "list", "--segment", "students")
    assert "ck_1" in listed.stdout and "1 of 1 customer(s)" in listed.stdout
    assert json.loads(cli("customers", "list", "--segment", "team", "--format", "json").stdout)["total"] == 0
    bad = cli("customers", "add", "ck_2", "--attr", "novalue", code=1)
    assert "--attr 'novalue' is not KEY=VALUE" in bad.message


def test_cli_subscriptions_add_and_show(cli: Callable[..., Any]) -> None:
    cli("customers", "add", "ck_1", "--country", "IN")
    added = cli(
        "subscriptions",
        "add",
        "--customer",
        "ck_1",
        "--plan",
        "pro",
        "--cycle",
        "monthly",
        "--start",
        "2026-11-01",
        "--id",
        "sub_1",
    )
    assert "1,499.00 INR" in added.stdout and "2026-11-01 → 2026-12-01" in added.stdout
    one = json.loads(cli("subscriptions", "show", "sub_1", "--format", "json").stdout)
    assert (one["amount"], one["currency"], one["price_current"]) == ("1499.00", "INR", True)
    listed = cli("subscriptions", "show", "--plan", "pro")
    assert "sub_1" in listed.stdout and "ck_1" in listed.stdout
    shown = cli("customers", "show", "ck_1")
    assert "sub_1" in shown.stdout and "1,499.00 INR" in shown.stdout


def test_cli_unknown_customer_is_a_clear_error(cli: Callable[..., Any]) -> None:
    error = cli("subscriptions", "add", "--customer", "ghost", "--plan", "pro", "--cycle", "monthly", code=1)
    assert error.message == 'unknown customer "ghost"'
    assert "never creates customers implicitly" in error.fix
    assert cli("customers", "show", "ghost", code=1).message == 'unknown customer "ghost"'
    assert "unknown plan" in cli("subscriptions", "show", "--plan", "gold", code=1).message
    assert (
        "not a valid date"
        in cli(
            "subscriptions",
            "add",
            "--customer",
            "x",
            "--plan",
            "pro",
            "--cycle",
            "monthly",
            "--start",
            "tomorrow",
            code=1,
        ).message
    )


def test_cli_imports(cli: Callable[..., Any], engine: Engine, tmp_path: Path) -> None:
    customers = _write(tmp_path, "customers.csv", CUSTOMERS_HEADER + "c1,a@b.io,,IN,students,\nc2,,,US,,\n")
    subs = _write(tmp_path, "subs.csv", SUBS_HEADER + "s1,c1,pro,monthly,,,1499,active,2026-11-01,,\n")
    done = cli("customers", "import", str(customers))
    assert "2 customers — 2 created, 0 updated, 0 unchanged" in done.stdout
    report = json.loads(cli("subscriptions", "import", str(subs), "--format", "json").stdout)
    assert (report["ok"], report["created"]) == (True, 1)
    again = cli("subscriptions", "import", str(subs))
    assert "0 created, 0 updated, 1 unchanged" in again.stdout
    bad = _write(
        tmp_path, "bad.csv", SUBS_HEADER + "s2,ghost,pro,monthy,,,,,,,\ns3,c1,pro,monthly,,,,cancelled,,,\n"
    )
    before = _snapshot(engine)
    refused = cli("subscriptions", "import", str(bad), code=1)
    assert f'{bad}:2 [customer_id]: error: unknown customer "ghost"' in refused.stdout
    assert f"{bad}:2 [cycle]" in refused.stdout and "did you mean `monthly`?" in refused.stdout
    assert f"{bad}:3 [status]" in refused.stdout and "did you mean `canceled`?" in refused.stdout
    assert "3 error(s)" in refused.stdout and "nothing was imported" in refused.stdout
    as_json = json.loads(cli("subscriptions", "import", str(bad), "--format", "json", code=1).stdout)
    assert [(e["line"], e["column"]) for e in as_json["errors"]] == [
        (2, "customer_id"),
        (2, "cycle"),
        (3, "status"),
    ]
    assert _snapshot(engine) == before
