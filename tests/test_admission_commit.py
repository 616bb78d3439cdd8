"""The rules' `admissions.commit`: admissions commit durably by default; with `asynchronous` only their own
transactions skip the wait for the disk, and a crash of the database server loses at most the last of
them, each whole, never an admission a durable commit came after."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from database import embedded, ledger
from database.connection import create_engine
from database.migrate import upgrade
from publishers.postgres.read import read_catalog
from tests.ledger_support import S, add_customer, assert_ledger_consistent, publish_shipped

T0 = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)


def setting(conn: Connection) -> str:
    return str(conn.execute(sa.text("SHOW synchronous_commit")).scalar_one())


def grant(conn: Connection, customer: str, amount: int) -> None:
    ledger.grant(conn, S, customer, amount, reason="test", at=T0 - timedelta(days=1))


@pytest.fixture
def customers(engine: Engine) -> Iterator[Engine]:
    publish_shipped(engine, commit="synchronous")
    add_customer(engine, "c1")
    with engine.begin() as conn:
        grant(conn, "c1", 1000)
    yield engine
    assert_ledger_consistent(engine)


def durable_session(engine: Engine) -> Connection:
    """A connection whose session commits durably, whatever the test server's own setting."""
    conn = engine.connect()
    conn.execute(sa.text("SET SESSION synchronous_commit = on"))
    conn.commit()
    return conn


def test_admissions_follow_the_servers_setting_by_default(customers: Engine) -> None:
    with durable_session(customers) as conn, conn.begin():
        assert ledger.consume(conn, S, "c1", "gpt-4o", 500, 0, "r1", at=T0).allowed
        assert ledger.reserve(conn, S, "c1", "gpt-4o", 500, 0, "r2", at=T0).allowed
        ledger.commit(conn, S, "r2", 500, 0, at=T0)
        assert setting(conn) == "on"


def test_asynchronous_admissions_relax_only_their_own_transactions(customers: Engine) -> None:
    publish_shipped(customers, commit="asynchronous")
    with customers.connect() as conn:
        live = read_catalog(conn, S)
    assert live is not None and live.token_rules.admission_commit == "asynchronous"
    for call in (
        lambda conn: ledger.consume(conn, S, "c1", "gpt-4o", 500, 0, "r1", at=T0),
        lambda conn: ledger.reserve(conn, S, "c1", "gpt-4o", 500, 0, "r2", at=T0),
        lambda conn: ledger.commit(conn, S, "r2", 500, 0, at=T0),
        lambda conn: ledger.reserve(conn, S, "c1", "gpt-4o", 500, 0, "r3", at=T0),
        lambda conn: ledger.release(conn, S, "r3", at=T0),
    ):
        with durable_session(customers) as conn, conn.begin():
            assert setting(conn) == "on"
            call(conn)
            assert setting(conn) == "off"  # the rest of this transaction, the caller's writes included
    # A refusal, too, is recorded without the wait.
    with durable_session(customers) as conn, conn.begin():
        assert not ledger.consume(conn, S, "c1", "gpt-4o", 10_000_000, 0, "r4", at=T0).allowed
        assert setting(conn) == "off"
    # The next transaction on the same connection, and grants, commit as the session says.
    with durable_session(customers) as conn:
        with conn.begin():
            ledger.consume(conn, S, "c1", "gpt-4o", 500, 0, "r5", at=T0)
        with conn.begin():
            assert setting(conn) == "on"
            grant(conn, "c1", 10)
            assert setting(conn) == "on"


# ------------------------------------------------------------------------------------------- crash


def crash(root: Path) -> None:
    """Stop the server the way a crash does: immediate shutdown, no checkpoint, WAL buffers lost."""
    server = embedded.status(root)
    assert server is not None
    os.kill(server.pid, signal.SIGQUIT)
    deadline = time.monotonic() + 60
    while embedded.status(root) is not None:
        assert time.monotonic() < deadline, "the server did not go down"
        time.sleep(0.05)


def crash_and_recover(engine: Engine, root: Path) -> None:
    engine.dispose()
    crash(root)
    embedded.start(root, durable=True)  # crash recovery replays the WAL that reached the disk


def admitted(engine: Engine, prefix: str) -> list[str]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(f"SELECT request_id FROM {S}.token_requests WHERE request_id LIKE :p AND allowed"),
            {"p": f"{prefix}-%"},
        ).scalars()
        return sorted(rows, key=lambda r: int(r.rsplit("-", 1)[1]))


def consume_each(engine: Engine, prefix: str, count: int) -> list[str]:
    """`count` admissions, each its own transaction, as the app makes them; the ids the app was told
    were allowed."""
    told = []
    for n in range(1, count + 1):
        with engine.begin() as conn:
            if ledger.consume(conn, S, "c1", "gpt-4o", 500, 0, f"{prefix}-{n}", at=T0).allowed:
                told.append(f"{prefix}-{n}")
    return told


@pytest.mark.slow
def test_a_crash_loses_only_the_last_asynchronous_admissions_each_whole(scratch_root: Path) -> None:
    server = embedded.start(scratch_root, durable=True)
    embedded.ensure_database(server, "crash")
    with psycopg.connect(server.url(), autocommit=True) as conn:
        # The WAL writer left alone for 10 s: what asynchronous commits leave in the WAL buffers stays
        # there until the crash; autovacuum's own commits would flush it.
        conn.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
        conn.execute("ALTER SYSTEM SET autovacuum = off")
        conn.execute("SELECT pg_reload_conf()")
    engine = create_engine(server.url("crash"))
    try:
        upgrade(engine, S)
        publish_shipped(engine, commit="synchronous")
        add_customer(engine, "c1")
        with engine.begin() as conn:
            grant(conn, "c1", 100_000)

        # Synchronous (the default): every admission the app was told about survives the crash.
        durable = consume_each(engine, "s", 20)
        crash_and_recover(engine, scratch_root)
        assert admitted(engine, "s") == durable and len(durable) == 20
        assert_ledger_consistent(engine)

        # Asynchronous: admissions before a durable commit (here a grant) are secured by it; of those
        # after it, the crash may lose the last ones, never one before a survivor, and never half of one.
        publish_shipped(engine, commit="asynchronous")
        secured = consume_each(engine, "a", 10)
        with engine.begin() as conn:
            grant(conn, "c1", 5)
        told = consume_each(engine, "b", 30)
        crash_and_recover(engine, scratch_root)

        assert admitted(engine, "a") == secured and len(secured) == 10
        survived = admitted(engine, "b")
        assert survived == told[: len(survived)]  # a prefix of what the app was told
        assert len(survived) < len(told), "no admission was lost: the test did not exercise the crash"
        assert_ledger_consistent(engine)
        with engine.connect() as conn:
            usage, daily, balance = conn.execute(
                sa.text(f"""
                    SELECT (SELECT count(*) FROM {S}.token_usage),
                           (SELECT sum(requests) FROM {S}.token_usage_daily),
                           (SELECT balance FROM {S}.token_accounts WHERE customer_id = 'c1')""")
            ).one()
        kept = len(durable) + len(secured) + len(survived)
        assert usage == daily == kept  # every surviving admission has its usage row and its rollup share
        assert balance == 100_000 + 5 - kept  # 1 credit each: the lost ones were never charged
    finally:
        engine.dispose()
