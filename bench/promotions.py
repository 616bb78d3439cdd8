"""Promotions at checkout under load: quote and redeem throughput with concurrent clients, limits that hold,
and a million codes generated.

    python bench/promotions.py [--quick] [--clients 16] [--seconds 10] [--codes 1000000]

Database: a fresh database on the server named by TARIFF_BENCH_DATABASE_URL (or else
TARIFF_TEST_DATABASE_URL), dropped afterwards; with neither, an embedded PostgreSQL (fsync on) in a temp
directory. The shipped config (pricing/) is published the way `tariff apply` does it, codes included, and
customers are bulk-loaded set-based.

Steps:
  quote    N clients (threads, one connection each, as app servers would hold) call quote() for --seconds
           on a mix of customers (new, paying, students, anonymous), items (plans, a package, the bundle),
           regions and codes (vanity, single-use, unknown).
  redeem   N clients redeem WELCOME20 (max_redemptions 5,000, per_customer 1) for 6,000 new customers:
           every call races for the same counter row, the worst case. Checked afterwards: exactly 5,000
           redeemed, the rest refused with limit_reached, counter = ledger, nobody above their limit.
  codes    generate_codes() for --codes single-use codes in one transaction (COPY + one INSERT).

Targets (2 cores, clients and server on the same machine): ≥ 2,000 quotes/s, ≥ 1,000 redemptions/s with
zero limit violations, a million codes in ≤ 30 s. Like `make bench`, it reports and does not gate: exit 0
even when a target is MISSED, 1 only when the benchmark cannot run or a check of its results fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/promotions.py` puts bench/, not the repository, on sys.path
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench.database import bench_database  # noqa: E402
from bench.load import Client, Work, run_clients  # noqa: E402
from bench.results import CheckFailedError, Row, check, machine, print_table  # noqa: E402
from compiler.project import compile_config  # noqa: E402
from database.connection import create_engine  # noqa: E402
from database.migrate import upgrade  # noqa: E402
from database.promo_codes import generate_codes, sync_code_batches  # noqa: E402
from publishers.postgres.apply import Revision, apply_catalog  # noqa: E402

SCHEMA = "tariff"
SHIPPED = REPO / "pricing"
PUBLISHED_AT = datetime(2026, 10, 1, tzinfo=UTC)
AT = datetime.fromisoformat("2026-11-25T12:00:00+05:30")  # launch codes, WELCOME20 and the bundle all run
QUOTE_TARGET, REDEEM_TARGET, CODES_TARGET = 2000.0, 1000.0, 30.0
WELCOME_MAX = 5000
QUOTE_SQL = "SELECT tariff.quote(%s, %s::jsonb, %s, %s::text[], %s::timestamptz)::text"
REDEEM_SQL = "SELECT tariff.redeem(%s, %s::jsonb, %s, %s::text[], %s, %s::timestamptz)->>'status'"
ITEMS = [
    '{"plan": "pro", "cycle": "monthly"}',
    '{"plan": "pro", "cycle": "annual"}',
    '{"plan": "premium", "cycle": "annual"}',
    '{"package": "extra-500"}',
    '{"bundle": "creator-bundle"}',
]


# -------------------------------------------------------------------------------------------- database


def publish(engine: Engine) -> None:
    result = compile_config(SHIPPED)
    check(result.ok and result.catalog is not None, "the shipped config does not validate")
    assert result.catalog is not None
    applied = apply_catalog(
        engine,
        SCHEMA,
        result.catalog,
        Revision("bench"),
        environment=None,
        database="bench",
        now=PUBLISHED_AT,
    )
    with engine.begin() as conn:
        sync_code_batches(conn, SCHEMA, result.catalog, applied.revision_id)


def load_customers(engine: Engine, quote_customers: int, redeem_customers: int) -> None:
    """Customers set-based: q-N for quotes (IN/US/EU; every 10th a student; every 5th pays for Pro, every
    7th is on Free) and r-N, new customers in India, for the redemption race."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.customers (id, region, country, segments) "
                "SELECT 'q-' || n, (ARRAY['IN', 'US', 'EU'])[1 + n % 3], "
                "(ARRAY['IN', 'US', 'DE'])[1 + n % 3], "
                "CASE WHEN n % 10 = 0 THEN ARRAY['students'] ELSE '{}' END FROM generate_series(1, :q) n "
                "UNION ALL SELECT 'r-' || n, 'IN', 'IN', '{}' FROM generate_series(1, :r) n"
            ),
            {"q": quote_customers, "r": redeem_customers},
        )
        conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.subscriptions (customer_id, plan_id, cycle, currency, region, "
                "price_version_id, status, current_period_start, current_period_end) "
                "SELECT c.id, pv.plan_id, pv.cycle, pv.currency, c.region, pv.id, 'active', :start, "
                "CAST(:start AS timestamptz) + interval '1 month' "
                f"FROM {SCHEMA}.customers c JOIN {SCHEMA}.regions r ON r.code = c.region "
                f"JOIN {SCHEMA}.price_versions pv ON pv.currency = r.currency AND pv.region IS NULL "
                "AND pv.valid_to IS NULL AND pv.cycle = 'monthly' "
                "AND pv.plan_id = CASE WHEN split_part(c.id, '-', 2)::int % 5 = 0 THEN 'pro' ELSE 'free' END "
                "WHERE c.id LIKE 'q-%' AND (split_part(c.id, '-', 2)::int % 5 = 0 "
                "OR split_part(c.id, '-', 2)::int % 7 = 0)"
            ),
            {"start": PUBLISHED_AT},
        )
        conn.execute(sa.text(f"ANALYZE {SCHEMA}.customers"))
        conn.execute(sa.text(f"ANALYZE {SCHEMA}.subscriptions"))


