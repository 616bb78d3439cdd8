"""The AI-token ledger: a thin, typed Python API over the SQL functions of migrations 0007 and 0008.

The contract is SQL (`consume`, `reserve`, `commit`, `release`, `grant_tokens`, `revoke_tokens`,
`boost_tokens`, `set_token_limits`, `purchase`), so the app in any language and Tariff's CLI share one
implementation: admission, limits and balance checks happen inside PostgreSQL under the account's row lock.
This module binds arguments, returns the functions' jsonb answers as dicts (the shape the app receives) and
turns their SQLSTATE + HINT errors into `LedgerError`s.

Every call works on the caller's connection and transaction: use `with engine.begin() as conn:`. A refusal
(limit, throttle, balance) is an answer with `allowed: false` and a `reason`, not an exception; exceptions
are for calls that are wrong (unknown customer or model, reused request id, bad arguments).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from database.connection import quote_schema
from database.customers import UnknownCustomerError
from database.errors import DatabaseError
from database.sql_errors import refusal, translate

Row = dict[str, Any]

GRANT_SOURCES = ("allowance", "package", "promotion", "admin", "boost", "rollover")
BIGINT_MAX = 9_223_372_036_854_775_807  # the ledger's balances and amounts are bigint columns
REFUSAL_REASONS = (
    "model_retired",
    "model_not_in_plan",
    "per_request_limit",
    "throttle_requests",
    "throttle_credits",
    "daily_limit",
    "monthly_limit",
    "insufficient_balance",
    "pool_member_daily_limit",
    "pool_member_monthly_limit",
)


class LedgerError(DatabaseError):
    """A ledger call the database refused as wrong; `sqlstate` is the function's error code."""

    def __init__(self, message: str, fix: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message, fix)
        self.sqlstate = sqlstate


class UnknownLedgerReferenceError(LedgerError):
    """An AI model, token package or reservation the database does not have."""


class LedgerConflictError(LedgerError):
    """A request id or grant reference already used for something else."""


class LedgerLimitError(LedgerError):
    """An admin operation beyond a rule: revoking more than the balance, a boost above the caps."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The answer of consume/reserve: admitted or refused, with the reason and remaining figures."""

    allowed: bool
    reason: str | None
    message: str
    credits: int
    remaining: int
    replayed: bool
    raw: Row

    @classmethod
    def of(cls, row: Row) -> Decision:
        return cls(
            allowed=bool(row["allowed"]),
            reason=cast(str | None, row.get("reason")),
            message=str(row.get("message", "")),
            credits=int(row["credits"]),
            remaining=int(row["remaining"]),
            replayed=bool(row.get("replayed", False)),
            raw=row,
        )


# ------------------------------------------------------------------------------------------- admission


def consume(
    conn: Connection,
    schema: str,
    customer: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    request_id: str,
    request_type: str = "chat",
    at: datetime | None = None,
) -> Decision:
    """Charge one AI request's credits, or refuse it with the reason; idempotent per request id."""
    return Decision.of(
        _call(
            conn,
            f"SELECT {quote_schema(schema)}.consume(:customer, :model, :input, :output, :request_id, "
            ":request_type, coalesce(CAST(:at AS timestamptz), now()))",
            {
                "customer": customer,
                "model": model,
                "input": input_tokens,
                "output": output_tokens,
                "request_id": request_id,
                "request_type": request_type,
                "at": at,
            },
            customer,
        )
    )


def reserve(
    conn: Connection,
    schema: str,
    customer: str,
    model: str,
    estimated_input_tokens: int,
    estimated_output_tokens: int,
    request_id: str,
    request_type: str = "chat",
    at: datetime | None = None,
) -> Decision:
    """Hold the credits an estimate needs before a streaming call; settle with `commit` or `release`."""
    return Decision.of(
        _call(
            conn,
            f"SELECT {quote_schema(schema)}.reserve(:customer, :model, :input, :output, :request_id, "
            ":request_type, coalesce(CAST(:at AS timestamptz), now()))",
            {
                "customer": customer,
                "model": model,
                "input": estimated_input_tokens,
                "output": estimated_output_tokens,
                "request_id": request_id,
                "request_type": request_type,
                "at": at,
            },
            customer,
        )
    )


