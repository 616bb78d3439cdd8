"""The Postgres publisher end to end: apply, read-back, immutable prices, grandfathering on real
subscriptions, saved plans, faults during apply, destructive changes, drift and retirement.

Every test starts from a freshly migrated `tariff` schema (the `engine` fixture) on real PostgreSQL, and
passes an explicit `now` so grandfathering dates are computed by hand here and compared exactly."""

from __future__ import annotations

import calendar
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from cli.output import dump_json
from compiler.catalog import Catalog
from compiler.diff import Action, Impact
from compiler.project import compile_config
from database.migrate import upgrade
from publishers.postgres.apply import ApplyRefusedError, ApplyResult, Revision, apply_catalog
from publishers.postgres.plan import BlastRadius, Plan, last_published, make_plan, published_files
from publishers.postgres.read import read_catalog

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pricing"
CHANGE_SCRIPT = REPO / "demo" / "change_pricing.py"
SCHEMA = "tariff"
# Midnight UTC, so "now + 12 months" falls on a whole day and a renewal exactly then is "at or after" it.
NOW = datetime(2026, 3, 10, tzinfo=UTC)

PRO_GRANDFATHERING = """\
grandfathering:
  on_increase:
    policy: keep_for
    duration: 12 months
    notify_days_before: 30
  on_decrease:
    policy: migrate_at_renewal
"""


# ------------------------------------------------------------------------------------------- helpers


def compile_dir(config: Path) -> Catalog:
    result = compile_config(config)
    assert result.ok and result.catalog is not None, [d.message for d in result.diagnostics]
    return result.catalog


def copy_config(tmp_path: Path, name: str = "pricing") -> Path:
    target = tmp_path / name
    shutil.copytree(SHIPPED, target)
    return target


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text("utf-8")
    assert text.count(old) == 1, f"{path}: expected one {old!r}"
    path.write_text(text.replace(old, new), "utf-8")


def pro_config(
    tmp_path: Path,
    name: str,
    *,
    monthly_inr: str | None = None,
    grandfathering: str | None = None,
    approval: bool = False,
) -> Path:
    """A copy of the shipped config with Pro's monthly INR price and grandfathering rules edited."""
    config = copy_config(tmp_path, name)
    pro = config / "plans" / "pro.yaml"
    if monthly_inr is not None:
        edit(pro, "  monthly:\n    INR: 1499\n", f"  monthly:\n    INR: {monthly_inr}\n")
    if grandfathering is not None:
        edit(pro, PRO_GRANDFATHERING, textwrap.dedent(grandfathering))
    if approval:
        edit(pro, "\npayu:\n", "\napproval:\n  approved_by: Priya\n  reason: model costs\n\npayu:\n")
    return config


def scripted_change(tmp_path: Path) -> Path:
    """The demo's pull request: Pro INR +20% (approved), a new promotion, a retired feature."""
    dest = tmp_path / "changed"
    done = subprocess.run(
        [sys.executable, str(CHANGE_SCRIPT), str(SHIPPED), str(dest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dest


def apply(
    engine: Engine,
    catalog: Catalog,
    *,
    now: datetime = NOW,
    actor: str = "tester",
    **options: Any,
) -> ApplyResult:
    return apply_catalog(
        engine, SCHEMA, catalog, Revision(actor), environment=None, database="test", now=now, **options
    )


def plan(engine: Engine, catalog: Catalog, *, now: datetime = NOW, environment: str | None = None) -> Plan:
    with engine.connect() as conn:
        return make_plan(conn, SCHEMA, catalog, environment=environment, database="test", now=now)


def scalar(engine: Engine, query: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(query), params).scalar()


def rows(engine: Engine, query: str, **params: Any) -> list[sa.RowMapping]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(query), params).mappings())


def current_version(engine: Engine, plan_id: str, cycle: str, currency: str) -> int:
    version: int = scalar(
        engine,
        "SELECT id FROM tariff.price_versions WHERE plan_id = :p AND cycle = :c AND currency = :cur "
        "AND region IS NULL AND valid_to IS NULL",
        p=plan_id,
        c=cycle,
        cur=currency,
    )
    return version


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months, clamping the day like PostgreSQL's `timestamptz + interval 'n months'`."""
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def first_renewal(period_end: datetime, cycle_months: int, not_before: datetime) -> datetime:
    """The first renewal (period end + whole cycles) at or after `not_before`."""
    k = 0
    while (renewal := add_months(period_end, k * cycle_months)) < not_before:
        k += 1
    return renewal


def add_customer(conn: Connection, customer: str, country: str) -> None:
    conn.execute(
        sa.text("SELECT tariff.register_customer(p_id => :id, p_email => :email, p_country => :country)"),
        {"id": customer, "email": f"{customer}@example.com", "country": country},
    )


def add_subscription(
    conn: Connection,
    sid: str,
    customer: str,
    plan_id: str,
    cycle: str,
    period_end: datetime,
    *,
    status: str = "active",
) -> dict[str, Any]:
    months = 12 if cycle == "annual" else 1
    row: dict[str, Any] = conn.execute(
        sa.text(
            "SELECT tariff.register_subscription(p_customer_id => :customer, p_plan_id => :plan, "
            "p_cycle => :cycle, p_status => :status, p_current_period_start => :start, "
            "p_current_period_end => :end, p_id => :id)"
        ),
        {
            "customer": customer,
            "plan": plan_id,
            "cycle": cycle,
            "status": status,
            "start": add_months(period_end, -months),
            "end": period_end,
            "id": sid,
        },
    ).scalar_one()
    return row


def subscription_versions(engine: Engine) -> dict[str, int]:
    return {
        r["id"]: r["price_version_id"]
        for r in rows(engine, "SELECT id, price_version_id FROM tariff.subscriptions ORDER BY id")
    }


def migrations(engine: Engine) -> dict[str, list[sa.RowMapping]]:
    by_sub: dict[str, list[sa.RowMapping]] = {}
    for r in rows(engine, "SELECT * FROM tariff.price_migrations ORDER BY id"):
        by_sub.setdefault(r["subscription_id"], []).append(r)
    return by_sub


def notifications(engine: Engine) -> dict[str, sa.RowMapping]:
    found = rows(engine, "SELECT * FROM tariff.notifications ORDER BY id")
    by_customer = {r["customer_id"]: r for r in found}
    assert len(by_customer) == len(found), "more than one notification for a customer"
    return by_customer


def blast_by_key(result: Plan) -> dict[str, BlastRadius]:
    return {b.change_key: b for b in result.blast}


def import_live(engine: Engine, tmp_path: Path) -> Path:
    """What `tariff import` writes: the live catalog as config files, settings from the last revision."""
    with engine.connect() as conn:
        live = read_catalog(conn, SCHEMA)
        published = last_published(conn, SCHEMA)
    assert live is not None and published is not None
    files = published_files(dataclasses.replace(live, settings=published.settings))
    assert "tariff.yaml" in files and "plans/pro.yaml" in files
    imported = tmp_path / "imported"
    for name, text in files.items():
        (imported / name).parent.mkdir(parents=True, exist_ok=True)
        (imported / name).write_text(text, "utf-8")
    return imported


def dump_schema(engine: Engine) -> dict[str, Any]:
    """Everything in the schema, row by row, plus the read-back fingerprint: equal dumps, equal databases."""
    with engine.connect() as conn:
        tables = conn.execute(
            sa.text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = :s "
                "AND table_type = 'BASE TABLE' ORDER BY table_name"
            ),
            {"s": SCHEMA},
        ).scalars()
        content: dict[str, Any] = {
            table: sorted(
                conn.execute(sa.text(f'SELECT to_jsonb(t)::text FROM {SCHEMA}."{table}" t')).scalars()
            )
            for table in tables
        }
        live = read_catalog(conn, SCHEMA)
    content["@fingerprint"] = live.fingerprint if live else None
    content["@counts"] = {name: len(v) for name, v in content.items() if isinstance(v, list)}
    return content


