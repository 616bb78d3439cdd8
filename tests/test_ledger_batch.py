"""Group admission on real PostgreSQL: consume_batch() answers each request as consume() would, is all or
nothing, refuses malformed batches with the request's position; the AdmissionBatcher gives each caller its
own answer or exception, never overdraws a hot account under 64 concurrent callers, never deadlocks against
single calls on a shared pool, and charges a request of a batch killed mid-flight exactly once."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from compiler.catalog import AdmissionCommit
from database import ledger, pools
from database.customers import UnknownCustomerError
from database.ledger_batch import AdmissionBatcher, ConsumeRequest, consume_batch
from tests.ledger_support import (
    S,
    add_customer,
    assert_ledger_consistent,
    publish_shipped,
)

T0 = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)  # 11:30 IST
CREDIT = 500  # gpt-4o input tokens per credit


@pytest.fixture
def db(engine: Engine) -> Iterator[Engine]:
    publish_shipped(engine)
    yield engine
    assert_ledger_consistent(engine)


def customer(engine: Engine, name: str, credits: int, *, daily: int | None = None) -> None:
    add_customer(engine, name)
    with engine.begin() as conn:
        ledger.grant(conn, S, name, credits, reason="test", at=T0 - timedelta(days=1))
        if daily is not None:
            ledger.set_limits(
                conn,
                S,
                name,
                per_request=None,
                daily=daily,
                monthly=None,
                reason="test",
                at=T0 - timedelta(days=1),
            )


def balance(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(f"SELECT balance FROM {S}.token_accounts WHERE customer_id = :c"), {"c": name}
            ).scalar_one()
        )


def requests_written(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {S}.token_requests")).scalar_one())


def request(name: str, credits: int, request_id: str) -> ConsumeRequest:
    return ConsumeRequest(name, "gpt-4o", credits * CREDIT, 0, request_id)


def comparable(decision: ledger.Decision) -> dict[str, Any]:
    """A decision without the fields that name the customer and request."""
    return {key: value for key, value in decision.raw.items() if key not in ("customer", "request_id")}


# ------------------------------------------------------------------------------------------ the function


def test_a_batch_answers_each_request_as_consume_would_in_order(db: Engine) -> None:
    for prefix in ("b", "s"):  # the same accounts twice: batched, and one call at a time
        customer(db, f"{prefix}1", 10)
        customer(db, f"{prefix}2", 100, daily=5)
    script = [("1", 4, "r1"), ("2", 3, "r2"), ("1", 4, "r3"), ("1", 4, "r4"), ("2", 3, "r5"), ("1", 4, "r1")]
    with db.begin() as conn:
        batched = consume_batch(conn, S, [request(f"b{who}", n, f"b-{rid}") for who, n, rid in script], at=T0)
    single = []
    for who, n, rid in script:
        with db.begin() as conn:
            single.append(ledger.consume(conn, S, f"s{who}", "gpt-4o", n * CREDIT, 0, f"s-{rid}", at=T0))

    assert [comparable(d) for d in batched] == [comparable(d) for d in single]
    assert [(d.allowed, d.reason, d.replayed) for d in batched] == [
        (True, None, False),
        (True, None, False),
        (True, None, False),
        (False, "insufficient_balance", False),  # 2 left after r1 and r3: the batch saw its own charges
        (False, "daily_limit", False),  # 3 + 3 above the daily 5
        (True, None, True),  # r1 again: its first answer, not a second charge
    ]
    assert (balance(db, "b1"), balance(db, "b2")) == (2, 97)
    with db.begin() as conn:
        again = ledger.consume(conn, S, "b1", "gpt-4o", 4 * CREDIT, 0, "b-r3", at=T0)
    assert again.replayed and balance(db, "b1") == 2


def test_a_wrong_request_fails_the_whole_batch_and_writes_nothing(db: Engine) -> None:
    customer(db, "c1", 10)
    customer(db, "c2", 10)
    with db.begin() as conn:
        ledger.consume(conn, S, "c2", "gpt-4o", CREDIT, 0, "taken", at=T0)
    before = requests_written(db)

    with pytest.raises(ledger.UnknownLedgerReferenceError) as unknown, db.begin() as conn:
        consume_batch(conn, S, [request("c1", 1, "a1"), request("nobody", 1, "a2")], at=T0)
    assert str(unknown.value).startswith('request 2 of the batch ("a2"): unknown customer "nobody"')
    assert unknown.value.fix and "register the customer" in unknown.value.fix

    with (
        pytest.raises(ledger.LedgerConflictError, match=r'request 2 of the batch \("taken"\)'),
        db.begin() as conn,
    ):
        consume_batch(conn, S, [request("c1", 1, "a3"), request("c1", 1, "taken")], at=T0)

    with pytest.raises(ledger.UnknownLedgerReferenceError, match="unknown AI model"), db.begin() as conn:
        consume_batch(conn, S, [request("c1", 1, "a4"), ConsumeRequest("c1", "gpt-9", 1, 0, "a5")], at=T0)

    assert (balance(db, "c1"), requests_written(db)) == (10, before)


def test_a_batch_commits_as_the_rules_say(db: Engine) -> None:
    customer(db, "c1", 10)
    batch = [request("c1", 1, "d1"), request("c1", 1, "d2")]
    modes: tuple[tuple[AdmissionCommit, str], ...] = (("synchronous", "on"), ("asynchronous", "off"))
    for mode, expected in modes:
        publish_shipped(db, commit=mode)
        with db.connect() as conn:
            conn.execute(sa.text("SET SESSION synchronous_commit = on"))
            conn.commit()
            with conn.begin():
                consume_batch(conn, S, batch, at=T0)
                assert conn.execute(sa.text("SHOW synchronous_commit")).scalar_one() == expected, mode
    assert balance(db, "c1") == 8  # the second batch replayed the first


GOOD = {"customer": "c1", "model": "gpt-4o", "input_tokens": 1, "output_tokens": 0, "request_id": "x"}


def batch_of(*changes: dict[str, Any], drop: str | None = None) -> str:
    """A JSON batch of one request per change (GOOD with the change applied, `drop` removed)."""
    items = [{key: value for key, value in {**GOOD, **change}.items() if key != drop} for change in changes]
    return json.dumps(items)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ('{"customer": "c1"}', "a batch is a JSON array of requests, not object"),
        ("[1]", "request 1 of the batch: is a JSON number, not an object"),
        (batch_of({}, drop="customer"), 'request 1 of the batch ("x"): "customer" must be a string'),
        (batch_of({"input_tokens": "500"}), '"input_tokens" must be a whole number from 0 to 2147483647'),
        (batch_of({"input_tokens": 1.5}), '"input_tokens" must be a whole number'),
        (batch_of({"output_tokens": -3}), '"output_tokens" must be a whole number'),
        (batch_of({"request_id": 7}), '"request_id" must be a string'),
        (batch_of({"tokens": 3, "user": "u"}), "has unknown fields: tokens, user"),
        (
            batch_of({}, {"request_id": "y", "at": "yesterday-ish"}),
            'request 2 of the batch ("y"): invalid input syntax for type timestamp with time zone',
        ),
        (batch_of(*[{}] * 1001), "a batch holds at most 1000 requests, not 1001"),
    ],
    ids=[
        "not-an-array",
        "not-an-object",
        "no-customer",
        "tokens-as-text",
        "fractional-tokens",
        "negative-tokens",
        "request-id-not-text",
        "unknown-fields",
        "bad-timestamp",
        "too-many",
    ],
)
def test_a_malformed_batch_is_refused_with_the_position_and_the_fix(
    db: Engine, payload: str, message: str
) -> None:
    customer(db, "c1", 10)
    with pytest.raises(ledger.LedgerError) as refused, db.begin() as conn:
        call_raw(conn, payload)
    assert message in str(refused.value)
    assert refused.value.sqlstate in ("22023", "22007")
    if refused.value.sqlstate == "22023":
        assert refused.value.fix, "a malformed batch says what a batch looks like"
    assert (balance(db, "c1"), requests_written(db)) == (10, 0)


def call_raw(conn: Connection, payload: str) -> Any:
    """consume_batch() called with JSON as another language's app would send it."""
    try:
        return conn.execute(
            sa.text(f"SELECT {S}.consume_batch(CAST(:p AS jsonb), :at)"), {"p": payload, "at": T0}
        ).scalar_one()
    except sa.exc.DBAPIError as exc:
        raise ledger.translate_error(exc) from exc


