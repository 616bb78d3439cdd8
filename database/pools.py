"""Shared credit pools: a thin, typed Python API over the SQL functions of migration 0008.

A pool is a token account shared by a team, created from a catalog pool template for an owner customer;
members draw from it after their own credits, within per-member daily and monthly caps (see docs/ledger.md,
"Shared pools"). Admission itself needs nothing here: `consume`, `reserve` and `commit` in database/ledger.py
draw from the member's pool. Every call works on the caller's transaction; errors are LedgerErrors.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Connection

from database.connection import quote_schema
from database.ledger import Row, _call

POOL_GRANT_SOURCES = ("admin", "package", "promotion")


def create_pool(
    conn: Connection,
    schema: str,
    pool: str,
    template: str,
    owner: str,
    *,
    reason: str,
    actor: str | None = None,
    name: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Create `pool` from `template` for `owner` (its first member); idempotent for the same three."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.create_token_pool(:pool, :template, :owner, :reason, :actor, :name, "
        "coalesce(CAST(:at AS timestamptz), now()))",
        {
            "pool": pool,
            "template": template,
            "owner": owner,
            "reason": reason,
            "actor": actor,
            "name": name,
            "at": at,
        },
        owner,
    )


def add_member(
    conn: Connection,
    schema: str,
    pool: str,
    customer: str,
    *,
    reason: str,
    actor: str | None = None,
    daily: int | None = None,
    monthly: int | None = None,
    at: datetime | None = None,
) -> Row:
    """Add `customer` to `pool` (or change their caps); caps default to, and never exceed, the template's."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.add_pool_member(:pool, :customer, :reason, :actor, "
        "CAST(:daily AS bigint), CAST(:monthly AS bigint), coalesce(CAST(:at AS timestamptz), now()))",
        {
            "pool": pool,
            "customer": customer,
            "reason": reason,
            "actor": actor,
            "daily": daily,
            "monthly": monthly,
            "at": at,
        },
        customer,
    )


def remove_member(
    conn: Connection,
    schema: str,
    pool: str,
    customer: str,
    *,
    reason: str,
    actor: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Take `customer` out of `pool` (never its owner); their open reservations still settle against it."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.remove_pool_member(:pool, :customer, :reason, :actor, "
        "coalesce(CAST(:at AS timestamptz), now()))",
        {"pool": pool, "customer": customer, "reason": reason, "actor": actor, "at": at},
        customer,
    )


def grant_pool(
    conn: Connection,
    schema: str,
    pool: str,
    amount: int,
    *,
    source: str = "admin",
    expires_at: datetime | None = None,
    reason: str | None = None,
    actor: str | None = None,
    reference: str | None = None,
    at: datetime | None = None,
) -> Row:
    """Credits for the pool's account (idempotent per `reference`); returns the grant and the pool balance."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.grant_pool_tokens(:pool, :amount, :source, "
        "CAST(:expires_at AS timestamptz), :reason, :actor, :reference, "
        "coalesce(CAST(:at AS timestamptz), now()))",
        {
            "pool": pool,
            "amount": amount,
            "source": source,
            "expires_at": expires_at,
            "reason": reason,
            "actor": actor,
            "reference": reference,
            "at": at,
        },
    )


def pool_summary(
    conn: Connection, schema: str, pool: str, *, at: datetime | None = None, entries: int = 10
) -> Row:
    """What `tariff tokens pool show` prints: balance, members with caps and use, grants, entries, events."""
    return _call(
        conn,
        f"SELECT {quote_schema(schema)}.pool_summary(:pool, coalesce(CAST(:at AS timestamptz), now()), "
        ":entries)",
        {"pool": pool, "at": at, "entries": entries},
    )
