"""The load benchmarks' clients: closed loop (the most the system makes), offered load (calls arriving at a
given rate, each latency counted from its arrival, so a stall shows in every call it delays) and warm-up
calls that are made but not measured; in Python and through pgbench. The Python clients' calls here sleep
instead of querying: what is under test is the clock, not the server. Last, the ledger benchmark's pgbench
batches admit every request they carry, as its admissions-per-second figure assumes."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bench.ledger import batch_script, prepare
from bench.ledger_targets import targets
from bench.load import Client, Throughput, run_clients
from bench.pgbench import run_pgbench


def sleeping(durations: list[float], made: list[int] | None = None) -> Any:
    """A call that sleeps durations[n] on its client's n-th call (the last after that), counting calls."""
    lock = threading.Lock()

    def work(conn: psycopg.Connection[Any], client: Client) -> str:
        time.sleep(durations[min(client.calls, len(durations) - 1)])
        if made is not None:
            with lock:
                made.append(client.number)
        return "done"

    return work


def test_a_closed_loop_calls_back_to_back_and_times_each_call_alone(pg_url: str) -> None:
    run = run_clients(pg_url, 1, sleeping([0.05]), 1.0)
    assert 5 <= run.calls <= 20
    assert min(run.latencies) >= 0.05
    assert sorted(run.latencies)[len(run.latencies) // 2] < 0.1


def test_offered_load_makes_the_offered_calls_not_as_many_as_it_can(pg_url: str) -> None:
    # Instant calls: a closed loop would make thousands a second; 4 clients offered 200/s make about 200.
    run = run_clients(pg_url, 4, sleeping([0.0]), 1.0, rate=50.0)
    assert 150 <= run.calls <= 250
    assert 150 <= run.rate <= 250
    assert sorted(run.latencies)[len(run.latencies) // 2] < 0.02


def test_offered_load_counts_a_late_call_from_its_arrival(pg_url: str) -> None:
    # Calls of 50 ms arriving every 20 ms on average: the client falls behind, and each call waits for the
    # ones before it. Timed from its own start each would take 50 ms; from its arrival they grow.
    run = run_clients(pg_url, 1, sleeping([0.05]), 1.0, rate=50.0)
    assert run.calls <= 20
    ordered = sorted(run.latencies)
    assert ordered[0] >= 0.05
    assert ordered[-1] > 0.3


def test_warmup_calls_are_made_and_counted_apart_from_the_measured_ones(pg_url: str) -> None:
    made: list[int] = []
    # The first three calls of each client are slow (a new session loading its caches); the rest are fast.
    run = run_clients(pg_url, 3, sleeping([0.3, 0.3, 0.3, 0.01], made), 0.5, warmup=3)
    assert run.warmup == 9
    assert len(made) == run.calls + run.warmup
    assert max(run.latencies) < 0.25
    assert run.calls >= 3 * 10


def test_without_warmup_the_first_calls_are_measured(pg_url: str) -> None:
    run = run_clients(pg_url, 3, sleeping([0.3, 0.01]), 0.5)
    assert run.warmup == 0
    assert max(run.latencies) >= 0.3


# pgbench: each connection's first transaction sleeps (SET in the script lasts for the session).
FIRST_SLOW = (
    "SELECT pg_sleep(CASE WHEN current_setting('bench.warm', true) IS NULL THEN 0.3 ELSE 0.002 END);\n"
    "SET bench.warm = 'yes';\n"
)


def test_pgbench_leaves_its_warmup_second_out_of_the_measure(pg_url: str) -> None:
    run = run_pgbench(pg_url, FIRST_SLOW, 2, 1.0, warmup=1.0)
    assert run.warmup > 0
    assert run.calls > 50
    assert max(run.latencies) < 0.25
    cold = run_pgbench(pg_url, FIRST_SLOW, 2, 1.0)
    assert cold.warmup == 0
    assert max(cold.latencies) >= 0.3


def test_pgbench_at_an_offered_rate_makes_that_many_transactions(pg_url: str) -> None:
    run = run_pgbench(pg_url, "SELECT 1;\n", 2, 2.0, rate=100.0)
    assert 150 <= run.calls <= 250
    assert 75 <= run.rate <= 125


def test_the_ledger_benchs_pgbench_batches_admit_every_request_they_carry(
    engine: Engine, pg_url: str
) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS public.bench_floor"))
    try:
        prepare(engine)
        spread = run_pgbench(pg_url, batch_script(False, 4, "t"), 2, 1.0)
        hot = run_pgbench(pg_url, batch_script(True, 3, "h"), 2, 1.0)
        with engine.connect() as conn:
            usage: dict[bool, int] = dict(
                conn.execute(
                    sa.text("SELECT customer_id = 'hot', count(*) FROM tariff.token_usage GROUP BY 1")
                ).all()
            )
            refused = conn.execute(
                sa.text("SELECT count(*) FROM tariff.token_requests WHERE NOT allowed")
            ).scalar_one()
        assert spread.calls > 0 and hot.calls > 0
        assert usage == {False: spread.calls * 4, True: hot.calls * 3}
        assert refused == 0
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS public.bench_floor"))


def _run(rate: float, p99_ms: float) -> Throughput:
    """Ten seconds of calls at `rate`, 99 % of them fast and the slowest 1 % at `p99_ms`."""
    calls = int(rate * 10)
    slow = calls // 100 + 1
    latencies = [0.001] * (calls - slow) + [p99_ms / 1000] * slow
    return Throughput(calls=calls, seconds=10.0, latencies=latencies)


def test_the_target_summary_names_the_modes_that_met_each_target_and_the_ones_that_did_not() -> None:
    runs = {
        "consume spread": _run(2100, 40),
        "consume spread pooled": _run(2000, 26),
        "consume batched spread": _run(3100, 19.5),
        "consume pgbench pgss": _run(3050, 25),  # fast enough, too slow at the tail
        "consume hot": _run(810, 190),
        "consume hot pooled": _run(1200, 50),
        "consume offered hot pooled": _run(797, 8),
        "consume offered hot batched": _run(797, 25),
        "consume offered hot pgbench": _run(760, 300),  # fell behind the arrivals
        "consume offered spread batched": _run(2990, 300),
    }
    lines = [t.line() for t in targets(runs, 3000.0, 800.0, 20.0, (3000.0, 800.0))]
    assert lines[0] == (
        "≥ 3,000/s with p99 ≤ 20 ms, 1,000 accounts: met by batched (3,100/s, p99 19.5 ms); missed by "
        "32 connections (2,100/s, p99 40.0 ms), pool (2,000/s, p99 26.0 ms), pgbench (3,050/s, p99 25.0 ms)"
    )
    assert lines[1] == "≥ 800/s, one hot account: met by 32 connections (810/s), pool (1,200/s)"
    hot_offered = "p99 ≤ 20 ms, one hot account, 800/s offered: met by pool (797/s, p99 8.0 ms);"
    assert lines[2].startswith(hot_offered)
    assert "missed by pgbench (760/s, p99 300.0 ms), batched (797/s, p99 25.0 ms)" in lines[2]
    assert lines[3] == (
        "p99 ≤ 20 ms, 1,000 accounts, 3,000/s offered (stricter than the target): MISSED by every mode"
    )