# -------------------------------------------------------------------------------------------- clients


def quote_work(launch_codes: list[str], customers: int) -> Work:
    def work(conn: psycopg.Connection[Any], client: Client) -> str:
        rng = client.rng
        who = None if rng.random() < 0.2 else f"q-{rng.randint(1, customers)}"
        region = None if who else rng.choice(["IN", "US", "EU"])
        roll = rng.random()
        codes = (
            ["welcome20"]
            if roll < 0.3
            else [rng.choice(launch_codes)]
            if roll < 0.4
            else ["NOT-A-CODE"]
            if roll < 0.45
            else []
        )
        row = conn.execute(QUOTE_SQL, (who, rng.choice(ITEMS), region, codes, AT), prepare=True).fetchone()
        assert row is not None
        return "quoted"

    return work


def redeem_work(total: int) -> Work:
    counter = iter(range(1, total + 1))
    lock = threading.Lock()

    def work(conn: psycopg.Connection[Any], client: Client) -> str | None:
        with lock:
            n = next(counter, None)
        if n is None:
            return None
        row = conn.execute(
            REDEEM_SQL,
            (f"r-{n}", '{"plan": "pro", "cycle": "monthly"}', "IN", ["WELCOME20"], f"bench-{n}", AT),
            prepare=True,
        ).fetchone()
        assert row is not None
        return str(row[0])

    return work


# ---------------------------------------------------------------------------------------------- steps


def bench_quotes(url: str, engine: Engine, clients: int, seconds: float, customers: int) -> Row:
    with engine.begin() as conn:
        launch = list(
            conn.execute(
                sa.text(
                    f"SELECT code FROM {SCHEMA}.promotion_codes WHERE promotion_id = 'launch-codes' LIMIT 100"
                )
            ).scalars()
        )
    measured = run_clients(url, clients, quote_work(launch, customers), seconds)
    check(measured.calls > 0, "no quote completed")
    return Row(
        f"quote ({clients} clients)",
        measured.rate,
        "quotes/s",
        f"≥ {QUOTE_TARGET:,.0f}",
        measured.rate >= QUOTE_TARGET,
        f"{measured.calls:,} in {measured.seconds:.1f} s; p50 {measured.percentile(0.5):.1f} ms, "
        f"p99 {measured.percentile(0.99):.1f} ms",
    )


