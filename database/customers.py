"""Customers and subscriptions: a thin, typed Python API over the SQL functions the app calls.

The contract is SQL (`register_customer`, `register_subscription` in migration 0003), so the app in any
language and Tariff's own CLI go through the same code; this module only binds arguments and turns the
functions' SQLSTATE + HINT errors into `DatabaseError`s that say what to do. Results are the functions'
jsonb rows as dicts (timestamps as ISO 8601 strings), the very shape the app receives; the read functions
return that shape too, so callers handle one kind of row.

Every function works on the caller's connection and transaction: use `with engine.begin() as conn:` so a
refused call rolls back with everything else done in it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from compiler.money import Currency
from database.connection import quote_schema
from database.errors import DatabaseError
from database.sql_errors import refusal, translate

SUBSCRIPTION_STATUSES = ("trialing", "active", "past_due", "canceled", "expired")
DEFAULT_LIST_LIMIT = 100

Row = dict[str, Any]


# ----------------------------------------------------------------------------------------------- errors


class CustomerError(DatabaseError):
    """A customer or subscription call the database refused; `sqlstate` is the function's error code."""

    def __init__(self, message: str, fix: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message, fix)
        self.sqlstate = sqlstate


class UnknownCustomerError(CustomerError):
    """The customer id is not registered. Tariff never creates customers implicitly."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(
            f'unknown customer "{customer_id}"',
            fix=f"register it first (`tariff customers add {customer_id}`, `tariff customers import`, or "
            "register_customer() from the app); Tariff never creates customers implicitly",
            sqlstate="23503",
        )
        self.customer_id = customer_id


class UnknownSubscriptionError(CustomerError):
    def __init__(self, subscription_id: str) -> None:
        super().__init__(
            f'unknown subscription "{subscription_id}"',
            fix="list a customer's subscriptions with `tariff subscriptions show --customer ID`",
        )
        self.subscription_id = subscription_id


class UnknownReferenceError(CustomerError):
    """A plan, billing cycle, region or price version that the live catalog does not have."""


class InvalidValueError(CustomerError):
    """An argument the functions reject: a malformed id, email, country, status or period."""


class NoPriceError(CustomerError):
    """The plan has no price on sale for that cycle, currency and region."""


class SubscriptionConflictError(CustomerError):
    """The subscription id exists for another customer, or the call would change its plan or price."""


# ------------------------------------------------------------------------------------------------ input


@dataclass(frozen=True, slots=True)
class CustomerInput:
    """Arguments of register_customer. None leaves the stored value alone, so partial calls never wipe data;
    `segments` and `attributes`, when given, replace the stored ones."""

    id: str
    email: str | None = None
    region: str | None = None
    country: str | None = None
    segments: Sequence[str] | None = None
    attributes: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SubscriptionInput:
    """Arguments of register_subscription. Without `price_version_id` the version on sale now is chosen for
    the customer's region (or `region`/`currency`); with `id` the call is idempotent and may change status
    and period dates only."""

    customer_id: str
    plan_id: str
    cycle: str
    price_version_id: int | None = None
    status: str = "active"
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    trial_end: datetime | None = None
    id: str | None = None
    currency: str | None = None
    region: str | None = None
    cancel_at_period_end: bool = False


# ------------------------------------------------------------------------------------------------ calls


def register_customer(conn: Connection, schema: str, customer: CustomerInput) -> Row:
    """Insert or update a customer through `register_customer()`; returns the stored row."""
    attributes = None if customer.attributes is None else json.dumps(dict(customer.attributes))
    segments = None if customer.segments is None else list(customer.segments)
    query = sa.text(
        f"SELECT {quote_schema(schema)}.register_customer("
        "p_id => :id, p_email => :email, p_region => :region, p_country => :country, "
        "p_segments => CAST(:segments AS text[]), p_attributes => CAST(:attributes AS jsonb))"
    )
    params = {
        "id": customer.id,
        "email": customer.email,
        "region": customer.region,
        "country": customer.country,
        "segments": segments,
        "attributes": attributes,
    }
    return _call(conn, query, params, customer_id=None)


def register_subscription(conn: Connection, schema: str, sub: SubscriptionInput) -> Row:
    """Record a subscription through `register_subscription()`; returns the row plus `amount_minor`.
    An unregistered customer raises UnknownCustomerError and nothing is created."""
    query = sa.text(
        f"SELECT {quote_schema(schema)}.register_subscription("
        "p_customer_id => :customer_id, p_plan_id => :plan_id, p_cycle => :cycle, "
        "p_price_version_id => CAST(:price_version_id AS bigint), p_status => :status, "
        "p_current_period_start => CAST(:start AS timestamptz), "
        "p_current_period_end => CAST(:end AS timestamptz), p_trial_end => CAST(:trial_end AS timestamptz), "
        "p_id => :id, p_currency => :currency, p_region => :region, "
        "p_cancel_at_period_end => :cancel_at_period_end)"
    )
    params = {
        "customer_id": sub.customer_id,
        "plan_id": sub.plan_id,
        "cycle": sub.cycle,
        "price_version_id": sub.price_version_id,
        "status": sub.status,
        "start": sub.current_period_start,
        "end": sub.current_period_end,
        "trial_end": sub.trial_end,
        "id": sub.id,
        "currency": sub.currency,
        "region": sub.region,
        "cancel_at_period_end": sub.cancel_at_period_end,
    }
    return _call(conn, query, params, customer_id=sub.customer_id)


def get_customer(conn: Connection, schema: str, customer_id: str) -> Row:
    """The stored customer; UnknownCustomerError when there is none."""
    row = conn.execute(
        sa.text(f"SELECT to_jsonb(c) FROM {quote_schema(schema)}.customers c WHERE c.id = :id"),
        {"id": customer_id},
    ).scalar_one_or_none()
    if row is None:
        raise UnknownCustomerError(customer_id)
    return cast(Row, row)


def list_customers(
    conn: Connection, schema: str, *, segment: str | None = None, limit: int = DEFAULT_LIST_LIMIT
) -> tuple[list[Row], int]:
    """Customers, newest first, each with `subscriptions` (how many it has); and how many match in all."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(f"""
            SELECT to_jsonb(c) || jsonb_build_object('subscriptions',
                       (SELECT count(*) FROM {s}.subscriptions x WHERE x.customer_id = c.id)),
                   count(*) OVER ()
              FROM {s}.customers c
             WHERE CAST(:segment AS text) IS NULL OR c.segments @> ARRAY[CAST(:segment AS text)]
             ORDER BY c.created_at DESC, c.id
             LIMIT :limit"""),
        {"segment": segment, "limit": limit},
    ).all()
    total = int(rows[0][1]) if rows else _count_customers(conn, s, segment)
    return [cast(Row, row[0]) for row in rows], total


def get_subscription(conn: Connection, schema: str, subscription_id: str) -> Row:
    """One subscription with the amount of the version it pays; UnknownSubscriptionError when absent."""
    rows = _subscriptions(conn, schema, "s.id = :id", {"id": subscription_id}, 1)
    if not rows:
        raise UnknownSubscriptionError(subscription_id)
    return rows[0]


def list_subscriptions(
    conn: Connection,
    schema: str,
    customer_id: str | None = None,
    plan_id: str | None = None,
    status: str | None = None,
    limit: int = DEFAULT_LIST_LIMIT,
) -> list[Row]:
    """Subscriptions with `amount_minor` and `price_current` (false: the subscriber pays a superseded,
    grandfathered price). Filtering on an unknown customer or plan is an error, not an empty list."""
    if status is not None and status not in SUBSCRIPTION_STATUSES:
        raise InvalidValueError(
            f'invalid subscription status "{status}"', fix=f"use one of {', '.join(SUBSCRIPTION_STATUSES)}"
        )
    conditions = ["TRUE"]
    params: dict[str, Any] = {}
    for column, value in (("customer_id", customer_id), ("plan_id", plan_id), ("status", status)):
        if value is not None:
            conditions.append(f"s.{column} = :{column}")
            params[column] = value
    rows = _subscriptions(conn, schema, " AND ".join(conditions), params, limit)
    if not rows:
        # Only an empty answer pays for these checks: a typo must not read as "no subscribers".
        if customer_id is not None:
            get_customer(conn, schema, customer_id)
        if plan_id is not None and not _exists(conn, schema, "plans", plan_id):
            raise UnknownReferenceError(
                f'unknown plan "{plan_id}"', fix="plans are published from the config by `tariff apply`"
            )
    return rows


def load_currencies(conn: Connection, schema: str) -> dict[str, Currency]:
    """The live currencies, for formatting and checking amounts in minor units."""
    rows = conn.execute(
        sa.text(
            f"SELECT code, minor_units, rounding, symbol, usd_rate FROM {quote_schema(schema)}.currencies"
        )
    ).all()
    return {
        str(code).strip(): Currency(
            str(code).strip(),
            int(minor),
            str(rounding),
            symbol,
            Decimal(usd_rate) if usd_rate is not None else None,
        )
        for code, minor, rounding, symbol, usd_rate in rows
    }


def project_timezone(conn: Connection, schema: str) -> str:
    """The published catalog's timezone (tariff.yaml `timezone`); UTC before anything is published."""
    zone = conn.execute(sa.text(f"SELECT timezone FROM {quote_schema(schema)}.catalog_state")).scalar()
    return str(zone) if zone else "UTC"


