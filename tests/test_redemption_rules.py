"""The rows a redemption writes refuse what the promotion rules forbid, whoever writes them: the database's
own checks, for values written by hand as much as by redeem()."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from database.promotions import Item
from tests.promo_support import LAUNCH, SCHEMA, customers, publish, scenario_config
from tests.rules_support import unmet_rules
from tests.test_redeem import LIMITED, r

S = SCHEMA

BROKEN = {
    # case: (statement, the rule that must refuse it)
    "negative list price": ("UPDATE {S}.redemptions SET list_minor = -1", "minor_amount_not_negative"),
    "negative discount": ("UPDATE {S}.redemptions SET discount_minor = -1", "minor_amount_not_negative"),
    "discount above the list price": (
        "UPDATE {S}.redemptions SET discount_minor = list_minor + 1",
        "redemptions_consistent",
    ),
    "final above the list price": (
        "UPDATE {S}.redemptions SET final_minor = list_minor + 1",
        "redemptions_consistent",
    ),
    "position zero": ("UPDATE {S}.redemptions SET position = 0", "discount_position_from_one"),
    "unknown item kind": ("UPDATE {S}.redemptions SET item_kind = 'gift'", "promotion_item_kind_known"),
    "unknown duration": ("UPDATE {S}.redemptions SET duration = 'cycles:0'", "promotion_duration_known"),
    "zero trial days": ("UPDATE {S}.redemptions SET extra_trial_days = 0", "trial_days_positive"),
    "zero bonus tokens": ("UPDATE {S}.redemptions SET bonus_tokens = 0", "bonus_token_count_positive"),
    "unknown status": ("UPDATE {S}.redemptions SET status = 'refunded'", "redemption_status_known"),
    "reversed without a time": (
        "UPDATE {S}.redemptions SET status = 'reversed', reason = 'refund'",
        "redemptions_consistent",
    ),
    "reversed with an empty reason": (
        "UPDATE {S}.redemptions SET status = 'reversed', reversed_at = now(), reason = ''",
        "redemptions_consistent",
    ),
    "slot 16": ("UPDATE {S}.promotion_usage SET slot = 16 WHERE slot = 0", "usage_slot_range"),
    "negative usage": ("UPDATE {S}.promotion_usage SET redeemed = -1", "redemption_count_not_negative"),
    "usage above the cap": ("UPDATE {S}.promotion_usage SET redeemed = cap + 1", "promotion_usage_check"),
    "negative customer usage": (
        "UPDATE {S}.promotion_customer_usage SET redeemed = -1",
        "customer_redemption_count_not_negative",
    ),
}


@pytest.fixture
def redeemed(engine: Engine, tmp_path: Path) -> Engine:
    """One redemption of a capped promotion, with its usage slot and the customer's usage."""
    publish(engine, scenario_config(tmp_path, {"limited": LIMITED}))
    customers(engine, "c1")
    assert r(engine, "c1", "k1", Item(plan="pro", cycle="monthly"), codes=["LIMITED25"], at=LAUNCH).ok
    return engine


def test_a_redemption_row_breaking_a_rule_is_refused_by_name(redeemed: Engine) -> None:
    assert unmet_rules(redeemed, BROKEN, S) == {}


def test_durations_a_promotion_may_have_are_still_stored(redeemed: Engine) -> None:
    with redeemed.connect() as conn:
        for duration in ("once", "forever", "cycles:1", "cycles:12"):
            with conn.begin() as tx:
                conn.execute(sa.text(f"UPDATE {S}.redemptions SET duration = :d"), {"d": duration})
                assert conn.execute(sa.text(f"SELECT duration FROM {S}.redemptions")).scalar_one() == duration
                tx.rollback()