@dataclass(frozen=True)
class Base:
    """The shipped config applied, and a subscriber base on it."""

    catalog: Catalog
    pro_monthly_inr: int
    pro_annual_inr: int


# Pro INR subscribers the scripted change reaches, with their period ends (renewal dates).
PRO_INR_MONTHLY = {
    "sub-in1-m": ("in-1", datetime(2026, 3, 25, tzinfo=UTC)),
    "sub-in2-m": ("in-2", datetime(2026, 4, 10, tzinfo=UTC)),  # renews on the day keep_for ends
    "sub-in3-m": ("in-3", datetime(2026, 3, 12, tzinfo=UTC)),
}
PRO_INR_ANNUAL = {"sub-in3-a": ("in-3", datetime(2026, 8, 1, tzinfo=UTC))}
UNTOUCHED = ("sub-in4-premium", "sub-us1-m", "sub-eu1-a", "sub-in5-canceled")


def subscriber_base(engine: Engine) -> Base:
    catalog = compile_dir(SHIPPED)
    assert apply(engine, catalog).applied
    with engine.begin() as conn:
        for customer, country in [
            ("in-1", "IN"),
            ("in-2", "IN"),
            ("in-3", "IN"),
            ("in-4", "IN"),
            ("in-5", "IN"),
            ("us-1", "US"),
            ("eu-1", "DE"),
        ]:
            add_customer(conn, customer, country)
        for sid, (customer, end) in PRO_INR_MONTHLY.items():
            assert add_subscription(conn, sid, customer, "pro", "monthly", end)["amount_minor"] == 149900
        for sid, (customer, end) in PRO_INR_ANNUAL.items():
            assert add_subscription(conn, sid, customer, "pro", "annual", end)["amount_minor"] == 1499000
        premium = add_subscription(conn, "sub-in4-premium", "in-4", "premium", "monthly", NOW + timedelta(5))
        assert premium["currency"] == "INR"
        assert (
            add_subscription(conn, "sub-us1-m", "us-1", "pro", "monthly", NOW + timedelta(3))["currency"]
            == "USD"
        )
        assert (
            add_subscription(conn, "sub-eu1-a", "eu-1", "pro", "annual", NOW + timedelta(40))["currency"]
            == "EUR"
        )
        add_subscription(
            conn, "sub-in5-canceled", "in-5", "pro", "monthly", NOW + timedelta(9), status="canceled"
        )
    return Base(
        catalog,
        current_version(engine, "pro", "monthly", "INR"),
        current_version(engine, "pro", "annual", "INR"),
    )


def two_pro_subscribers(engine: Engine) -> Base:
    """The shipped config applied; two Pro monthly INR subscribers renewing in 10 and in 40 days."""
    catalog = compile_dir(SHIPPED)
    assert apply(engine, catalog).applied
    with engine.begin() as conn:
        add_customer(conn, "near", "IN")
        add_customer(conn, "far", "IN")
        add_subscription(conn, "sub-near", "near", "pro", "monthly", NOW + timedelta(days=10))
        add_subscription(conn, "sub-far", "far", "pro", "monthly", NOW + timedelta(days=40))
    return Base(
        catalog,
        current_version(engine, "pro", "monthly", "INR"),
        current_version(engine, "pro", "annual", "INR"),
    )