# ------------------------------------------------------------------------------------------ the batcher


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)


def lock_account(engine: Engine, name: str) -> Connection:
    """A connection holding `name`'s account row lock (as a long admission would) until it commits. Use it
    as a context manager inside the thread pool's: if the test fails while it holds the lock, leaving the
    block releases it, so the calls waiting behind it end and the pool's threads can be joined."""
    conn = engine.connect()
    conn.execute(sa.text(f"SELECT 1 FROM {S}.token_accounts WHERE customer_id = :c FOR UPDATE"), {"c": name})
    return conn


def backends_waiting_on_a_lock(engine: Engine, query_like: str = "%") -> list[int]:
    with engine.connect() as conn:
        return [
            int(pid)
            for pid in conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event_type = 'Lock' AND query LIKE :q"
                ),
                {"q": query_like},
            ).scalars()
        ]


def test_each_caller_gets_its_own_answer_when_a_batch_fails(db: Engine) -> None:
    customer(db, "gate", 10)
    customer(db, "c1", 100)
    with AdmissionBatcher(db, S, connections=1) as batcher, ThreadPoolExecutor(8) as pool:
        with lock_account(db, "gate") as held:
            first = pool.submit(batcher.consume, "gate", "gpt-4o", CREDIT, 0, "g1", at=T0)
            wait_until(lambda: len(backends_waiting_on_a_lock(db)) == 1, "the first call waits for the lock")
            # Its connection is busy: these wait, and go out together, the wrong one among them.
            calls = [
                pool.submit(batcher.consume, who, "gpt-4o", CREDIT, 0, f"q{n}", at=T0)
                for n, who in enumerate(["c1", "c1", "nobody", "c1", "c1"])
            ]
            wait_until(lambda: batcher.waiting == 5, "the calls queue behind the busy connection")
            held.commit()
        assert first.result(timeout=30).allowed
        answers = [call.exception(timeout=30) or call.result() for call in calls]

    assert isinstance(answers[2], UnknownCustomerError)  # exactly what consume() raises for it
    assert all(isinstance(a, ledger.Decision) and a.allowed for n, a in enumerate(answers) if n != 2)
    assert (batcher.stats.largest, batcher.stats.retried_one_by_one, batcher.stats.calls) == (5, 1, 6)
    assert balance(db, "c1") == 96


