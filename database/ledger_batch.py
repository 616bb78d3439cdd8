"""Group admission: the concurrent consume() calls of one process, sent to PostgreSQL together.

`consume_batch()` (migration 0023) admits many requests in one call and one transaction, each exactly as
`consume()` would, in order. `AdmissionBatcher` is how an app server uses it without changing its code
paths: every thread calls `batcher.consume(...)` as it would call `ledger.consume(...)`; while a batch is
in flight on each of the batcher's connections, the calls that arrive wait and go out together as the next
batch. Under light load a call goes out at once, alone (no timer, no added delay); under heavy load many
calls share one statement, one transaction and one WAL flush, and a hot account's lock is taken once per
batch instead of once per request.

What a caller gets is what `consume()` would have given it: the same Decision, or the same exception. A
batch is all or nothing in the database, so when one fails (a wrong request in it, a lost connection, a
deadlock) the batcher admits its requests again one by one, each in its own transaction; a request the
failed batch did commit (a connection lost after the commit) comes back as a replay of its first answer,
never charged twice (request ids are idempotent).

The price: a call waits for the batch it is in, and every account in a batch stays locked until the whole
batch commits. See docs/ledger.md, "Admitting in batches".
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from database.connection import quote_schema
from database.ledger import Decision, consume, translate_error

MAX_BATCH = 1000  # consume_batch()'s own cap


@dataclass(frozen=True, slots=True)
class ConsumeRequest:
    """One AI request to admit: the arguments of consume()."""

    customer: str
    model: str
    input_tokens: int
    output_tokens: int
    request_id: str
    request_type: str = "chat"
    at: datetime | None = None  # None: the moment of the batch (the database's now())

    def arguments(self) -> tuple[str, str, int, int, str, str, datetime | None]:
        """consume()'s arguments after the connection and schema, in its order."""
        return (
            self.customer,
            self.model,
            self.input_tokens,
            self.output_tokens,
            self.request_id,
            self.request_type,
            self.at,
        )

    def as_json(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "customer": self.customer,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "request_id": self.request_id,
            "request_type": self.request_type,
        }
        if self.at is not None:
            item["at"] = self.at.isoformat()
        return item


def consume_batch(
    conn: Connection, schema: str, requests: Sequence[ConsumeRequest], at: datetime | None = None
) -> list[Decision]:
    """Admit `requests` in one call, in order, each as consume() would; their Decisions in the same order.
    All or nothing: a wrong request raises (its position in the message) and nothing is written."""
    if not requests:
        return []
    try:
        answers = conn.execute(
            sa.text(
                f"SELECT {quote_schema(schema)}.consume_batch(CAST(:requests AS jsonb), "
                "coalesce(CAST(:at AS timestamptz), now()))"
            ),
            {"requests": json.dumps([request.as_json() for request in requests]), "at": at},
        ).scalar_one()
    except DBAPIError as exc:
        raise translate_error(exc) from exc
    return [Decision.of(answer) for answer in cast(list[dict[str, Any]], answers)]


@dataclass
class BatchStats:
    """What a batcher did: calls answered, batches sent (a batch of one is a plain consume() call), the
    largest batch, and the batches that failed and were admitted again one request at a time."""

    calls: int = 0
    batches: int = 0
    largest: int = 0
    retried_one_by_one: int = 0


@dataclass(frozen=True, slots=True)
class _Waiting:
    request: ConsumeRequest
    answer: Future[Decision]