# ------------------------------------------------------------------------ 1. apply, then nothing to do


def test_apply_then_plan_shows_no_changes_and_a_second_apply_is_a_no_op(engine: Engine) -> None:
    catalog = compile_dir(SHIPPED)
    first = plan(engine, catalog)
    assert first.has_changes and first.live_revision is None and first.live_fingerprint is None

    result = apply(engine, catalog)
    assert result.applied and result.revision_id is not None
    assert result.write.prices_opened > 0 and result.write.prices_closed == 0

    again = plan(engine, catalog)
    assert not again.has_changes, [c.key for c in again.diff.changes]
    assert again.drift is None and again.blast == []
    assert again.live_revision == result.revision_id
    with engine.connect() as conn:
        live = read_catalog(conn, SCHEMA)
    assert live is not None and live.fingerprint == catalog.fingerprint

    second = apply(engine, catalog)
    assert not second.applied and second.revision_id is None
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 1
    revision = rows(engine, "SELECT * FROM tariff.revisions")[0]
    assert revision["actor"] == "tester"
    assert revision["config_fingerprint"] == catalog.fingerprint
    assert revision["counts"]["changes"] == len(first.diff.changes)
    assert revision["plan"]["config_fingerprint"] == catalog.fingerprint


# --------------------------------------------------------------------------------- 2. import round trip


def test_import_writes_a_config_that_compiles_and_plans_no_changes(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    imported = import_live(engine, tmp_path)
    result = compile_config(imported)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.catalog is not None
    again = plan(engine, result.catalog)
    assert not again.has_changes, [(c.key, c.summary) for c in again.diff.changes]


def test_import_round_trips_retired_features_and_closed_prices(engine: Engine, tmp_path: Path) -> None:
    """Everything the database holds survives import, retired entities included."""
    apply(engine, compile_dir(scripted_change(tmp_path)))  # with a closed price and a retired feature
    imported = import_live(engine, tmp_path)
    result = compile_config(imported)
    assert result.ok, [d.message for d in result.diagnostics]
    assert result.catalog is not None
    assert result.catalog.features["custom_signatures"].status == "retired"
    again = plan(engine, result.catalog)
    assert not again.has_changes, [(c.key, c.summary) for c in again.diff.changes]


# ------------------------------------------------------------------------ 3. price versions are immutable


def test_a_price_change_closes_the_old_version_and_opens_a_new_one(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    old = current_version(engine, "pro", "monthly", "INR")
    result = apply(engine, compile_dir(scripted_change(tmp_path)))
    assert result.applied
    assert result.write.prices_closed == 2 and result.write.prices_opened == 2  # pro monthly + annual INR

    versions = rows(
        engine,
        "SELECT id, amount_minor, valid_to, revision_id FROM tariff.price_versions "
        "WHERE plan_id = 'pro' AND cycle = 'monthly' AND currency = 'INR' ORDER BY id",
    )
    assert [(v["id"], v["amount_minor"]) for v in versions] == [
        (old, 149900),
        (versions[1]["id"], 179900),
    ]
    assert versions[0]["valid_to"] is not None
    assert versions[1]["valid_to"] is None
    assert versions[1]["revision_id"] == result.revision_id
    assert current_version(engine, "pro", "monthly", "INR") == versions[1]["id"]
    # Untouched prices keep their version.
    assert scalar(engine, "SELECT count(*) FROM tariff.price_versions WHERE valid_to IS NOT NULL") == 2


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("UPDATE tariff.price_versions SET amount_minor = 100 WHERE id = :id", "immutable"),
        ("UPDATE tariff.price_versions SET valid_to = now() + interval '1 day' WHERE id = :id", "immutable"),
        ("DELETE FROM tariff.price_versions WHERE id = :id", "cannot be deleted"),
    ],
)
def test_the_database_refuses_to_rewrite_a_price_version(
    engine: Engine, tmp_path: Path, statement: str, message: str
) -> None:
    apply(engine, compile_dir(SHIPPED))
    old = current_version(engine, "pro", "monthly", "INR")
    apply(engine, compile_dir(scripted_change(tmp_path)))
    before = rows(engine, "SELECT * FROM tariff.price_versions WHERE id = :id", id=old)
    with pytest.raises(DBAPIError, match=message), engine.begin() as conn:
        conn.execute(sa.text(statement), {"id": old})
    assert rows(engine, "SELECT * FROM tariff.price_versions WHERE id = :id", id=old) == before


# ------------------------------------------------------------------ 4. grandfathering on real subscribers


