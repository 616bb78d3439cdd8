"""Fixtures shared by the ledger tests: the shipped catalog published, customers on its plans, and the
ledger's invariants checked."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from compiler.canonical import fingerprint
from compiler.catalog import AdmissionCommit
from compiler.project import compile_config
from database.connection import DEFAULT_SCHEMA
from publishers.postgres.apply import Revision, apply_catalog

S = DEFAULT_SCHEMA
REPO = Path(__file__).resolve().parent.parent
PUBLISHED_AT = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def publish_shipped(engine: Engine, *, commit: AdmissionCommit | None = None) -> None:
    """The shipped catalog, published as `tariff apply` does; with `commit`, its rules' `admissions.commit`
    set to that."""
    result = compile_config(REPO / "pricing")
    assert result.ok and result.catalog is not None
    catalog = result.catalog
    if commit is not None:
        rules = dataclasses.replace(catalog.token_rules, admission_commit=commit)
        catalog = dataclasses.replace(catalog, token_rules=rules)
        catalog = dataclasses.replace(catalog, fingerprint=fingerprint(catalog))
    apply_catalog(engine, S, catalog, Revision("test"), environment=None, database="test", now=PUBLISHED_AT)


def add_customer(engine: Engine, customer: str, plan: str | None = None, *, country: str = "IN") -> None:
    """Register a customer, subscribed to `plan` (monthly) since 2026-01-01 when given."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"SELECT {S}.register_customer(p_id => :id, p_country => :country)"),
            {"id": customer, "country": country},
        )
        if plan is not None:
            conn.execute(
                sa.text(
                    f"SELECT {S}.register_subscription(p_customer_id => :id, p_plan_id => :plan, "
                    "p_cycle => 'monthly', p_current_period_start => '2026-01-01T00:00:00Z', "
                    "p_current_period_end => '2027-01-01T00:00:00Z')"
                ),
                {"id": customer, "plan": plan},
            )


def assert_ledger_consistent(engine: Engine) -> None:
    with engine.connect() as conn:
        bad = conn.execute(
            sa.text(f"""
                SELECT a.customer_id, a.balance,
                       (SELECT coalesce(sum(amount), 0) FROM {S}.token_entries e WHERE e.account_id = a.id),
                       (SELECT coalesce(sum(remaining), 0) FROM {S}.token_grants g WHERE g.account_id = a.id),
                       (SELECT balance_after FROM {S}.token_entries e WHERE e.account_id = a.id
                         ORDER BY id DESC LIMIT 1)
                  FROM {S}.token_accounts a""")
        ).all()
    for customer, balance, entries, grants, last in bad:
        assert balance == entries == grants, (customer, balance, entries, grants)
        assert last is None or last == balance, (customer, last, balance)
        assert balance >= 0
