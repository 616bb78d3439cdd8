"""`tariff tick` at scale: a month boundary for 100,000 subscribed accounts.

    python bench/tick.py [--quick] [--accounts N] [--json FILE]

Database: a fresh database on the server named by TARIFF_BENCH_DATABASE_URL (or else
TARIFF_TEST_DATABASE_URL), dropped afterwards; with neither, an embedded PostgreSQL (fsync on) in a temp
directory. The shipped config (pricing/) is published the way `tariff apply` does it; customers and their
subscriptions (half Pro, half Premium, monthly allowances) are bulk-loaded set-based.

Steps:
  first      the first tick: an account and a February allowance for every subscriber
  usage      a quarter of the accounts (Pro ones) spend 90% of February's allowance (revoke_tokens, in one
             statement), every 100th gets a boost ending on March 1st, every 10th subscription a price
             migration due then
  alerts     a tick after that usage: low-balance alerts for the Pro accounts below 20%
  renewal    the tick at March 1st: rollover for the Premium half, every February grant expired, every
             March allowance granted, boosts ended, price migrations executed — the measured target
  again      the same tick once more: must change nothing
  idle       a tick mid-March, what cron runs every few minutes
Checked afterwards: one March allowance per subscriber, one rollover per Premium subscriber, every account's
balance equal to its grants, nothing done twice.

Target (2 cores, server on the same machine): the renewal tick over 100,000 accounts in ≤ 30 s. Like
`make bench`, it reports and does not gate: exit 0 even when a target is MISSED, 1 only when the benchmark
cannot run or a check of its results fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/tick.py` puts bench/, not the repository, on sys.path
    sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Connection, Engine  # noqa: E402

from bench.database import bench_database  # noqa: E402
from bench.results import CheckFailedError, Row, check, machine, print_table  # noqa: E402
from compiler.project import compile_config  # noqa: E402
from database.automation import STEPS, TickStep, run_tick  # noqa: E402
from database.connection import create_engine  # noqa: E402
from database.migrate import upgrade  # noqa: E402
from publishers.postgres.apply import Revision, apply_catalog  # noqa: E402

SCHEMA = "tariff"
SHIPPED = REPO / "pricing"
PUBLISHED_AT = datetime(2026, 1, 1, tzinfo=UTC)
FEBRUARY = datetime(2026, 2, 1, 0, 0, 5, tzinfo=UTC)
AFTER_USAGE = datetime(2026, 2, 20, 0, 5, tzinfo=UTC)
MARCH = datetime(2026, 3, 1, 0, 0, 5, tzinfo=UTC)
MID_MARCH = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
RENEWAL_TARGET = 30.0


def publish(engine: Engine) -> None:
    result = compile_config(SHIPPED)
    check(result.ok and result.catalog is not None, "the shipped config does not validate")
    assert result.catalog is not None
    apply_catalog(
        engine,
        SCHEMA,
        result.catalog,
        Revision("bench"),
        environment=None,
        database="bench",
        now=PUBLISHED_AT,
    )


def load_subscribers(engine: Engine, accounts: int) -> None:
    """b-N customers in India, each on Pro (even N) or Premium (odd N) monthly in INR for all of 2026."""
    s = SCHEMA
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.customers (id, region, country) "
                "SELECT 'b-' || n, 'IN', 'IN' FROM generate_series(1, :n) n"
            ),
            {"n": accounts},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.subscriptions (id, customer_id, plan_id, cycle, currency, region, "
                "price_version_id, current_period_start, current_period_end) "
                "SELECT 'sub-' || n, 'b-' || n, pv.plan_id, 'monthly', 'INR', pv.region, pv.id, "
                "'2026-01-01T00:00:00Z', '2027-01-01T00:00:00Z' "
                "FROM generate_series(1, :n) n "
                f"JOIN {s}.price_versions pv "
                "ON pv.plan_id = CASE WHEN n % 2 = 0 THEN 'pro' ELSE 'premium' END AND pv.cycle = 'monthly' "
                "AND pv.currency = 'INR' AND pv.valid_to IS NULL AND pv.region IS NULL"
            ),
            {"n": accounts},
        )
        conn.execute(sa.text(f"ANALYZE {s}.customers; ANALYZE {s}.subscriptions"))


def february_usage(engine: Engine) -> None:
    """Spending through the ledger's own function, boosts, and price migrations due on March 1st."""
    s = SCHEMA
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"SELECT {s}.revoke_tokens(customer_id, 450, 'bench usage', 'bench', :at) "
                f"FROM {s}.subscriptions WHERE substr(id, 5)::int % 4 = 0"
            ),
            {"at": datetime(2026, 2, 20, tzinfo=UTC)},
        )
        conn.execute(
            sa.text(
                f"SELECT {s}.boost_tokens(customer_id, 100, interval '24 hours', 'bench boost', 'bench', "
                f"NULL, :at) FROM {s}.subscriptions WHERE substr(id, 5)::int % 100 = 1"
            ),
            {"at": datetime(2026, 2, 28, 0, 0, 5, tzinfo=UTC)},
        )
        # A dearer Pro monthly INR price, and every 10th Pro subscriber due to move to it on March 1st.
        old = conn.execute(
            sa.text(
                f"UPDATE {s}.price_versions SET valid_to = valid_from "
                "WHERE plan_id = 'pro' AND cycle = 'monthly' AND currency = 'INR' AND region IS NULL "
                "AND valid_to IS NULL RETURNING id, amount_minor, valid_to"
            )
        ).one()
        new = conn.execute(
            sa.text(
                f"INSERT INTO {s}.price_versions (plan_id, cycle, currency, amount_minor, valid_from) "
                "VALUES ('pro', 'monthly', 'INR', :amount, :t) RETURNING id"
            ),
            {"amount": old.amount_minor + 30000, "t": old.valid_to},
        ).scalar_one()
        conn.execute(
            sa.text(
                f"INSERT INTO {s}.price_migrations (subscription_id, from_version, to_version, reason, "
                "effective_at) SELECT id, price_version_id, :new, 'price increase (keep_for)', :eff "
                f"FROM {s}.subscriptions WHERE price_version_id = :old AND substr(id, 5)::int % 10 = 0"
            ),
            {"new": new, "old": old.id, "eff": datetime(2026, 3, 1, tzinfo=UTC)},
        )
        conn.execute(sa.text(f"ANALYZE {s}.token_grants; ANALYZE {s}.token_accounts"))


