"""Concurrent clients for the load benchmarks: threads with one autocommit connection each, or sharing a
few through a pool (as app servers hold them: Prisma's default pool has 2 × cores + 1 connections), all
connected before the clock starts, calling until a deadline; in this process, or spread over several so the
Python clients are not what limits the rate. What they measured: calls, outcomes and latencies (a pooled
call's includes its wait for a connection), with percentiles.

Closed loop by default: each client calls again as soon as its call returns, so the rate is the most the
system makes and each call's latency includes its wait behind the others (Little's law: clients / rate on
average). With an offered `rate`, each client's calls arrive at random moments (a Poisson process, as
independent users' requests do) whether or not the last one has returned, and a call's latency counts from
the moment it arrived: a client still busy when its next call arrives makes that call late, and the delay
counts (no coordinated omission). Calls still due when the deadline passes are not made: a client that fell
behind shows it in a rate below the offered one."""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.database import libpq
from bench.results import check


@dataclass
class Client:
    number: int  # unique among the clients of a step
    rng: random.Random
    calls: int = 0  # calls it completed so far


# One call by a client: returns its outcome ("quoted", "refused", …), or None when there is no work left.
Work = Callable[[psycopg.Connection[Any], Client], str | None]


@dataclass
class Throughput:
    calls: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    outcomes: dict[str, int] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)  # seconds from the start to each outcome's last call
    warmup: int = 0  # calls made before the clock started: outside the rate and the latencies

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        """The latency below which `share` of the calls finished, in ms."""
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * share))] * 1000

    def add(self, other: Throughput) -> None:
        """Count `other`'s calls in (another process's clients, run against the same clock)."""
        self.latencies.extend(other.latencies)
        self.calls = len(self.latencies)
        self.warmup += other.warmup
        for key, n in other.outcomes.items():
            self.outcomes[key] = self.outcomes.get(key, 0) + n
        for key, moment in other.last.items():
            self.last[key] = max(self.last.get(key, 0.0), moment)


@dataclass
class _Turn:
    """A thread waiting for a pooled connection: woken when one is handed to it."""

    handed: threading.Event = field(default_factory=threading.Event)
    conn: psycopg.Connection[Any] | None = None


class ConnectionPool:
    """Connections shared by client threads, handed out first come, first served: a thread that gives one
    back while others wait goes behind them. (A plain queue lets the thread that just finished, still
    running, take the connection again, so a few threads make most calls and the latencies of the others
    go unmeasured.)"""

    def __init__(self, connections: list[psycopg.Connection[Any]]) -> None:
        self._free = deque(connections)
        self._waiting: deque[_Turn] = deque()
        self._lock = threading.Lock()

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        turn: _Turn | None = None
        with self._lock:
            if self._free:
                conn = self._free.popleft()
            else:
                turn = _Turn()
                self._waiting.append(turn)
        if turn is not None:
            turn.handed.wait()
            assert turn.conn is not None
            conn = turn.conn
        try:
            yield conn
        finally:
            with self._lock:
                if self._waiting:
                    waiter = self._waiting.popleft()
                    waiter.conn = conn
                    waiter.handed.set()
                else:
                    self._free.append(conn)

    def close(self) -> None:
        """Close the connections (call once every thread is done with the pool)."""
        while self._free:
            self._free.popleft().close()