def test_plan_shows_the_blast_radius_of_the_scripted_price_increase(engine: Engine, tmp_path: Path) -> None:
    base = subscriber_base(engine)
    result = plan(engine, compile_dir(scripted_change(tmp_path)))
    blast = blast_by_key(result)
    assert set(blast) == {"price:pro/monthly/INR", "price:pro/annual/INR"}

    monthly = blast["price:pro/monthly/INR"]
    assert (monthly.subscribers, monthly.customers, monthly.kept) == (3, 3, 0)
    assert (monthly.scheduled, monthly.migrated_now) == (3, 0)
    # keep_for 12 months: nobody pays more now; afterwards 3 × (1,799 − 1,499) a month.
    assert monthly.currency == "INR"
    assert monthly.mrr_now == Decimal("0.00")
    assert monthly.mrr_after == Decimal("900.00")
    keep_until = add_months(NOW, 12)
    effective = sorted(first_renewal(end, 1, keep_until) for _c, end in PRO_INR_MONTHLY.values())
    assert monthly.first_effective == effective[0] == datetime(2027, 3, 10, tzinfo=UTC)
    assert monthly.last_effective == effective[-1] == datetime(2027, 3, 25, tzinfo=UTC)
    assert monthly.first_notice == effective[0] - timedelta(days=30)

    annual = blast["price:pro/annual/INR"]
    assert (annual.subscribers, annual.customers, annual.scheduled) == (1, 1, 1)
    assert annual.mrr_now == Decimal("0.00")
    assert annual.mrr_after == Decimal("250.00")  # (17,990 − 14,990) / 12
    assert annual.first_effective == datetime(2027, 8, 1, tzinfo=UTC)

    # Planning wrote nothing.
    assert scalar(engine, "SELECT count(*) FROM tariff.price_migrations") == 0
    assert current_version(engine, "pro", "monthly", "INR") == base.pro_monthly_inr


def test_apply_schedules_one_migration_per_subscription_and_one_notice_per_customer(
    engine: Engine, tmp_path: Path
) -> None:
    base = subscriber_base(engine)
    before = subscription_versions(engine)
    result = apply(engine, compile_dir(scripted_change(tmp_path)))
    assert result.applied
    assert (result.scheduled, result.migrated_now, result.notifications) == (4, 0, 3)

    new_monthly = current_version(engine, "pro", "monthly", "INR")
    new_annual = current_version(engine, "pro", "annual", "INR")
    keep_until = add_months(NOW, 12)
    expected = {
        **{sid: (base.pro_monthly_inr, new_monthly, first_renewal(end, 1, keep_until))
           for sid, (_c, end) in PRO_INR_MONTHLY.items()},
        **{sid: (base.pro_annual_inr, new_annual, first_renewal(end, 12, keep_until))
           for sid, (_c, end) in PRO_INR_ANNUAL.items()},
    }  # fmt: skip
    scheduled = migrations(engine)
    assert set(scheduled) == set(expected)
    for sid, (old_version, new_version, effective) in expected.items():
        [row] = scheduled[sid]
        assert (row["from_version"], row["to_version"]) == (old_version, new_version), sid
        assert row["status"] == "scheduled" and row["completed_at"] is None
        assert row["effective_at"] == effective, sid
        assert row["notify_at"] == effective - timedelta(days=30), sid
        assert row["revision_id"] == result.revision_id
        assert "increase" in row["reason"] and "keep_for" in row["reason"]
    assert scheduled["sub-in2-m"][0]["effective_at"] == datetime(2027, 3, 10, tzinfo=UTC)

    # Nobody pays the new price yet; premium, USD, EUR and canceled subscribers are untouched.
    assert subscription_versions(engine) == before
    assert not set(UNTOUCHED) & set(scheduled)

    sent = notifications(engine)
    assert set(sent) == {"in-1", "in-2", "in-3"}
    both = sent["in-3"]
    assert both["kind"] == "price_change" and both["channel"] == "email" and both["status"] == "pending"
    items = {item["subscription"]: item for item in both["payload"]["items"]}
    assert set(items) == {"sub-in3-m", "sub-in3-a"}
    assert (items["sub-in3-m"]["old_amount_minor"], items["sub-in3-m"]["new_amount_minor"]) == (
        149900,
        179900,
    )
    assert (items["sub-in3-a"]["old_amount_minor"], items["sub-in3-a"]["new_amount_minor"]) == (
        1499000,
        1799000,
    )
    assert datetime.fromisoformat(items["sub-in3-a"]["effective_at"]) == datetime(2027, 8, 1, tzinfo=UTC)
    assert both["payload"]["revision"] == result.revision_id
    # The notice goes out 30 days before the customer's earliest new charge.
    assert both["next_attempt_at"] == expected["sub-in3-m"][2] - timedelta(days=30)
    assert len(sent["in-1"]["payload"]["items"]) == 1

    counts = rows(engine, "SELECT counts FROM tariff.revisions WHERE id = :id", id=result.revision_id)
    assert counts[0]["counts"]["migrations_scheduled"] == 4
    assert counts[0]["counts"]["notifications"] == 3


def test_migrate_now_moves_subscribers_to_the_new_price_immediately(engine: Engine, tmp_path: Path) -> None:
    base = two_pro_subscribers(engine)
    rule = "grandfathering:\n  on_increase:\n    policy: migrate_now\n"
    catalog = compile_dir(pro_config(tmp_path, "now", monthly_inr="1799", grandfathering=rule))

    blast = blast_by_key(plan(engine, catalog))["price:pro/monthly/INR"]
    assert (blast.subscribers, blast.migrated_now, blast.scheduled, blast.kept) == (2, 2, 0, 0)
    assert blast.mrr_now == blast.mrr_after == Decimal("600.00")

    result = apply(engine, catalog)
    assert (result.migrated_now, result.scheduled) == (2, 0)
    new = current_version(engine, "pro", "monthly", "INR")
    assert subscription_versions(engine) == {"sub-far": new, "sub-near": new}
    for sid, [row] in migrations(engine).items():
        assert (row["from_version"], row["to_version"]) == (base.pro_monthly_inr, new), sid
        assert row["status"] == "done"
        assert row["effective_at"] == NOW and row["completed_at"] == NOW
    assert set(notifications(engine)) == {"near", "far"}