def test_64_concurrent_callers_never_overdraw_a_hot_account(db: Engine) -> None:
    customer(db, "hot", 1000)
    outcomes: list[tuple[str, ledger.Decision]] = []
    lock = threading.Lock()
    batchers = [AdmissionBatcher(db, S, connections=2) for _ in range(2)]  # two app servers

    def caller(n: int) -> None:
        mine = []
        for k in range(25):
            rid = f"hot-{n}-{k}"
            mine.append((rid, batchers[n % 2].consume("hot", "gpt-4o", CREDIT, 0, rid, at=T0)))
        with lock:
            outcomes.extend(mine)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(64)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for batcher in batchers:
        batcher.close()

    admitted = [d for _, d in outcomes if d.allowed]
    refused = [d for _, d in outcomes if not d.allowed]
    assert len(outcomes) == 64 * 25
    assert len(admitted) == 1000 and balance(db, "hot") == 0
    assert {d.reason for d in refused} == {"insufficient_balance"} and all(d.message for d in refused)
    assert max(b.stats.largest for b in batchers) > 1, "the callers' requests never shared a batch"
    assert sum(b.stats.retried_one_by_one for b in batchers) == 0
    with db.connect() as conn:
        rows, ids, charged = conn.execute(
            sa.text(
                "SELECT count(*), count(DISTINCT request_id), coalesce(sum(credits), 0) "
                f"FROM {S}.token_requests"
            )
        ).one()
    assert (rows, ids, charged) == (64 * 25, 64 * 25, 1000)


