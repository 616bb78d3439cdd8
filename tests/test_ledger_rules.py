"""The ledger's stored rows refuse what its rules forbid, whoever writes them: the database's own checks,
for values written by hand as much as by the ledger's functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from database import ledger
from tests.ledger_support import S, add_customer, publish_shipped
from tests.rules_support import unmet_rules

T0 = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)


@pytest.fixture
def rows(engine: Engine) -> Engine:
    """One customer with a grant, a consumption (request, usage, daily rollup, entries) and a reservation."""
    publish_shipped(engine)
    add_customer(engine, "solo")
    with engine.begin() as conn:
        ledger.grant(conn, S, "solo", 100, reason="test", at=T0 - timedelta(days=1))
        ledger.consume(conn, S, "solo", "gpt-4o", 500, 0, "r1", at=T0)
        ledger.reserve(conn, S, "solo", "gpt-4o", 500, 0, "r2", at=T0)
    return engine


BROKEN = {
    # case: (statement, the rule that must refuse it)
    "negative balance": ("UPDATE {S}.token_accounts SET balance = -1", "credit_balance_not_negative"),
    "unknown account kind": ("UPDATE {S}.token_accounts SET kind = 'team'", "token_account_kind_known"),
    "customer account without customer": (
        "UPDATE {S}.token_accounts SET customer_id = NULL",
        "token_accounts_check",
    ),
    "negative remaining": ("UPDATE {S}.token_grants SET remaining = -1", "credit_balance_not_negative"),
    "remaining above amount": (
        "UPDATE {S}.token_grants SET remaining = amount + 1",
        "token_grants_consistent",
    ),
    "expiry not after start": (
        "UPDATE {S}.token_grants SET expires_at = starts_at",
        "token_grants_consistent",
    ),
    "zero grant": ("UPDATE {S}.token_grants SET amount = 0, remaining = 0", "grant_amount_positive"),
    "unknown grant source": ("UPDATE {S}.token_grants SET source = 'gift'", "token_grant_source_known"),
    "empty actor": ("UPDATE {S}.token_grants SET actor = ''", "nonempty_text_not_empty"),
    "empty reference": ("UPDATE {S}.token_grants SET reference = ''", "nonempty_text_not_empty"),
    "entry below zero": (
        "INSERT INTO {S}.token_entries (account_id, kind, amount, balance_after, actor, reason, created_at) "
        "SELECT id, 'adjust', 0, -1, 'test', 'test', now() FROM {S}.token_accounts",
        "credit_balance_not_negative",
    ),
    "unknown entry kind": (
        "INSERT INTO {S}.token_entries (account_id, kind, amount, balance_after, actor, reason, created_at) "
        "SELECT id, 'gift', 0, balance, 'test', 'test', now() FROM {S}.token_accounts",
        "token_entry_kind_known",
    ),
    "request id with a space": (
        "UPDATE {S}.token_requests SET request_id = 'r 1' WHERE request_id = 'r1'",
        "request_id_opaque",
    ),
    "empty request id": (
        "UPDATE {S}.token_requests SET request_id = '' WHERE request_id = 'r1'",
        "request_id_opaque",
    ),
    "request id too long": (
        "UPDATE {S}.token_requests SET request_id = repeat('x', 256) WHERE request_id = 'r1'",
        "request_id_opaque",
    ),
    "unknown request kind": ("UPDATE {S}.token_requests SET kind = 'borrow'", "token_request_kind_known"),
    "unknown request status": ("UPDATE {S}.token_requests SET status = 'lost'", "token_request_status_known"),
    "negative request credits": ("UPDATE {S}.token_requests SET credits = -1", "credit_count_not_negative"),
    "admitted with a reason": (
        "UPDATE {S}.token_requests SET reason = 'daily_limit' WHERE allowed",
        "token_requests_consistent",
    ),
    "reservation without expiry": (
        "UPDATE {S}.token_requests SET expires_at = NULL WHERE kind = 'reserve'",
        "token_requests_consistent",
    ),
    "pool credits without a pool": (
        "UPDATE {S}.token_requests SET pool_credits = 1 WHERE request_id = 'r1'",
        "token_requests_consistent",
    ),
    "negative input tokens": ("UPDATE {S}.token_usage SET input_tokens = -1", "token_count_not_negative"),
    "negative usage credits": ("UPDATE {S}.token_usage SET credits = -1", "credit_count_not_negative"),
    "negative cost": ("UPDATE {S}.token_usage SET cost = -0.01", "cost_amount_not_negative"),
    "negative daily requests": ("UPDATE {S}.token_usage_daily SET requests = -1", "usage_total_not_negative"),
    "negative daily cost": ("UPDATE {S}.token_usage_daily SET cost = -1", "cost_amount_not_negative"),
    "model id of 81 characters": (
        "UPDATE {S}.token_usage SET model_id = repeat('m', 81)",
        "catalog_id_check",
    ),
    "model id starting with a dash": ("UPDATE {S}.token_usage SET model_id = '-gpt'", "catalog_id_check"),
    "model id with a slash": ("UPDATE {S}.token_usage SET model_id = 'openai/gpt'", "catalog_id_check"),
}


def test_a_row_breaking_a_rule_is_refused_by_name(rows: Engine) -> None:
    assert unmet_rules(rows, BROKEN, S) == {}


def test_model_ids_the_catalog_allows_are_still_stored(rows: Engine) -> None:
    with rows.connect() as conn:
        for model_id in ("m" * 80, "a", "gpt-4o.mini:2024_08", "A1"):
            with conn.begin() as tx:
                conn.execute(sa.text(f"UPDATE {S}.token_usage SET model_id = :m"), {"m": model_id})
                assert conn.execute(sa.text(f"SELECT model_id FROM {S}.token_usage")).scalar_one() == model_id
                tx.rollback()


def test_a_grant_beyond_what_a_balance_holds_is_refused_clearly(engine: Engine) -> None:
    publish_shipped(engine)
    add_customer(engine, "rich")
    with engine.begin() as conn:
        ledger.grant(conn, S, "rich", ledger.BIGINT_MAX - 10, source="promotion", reason="test", at=T0)
    with (
        engine.begin() as conn,
        pytest.raises(ledger.LedgerLimitError, match="the amount is too large") as refused,
    ):
        ledger.grant(conn, S, "rich", 11, source="promotion", reason="test", at=T0)
    assert refused.value.fix == "grant a smaller amount"
    with engine.begin() as conn:
        assert (
            ledger.grant(conn, S, "rich", 10, source="promotion", reason="test", at=T0)["balance"]
            == ledger.BIGINT_MAX
        )