def test_migrate_at_renewal_takes_the_first_renewal_that_leaves_the_notice_period(
    engine: Engine, tmp_path: Path
) -> None:
    base = two_pro_subscribers(engine)
    rule = "grandfathering:\n  on_increase:\n    policy: migrate_at_renewal\n    notify_days_before: 30\n"
    catalog = compile_dir(pro_config(tmp_path, "renewal", monthly_inr="1799", grandfathering=rule))
    result = apply(engine, catalog)
    assert (result.scheduled, result.migrated_now, result.notifications) == (2, 0, 2)

    near_end, far_end = NOW + timedelta(days=10), NOW + timedelta(days=40)
    expected = {
        "sub-far": far_end,  # renews after the 30 days' notice: at this period's end
        "sub-near": add_months(near_end, 1),  # renews within the notice: one cycle later
    }
    new = current_version(engine, "pro", "monthly", "INR")
    found = migrations(engine)
    for sid, effective in expected.items():
        [row] = found[sid]
        assert (row["from_version"], row["to_version"], row["status"]) == (
            base.pro_monthly_inr,
            new,
            "scheduled",
        )
        assert row["effective_at"] == effective, sid
        assert row["notify_at"] == effective - timedelta(days=30), sid
    assert subscription_versions(engine) == {
        "sub-far": base.pro_monthly_inr,
        "sub-near": base.pro_monthly_inr,
    }


def test_keep_forever_leaves_subscribers_on_their_price_without_notices(
    engine: Engine, tmp_path: Path
) -> None:
    base = two_pro_subscribers(engine)
    rule = "grandfathering:\n  on_increase:\n    policy: keep_forever\n"
    catalog = compile_dir(pro_config(tmp_path, "forever", monthly_inr="1799", grandfathering=rule))

    blast = blast_by_key(plan(engine, catalog))["price:pro/monthly/INR"]
    assert (blast.subscribers, blast.kept, blast.scheduled, blast.migrated_now) == (2, 2, 0, 0)
    assert blast.mrr_now == blast.mrr_after == Decimal("0.00")
    assert blast.first_effective is None and blast.first_notice is None

    result = apply(engine, catalog)
    assert result.applied and (result.scheduled, result.migrated_now, result.notifications) == (0, 0, 0)
    assert migrations(engine) == {}
    assert notifications(engine) == {}
    assert subscription_versions(engine) == {
        "sub-far": base.pro_monthly_inr,
        "sub-near": base.pro_monthly_inr,
    }


def test_a_price_decrease_follows_on_decrease_not_on_increase(engine: Engine, tmp_path: Path) -> None:
    base = two_pro_subscribers(engine)
    # on_increase stays keep_for 12 months; on_decrease (migrate_at_renewal, no notice) must decide.
    catalog = compile_dir(pro_config(tmp_path, "cheaper", monthly_inr="1299"))

    blast = blast_by_key(plan(engine, catalog))["price:pro/monthly/INR"]
    assert (blast.subscribers, blast.scheduled) == (2, 2)
    assert blast.mrr_now == Decimal("0.00")
    assert blast.mrr_after == Decimal("-400.00")  # 2 × (1,299 − 1,499)

    result = apply(engine, catalog)
    assert result.scheduled == 2
    new = current_version(engine, "pro", "monthly", "INR")
    found = migrations(engine)
    for sid, effective in {"sub-near": NOW + timedelta(days=10), "sub-far": NOW + timedelta(days=40)}.items():
        [row] = found[sid]
        assert (row["from_version"], row["to_version"]) == (base.pro_monthly_inr, new)
        assert row["effective_at"] == effective, sid  # this period's end, not a year away
        assert row["notify_at"] == effective
        assert "decrease" in row["reason"] and "migrate_at_renewal" in row["reason"]
    items = [n["payload"]["items"][0] for n in notifications(engine).values()]
    assert {(i["old_amount_minor"], i["new_amount_minor"], i["direction"]) for i in items} == {
        (149900, 129900, "decrease")
    }


def test_a_second_price_change_replaces_a_still_scheduled_migration(engine: Engine, tmp_path: Path) -> None:
    base = two_pro_subscribers(engine)
    apply(engine, compile_dir(pro_config(tmp_path, "first", monthly_inr="1799")))
    middle = current_version(engine, "pro", "monthly", "INR")
    later = NOW + timedelta(days=60)

    second = compile_dir(pro_config(tmp_path, "second", monthly_inr="1899"))
    blast = blast_by_key(plan(engine, second, now=later))["price:pro/monthly/INR"]
    assert blast.subscribers == 2  # they pay 1,499 but were headed for 1,799: they are reached
    assert blast.mrr_after == Decimal("800.00")  # from what they pay (1,499) to 1,899

    result = apply(engine, second, now=later)
    assert result.scheduled == 2 and result.notifications == 2
    newest = current_version(engine, "pro", "monthly", "INR")
    keep_until = add_months(later, 12)
    for sid, days in {"sub-near": 10, "sub-far": 40}.items():
        old, new = migrations(engine)[sid]
        assert (old["to_version"], old["status"], old["completed_at"]) == (middle, "canceled", later)
        assert (new["from_version"], new["to_version"], new["status"]) == (
            base.pro_monthly_inr,
            newest,
            "scheduled",
        )
        assert new["effective_at"] == first_renewal(NOW + timedelta(days=days), 1, keep_until), sid
        assert new["revision_id"] == result.revision_id
    assert subscription_versions(engine) == {
        "sub-far": base.pro_monthly_inr,
        "sub-near": base.pro_monthly_inr,
    }
    notice = rows(
        engine,
        "SELECT payload FROM tariff.notifications WHERE payload->>'revision' = :r",
        r=str(result.revision_id),
    )
    assert {(n["payload"]["items"][0]["old_amount_minor"], n["payload"]["items"][0]["new_amount_minor"])
            for n in notice} == {(149900, 189900)}  # fmt: skip