STEP_SECONDS: dict[str, float] = {}


def _timed(name: str, step: TickStep) -> TickStep:
    def run(conn: Connection, schema: str, at: datetime) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return step(conn, schema, at)
        finally:
            STEP_SECONDS[name] = time.perf_counter() - started

    return run


TIMED_STEPS = tuple((name, _timed(name, step)) for name, step in STEPS)


def timed_tick(engine: Engine, when: datetime) -> tuple[float, dict[str, Any]]:
    STEP_SECONDS.clear()
    started = time.perf_counter()
    with engine.begin() as conn:
        summary = run_tick(conn, SCHEMA, at=when, steps=TIMED_STEPS)
    return time.perf_counter() - started, summary["steps"]


def slowest_steps() -> str:
    ranked = sorted(STEP_SECONDS.items(), key=lambda item: -item[1])[:3]
    return "slowest steps: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in ranked)


def verify(engine: Engine, accounts: int) -> None:
    s = SCHEMA
    with engine.connect() as conn:
        march, rolled, inconsistent, duplicates = conn.execute(
            sa.text(
                f"SELECT (SELECT count(*) FROM {s}.token_grants WHERE source = 'allowance' "
                "AND starts_at = '2026-03-01T00:00:00Z'), "
                f"(SELECT count(*) FROM {s}.token_grants WHERE source = 'rollover'), "
                f"(SELECT count(*) FROM {s}.token_accounts a LEFT JOIN (SELECT account_id, sum(remaining) r "
                f"FROM {s}.token_grants GROUP BY account_id) g ON g.account_id = a.id "
                "WHERE a.balance <> coalesce(g.r, 0)), "
                f"(SELECT count(*) - count(DISTINCT idempotency_key) FROM {s}.notifications)"
            )
        ).one()
    check(march == accounts, f"{march} March allowances for {accounts} subscribers")
    check(rolled == accounts // 2, f"{rolled} rollovers for {accounts // 2} Premium subscribers")
    check(inconsistent == 0, f"{inconsistent} account balances differ from their grants")
    check(duplicates == 0, f"{duplicates} duplicate notifications")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10,000 accounts")
    parser.add_argument("--accounts", type=int, default=None, help="subscribed accounts (default 100,000)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    accounts = args.accounts if args.accounts is not None else (10_000 if args.quick else 100_000)
    if not 100 <= accounts <= 1_000_000:
        parser.error("--accounts 100..1,000,000")
    target = RENEWAL_TARGET * accounts / 100_000

    print(f"machine: {machine()}")
    rows: list[Row] = []
    try:
        with bench_database("tariff_tick_bench") as (_url, where):
            print(f"database: {where}")
            engine = create_engine(_url)
            try:
                started = time.perf_counter()
                upgrade(engine, SCHEMA)
                publish(engine)
                load_subscribers(engine, accounts)
                rows.append(
                    Row("setup (migrate, apply, subscribers)", time.perf_counter() - started, "s", "-", None)
                )
                seconds, steps = timed_tick(engine, FEBRUARY)
                granted = steps["ledger"]["allowances_granted"]
                check(granted == accounts, f"first tick granted {granted} allowances, not {accounts}")
                rows.append(
                    Row("first tick (accounts + allowances)", seconds, "s", "-", None, f"{granted:,}")
                )
                started = time.perf_counter()
                february_usage(engine)
                rows.append(Row("usage, boosts, migrations", time.perf_counter() - started, "s", "-", None))
                seconds, steps = timed_tick(engine, AFTER_USAGE)
                alerts = steps["low_balance"]["alerts"]
                check(alerts == accounts // 4, f"{alerts} low-balance alerts after usage")
                rows.append(
                    Row("tick after usage", seconds, "s", "-", None, f"{alerts:,} low-balance alerts")
                )

                seconds, steps = timed_tick(engine, MARCH)
                ledger, done = steps["ledger"], steps["price_migrations"]["migrated"]
                notes = (
                    f"{ledger['allowances_granted']:,} renewed, {steps['rollover']['rolled_over']:,} rolled "
                    f"over, {ledger['grants_expired']:,} expired, {steps['boosts']['boosts_ended']:,} boosts "
                    f"ended, {done:,} migrated, {steps['low_balance']['alerts']:,} alerts"
                )
                rows.append(
                    Row(
                        f"renewal tick, {accounts:,} accounts",
                        seconds,
                        "s",
                        f"≤ {target:g} s",
                        seconds <= target,
                        notes,
                    )
                )
                rows.append(Row("  by step", sum(STEP_SECONDS.values()), "s", "-", None, slowest_steps()))
                check(ledger["allowances_granted"] == accounts, "not every subscriber was renewed")
                seconds, again = timed_tick(engine, MARCH)
                check(
                    again["ledger"]["allowances_granted"] == 0 and again["rollover"]["rolled_over"] == 0,
                    "a second tick at the same time did more work",
                )
                rows.append(Row("same tick again (no-op)", seconds, "s", "-", None))
                seconds, _ = timed_tick(engine, MID_MARCH)
                rows.append(
                    Row("idle tick mid-month", seconds, "s", "-", None, "what cron runs; " + slowest_steps())
                )
                verify(engine, accounts)
            finally:
                engine.dispose()
    except CheckFailedError as exc:
        print_table(rows)
        print(f"\nCHECK FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