def commit(
    conn: Connection,
    schema: str,
    request_id: str,
    input_tokens: int,
    output_tokens: int,
    at: datetime | None = None,
) -> Row:
    """Settle a reservation with the actual tokens: {credits, charged, shortfall, remaining, ...}."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.commit(:request_id, :input, :output, "
        "coalesce(CAST(:at AS timestamptz), now()))",
        {"request_id": request_id, "input": input_tokens, "output": output_tokens, "at": at},
    )


def release(conn: Connection, schema: str, request_id: str, at: datetime | None = None) -> Row:
    """Give a reservation's credits back; idempotent."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.release(:request_id, coalesce(CAST(:at AS timestamptz), now()))",
        {"request_id": request_id, "at": at},
    )


# ------------------------------------------------------------------------------------------- admin


def grant(
    conn: Connection,
    schema: str,
    customer: str,
    amount: int,
    *,
    source: str = "admin",
    expires_at: datetime | None = None,
    reason: str | None = None,
    actor: str | None = None,
    reference: str | None = None,
    priority: int | None = None,
    starts_at: datetime | None = None,
    at: datetime | None = None,
) -> Row:
    """Add a grant (idempotent per `reference`); returns the grant row with the account `balance`."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.grant_tokens(p_customer => :customer, p_amount => :amount, "
        "p_source => :source, p_expires_at => CAST(:expires_at AS timestamptz), p_reason => :reason, "
        "p_actor => :actor, p_reference => :reference, p_priority => CAST(:priority AS integer), "
        "p_starts_at => CAST(:starts_at AS timestamptz), p_at => coalesce(CAST(:at AS timestamptz), now()))",
        {
            "customer": customer,
            "amount": amount,
            "source": source,
            "expires_at": expires_at,
            "reason": reason,
            "actor": actor,
            "reference": reference,
            "priority": priority,
            "starts_at": starts_at,
            "at": at,
        },
        customer,
    )


def revoke(
    conn: Connection,
    schema: str,
    customer: str,
    amount: int,
    *,
    reason: str,
    actor: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Take credits away (never below zero); one audited 'adjust' entry."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.revoke_tokens(:customer, :amount, :reason, :actor, "
        "coalesce(CAST(:at AS timestamptz), now()))",
        {"customer": customer, "amount": amount, "reason": reason, "actor": actor, "at": at},
        customer,
    )


def boost(
    conn: Connection,
    schema: str,
    customer: str,
    amount: int,
    duration: timedelta,
    *,
    reason: str,
    actor: str | None = None,
    reference: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Emergency credits that expire after `duration`, within the boost rules."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.boost_tokens(:customer, :amount, CAST(:duration AS interval), "
        ":reason, :actor, :reference, coalesce(CAST(:at AS timestamptz), now()))",
        {
            "customer": customer,
            "amount": amount,
            "duration": duration,
            "reason": reason,
            "actor": actor,
            "reference": reference,
            "at": at,
        },
        customer,
    )


def set_limits(
    conn: Connection,
    schema: str,
    customer: str,
    *,
    per_request: int | None,
    daily: int | None,
    monthly: int | None,
    reason: str,
    actor: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Override the plan's limits for a customer (None keeps the plan's); returns the limits in force."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.set_token_limits(:customer, CAST(:per_request AS bigint), "
        "CAST(:daily AS bigint), CAST(:monthly AS bigint), :reason, :actor, "
        "coalesce(CAST(:at AS timestamptz), now()))",
        {
            "customer": customer,
            "per_request": per_request,
            "daily": daily,
            "monthly": monthly,
            "reason": reason,
            "actor": actor,
            "at": at,
        },
        customer,
    )


def purchase(
    conn: Connection,
    schema: str,
    customer: str,
    package: str,
    payment_reference: str,
    *,
    actor: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Grant a bought token package once per confirmed payment reference."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.purchase(:customer, :package, :reference, :actor, "
        "coalesce(CAST(:at AS timestamptz), now()))",
        {"customer": customer, "package": package, "reference": payment_reference, "actor": actor, "at": at},
        customer,
    )


# ------------------------------------------------------------------------------------------- automation


def tick(conn: Connection, schema: str, at: datetime | None = None) -> Row:
    """Release overdue reservations, expire lapsed grants and renew plan allowances whose period began;
    idempotent. Returns counts: reservations_released, grants_expired, credits_expired, allowances_granted,
    credits_granted."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.tick_ledger(coalesce(CAST(:at AS timestamptz), now()))",
        {"at": at},
    )


# ------------------------------------------------------------------------------------------- reading