def run_clients(
    url: str,
    clients: int,
    work: Work,
    seconds: float,
    *,
    first: int = 0,
    setup: str | None = None,
    before_start: Callable[[], None] | None = None,
    pool: int = 0,
    rate: float = 0.0,
    warmup: int = 0,
) -> Throughput:
    """`clients` threads (numbered from `first`), each on its own connection, or with `pool` > 0 sharing
    that many through a ConnectionPool (every connection runs `setup` first), calling `work` until `seconds`
    pass or it returns None: back to back, or with `rate` > 0 at that many calls per second per client, on
    average (the module's docstring). Each client first makes `warmup` calls, not measured: a new server
    session's first calls load its caches (catalog entries, plans, compiled functions), which an app's
    long-lived connections have done long before; 32 of them at once on 2 cores take a few hundred
    milliseconds. The clock starts once every client is connected and warmed up and `before_start` (if any)
    has returned; `seconds` of the result is the time until the last call ended."""
    result = Throughput()
    lock = threading.Lock()
    connected = threading.Barrier(clients + 1)
    go = threading.Event()
    stop_at: list[float] = [0.0]
    clock: list[float] = [0.0]

    def connect() -> psycopg.Connection[Any]:
        conn = psycopg.connect(libpq(url), autocommit=True)
        if setup is not None:
            conn.execute(setup)
        return conn

    shared = ConnectionPool([connect() for _ in range(pool)]) if pool > 0 else None

    def call(me: Client, own: psycopg.Connection[Any] | None) -> str | None:
        if own is not None:
            return work(own, me)
        assert shared is not None
        with shared.connection() as conn:
            return work(conn, me)

    def client(number: int) -> None:
        me = Client(number, random.Random(number))
        arrivals = random.Random(-1 - number)  # its own stream: `work` draws from me.rng
        latencies: list[float] = []
        outcomes: dict[str, int] = {}
        last: dict[str, float] = {}
        own = connect() if shared is None else None
        try:
            for _ in range(warmup):
                if call(me, own) is None:
                    break
                me.calls += 1
            connected.wait(timeout=120)
            go.wait(timeout=300)
            arrived = clock[0]
            while True:
                if rate > 0:
                    arrived += arrivals.expovariate(rate)
                    if arrived >= stop_at[0] or time.perf_counter() >= stop_at[0]:
                        break
                    time.sleep(max(0.0, arrived - time.perf_counter()))
                elif (arrived := time.perf_counter()) >= stop_at[0]:
                    break
                outcome = call(me, own)
                if outcome is None:
                    break
                finished = time.perf_counter()
                latencies.append(finished - arrived)
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                last[outcome] = finished
                me.calls += 1
        finally:
            if own is not None:
                own.close()
        with lock:
            result.warmup += me.calls - len(latencies)
            result.latencies.extend(latencies)
            for key, n in outcomes.items():
                result.outcomes[key] = result.outcomes.get(key, 0) + n
            for key, moment in last.items():
                result.last[key] = max(result.last.get(key, 0.0), moment - clock[0])

    threads = [threading.Thread(target=client, args=(first + n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    connected.wait(timeout=120)
    if before_start is not None:
        before_start()
    started = time.perf_counter()
    clock[0] = started
    stop_at[0] = started + seconds
    go.set()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started
    result.calls = len(result.latencies)
    if shared is not None:
        shared.close()
    return result


def _client_process(
    url: str,
    clients: int,
    first: int,
    work: Work,
    seconds: float,
    setup: str | None,
    pool: int,
    rate: float,
    warmup: int,
    ready: Any,
    go: Any,
    out: Any,
) -> None:
    def start_together() -> None:
        ready.release()
        start_at = go.get()  # a time.time() moment, shared by every process
        time.sleep(max(0.0, start_at - time.time()))

    out.put(
        run_clients(
            url,
            clients,
            work,
            seconds,
            first=first,
            setup=setup,
            before_start=start_together,
            pool=pool,
            rate=rate,
            warmup=warmup,
        )
    )


def spread(total: int, parts: int) -> list[int]:
    """`total` split into `parts` shares that differ by at most one."""
    return [total // parts + (1 if n < total % parts else 0) for n in range(parts)]


def run_processes(
    url: str,
    clients: int,
    processes: int,
    work: Work,
    seconds: float,
    *,
    setup: str | None = None,
    pool: int = 0,
    rate: float = 0.0,
    warmup: int = 0,
) -> Throughput:
    """run_clients with the clients spread over `processes` processes, started at the same moment; with
    `pool` > 0, that many connections in all, each process's clients sharing its part of them (so at most
    `pool` processes); with `rate` > 0, that many calls per second offered by all the clients together;
    `warmup` calls per client before the clock starts.
    `work` must pickle (a module-level function, or a functools.partial of one). The rate is over `seconds`:
    every process stops calling at its own deadline, `seconds` after the shared start."""
    if pool > 0:
        processes = min(processes, pool)
    ctx = mp.get_context("spawn")
    ready = ctx.Semaphore(0)
    go: Any = ctx.Queue()
    out: Any = ctx.Queue()
    pools = spread(pool, processes) if pool > 0 else [0] * processes
    per_client = rate / clients
    procs = []
    first = 0
    for threads, connections in zip(spread(clients, processes), pools, strict=True):
        if threads == 0:
            continue
        p = ctx.Process(
            target=_client_process,
            args=(url, threads, first, work, seconds, setup, connections, per_client, warmup, ready, go, out),
            daemon=True,
        )
        first += threads
        procs.append(p)
        p.start()
    for _ in procs:
        check(ready.acquire(timeout=180), "a client process did not connect")
    start_at = time.time() + 0.2
    for _ in procs:
        go.put(start_at)
    result = Throughput(seconds=seconds)
    for _ in procs:
        result.add(out.get(timeout=seconds + 300))
    for p in procs:
        p.join(timeout=60)
    return result
