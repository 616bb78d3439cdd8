"""The token and revenue reports over a large history, beside the naive alternative measured in the same run.

    python bench/reports.py [--quick]

Database: a fresh database on the server named by TARIFF_BENCH_DATABASE_URL (or else
TARIFF_TEST_DATABASE_URL), dropped afterwards; with neither, an embedded PostgreSQL in a temp directory.

Setup (not timed against the targets): the shipped config is published, `tariff demo seed` loads a
10,000-customer history, then usage records and payments are bulk-loaded on top of it set-based until there
are ≥ 10,000,000 usage records and ≥ 1,000,000 payments (--quick: 1,000,000 and 100,000), with foreign-key
checks suspended for the load (session_replication_role = replica) and the rollups filled through the same
queue and refresh the ledger uses; then the loaded tables are vacuumed and analysed, as autovacuum would.

Measured: each report built end to end (SQL over the rollups, the report model), and the naive alternative:
the raw rows pulled into pandas (in 1,000,000-row chunks, so the machine survives it) and aggregated there
into the same headline figures. Targets: each report ≤ 3 s, peak memory of the process while building them
≤ 400 MB. Reports, does not gate: exit 0 even when a target is MISSED.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/reports.py` puts bench/, not the repository, on sys.path
    sys.path.insert(0, str(REPO))

import pandas as pd  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from analytics.period import resolve_period, use_schema  # noqa: E402
from analytics.revenue_report import build_revenue_report  # noqa: E402
from analytics.seed import seed  # noqa: E402
from analytics.token_report import TokenFilters, build_token_report  # noqa: E402
from bench.database import bench_database  # noqa: E402
from bench.measure import peak_rss_mb  # noqa: E402
from compiler.project import compile_config  # noqa: E402
from database.connection import create_engine  # noqa: E402
from database.migrate import upgrade  # noqa: E402
from publishers.postgres.apply import Revision, apply_catalog  # noqa: E402

SCHEMA = "tariff"
TIME_TARGET, MEMORY_TARGET = 3.0, 400.0
CHUNK = 1_000_000

_MORE_USAGE = """
INSERT INTO token_usage (customer_id, model_id, request_id, request_type, input_tokens, output_tokens, credits,
                         cost, cost_currency, created_at)
SELECT c.id, m.id, 'bench-' || g, 'chat', tokens_in, tokens_out,
       greatest(ceil(tokens_in / 1000.0 * m.credits_per_1k_input + tokens_out / 1000.0 * m.credits_per_1k_output),
                m.credits_minimum)::bigint,
       trim_scale(tokens_in / 1000.0 * m.cost_per_1k_input + tokens_out / 1000.0 * m.cost_per_1k_output),
       m.cost_currency,
       :end - interval '1 second' * ((g * 7919) % (86400 * :days))
  FROM generate_series(1::bigint, :n) AS g
 CROSS JOIN LATERAL (SELECT 200 + (g * 31) % 3000 AS tokens_in, 80 + (g * 17) % 1400 AS tokens_out) t
  JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS k FROM customers) c ON c.k = g % :customers
  JOIN (SELECT m.*, row_number() OVER (ORDER BY id) - 1 AS k FROM ai_models m) m ON m.k = g % 4
"""

_MORE_PAYMENTS = """
INSERT INTO payments (txnid, customer_id, kind, purpose, plan_id, cycle, price_version_id, region, currency,
                      list_minor, net_minor, tax_minor, amount_minor, amount_text, quote, redemption_key,
                      productinfo, status, refunded_minor, created_at, updated_at, paid_at, failed_at)
SELECT 'BP' || g, c.id, 'plan', 'renewal', pv.plan_id, pv.cycle, pv.id, c.region, pv.currency,
       pv.amount_minor, pv.amount_minor, 0, pv.amount_minor, trim_scale(round(pv.amount_minor / 100.0, 2))::text, '{}', 'bench-' || g,
       'bench', CASE WHEN g % 20 = 0 THEN 'failure' WHEN g % 67 = 0 THEN 'refunded' ELSE 'success' END,
       CASE WHEN g % 67 = 0 AND g % 20 <> 0 THEN pv.amount_minor ELSE 0 END, at, at,
       CASE WHEN g % 20 <> 0 THEN at END, CASE WHEN g % 20 = 0 THEN at END
  FROM generate_series(1::bigint, :n) AS g
 CROSS JOIN LATERAL (SELECT :end - interval '1 second' * ((g * 7919) % (86400 * :days)) AS at) t
  JOIN (SELECT id, region, row_number() OVER (ORDER BY id) - 1 AS k FROM customers) c ON c.k = g % :customers
  JOIN (SELECT pv.*, row_number() OVER (ORDER BY id) - 1 AS k FROM price_versions pv
         WHERE valid_to IS NULL AND amount_minor > 0) pv ON pv.k = g % 12