@pytest.mark.parametrize("session_zone", ["America/New_York", "Pacific/Auckland"])
def test_grandfathering_dates_do_not_depend_on_the_session_time_zone(
    engine: Engine, tmp_path: Path, session_zone: str
) -> None:
    """The same config, data and `now` give the same dates whatever TimeZone the server or client set.

    Whole days are the project's (Asia/Kolkata): keep_for 12 months from 10 March 2026 05:30 IST ends on
    10 March 2027 IST, so the renewal on 9 March 2027 12:00 UTC (17:30 IST) is too early and the subscriber
    moves a month later."""
    apply(engine, compile_dir(SHIPPED))
    with engine.begin() as conn:
        add_customer(conn, "in-1", "IN")
        add_subscription(conn, "sub-noon", "in-1", "pro", "monthly", datetime(2026, 3, 9, 12, tzinfo=UTC))
    expected = datetime(2027, 4, 9, 12, tzinfo=UTC)
    catalog = compile_dir(scripted_change(tmp_path))
    zoned = sa.create_engine(engine.url, connect_args={"options": f"-c TimeZone={session_zone}"})
    try:
        assert scalar(zoned, "SHOW TimeZone") == session_zone
        for each in (engine, zoned):
            blast = blast_by_key(plan(each, catalog))["price:pro/monthly/INR"]
            assert blast.first_effective == expected, scalar(each, "SHOW TimeZone")
            assert blast.first_notice == expected - timedelta(days=30)
        with zoned.connect() as conn:
            make_plan(conn, SCHEMA, catalog, environment=None, database="test", now=NOW)
            assert conn.execute(sa.text("SHOW TimeZone")).scalar() == session_zone  # caller's session kept
        result = apply_catalog(
            zoned, SCHEMA, catalog, Revision("tester"), environment=None, database="test", now=NOW
        )
        assert result.scheduled == 1
    finally:
        zoned.dispose()
    [row] = migrations(engine)["sub-noon"]
    assert row["effective_at"] == expected
    assert row["notify_at"] == expected - timedelta(days=30)


# ---------------------------------------------------------------------------------------- 5. saved plans


def saved(result: Plan) -> dict[str, Any]:
    """A plan as `tariff plan --out` writes it and `tariff apply FILE` reads it back."""
    data: dict[str, Any] = json.loads(dump_json(result.to_json()))
    return data


def test_a_saved_plan_applies(engine: Engine, tmp_path: Path) -> None:
    subscriber_base(engine)
    catalog = compile_dir(scripted_change(tmp_path))
    reviewed = saved(plan(engine, catalog))
    assert reviewed["format_version"] == 1 and reviewed["checksum"].startswith("sha256:")
    result = apply(engine, catalog, saved_plan=reviewed)
    assert result.applied and result.scheduled == 4
    assert not plan(engine, catalog).has_changes