def bench_redemptions(url: str, engine: Engine, clients: int, redeemers: int) -> list[Row]:
    measured = run_clients(url, clients, redeem_work(redeemers), seconds=600)
    redeemed = measured.outcomes.get("redeemed", 0)
    refused = measured.outcomes.get("refused", 0)
    with engine.begin() as conn:
        ledger = conn.execute(
            sa.text(
                f"SELECT count(*) FROM {SCHEMA}.redemptions WHERE promotion_id = 'welcome-code' "
                "AND status = 'redeemed'"
            )
        ).scalar_one()
        counter = conn.execute(
            sa.text(f"SELECT sum(redeemed) FROM {SCHEMA}.promotion_usage WHERE promotion_id = 'welcome-code'")
        ).scalar_one()
        over = conn.execute(
            sa.text(
                f"SELECT count(*) FROM (SELECT customer_id FROM {SCHEMA}.redemptions "
                "WHERE promotion_id = 'welcome-code' AND status = 'redeemed' GROUP BY customer_id "
                "HAVING count(*) > 1) x"
            )
        ).scalar_one()
    expected = min(WELCOME_MAX, redeemers)
    violations = (
        abs(redeemed - expected)
        + abs(int(ledger) - expected)
        + abs(int(counter) - expected)
        + int(over)
        + (redeemers - redeemed - refused)
    )
    check(
        violations == 0,
        f"limit violated: {redeemed} redeemed by the clients, {ledger} in the ledger, counter {counter}, "
        f"{over} customers above their limit, {refused} refused (expected exactly {expected} redeemed)",
    )
    # The rate while there was something to redeem: redemptions recorded until the last one.
    rate = redeemed / measured.last["redeemed"] if measured.last.get("redeemed") else 0.0
    return [
        Row(
            f"redeem ({clients} clients, one hot promotion)",
            rate,
            "redemptions/s",
            f"≥ {REDEEM_TARGET:,.0f}",
            rate >= REDEEM_TARGET,
            f"{redeemed:,} redeemed in {measured.last.get('redeemed', 0):.1f} s, then {refused:,} refused "
            f"(limit_reached); {measured.rate:,.0f} calls/s overall; p50 {measured.percentile(0.5):.1f} ms, "
            f"p99 {measured.percentile(0.99):.1f} ms",
        ),
        Row(
            "limit violations",
            float(violations),
            "",
            "0",
            violations == 0,
            f"max_redemptions {WELCOME_MAX:,}: ledger {ledger:,}, counter {counter:,}, per customer ≤ 1",
        ),
    ]


def bench_codes(engine: Engine, count: int) -> Row:
    started = time.perf_counter()
    with engine.begin() as conn:
        batch = generate_codes(conn, SCHEMA, "launch-codes", count, 10, "BENCH", "cli")
    seconds = time.perf_counter() - started
    with engine.begin() as conn:
        stored = conn.execute(
            sa.text(f"SELECT count(*) FROM {SCHEMA}.promotion_codes WHERE batch_id = :b"),
            {"b": batch.batch_id},
        ).scalar_one()
    check(stored == count, f"{stored} codes stored, {count} asked for")
    target = CODES_TARGET * count / 1_000_000
    return Row(
        f"generate {count:,} codes",
        seconds,
        "s",
        f"≤ {target:g} s",
        seconds <= target,
        f"{count / seconds:,.0f} codes/s, {batch.collisions} collisions topped up",
    )


# ---------------------------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: shorter and smaller")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument(
        "--seconds", type=float, default=None, help="quote phase length (default 10, quick 3)"
    )
    parser.add_argument("--codes", type=int, default=None, help="codes to generate (default 1,000,000)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (3.0 if args.quick else 10.0)
    codes = args.codes if args.codes is not None else (100_000 if args.quick else 1_000_000)
    quote_customers = 2_000 if args.quick else 20_000
    redeemers = WELCOME_MAX + (200 if args.quick else 1_000)
    if not 1 <= args.clients <= 200 or not 1 <= codes <= 1_000_000 or seconds <= 0:
        parser.error("--clients 1..200, --codes 1..1,000,000 and --seconds > 0")

    print(f"machine: {machine()}")
    rows: list[Row] = []
    try:
        with bench_database("tariff_promo_bench") as (url, where):
            print(f"database: {where}")
            engine = create_engine(url)
            try:
                started = time.perf_counter()
                upgrade(engine, SCHEMA)
                publish(engine)
                load_customers(engine, quote_customers, redeemers)
                setup = time.perf_counter() - started
                notes = f"{quote_customers + redeemers:,} customers"
                rows.append(Row("setup (migrate, apply, customers)", setup, "s", "-", None, notes))
                rows.append(bench_quotes(url, engine, args.clients, seconds, quote_customers))
                rows.extend(bench_redemptions(url, engine, args.clients, redeemers))
                rows.append(bench_codes(engine, codes))
            finally:
                engine.dispose()
    except CheckFailedError as exc:
        print_table(rows)
        print(f"\nCHECK FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print_table(rows)
    print()
    print("Clients and server share the machine; quote results are fetched as text (the app parses them).")
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