"""


def _setup(engine: Engine, usage_target: int, payment_target: int) -> dict[str, Any]:
    result = compile_config(REPO / "pricing")
    assert result.ok and result.catalog is not None
    apply_catalog(
        engine,
        SCHEMA,
        result.catalog,
        Revision("bench"),
        environment=None,
        database="bench",
        now=datetime(2025, 1, 1, tzinfo=UTC),
    )
    started = time.perf_counter()
    with engine.begin() as conn:
        use_schema(conn, SCHEMA)
        seeded = seed(conn, customers=10_000, days=180, seed_value=1)
    seed_seconds = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as conn:
        use_schema(conn, SCHEMA)
        params = {"end": seeded.end, "days": 180, "customers": 10_000}
        conn.execute(sa.text("SET LOCAL session_replication_role = replica"))
        more_usage = max(0, usage_target - seeded.usage_records)
        conn.execute(sa.text(_MORE_USAGE), {**params, "n": more_usage})
        conn.execute(sa.text(_MORE_PAYMENTS), {**params, "n": max(0, payment_target - seeded.payments)})
        # Queue the new rows for the rollups, as every writer of token_usage does.
        conn.execute(
            sa.text(
                """INSERT INTO usage_rollup_queue (customer_id, model_id, local_hour, first_at, requests,
                       input_tokens, output_tokens, credits, cost, cost_currency)
                   SELECT customer_id, model_id, date_trunc('hour', created_at AT TIME ZONE token_timezone()),
                          min(created_at), count(*), sum(input_tokens), sum(output_tokens), sum(credits),
                          sum(cost), cost_currency
                     FROM token_usage WHERE request_id LIKE 'bench-%' GROUP BY 1, 2, 3, cost_currency"""
            )
        )
        conn.execute(
            sa.text(
                """INSERT INTO token_usage_daily AS d (day, customer_id, model_id, request_type, requests,
                       input_tokens, output_tokens, credits, cost, cost_currency)
                   SELECT (created_at AT TIME ZONE token_timezone())::date, customer_id, model_id, request_type,
                          count(*), sum(input_tokens), sum(output_tokens), sum(credits), sum(cost), cost_currency
                     FROM token_usage WHERE request_id LIKE 'bench-%' GROUP BY 1, 2, 3, 4, cost_currency
                   ON CONFLICT (customer_id, day, model_id, request_type) DO UPDATE
                      SET requests = d.requests + EXCLUDED.requests, credits = d.credits + EXCLUDED.credits,
                          input_tokens = d.input_tokens + EXCLUDED.input_tokens,
                          output_tokens = d.output_tokens + EXCLUDED.output_tokens, cost = d.cost + EXCLUDED.cost"""
            )
        )
        conn.execute(sa.text("SET LOCAL session_replication_role = origin"))
        conn.execute(sa.text("SELECT refresh_usage_rollups()"))
    # What autovacuum does after a load this size, done here because the CI server runs without it: the
    # refresh above leaves ~10,000,000 dead queue rows (1 GB) that every later refresh would scan, and the
    # rollup upserts leave dead row versions. A real deployment vacuums them within a minute or so.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(
            sa.text(
                f"VACUUM (ANALYZE) {SCHEMA}.usage_rollup_queue, {SCHEMA}.usage_hourly, "
                f"{SCHEMA}.usage_customer_monthly, {SCHEMA}.token_usage_daily, {SCHEMA}.payments, "
                f"{SCHEMA}.subscription_history"
            )
        )
    with engine.begin() as conn:
        use_schema(conn, SCHEMA)
        usage = conn.execute(sa.text("SELECT count(*) FROM token_usage")).scalar_one()
        payments = conn.execute(sa.text("SELECT count(*) FROM payments")).scalar_one()
    return {
        "seed_seconds": seed_seconds,
        "bulk_seconds": time.perf_counter() - started,
        "usage_records": usage,
        "payments": payments,
        "customers": seeded.customers,
    }


def _timed(label: str, work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def _token_report(engine: Engine) -> Any:
    with engine.begin() as conn:
        use_schema(conn, SCHEMA)
        return build_token_report(conn, resolve_period(conn, None, None), TokenFilters(), "day")


def _revenue_report(engine: Engine) -> Any:
    with engine.begin() as conn:
        use_schema(conn, SCHEMA)
        return build_revenue_report(conn, resolve_period(conn, None, None), "plan")


def _naive_tokens(engine: Engine) -> dict[str, Any]:
    """Raw usage rows into pandas, aggregated there: totals, per day, per model, hour-of-week."""
    totals: list[pd.DataFrame] = []
    with engine.connect().execution_options(stream_results=True) as conn:
        for chunk in pd.read_sql(
            sa.text(
                "SELECT customer_id, model_id, credits, cost, input_tokens, output_tokens, created_at "
                f"FROM {SCHEMA}.token_usage"
            ),
            conn,
            chunksize=CHUNK,
        ):
            local = pd.to_datetime(chunk["created_at"], utc=True).dt.tz_convert("Asia/Kolkata")
            chunk["day"] = local.dt.date
            chunk["how"] = local.dt.day_of_week * 24 + local.dt.hour
            totals.append(chunk.groupby(["day", "model_id", "how"])[["credits", "cost"]].sum().reset_index())
    combined = pd.concat(totals).groupby(["day", "model_id", "how"]).sum()
    return {"credits": int(combined["credits"].sum())}


def _naive_revenue(engine: Engine) -> dict[str, Any]:
    """Raw payments and subscription states into pandas: collected per month and plan, MRR at the end."""
    with engine.connect() as conn:
        conn.execute(sa.text(f"SET search_path = {SCHEMA}"))
        payments = pd.read_sql(
            sa.text(
                "SELECT customer_id, plan_id, currency, status, net_minor, refunded_minor, amount_minor, paid_at "
                "FROM payments"
            ),
            conn,
        )
        history = pd.read_sql(
            sa.text(
                "SELECT customer_id, plan_id, currency, mrr_minor, valid_from, valid_to "
                "FROM subscription_history"
            ),
            conn,
        )
        rates = pd.read_sql(sa.text("SELECT code AS currency, usd_rate FROM currencies"), conn)
    paid = payments[payments["paid_at"].notna()].merge(rates, on="currency")
    paid["usd"] = paid["net_minor"].astype(float) / 100 / paid["usd_rate"].astype(float)
    paid_month = pd.to_datetime(paid["paid_at"], utc=True).dt.strftime("%Y-%m")
    paid.groupby([paid_month, "plan_id"])["usd"].sum()
    live = history[history["valid_to"].isna()].merge(rates, on="currency")
    mrr = float((live["mrr_minor"].astype(float) / 100 / live["usd_rate"].astype(float)).sum())
    return {"mrr": mrr}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="1,000,000 usage records and 100,000 payments")
    args = parser.parse_args(argv)
    usage_target, payment_target = (1_000_000, 100_000) if args.quick else (10_000_000, 1_000_000)
    with bench_database("tariff_bench_reports") as (url, where):
        engine = create_engine(url)
        try:
            upgrade(engine, SCHEMA)
            print(f"reports benchmark on {where}", flush=True)
            setup = _setup(engine, usage_target, payment_target)
            print(
                f"history: {setup['customers']:,} customers seeded in {setup['seed_seconds']:.1f} s, then "
                f"{setup['usage_records']:,} usage records and {setup['payments']:,} payments in total "
                f"(bulk load {setup['bulk_seconds']:.1f} s)",
                flush=True,
            )
            _token_report(engine)  # warm the caches the way a second run would find them
            token_seconds, _ = _timed("tokens", lambda: _token_report(engine))
            revenue_seconds, _ = _timed("revenue", lambda: _revenue_report(engine))
            memory = peak_rss_mb()
            print(
                f"token report {token_seconds:.2f} s, revenue report {revenue_seconds:.2f} s, "
                f"peak memory {memory:.0f} MB; now the naive alternative …",
                flush=True,
            )
            naive_token_seconds, _ = _timed("naive tokens", lambda: _naive_tokens(engine))
            naive_revenue_seconds, _ = _timed("naive revenue", lambda: _naive_revenue(engine))
            naive_memory = peak_rss_mb()
        finally:
            engine.dispose()
    rows = [
        ("token report", token_seconds, naive_token_seconds),
        ("revenue report", revenue_seconds, naive_revenue_seconds),
    ]
    print(f"{'':16} {'rollups (s)':>12} {'naive pandas (s)':>17}  target")
    for name, ours, naive in rows:
        verdict = "ok" if ours <= TIME_TARGET else "MISSED"
        print(f"{name:16} {ours:12.2f} {naive:17.2f}  ≤ {TIME_TARGET:.0f} s {verdict}")
    verdict = "ok" if memory <= MEMORY_TARGET else "MISSED"
    print(
        f"peak memory building both reports: {memory:.0f} MB (≤ {MEMORY_TARGET:.0f} MB {verdict}); "
        f"after the naive runs: {naive_memory:.0f} MB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