def test_a_saved_plan_is_refused_when_the_config_changed(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    reviewed = saved(plan(engine, compile_dir(scripted_change(tmp_path))))
    other = compile_dir(pro_config(tmp_path, "other", monthly_inr="1599"))
    with pytest.raises(ApplyRefusedError, match="stale plan") as refused:
        apply(engine, other, saved_plan=reviewed)
    assert "config changed" in refused.value.message
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 1


def test_a_saved_plan_is_refused_when_the_database_changed(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    catalog = compile_dir(scripted_change(tmp_path))
    reviewed = saved(plan(engine, catalog))
    assert apply(engine, catalog).applied  # someone else applied in between
    with pytest.raises(ApplyRefusedError, match="stale plan") as refused:
        apply(engine, catalog, saved_plan=reviewed)
    assert "live database changed" in refused.value.message
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 2


def test_a_saved_plan_is_refused_after_drift(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    catalog = compile_dir(scripted_change(tmp_path))
    reviewed = saved(plan(engine, catalog))
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tariff.plans SET trial_days = 99 WHERE id = 'pro'"))
    with pytest.raises(ApplyRefusedError, match="stale plan"):
        apply(engine, catalog, saved_plan=reviewed)


def test_an_edited_plan_file_is_refused(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    catalog = compile_dir(scripted_change(tmp_path))
    reviewed = saved(plan(engine, catalog))
    [change] = [c for c in reviewed["changes"]["changes"] if c["key"] == "price:pro/monthly/INR"]
    change["summary"] = change["summary"].replace("1,799", "1,599")
    with pytest.raises(ApplyRefusedError, match="edited"):
        apply(engine, catalog, saved_plan=reviewed)
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 1


def test_a_plan_for_another_environment_or_schema_is_refused(engine: Engine, tmp_path: Path) -> None:
    catalog = compile_dir(SHIPPED)
    reviewed = saved(plan(engine, catalog))
    with pytest.raises(ApplyRefusedError, match="made for environment"):
        apply_catalog(
            engine, SCHEMA, catalog, Revision("t"), environment="staging", database="t", saved_plan=reviewed
        )
    upgrade(engine, "tariff_other")
    try:
        with pytest.raises(ApplyRefusedError, match="made for environment"):
            apply_catalog(
                engine,
                "tariff_other",
                catalog,
                Revision("t"),
                environment=None,
                database="t",
                saved_plan=reviewed,
            )
        assert scalar(engine, "SELECT count(*) FROM tariff_other.revisions") == 0
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA tariff_other CASCADE"))
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 0


def test_a_file_that_is_not_a_plan_is_refused(engine: Engine) -> None:
    catalog = compile_dir(SHIPPED)
    with pytest.raises(ApplyRefusedError, match="not a Tariff plan"):
        apply(engine, catalog, saved_plan={"kind": "something-else", "format_version": 1})


# --------------------------------------------------------------------------------------------- 6. faults


class InjectedError(RuntimeError):
    pass


@pytest.mark.parametrize("stage", ["written", "grandfathered", "before-commit"])
def test_a_failure_during_apply_leaves_the_database_exactly_as_it_was(
    engine: Engine, tmp_path: Path, stage: str
) -> None:
    subscriber_base(engine)
    catalog = compile_dir(scripted_change(tmp_path))
    before = dump_schema(engine)

    def fail(name: str) -> None:
        if name == stage:
            raise InjectedError(f"injected at {name}")

    with pytest.raises(InjectedError):
        apply(engine, catalog, hook=fail)
    assert dump_schema(engine) == before

    result = apply(engine, catalog)
    assert result.applied and result.scheduled == 4
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 2


KILLED_APPLY = """
import os, signal, sys
from datetime import datetime
from pathlib import Path

from compiler.project import compile_config
from database.connection import create_engine
from publishers.postgres.apply import Revision, apply_catalog

url, config, now = sys.argv[1:4]
catalog = compile_config(Path(config)).catalog


def hook(stage: str) -> None:
    print(stage, flush=True)
    if stage == "grandfathered":
        os.kill(os.getpid(), signal.SIGKILL)


apply_catalog(create_engine(url), "tariff", catalog, Revision("doomed"), environment=None,
              database="test", now=datetime.fromisoformat(now), hook=hook)
print("committed", flush=True)
"""


def test_a_killed_apply_leaves_nothing_behind_and_releases_the_lock(engine: Engine, tmp_path: Path) -> None:
    subscriber_base(engine)
    changed = scripted_change(tmp_path)
    before = dump_schema(engine)
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLED_APPLY,
            engine.url.render_as_string(hide_password=False),
            str(changed),
            NOW.isoformat(),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr
    assert done.stdout.split() == ["locked", "written", "grandfathered"]
    assert dump_schema(engine) == before

    started = time.monotonic()
    result = apply(engine, compile_dir(changed), lock_timeout=10)
    assert time.monotonic() - started < 5
    assert result.applied and result.scheduled == 4


def _wait_until(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _waiting_for_advisory_lock(engine: Engine) -> bool:
    return bool(
        scalar(
            engine,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
    )


@pytest.fixture
def holding_apply(engine: Engine) -> Iterator[tuple[threading.Event, threading.Event, list[Any]]]:
    """An apply of the shipped config in a thread that stops once it holds the lock, until released."""
    locked, release = threading.Event(), threading.Event()
    outcome: list[Any] = []

    def hold(stage: str) -> None:
        if stage == "locked":
            locked.set()
            assert release.wait(30)

    def run() -> None:
        try:
            outcome.append(apply(engine, compile_dir(SHIPPED), hook=hold))
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    assert locked.wait(30)
    try:
        yield locked, release, outcome
    finally:
        release.set()
        worker.join(30)


def test_a_concurrent_apply_gives_up_after_its_lock_timeout(
    engine: Engine, holding_apply: tuple[threading.Event, threading.Event, list[Any]]
) -> None:
    _locked, release, outcome = holding_apply
    started = time.monotonic()
    with pytest.raises(ApplyRefusedError, match="another apply is running") as refused:
        apply(engine, compile_dir(SHIPPED), lock_timeout=0.3)
    assert 0.25 <= time.monotonic() - started < 10
    assert refused.value.fix and "--lock-timeout" in refused.value.fix
    release.set()
    _wait_until(lambda: bool(outcome))
    assert isinstance(outcome[0], ApplyResult) and outcome[0].applied
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 1


def test_a_concurrent_apply_waits_then_finds_nothing_to_do(
    engine: Engine, holding_apply: tuple[threading.Event, threading.Event, list[Any]]
) -> None:
    _locked, release, outcome = holding_apply
    second: list[Any] = []
    waiter = threading.Thread(
        target=lambda: second.append(apply(engine, compile_dir(SHIPPED), lock_timeout=30)), daemon=True
    )
    waiter.start()
    _wait_until(lambda: _waiting_for_advisory_lock(engine))
    assert not second  # still waiting for the first
    release.set()
    waiter.join(30)
    assert not waiter.is_alive()
    assert isinstance(outcome[0], ApplyResult) and outcome[0].applied
    [result] = second
    assert not result.applied and not result.plan.has_changes
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 1


# ------------------------------------------------------------------------------ 7. destructive and policy


def test_a_destructive_change_needs_explicit_permission(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    config = copy_config(tmp_path, "no-eur")
    # EU keeps selling Pro in EUR only if someone says so: make the region policy a warning for this test.
    edit(
        config / "tariff.yaml",
        "  region_without_price:\n    severity: error\n",
        "  region_without_price:\n    severity: warning\n",
    )
    edit(config / "plans" / "pro.yaml", "    USD: 19\n    EUR: 18\n", "    USD: 19\n")
    catalog = compile_dir(config)
    eur = current_version(engine, "pro", "monthly", "EUR")

    result = plan(engine, catalog)
    [removed] = [c for c in result.diff.changes if c.impact is Impact.DESTRUCTIVE]
    assert removed.key == "price:pro/monthly/EUR" and removed.action is Action.REMOVED

    with pytest.raises(ApplyRefusedError, match="destructive") as refused:
        apply(engine, catalog)
    assert "price:pro/monthly/EUR" in refused.value.message
    with pytest.raises(ApplyRefusedError, match="destructive"):
        apply(engine, catalog, allow_destructive=["price:premium/*", "price:pro/annual/*"])
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 1
    assert current_version(engine, "pro", "monthly", "EUR") == eur

    assert apply(engine, catalog, allow_destructive=["price:pro/monthly/*"]).applied
    closed = rows(engine, "SELECT valid_to FROM tariff.price_versions WHERE id = :id", id=eur)
    assert closed[0]["valid_to"] is not None  # stops being sold, still there for its subscribers
    assert not plan(engine, catalog).has_changes


def test_a_policy_error_blocks_apply(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    catalog = compile_dir(pro_config(tmp_path, "fifty", monthly_inr="2249"))  # +50%, no approval
    result = plan(engine, catalog)
    assert result.diff.has_errors
    assert any("above the 25% limit" in f.message for f in result.diff.findings)
    with pytest.raises(ApplyRefusedError, match="policy") as refused:
        apply(engine, catalog)
    assert "25% limit" in refused.value.message
    assert refused.value.fix and "approval" in refused.value.fix
    assert scalar(engine, "SELECT count(*) FROM tariff.revisions") == 1

    approved = compile_dir(pro_config(tmp_path, "approved", monthly_inr="2249", approval=True))
    assert apply(engine, approved).applied


# -------------------------------------------------------------------------------------------- 8. drift


def test_drift_is_shown_and_apply_restores_the_config(engine: Engine) -> None:
    catalog = compile_dir(SHIPPED)
    apply(engine, catalog)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE tariff.plans SET trial_days = 99 WHERE id = 'pro'"))

    result = plan(engine, catalog)
    assert result.drift is not None
    [drifted] = result.drift.changes
    assert drifted.key == "plan:pro"
    assert [(f.field, f.old, f.new) for f in drifted.fields] == [("trial_days", 14, 99)]
    [change] = result.diff.changes
    assert change.key == "plan:pro"
    assert [(f.field, f.old, f.new) for f in change.fields] == [("trial_days", 99, 14)]

    assert apply(engine, catalog).applied
    assert scalar(engine, "SELECT trial_days FROM tariff.plans WHERE id = 'pro'") == 14
    after = plan(engine, catalog)
    assert after.drift is None and not after.has_changes


# ------------------------------------------------------------------------------------ 9. retired entities


def test_a_promotion_removed_from_the_config_is_retired_not_deleted(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    config = copy_config(tmp_path, "no-diwali")
    (config / "promotions" / "diwali-2026.yaml").unlink()
    catalog = compile_dir(config)

    result = plan(engine, catalog)
    [change] = result.diff.changes
    assert (change.key, change.action) == ("promotion:diwali-2026", Action.RETIRED)

    later = NOW + timedelta(days=1)
    assert apply(engine, catalog, now=later).applied
    [row] = rows(engine, "SELECT status, retired_at FROM tariff.promotions WHERE id = 'diwali-2026'")
    assert row["status"] == "retired" and row["retired_at"] is not None

    again = plan(engine, catalog)
    assert not again.has_changes, [c.key for c in again.diff.changes]
    assert not apply(engine, catalog).applied
    assert scalar(engine, "SELECT count(*) FROM tariff.promotions") == len(compile_dir(SHIPPED).promotions)


def test_a_package_deleted_from_the_config_is_retired_once_allowed(engine: Engine, tmp_path: Path) -> None:
    apply(engine, compile_dir(SHIPPED))
    config = copy_config(tmp_path, "no-extra-2000")
    credits = config / "tokens" / "credits.yaml"
    text = credits.read_text("utf-8")
    start, end = text.index("  extra-2000:\n"), text.index("# Provider cost")
    credits.write_text(text[:start] + text[end:], "utf-8")
    catalog = compile_dir(config)
    assert "extra-2000" not in catalog.packages

    changes = {c.key: c for c in plan(engine, catalog).diff.changes}
    prices = [f"package-price:extra-2000/{code}" for code in ("EUR", "INR", "USD")]
    assert set(changes) == {"package:extra-2000", *prices}
    assert changes["package:extra-2000"].action is Action.RETIRED
    assert {c.impact for c in changes.values()} == {Impact.DESTRUCTIVE}
    with pytest.raises(ApplyRefusedError, match="package:extra-2000"):
        apply(engine, catalog, allow_destructive=["package-price:*"])

    allowed = ["package:extra-2000", "package-price:extra-2000/*"]
    assert apply(engine, catalog, allow_destructive=allowed).applied
    [row] = rows(engine, "SELECT status, retired_at FROM tariff.token_packages WHERE id = 'extra-2000'")
    assert row["status"] == "retired" and row["retired_at"] is not None
    # Its prices stop being sold, as the plan said, and stay for history.
    versions = rows(
        engine, "SELECT valid_to FROM tariff.package_price_versions WHERE package_id = 'extra-2000'"
    )
    assert len(versions) == 3 and all(v["valid_to"] is not None for v in versions)
    again = plan(engine, catalog)
    assert not again.has_changes and again.drift is None