# ------------------------------------------------------------------------------------------- internals


def _call(conn: Connection, query: sa.TextClause, params: dict[str, Any], customer_id: str | None) -> Row:
    try:
        result = conn.execute(query, params).scalar_one()
    except DBAPIError as exc:
        raise translate_error(exc, customer_id) from exc
    return cast(Row, result)


def translate_error(exc: DBAPIError, customer_id: str | None = None) -> Exception:
    """The SQL functions' errors as CustomerErrors (message and HINT kept); anything else unchanged."""
    raised = refusal(exc)
    state, message = raised.sqlstate, raised.message
    if state == "23503" and message.startswith("unknown customer") and customer_id is not None:
        return UnknownCustomerError(customer_id)
    if state == "23505" or (state == "22023" and "does not change plans or prices" in message):
        return raised.as_error(
            SubscriptionConflictError,
            "a subscription's plan and price change only through Tariff's price migrations",
        )
    if state == "P0002":
        return raised.as_error(NoPriceError, "publish a price for it in the config with `tariff apply`")
    return translate(
        exc,
        {
            "23503": UnknownReferenceError,
            **dict.fromkeys(("22023", "23514", "22007", "22008"), InvalidValueError),
        },
    )


def _subscriptions(
    conn: Connection, schema: str, where: str, params: dict[str, Any], limit: int
) -> list[Row]:
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(f"""
            SELECT to_jsonb(s) || jsonb_build_object('amount_minor', pv.amount_minor,
                                                     'price_current', pv.valid_to IS NULL)
              FROM {s}.subscriptions s
              JOIN {s}.price_versions pv ON pv.id = s.price_version_id
             WHERE {where}
             ORDER BY s.customer_id, s.current_period_start DESC, s.id
             LIMIT :limit"""),
        {**params, "limit": limit},
    ).scalars()
    return [cast(Row, row) for row in rows]


def _count_customers(conn: Connection, quoted_schema: str, segment: str | None) -> int:
    return int(
        conn.execute(
            sa.text(
                f"SELECT count(*) FROM {quoted_schema}.customers c WHERE CAST(:segment AS text) IS NULL "
                "OR c.segments @> ARRAY[CAST(:segment AS text)]"
            ),
            {"segment": segment},
        ).scalar_one()
    )


def _exists(conn: Connection, schema: str, table: str, key: str) -> bool:
    found = conn.execute(
        sa.text(f"SELECT EXISTS (SELECT 1 FROM {quote_schema(schema)}.{table} WHERE id = :key)"), {"key": key}
    ).scalar_one()
    return bool(found)
