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
from bench.load import Client, run_clients
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
