"""The load benchmarks' connection pool hands connections out first come, first served, so the latency
of every waiting client is measured, not only of the few that happen to grab a connection back."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

import psycopg

from bench.load import ConnectionPool


def fake(name: str) -> psycopg.Connection[Any]:
    # The pool never touches a connection; a named stand-in shows who got which.
    return cast(psycopg.Connection[Any], name)


def wait_until(condition: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_a_connection_given_back_goes_to_the_longest_waiting_client_first() -> None:
    pool = ConnectionPool([fake("only")])
    order: list[str] = []
    waiting = threading.Semaphore(0)

    def client(name: str) -> None:
        waiting.release()
        with pool.connection() as conn:
            order.append(f"{name}:{conn}")

    with pool.connection():
        first = threading.Thread(target=client, args=("b",))
        first.start()
        waiting.acquire()
        wait_until(lambda: len(pool._waiting) == 1)
        second = threading.Thread(target=client, args=("c",))
        second.start()
        waiting.acquire()
        wait_until(lambda: len(pool._waiting) == 2)
    # The holder, giving the connection back and asking again at once, queues behind b and c.
    with pool.connection() as again:
        order.append(f"a:{again}")
    first.join(timeout=5)
    second.join(timeout=5)
    assert order == ["b:only", "c:only", "a:only"]


def test_free_connections_are_handed_out_without_waiting_and_closed_at_the_end() -> None:
    closed: list[str] = []

    class Conn:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)

    pool = ConnectionPool(
        [cast(psycopg.Connection[Any], Conn("x")), cast(psycopg.Connection[Any], Conn("y"))]
    )
    with pool.connection() as one, pool.connection() as two:
        assert {cast(Conn, one).name, cast(Conn, two).name} == {"x", "y"}
    pool.close()
    assert sorted(closed) == ["x", "y"]
