"""quote(): list prices, stacking orders, rounding per currency, never below zero, fixed prices per currency,
every reason a promotion does not apply, bundles, and schedules across their boundaries (time travel via
p_at), on real PostgreSQL with the shipped config or small scenario configs."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from database.promotions import (
    REASONS,
    InvalidRequestError,
    Item,
    NoPriceError,
    Quote,
    UnknownReferenceError,
    quote,
)
from tests.promo_support import (
    DIWALI,
    LAUNCH,
    SCHEMA,
    customers,
    publish,
    scenario_config,
    subscribe,
)

PRO_MONTHLY = Item(plan="pro", cycle="monthly")
PRO_ANNUAL = Item(plan="pro", cycle="annual")
WINDOW = """
schedule:
  starts: "2026-01-01T00:00:00+05:30"
  ends: "2027-12-31T00:00:00+05:30"
"""


def q(engine: Engine, item: Item = PRO_MONTHLY, **kwargs: Any) -> Quote:
    kwargs.setdefault("at", LAUNCH)
    with engine.begin() as conn:
        return quote(conn, SCHEMA, item, **kwargs)


def reason(result: Quote, promotion: str) -> tuple[bool, str | None, str | None]:
    found = result.promotion(promotion)
    assert found is not None, [p.id for p in result.promotions]
    return found.applied, found.reason, found.detail


def promo(
    promo_id: str, discount: str, *, stacking: str = "exclusive", priority: int = 100, extra: str = ""
) -> str:
    return (
        f"id: {promo_id}\nname: {promo_id}\ndiscount: {discount}\n"
        "applies_to: {plans: [pro], cycles: [monthly]}\n"
        f"stacking: {{mode: {stacking}, priority: {priority}}}\n" + WINDOW + extra
    )


@pytest.fixture
def shipped(engine: Engine) -> Engine:
    publish(engine)
    return engine


# ------------------------------------------------------------------------------------------ list price


def test_list_price_comes_from_the_region_currency_and_is_exact(shipped: Engine) -> None:
    india = q(shipped, PRO_ANNUAL, region="IN", at=DIWALI)
    assert (india.currency.code, india.list_minor, str(india.list_price)) == ("INR", 1499000, "14990.00")
    assert india.raw["list"] == "14990.00"
    us = q(shipped, PRO_ANNUAL, region="US", at=DIWALI)
    assert (us.currency.code, us.list_minor, us.final_minor) == ("USD", 19000, 19000)
    package = q(shipped, Item(package="extra-500"), region="EU")
    assert (package.currency.code, package.list_minor) == ("EUR", 1800)


def test_region_defaults_to_the_customers_then_the_default_region(shipped: Engine) -> None:
    customers(shipped, "c-in", country="IN")
    assert q(shipped, customer_id="c-in").region == "IN"
    assert q(shipped).region == "US"  # anonymous: tariff.yaml default_region


def test_region_override_and_fallback_currency(engine: Engine, tmp_path: Path) -> None:
    config = scenario_config(tmp_path, {})
    tariff = config / "tariff.yaml"
    text = tariff.read_text("utf-8")
    # A region without prices of its own currency sells in its fallback currency.
    text = text.replace(
        "default_region: US",
        "  GB:\n    name: Britain\n    currency: GBP\n    fallback_currency: USD\n    countries: [GB]\n\n"
        "default_region: US",
    )
    text = text.replace("countries: [US, CA, GB, AU, SG, AE]", "countries: [US, CA, AU, SG, AE]")
    text = text.replace("  EUR:\n", "  GBP:\n    minor_units: 2\n    rounding: half_up\n  EUR:\n", 1)
    tariff.write_text(text, "utf-8")
    pro = config / "plans" / "pro.yaml"
    pro.write_text(
        pro.read_text("utf-8").replace("    USD: 19\n", "    USD: 19\n    by_region: {US: {USD: 17}}\n", 1),
        "utf-8",
    )
    publish(engine, config)
    assert q(engine, region="US").list_minor == 1700  # the region's own override
    fallback = q(engine, region="GB")
    assert (fallback.currency.code, fallback.list_minor) == ("USD", 1900)  # base price, fallback currency
    with pytest.raises(
        InvalidRequestError, match="currency mismatch: region GB sells in GBP or USD, not EUR"
    ):
        q(engine, Item(plan="pro", cycle="monthly", currency="EUR"), region="GB")


# ----------------------------------------------------------------------------------- stacking orders


def test_stackable_discounts_apply_in_ascending_priority(engine: Engine, tmp_path: Path) -> None:
    publish(
        engine,
        scenario_config(
            tmp_path,
            {
                "a": promo("stack-a", "{percent_off: 10}", stacking="stackable", priority=10),
                "b": promo(
                    "stack-b", "{amount_off: {INR: 100, USD: 1, EUR: 1}}", stacking="stackable", priority=20
                ),
            },
        ),
    )
    result = q(engine, region="IN")
    # 1499.00 − 10% = 1349.10, then − 100.00 = 1249.10 (the other order would give 1259.10).
    assert [(d.promotion, d.before_minor, d.discount_minor, d.after_minor) for d in result.discounts] == [
        ("stack-a", 149900, 14990, 134910),
        ("stack-b", 134910, 10000, 124910),
    ]
    assert [d.position for d in result.discounts] == [1, 2]
    assert (result.final_minor, result.discount_minor) == (124910, 24990)
    assert all(p.applied for p in result.promotions)


def test_priority_order_changes_the_result(engine: Engine, tmp_path: Path) -> None:
    publish(
        engine,
        scenario_config(
            tmp_path,
            {
                "a": promo("stack-a", "{percent_off: 10}", stacking="stackable", priority=30),
                "b": promo(
                    "stack-b", "{amount_off: {INR: 100, USD: 1, EUR: 1}}", stacking="stackable", priority=20
                ),
            },
        ),
    )
    result = q(engine, region="IN")
    assert [d.promotion for d in result.discounts] == ["stack-b", "stack-a"]
    assert result.final_minor == 125910  # 1499 − 100 = 1399, − 10% (139.90) = 1259.10


@pytest.mark.parametrize(
    ("exclusive_percent", "winner", "final"),
    [("20", "excl", 119920), ("15", "stack-a", 124910)],
)
def test_exclusive_or_stack_whichever_is_cheaper(
    engine: Engine, tmp_path: Path, exclusive_percent: str, winner: str, final: int
) -> None:
    publish(
        engine,
        scenario_config(
            tmp_path,
            {
                "a": promo("stack-a", "{percent_off: 10}", stacking="stackable", priority=10),
                "b": promo(
                    "stack-b", "{amount_off: {INR: 100, USD: 1, EUR: 1}}", stacking="stackable", priority=20
                ),
                "c": promo("excl", f"{{percent_off: {exclusive_percent}}}"),
            },
        ),
    )
    result = q(engine, region="IN")
    assert result.final_minor == final
    assert result.discounts[0].promotion == winner
    if winner == "excl":
        assert [d.promotion for d in result.discounts] == ["excl"]
        assert reason(result, "stack-a")[1] == "not_stackable_with:excl"
        assert reason(result, "stack-b")[:2] == (False, "not_stackable_with:excl")
        assert "excl is exclusive" in str(reason(result, "stack-a")[2])
    else:
        assert [d.promotion for d in result.discounts] == ["stack-a", "stack-b"]
        applied, why, detail = reason(result, "excl")
        assert (applied, why) == (False, "not_stackable_with:stack-a")
        assert "stack-a, stack-b" in str(detail)
    assert result.promotion("excl") is not None


def test_two_exclusives_the_lower_price_wins_and_a_typed_code_wins_ties(
    engine: Engine, tmp_path: Path
) -> None:
    publish(
        engine,
        scenario_config(
            tmp_path,
            {
                "auto": promo("auto-20", "{percent_off: 20}"),
                "coded": promo("code-20", "{percent_off: 20}", extra="codes: {vanity: SAME20}\n"),
                "better": promo("code-25", "{percent_off: 25}", extra="codes: {vanity: MORE25}\n"),
            },
        ),
    )
    assert q(engine, region="IN").discounts[0].promotion == "auto-20"
    tie = q(engine, region="IN", codes=["same20"])
    assert (
        tie.discounts[0].promotion == "code-20" and reason(tie, "auto-20")[1] == "not_stackable_with:code-20"
    )
    both = q(engine, region="IN", codes=["same20", "more25"])
    assert both.discounts[0].promotion == "code-25" and both.final_minor == 112425
    lost = both.code("SAME20")
    assert lost is not None and lost.reason == "not_stackable_with:code-25" and not lost.refused


# --------------------------------------------------------------------------------------------- money


def test_rounding_follows_each_currencys_rule_on_half_minor_units(engine: Engine, tmp_path: Path) -> None:
    publish(engine, scenario_config(tmp_path, {"r": promo("tiny", "{percent_off: 1.5}")}))
    # INR rounds half_up: 1.5% of 149900 = 2248.5 → 2249. USD rounds half_even: 1.5% of 1900 = 28.5 → 28.
    india = q(engine, region="IN")
    assert (india.currency.rounding, india.discount_minor, india.final_minor) == ("half_up", 2249, 147651)
    us = q(engine, region="US")
    assert (us.currency.rounding, us.discount_minor, us.final_minor) == ("half_even", 28, 1872)


@pytest.mark.parametrize(
    ("value", "rule", "expected"),
    [
        ("2.5", "half_up", 3),
        ("2.5", "half_even", 2),
        ("3.5", "half_even", 4),
        ("2.4999", "half_up", 2),
        ("2.5001", "half_even", 3),
        ("2.1", "up", 3),
        ("2.9", "down", 2),
        ("2", "up", 2),
        ("-2.5", "half_up", -3),
        ("-2.5", "half_even", -2),
    ],
)
def test_round_minor_rules(engine: Engine, value: str, rule: str, expected: int) -> None:
    with engine.begin() as conn:
        got = conn.execute(
            sa.text(f"SELECT {SCHEMA}.round_minor(CAST(:v AS numeric), :r)"), {"v": value, "r": rule}
        ).scalar_one()
    assert got == expected


def test_final_price_never_goes_below_zero(engine: Engine, tmp_path: Path) -> None:
    approval = "approval: {approved_by: cfo@pinegenie.app, reason: test of the zero floor}\n"
    publish(
        engine,
        scenario_config(
            tmp_path,
            {
                "big": promo(
                    "huge-off",
                    "{amount_off: {INR: 2000, USD: 50, EUR: 50}}",
                    stacking="stackable",
                    priority=1,
                    extra=approval,
                ),
                "more": promo("more-off", "{percent_off: 10}", stacking="stackable", priority=2),
            },
        ),
    )
    result = q(engine, region="IN")
    assert [(d.discount_minor, d.after_minor) for d in result.discounts] == [(149900, 0), (0, 0)]
    assert (result.final_minor, result.discount_minor, result.raw["final"]) == (0, 149900, "0.00")


def test_fixed_price_per_currency(engine: Engine, tmp_path: Path) -> None:
    publish(
        engine,
        scenario_config(tmp_path, {"f": promo("fixed", "{fixed_price: {INR: 999, EUR: 9.99}}")}),
    )
    assert q(engine, region="IN").final_minor == 99900
    europe = q(engine, region="EU")
    assert (europe.final_minor, europe.discounts[0].discount_minor) == (999, 801)
    us = q(engine, region="US")
    assert reason(us, "fixed") == (False, "currency_not_covered", "no USD amount")
    assert us.final_minor == us.list_minor


# --------------------------------------------------------------------------------------------- bundles


@pytest.mark.parametrize(
    ("region", "components", "final"),
    [("IN", [1499000, 149900], 1599900), ("US", [19000, 1900], 19900), ("EU", [18000, 1800], 18900)],
)
def test_bundle_is_priced_as_one_item_at_its_price_per_currency(
    shipped: Engine, region: str, components: list[int], final: int
) -> None:
    result = q(shipped, Item(bundle="creator-bundle"), region=region)
    assert [c.list_minor for c in result.components] == components
    assert [(c.plan, c.package) for c in result.components] == [("pro", None), (None, "extra-500")]
    assert result.list_minor == sum(components)
    assert result.final_minor == final
    assert [d.promotion for d in result.discounts] == ["creator-bundle"]
    # Only the bundle's own offer is considered for a bundle.
    assert [p.id for p in result.promotions] == ["creator-bundle"]


def test_bundle_outside_its_window_costs_its_parts(shipped: Engine) -> None:
    result = q(shipped, Item(bundle="creator-bundle"), region="IN", at=DIWALI)
    assert reason(result, "creator-bundle")[:2] == (False, "not_started")
    assert result.final_minor == result.list_minor == 1648900


def test_bundles_are_not_considered_for_single_items(shipped: Engine) -> None:
    assert q(shipped, PRO_ANNUAL, region="IN").promotion("creator-bundle") is None


# ----------------------------------------------------------------------------------- reasons, one by one


def test_every_reason_is_documented() -> None:
    assert set(REASONS) >= {
        "not_started",
        "ended",
        "wrong_region",
        "not_eligible",
        "limit_reached",
        "per_customer_limit",
        "not_applicable",
        "code_required",
        "unknown_code",
        "currency_not_covered",
        "code_used",
        "duplicate_code",
    }


def test_diwali_applies_to_new_customers_in_india(shipped: Engine) -> None:
    customers(shipped, "new-in", country="IN")
    result = q(shipped, PRO_ANNUAL, customer_id="new-in", at=DIWALI)
    assert reason(result, "diwali-2026") == (True, None, None)
    step = result.discounts[0]
    assert (step.percent, step.discount_minor, step.duration, step.cycles) == (
        Decimal("30"),
        449700,
        "once",
        1,
    )
    assert result.final_minor == 1049300


def test_not_eligible_reasons(shipped: Engine) -> None:
    customers(shipped, "paid-in", country="IN")
    customers(shipped, "student", country="IN", segments=["students"])
    customers(shipped, "other", country="IN", segments=["traders"])
    with shipped.begin() as conn:
        subscribe(conn, "paid-in", "pro", "monthly")
    anonymous = q(shipped, PRO_ANNUAL, region="IN", at=DIWALI)
    assert reason(anonymous, "diwali-2026") == (False, "not_eligible", "sign in")
    existing = q(shipped, PRO_ANNUAL, customer_id="paid-in", at=DIWALI)
    assert reason(existing, "diwali-2026") == (False, "not_eligible", "new customers only")
    assert reason(q(shipped, customer_id="student"), "students") == (True, None, None)
    assert reason(q(shipped, customer_id="other"), "students") == (
        False,
        "not_eligible",
        "segment students only",
    )
    assert reason(q(shipped, customer_id="other"), "free-to-pro") == (
        False,
        "not_eligible",
        "customers on free only",
    )
    listed_only = q(shipped, customer_id="other")
    assert reason(listed_only, "beta-testers") == (False, "not_eligible", "not on the customer list")


def test_customer_list_and_plans_held(shipped: Engine) -> None:
    customers(shipped, "clx9a2b3c0001pg8h2k3m4n5o", country="IN")  # the first row of beta-testers.csv
    customers(shipped, "free-user", country="IN")
    with shipped.begin() as conn:
        subscribe(conn, "free-user", "free", "monthly")
    beta = q(shipped, customer_id="clx9a2b3c0001pg8h2k3m4n5o")
    assert reason(beta, "beta-testers")[0] is True
    assert beta.discounts[0].duration == "cycles" and beta.discounts[0].cycles == 6
    upgrade = q(shipped, customer_id="free-user")
    assert reason(upgrade, "free-to-pro") == (True, None, None)
    assert upgrade.extra_trial_days == 16 and upgrade.final_minor == upgrade.list_minor
    assert upgrade.discounts[0].extra_trial_days == 16


def test_region_schedule_item_and_code_reasons(shipped: Engine) -> None:
    customers(shipped, "new-us", country="US")
    us = q(shipped, PRO_ANNUAL, customer_id="new-us", at=DIWALI)
    assert reason(us, "diwali-2026") == (False, "wrong_region", "only in IN")
    early = q(shipped, PRO_ANNUAL, region="IN", at=DIWALI)
    assert reason(early, "launch-codes") == (False, "not_started", "starts 2026-11-15 00:00 Asia/Kolkata")
    late = q(shipped, PRO_ANNUAL, region="IN", at=datetime.fromisoformat("2027-03-01T00:00:00+05:30"))
    assert reason(late, "launch-codes") == (False, "ended", "ended 2027-02-01 00:00 Asia/Kolkata")
    monthly = q(shipped, PRO_MONTHLY, region="IN", at=DIWALI)
    assert reason(monthly, "diwali-2026") == (
        False,
        "not_applicable",
        "applies to plans pro, premium (annual)",
    )
    needs_code = q(shipped, PRO_MONTHLY, region="IN")
    assert reason(needs_code, "welcome-code") == (False, "code_required", "applies with a code only")


def test_codes_are_case_insensitive_and_lookalikes_are_unknown(shipped: Engine) -> None:
    customers(shipped, "new-in", country="IN")
    typed = q(shipped, customer_id="new-in", codes=["  welcome20 "])
    assert reason(typed, "welcome-code") == (True, None, None)
    outcome = typed.code("Welcome20")
    assert outcome is not None and outcome.applied and outcome.promotion == "welcome-code"
    with shipped.begin() as conn:
        real = conn.execute(
            sa.text(f"SELECT code FROM {SCHEMA}.promotion_codes WHERE promotion_id = 'launch-codes' LIMIT 1")
        ).scalar_one()
    tampered = real[:-1] + ("O" if real[-1] != "O" else "0")
    result = q(shipped, PRO_ANNUAL, customer_id="new-in", codes=[real.lower(), tampered, "BOGUS"])
    by_code = {c.code: (c.applied, c.reason) for c in result.codes}
    assert by_code == {
        real: (True, None),
        tampered.upper(): (False, "unknown_code"),
        "BOGUS": (False, "unknown_code"),
    }
    assert [c.code for c in result.refused_codes] == sorted([tampered.upper(), "BOGUS"])
    assert result.discounts[0].code == real and result.discounts[0].discount_minor == 50000


def test_two_codes_of_one_promotion_use_one(shipped: Engine) -> None:
    with shipped.begin() as conn:
        two = list(
            conn.execute(
                sa.text(
                    f"SELECT code FROM {SCHEMA}.promotion_codes WHERE promotion_id = 'launch-codes' "
                    "ORDER BY code LIMIT 2"
                )
            ).scalars()
        )
    result = q(shipped, PRO_ANNUAL, region="IN", codes=two)
    assert [(c.code, c.applied, c.reason) for c in result.codes] == [
        (two[0], True, None),
        (two[1], False, "duplicate_code"),
    ]


def test_currency_not_covered(engine: Engine, tmp_path: Path) -> None:
    publish(engine, scenario_config(tmp_path, {"inr": promo("inr-only", "{amount_off: {INR: 100}}")}))
    assert reason(q(engine, region="US"), "inr-only") == (False, "currency_not_covered", "no USD amount")
    assert reason(q(engine, region="IN"), "inr-only") == (True, None, None)


def test_draft_and_retired_promotions_never_apply(engine: Engine, tmp_path: Path) -> None:
    publish(
        engine,
        scenario_config(
            tmp_path,
            {
                "d": promo("drafty", "{percent_off: 10}", extra="status: draft\ncodes: {vanity: DRAFTY}\n"),
                "r": promo("gone", "{percent_off: 10}", extra="status: retired\ncodes: {vanity: GONE10}\n"),
            },
        ),
    )
    result = q(engine, region="IN", codes=["drafty", "gone10"])
    assert result.discounts == ()
    assert reason(result, "drafty") == (False, "not_started", "not published yet (draft)")
    assert {c.code: c.reason for c in result.codes} == {"DRAFTY": "not_started", "GONE10": "unknown_code"}
    assert q(engine, region="IN").promotion("drafty") is None  # without its code a draft is not considered


# ------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    ("at", "applied", "why"),
    [
        ("2026-10-19T23:59:59.999999+05:30", False, "not_started"),
        ("2026-10-20T00:00:00+05:30", True, None),  # starts is inclusive
        ("2026-10-19T18:30:00+00:00", True, None),  # the same instant in UTC
        ("2026-11-05T23:59:59.999999+05:30", True, None),
        ("2026-11-06T00:00:00+05:30", False, "ended"),  # ends is exclusive
    ],
)
def test_schedule_boundaries(shipped: Engine, at: str, applied: bool, why: str | None) -> None:
    customers(shipped, "new-in", country="IN")
    result = q(shipped, PRO_ANNUAL, customer_id="new-in", at=datetime.fromisoformat(at))
    assert reason(result, "diwali-2026")[:2] == (applied, why)


@pytest.mark.parametrize(
    ("at", "applied", "detail"),
    [
        ("2026-12-19T23:59:59+05:30", False, "starts 2026-12-20 00:00 Asia/Kolkata"),
        ("2026-12-19T18:30:00+00:00", True, None),  # 20 Dec 00:00 in Kolkata, still 19 Dec in UTC
        ("2026-12-31T23:59:00+05:30", True, None),
        ("2027-01-01T00:01:00+05:30", True, None),  # across New Year
        ("2027-01-04T23:59:59+05:30", True, None),
        ("2027-01-04T20:00:00+00:00", False, "starts 2027-12-20 00:00 Asia/Kolkata"),  # 5 Jan 01:30 in India
        ("2027-07-01T00:00:00+05:30", False, "starts 2027-12-20 00:00 Asia/Kolkata"),
        ("2027-12-20T00:00:00+05:30", True, None),  # the next year's window
        ("2028-01-02T12:00:00+05:30", True, None),
        ("2030-01-06T00:00:00+05:30", False, "starts 2030-12-20 00:00 Asia/Kolkata"),
        ("2025-12-25T00:00:00+05:30", False, "starts 2026-12-20 00:00 Asia/Kolkata"),  # before the first year
    ],
)
def test_yearly_window_across_new_year_in_kolkata(
    shipped: Engine, at: str, applied: bool, detail: str | None
) -> None:
    result = q(shipped, region="IN", at=datetime.fromisoformat(at))
    found = reason(result, "festive-season")
    assert found[0] is applied and found[2] == detail
    if applied:
        assert result.discounts[0].promotion == "festive-season" and result.final_minor == 127415


def test_promotions_switch_by_time_alone(shipped: Engine) -> None:
    """No job runs between these quotes: only p_at changes."""
    customers(shipped, "new-in", country="IN")
    finals = [
        q(shipped, PRO_ANNUAL, customer_id="new-in", at=DIWALI + timedelta(days=days)).final_minor
        for days in (-10, 0, 30)
    ]
    assert finals == [1499000, 1049300, 1499000]


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"customer_id": "nobody"}, UnknownReferenceError, 'unknown customer "nobody"'),
        ({"region": "XX"}, UnknownReferenceError, 'unknown region "XX"'),
        ({"item": Item(plan="platinum", cycle="monthly")}, UnknownReferenceError, 'unknown plan "platinum"'),
        ({"item": Item(plan="pro", cycle="weekly")}, NoPriceError, "has no weekly price"),
        ({"item": Item(package="extra-9000")}, UnknownReferenceError, "unknown token package"),
        ({"item": Item(bundle="diwali-2026")}, UnknownReferenceError, 'unknown bundle "diwali-2026"'),
        ({"item": Item(plan="pro")}, InvalidRequestError, "needs a billing cycle"),
        ({"item": Item()}, InvalidRequestError, "exactly one of plan, package or bundle"),
        ({"item": Item(package="extra-500", cycle="monthly")}, InvalidRequestError, "cycle goes with a plan"),
        ({"codes": ["A"] * 11}, InvalidRequestError, "too many codes"),
        (
            {"item": Item(plan="pro", cycle="monthly", currency="EUR"), "region": "IN"},
            InvalidRequestError,
            "currency mismatch",
        ),
    ],
)
def test_bad_input_is_a_clear_error(
    shipped: Engine, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    item = kwargs.pop("item", PRO_MONTHLY)
    with pytest.raises(error, match=message):
        q(shipped, item, **kwargs)


def test_malformed_item_json_is_refused_by_sql(shipped: Engine) -> None:
    with shipped.begin() as conn, pytest.raises(sa.exc.DBAPIError, match="unknown key"):
        conn.execute(
            sa.text(f"SELECT {SCHEMA}.quote(NULL, CAST(:i AS jsonb))"), {"i": '{"plan": "pro", "x": 1}'}
        )


def test_quote_json_is_the_documented_shape(shipped: Engine) -> None:
    raw = q(shipped, Item(bundle="creator-bundle"), region="IN").raw
    keys = "at customer item components region currency minor_units rounding list_minor list"
    keys += " discount_minor final_minor final promotions discounts codes extra_trial_days bonus_tokens"
    assert set(raw) == set(keys.split())
    assert raw["item"] == {"kind": "bundle", "bundle": "creator-bundle"}
    assert raw["final"] == "15999.00"


def test_bonus_tokens_are_a_benefit_and_stack(engine: Engine, tmp_path: Path) -> None:
    publish(
        engine,
        scenario_config(
            tmp_path,
            {
                # No applies_to: a token bonus goes with any purchase, packages included.
                "t": "id: tokens\nname: tokens\ndiscount: {bonus_tokens: 250}\n"
                "stacking: {mode: stackable, priority: 5}\n" + WINDOW,
                "p": promo("pct", "{percent_off: 10}", stacking="stackable", priority=10),
            },
        ),
    )
    plan = q(engine, region="IN")
    assert [d.promotion for d in plan.discounts] == ["tokens", "pct"]
    assert (plan.bonus_tokens, plan.final_minor, plan.discounts[0].discount_minor) == (250, 134910, 0)
    package = q(engine, Item(package="extra-500"), region="IN")
    assert [d.promotion for d in package.discounts] == ["tokens"]
    assert (package.bonus_tokens, package.final_minor) == (250, package.list_minor)
    assert reason(package, "pct") == (False, "not_applicable", "applies to plans pro (monthly)")