def test_batches_and_single_calls_on_a_shared_pool_never_deadlock(db: Engine) -> None:
    """Members whose accounts sort before and after the pool's: a batch locking them in the order it meets
    them could deadlock with a single call locking member and pool in id order."""
    add_customer(db, "boss", "premium")
    members = [f"m{n}" for n in range(6)]
    for name in members:
        add_customer(db, name)
    with db.begin() as conn:  # accounts for m0…m2 before the pool's, m3…m5 after
        for name in members[:3]:
            ledger.grant(conn, S, name, 1, reason="early account", at=T0 - timedelta(days=2))
        pools.create_pool(conn, S, "acme", "team", "boss", reason="test", at=T0 - timedelta(days=2))
        for name in members[3:]:
            ledger.grant(conn, S, name, 1, reason="late account", at=T0 - timedelta(days=2))
        for name in members:
            pools.add_member(conn, S, "acme", name, reason="joined", at=T0 - timedelta(days=2))
        pools.grant_pool(conn, S, "acme", 100_000, reason="team credits", at=T0 - timedelta(days=2))
        deadlocks_before = conn.execute(
            sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        ).scalar_one()
    errors: list[BaseException] = []
    admitted = [0]
    lock = threading.Lock()
    batcher = AdmissionBatcher(db, S, connections=2)

    def caller(n: int, batched: bool) -> None:
        rng = random.Random(n)
        try:
            for k in range(15):
                who, rid = rng.choice(members), f"p-{n}-{k}"
                if batched:
                    decision = batcher.consume(who, "gpt-4o", CREDIT, 0, rid, at=T0)
                else:
                    with db.begin() as conn:
                        decision = ledger.consume(conn, S, who, "gpt-4o", CREDIT, 0, rid, at=T0)
                with lock:
                    admitted[0] += decision.allowed
        except BaseException as exc:  # reported below, from the main thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=caller, args=(n, n % 2 == 0)) for n in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    batcher.close()

    assert errors == []
    assert admitted[0] == 24 * 15
    assert batcher.stats.retried_one_by_one == 0, "a batch failed (a deadlock is one way)"
    with db.connect() as conn:
        deadlocks = conn.execute(
            sa.text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        ).scalar_one()
        drawn = conn.execute(
            sa.text(
                f"SELECT 100000 - balance FROM {S}.token_accounts a "
                f"JOIN {S}.token_pools p ON p.account_id = a.id"
            )
        ).scalar_one()
    assert deadlocks == deadlocks_before
    assert drawn == 24 * 15 - len(members)  # each member's 1 own credit went first


def test_a_batch_killed_in_flight_is_admitted_again_and_charged_once(db: Engine) -> None:
    customer(db, "gate", 10)
    customer(db, "c1", 100)
    with AdmissionBatcher(db, S, connections=1) as batcher, ThreadPoolExecutor(8) as pool:
        with lock_account(db, "c1") as held:
            with lock_account(db, "gate") as gate:
                first = pool.submit(batcher.consume, "gate", "gpt-4o", CREDIT, 0, "k0", at=T0)
                wait_until(
                    lambda: len(backends_waiting_on_a_lock(db)) == 1, "the first call waits for its lock"
                )
                calls = [
                    pool.submit(batcher.consume, "c1", "gpt-4o", CREDIT, 0, f"k{n}", at=T0)
                    for n in range(1, 6)
                ]
                wait_until(lambda: batcher.waiting == 5, "the calls queue behind the busy connection")
                gate.commit()
            assert first.result(timeout=30).allowed
            # The five go out as one batch and wait for c1's lock: kill that backend mid-flight.
            wait_until(
                lambda: backends_waiting_on_a_lock(db, "%consume_batch%") != [], "the batch waits for c1"
            )
            with db.connect() as conn:
                for pid in backends_waiting_on_a_lock(db, "%consume_batch%"):
                    conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            # Admitted again one by one, on a new connection, still behind the lock.
            wait_until(
                lambda: len(backends_waiting_on_a_lock(db, "%consume(%")) == 1, "the retry waits for c1"
            )
            held.commit()
        answers = [call.result(timeout=30) for call in calls]

    assert all(a.allowed and not a.replayed for a in answers)
    assert (batcher.stats.largest, batcher.stats.retried_one_by_one) == (5, 1)
    assert balance(db, "c1") == 95


def test_closing_answers_the_calls_still_waiting(db: Engine) -> None:
    customer(db, "c1", 100)
    batcher = AdmissionBatcher(db, S, connections=1)
    with ThreadPoolExecutor(5) as pool:
        with lock_account(db, "c1") as held:
            calls = [pool.submit(batcher.consume, "c1", "gpt-4o", CREDIT, 0, "w0", at=T0)]
            wait_until(lambda: len(backends_waiting_on_a_lock(db)) == 1, "the first call waits for the lock")
            calls += [
                pool.submit(batcher.consume, "c1", "gpt-4o", CREDIT, 0, f"w{n}", at=T0) for n in (1, 2, 3)
            ]
            wait_until(lambda: batcher.waiting == 3, "three calls wait behind the first")
            closing = pool.submit(batcher.close)
            time.sleep(0.2)
            assert not closing.done(), "close() returned with calls still waiting"
            held.commit()
        closing.result(timeout=30)
        assert all(call.result(timeout=1).allowed for call in calls)
    with pytest.raises(RuntimeError, match="closed"):
        batcher.consume("c1", "gpt-4o", CREDIT, 0, "late", at=T0)
    assert balance(db, "c1") == 96