class AdmissionBatcher:
    """consume() for many threads of one process: `connections` connections of its own to `engine`'s
    database send the calls, batching those that wait while they are busy (at most `max_batch` a batch);
    the one-by-one retries go through `engine`. Close it when done (or use it as a context manager); calls
    still waiting are answered first."""

    def __init__(self, engine: Engine, schema: str, *, connections: int = 2, max_batch: int = 100) -> None:
        if connections < 1:
            raise ValueError("an AdmissionBatcher needs at least one connection")
        if not 1 <= max_batch <= MAX_BATCH:
            raise ValueError(f"max_batch must be from 1 to {MAX_BATCH}")
        self._engine = engine
        self._schema = schema
        self._conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        quoted = quote_schema(schema)
        self._one_sql = f"SELECT {quoted}.consume(%s, %s, %s, %s, %s, %s, coalesce(%s::timestamptz, now()))"
        self._batch_sql = f"SELECT {quoted}.consume_batch(%s::jsonb)"
        self._max_batch = max_batch
        self._waiting: deque[_Waiting] = deque()
        self._ready = threading.Condition()
        self._closed = False
        self.stats = BatchStats()
        self._senders = [
            threading.Thread(target=self._send_batches, name=f"tariff-admission-{n}", daemon=True)
            for n in range(connections)
        ]
        for sender in self._senders:
            sender.start()

    def consume(
        self,
        customer: str,
        model: str,
        input_tokens: int,
        output_tokens: int,
        request_id: str,
        request_type: str = "chat",
        at: datetime | None = None,
    ) -> Decision:
        """As `database.ledger.consume()`: charge one AI request's credits or refuse it with the reason;
        idempotent per request id. Blocks until the batch it goes out in has committed."""
        waiting = _Waiting(
            ConsumeRequest(customer, model, input_tokens, output_tokens, request_id, request_type, at),
            Future(),
        )
        with self._ready:
            if self._closed:
                raise RuntimeError("the AdmissionBatcher is closed")
            self._waiting.append(waiting)
            self._ready.notify()
        return waiting.answer.result()

    @property
    def waiting(self) -> int:
        """Calls waiting for a connection (for monitoring: a queue that keeps growing wants more of them)."""
        with self._ready:
            return len(self._waiting)

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        for sender in self._senders:
            sender.join()

    def __enter__(self) -> AdmissionBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send_batches(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            while True:
                with self._ready:
                    while not self._waiting and not self._closed:
                        self._ready.wait()
                    if not self._waiting:
                        return
                    batch = [self._waiting.popleft() for _ in range(min(len(self._waiting), self._max_batch))]
                try:
                    conn = self._send(batch, conn)
                finally:
                    for waiting in batch:  # a bug below must not leave a caller waiting forever
                        if not waiting.answer.done():
                            waiting.answer.set_exception(RuntimeError("the admission batch was not answered"))
        finally:
            if conn is not None:
                conn.close()

    def _send(
        self, batch: list[_Waiting], conn: psycopg.Connection[Any] | None
    ) -> psycopg.Connection[Any] | None:
        """Send `batch` on the sender's own connection (opened again if lost); returns that connection. The
        usual path is a plain psycopg call in autocommit: through SQLAlchemy, the client's work per call
        (a pre-ping, begin, commit) costs as much CPU as the server's share of a batched request. Anything
        that fails goes through `consume()` one request at a time, which gives each caller exactly the
        answer or the exception consume() gives."""
        with self._ready:
            self.stats.batches += 1
            self.stats.calls += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(
                    self._conninfo, autocommit=True, application_name="tariff", connect_timeout=10
                )
            if len(batch) == 1:
                row = conn.execute(self._one_sql, batch[0].request.arguments()).fetchone()
                answers = [row[0]] if row else []
            else:
                row = conn.execute(
                    self._batch_sql, (json.dumps([waiting.request.as_json() for waiting in batch]),)
                ).fetchone()
                answers = row[0] if row else []
            decisions = [Decision.of(answer) for answer in answers]
        except Exception:  # whatever failed the batch, each request gets its own answer below
            if conn is not None and conn.broken:
                conn.close()
                conn = None
            if len(batch) > 1:
                with self._ready:
                    self.stats.retried_one_by_one += 1
        else:
            if len(decisions) == len(batch):
                for waiting, decision in zip(batch, decisions, strict=True):
                    waiting.answer.set_result(decision)
                return conn
        for waiting in batch:
            self._send_one(waiting)
        return conn

    def _send_one(self, waiting: _Waiting) -> None:
        try:
            with self._engine.begin() as conn:
                decision = consume(conn, self._schema, *waiting.request.arguments())
        except Exception as exc:  # the caller's exception, raised in its own thread
            waiting.answer.set_exception(exc)
        else:
            waiting.answer.set_result(decision)
