"""Checking that stored rows refuse what a rule forbids, and that the rule refusing them is the right one."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError


def unmet_rules(engine: Engine, cases: dict[str, tuple[str, str]], schema: str) -> dict[str, str]:
    """Run each case's statement (`{S}` is the schema) and say which were not refused by their rule.

    Each statement runs in a transaction rolled back either way, so every case starts from the same rows.
    """
    unmet = {}
    with engine.connect() as conn:
        for case, (statement, rule) in cases.items():
            tx = conn.begin()
            try:
                conn.execute(sa.text(statement.format(S=schema)))
            except DBAPIError as exc:
                if rule not in str(exc.orig):
                    unmet[case] = f"refused, but not by {rule}: {exc.orig}"
            else:
                unmet[case] = f"accepted instead of refused by {rule}"
            finally:
                tx.rollback()
    return unmet