def account_summary(
    conn: Connection, schema: str, customer: str, *, at: datetime | None = None, entries: int = 10
) -> Row:
    """What `tariff tokens show` prints: balance, usable grants in draw order, limits, pool membership (or
    None), usage today and this month (from the daily rollup) and the newest ledger entries."""
    s = quote_schema(schema)
    row = conn.execute(
        sa.text(f"""
            WITH c AS (SELECT id FROM {s}.customers WHERE id = :customer),
                 a AS (SELECT * FROM {s}.token_accounts WHERE customer_id = :customer),
                 t0 AS (SELECT coalesce(CAST(:at AS timestamptz), now()) AS at),
                 t AS (SELECT at, (at AT TIME ZONE {s}.token_timezone())::date AS day FROM t0)
            SELECT jsonb_build_object(
                'customer', c.id,
                'at', t.at,
                'timezone', {s}.token_timezone(),
                'balance', coalesce((SELECT balance FROM a), 0),
                'usable', coalesce({s}.usable_credits((SELECT id FROM a), t.at), 0),
                'limits', {s}.token_limits(c.id, t.at),
                'pool', {s}.token_pool_membership(c.id, t.at),
                'grants', coalesce((
                    SELECT jsonb_agg(jsonb_build_object(
                               'id', g.id, 'source', g.source, 'amount', g.amount, 'remaining', g.remaining,
                               'priority', g.priority, 'starts_at', g.starts_at, 'expires_at', g.expires_at,
                               'reference', g.reference, 'reason', g.reason, 'actor', g.actor)
                           ORDER BY g.priority, g.expires_at NULLS LAST, g.created_at, g.id)
                      FROM {s}.token_grants g
                     WHERE g.account_id = (SELECT id FROM a) AND g.remaining > 0), '[]'),
                'usage_today', (
                    SELECT jsonb_build_object('requests', coalesce(sum(requests), 0),
                                              'credits', coalesce(sum(credits), 0))
                      FROM {s}.token_usage_daily u WHERE u.customer_id = c.id AND u.day = t.day),
                'usage_month', (
                    SELECT jsonb_build_object('requests', coalesce(sum(requests), 0),
                                              'credits', coalesce(sum(credits), 0))
                      FROM {s}.token_usage_daily u
                     WHERE u.customer_id = c.id AND u.day >= date_trunc('month', t.day)::date
                       AND u.day <= t.day),
                'entries', coalesce((
                    SELECT jsonb_agg(to_jsonb(e) - 'account_id' ORDER BY e.id DESC)
                      FROM (SELECT * FROM {s}.token_entries
                             WHERE account_id = (SELECT id FROM a) ORDER BY id DESC LIMIT :entries) e), '[]'))
              FROM c, t"""),
        {"customer": customer, "at": at, "entries": entries},
    ).scalar_one_or_none()
    if row is None:
        raise UnknownCustomerError(customer)
    return cast(Row, row)


# ------------------------------------------------------------------------------------------- internals


def _call(conn: Connection, query: str, params: dict[str, Any], customer: str | None = None) -> Row:
    try:
        result = conn.execute(sa.text(query), params).scalar_one()
    except DBAPIError as exc:
        raise translate_error(exc, customer) from exc
    return cast(Row, result)


def translate_error(exc: DBAPIError, customer: str | None = None) -> Exception:
    """The ledger functions' errors as LedgerErrors (message and HINT kept); anything else unchanged."""
    raised = refusal(exc)
    if raised.sqlstate == "23503" and raised.message.startswith("unknown customer") and customer is not None:
        return UnknownCustomerError(customer)
    if raised.sqlstate == "22003":
        # A grant or boost whose sum no longer fits the bigint columns (balances, totals): the amount, not
        # the database, is what is wrong, so say so instead of PostgreSQL's "bigint out of range".
        return LedgerLimitError(
            f"the amount is too large: the credits would exceed the most the ledger stores "
            f"({BIGINT_MAX:,}) ({raised.message})",
            fix="grant a smaller amount",
            sqlstate=raised.sqlstate,
        )
    return translate(
        exc,
        {
            "23503": UnknownLedgerReferenceError,
            "P0002": UnknownLedgerReferenceError,
            "23505": LedgerConflictError,
            "23514": LedgerLimitError,
            **dict.fromkeys(("22023", "22007", "22008", "22P02"), LedgerError),
        },
    )
