"""diff_catalogs: entity keys, actions, impact labels, percentages and the price-increase policy."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from compiler.catalog import Approval, Catalog, Price, Suppression, TokenLimits
from compiler.diagnostics import Severity
from compiler.diff import Action, CatalogDiff, Change, Impact, diff_catalogs, format_amount
from tests.catalog_factory import (
    make_catalog,
    package,
    page,
    plan,
    promotion,
    replace,
    with_plan,
    with_prices,
    without_prices,
)


def only(diff: CatalogDiff, key: str) -> Change:
    matches = [c for c in diff.changes if c.key == key]
    assert len(matches) == 1, [c.key for c in diff.changes]
    return matches[0]


def keys(diff: CatalogDiff) -> list[str]:
    return [c.key for c in diff.changes]


def test_identical_catalogs_have_no_changes() -> None:
    catalog = make_catalog()
    diff = diff_catalogs(catalog, make_catalog())
    assert not diff.has_changes
    assert diff.changes == ()
    assert diff.findings == []
    assert diff.base_fingerprint == diff.head_fingerprint
    assert diff.base_fingerprint.startswith("sha256:")
    assert set(diff.by_impact().values()) == {0}


def test_price_increase_has_exact_percent_and_summary() -> None:
    old = make_catalog(price_limit=None)
    new = with_prices(old, "pro", Price("monthly", "INR", Decimal(1799)))
    change = only(diff_catalogs(old, new), "price:pro/monthly/INR")
    assert change.kind == "price"
    assert change.id == "pro/monthly/INR"
    assert change.action is Action.CHANGED
    assert change.impact is Impact.PRICE_INCREASE
    assert (change.old_amount, change.new_amount, change.currency) == (Decimal(1499), Decimal(1799), "INR")
    assert change.percent == Decimal("20.0")
    assert change.fields[0].field == "amount"
    assert (change.fields[0].old, change.fields[0].new) == ("1499", "1799")
    assert change.fields[0].percent == Decimal("20.0")
    assert change.summary == "Pro monthly INR 1,499 → 1,799 (+20.0%)"


def test_price_decrease() -> None:
    old = make_catalog()
    new = with_prices(old, "pro", Price("monthly", "USD", Decimal("17.10")))
    change = only(diff_catalogs(old, new), "price:pro/monthly/USD")
    assert change.impact is Impact.PRICE_DECREASE
    assert change.percent == Decimal("-10.0")
    assert "19 → 17.10 (-10.0%)" in change.summary


def test_region_override_added_is_a_price_change_for_that_region() -> None:
    old = with_prices(make_catalog(), "pro", Price("monthly", "EUR", Decimal(18)))
    new = with_prices(old, "pro", Price("monthly", "EUR", Decimal(16), "EU"))
    diff = diff_catalogs(old, new)
    change = only(diff, "price:pro/monthly/EUR@EU")
    assert change.action is Action.ADDED
    assert change.region == "EU"
    # The EU paid the EUR base price until now, so a cheaper override is a decrease for it.
    assert change.impact is Impact.PRICE_DECREASE
    assert (change.old_amount, change.new_amount) == (Decimal(18), Decimal(16))
    assert change.percent == Decimal("-11.1")
    assert keys(diff) == ["price:pro/monthly/EUR@EU"]


def test_override_without_a_base_price_is_additive() -> None:
    old = make_catalog()
    new = with_prices(old, "pro", Price("monthly", "EUR", Decimal(16), "EU"))
    change = only(diff_catalogs(old, new), "price:pro/monthly/EUR@EU")
    assert (change.action, change.impact) == (Action.ADDED, Impact.ADDITIVE)
    assert change.percent is None


def test_removed_override_falls_back_to_the_base_price() -> None:
    old = with_prices(
        make_catalog(),
        "pro",
        Price("monthly", "EUR", Decimal(18)),
        Price("monthly", "EUR", Decimal(15), "EU"),
    )
    new = without_prices(old, "pro", "monthly/EUR@EU")
    change = only(diff_catalogs(old, new), "price:pro/monthly/EUR@EU")
    assert change.action is Action.REMOVED
    assert change.impact is Impact.PRICE_INCREASE
    assert change.percent == Decimal("20.0")


def test_price_removed_without_replacement_is_destructive() -> None:
    old = make_catalog()
    new = without_prices(old, "pro", "annual/INR")
    change = only(diff_catalogs(old, new), "price:pro/annual/INR")
    assert (change.action, change.impact) == (Action.REMOVED, Impact.DESTRUCTIVE)
    assert change.fields[0].new is None


def test_new_plan_and_its_prices_are_additive() -> None:
    old = make_catalog()
    new = replace(old, plans={**old.plans, "team": plan("team")})
    diff = diff_catalogs(old, new)
    assert only(diff, "plan:team").action is Action.ADDED
    assert {c.impact for c in diff.changes} == {Impact.ADDITIVE}
    assert keys(diff) == [
        "plan:team",
        "price:team/annual/INR",
        "price:team/monthly/INR",
        "price:team/monthly/USD",
    ]


def test_plan_retired_is_breaking() -> None:
    old = make_catalog()
    change = only(diff_catalogs(old, with_plan(old, status="retired")), "plan:pro")
    assert (change.action, change.impact) == (Action.RETIRED, Impact.BREAKING)
    assert change.fields[0].field == "status"
    assert (change.fields[0].old, change.fields[0].new) == ("active", "retired")


def test_plan_reactivated_is_additive() -> None:
    old = with_plan(make_catalog(), status="retired")
    change = only(diff_catalogs(old, with_plan(old, status="active")), "plan:pro")
    assert (change.action, change.impact) == (Action.REACTIVATED, Impact.ADDITIVE)


def test_active_plan_deleted_from_files_will_be_retired_and_is_destructive() -> None:
    old = make_catalog()
    diff = diff_catalogs(old, replace(old, plans={}))
    change = only(diff, "plan:pro")
    assert (change.action, change.impact) == (Action.RETIRED, Impact.DESTRUCTIVE)
    removed_prices = [c for c in diff.changes if c.kind == "price"]
    assert removed_prices and all(c.impact is Impact.DESTRUCTIVE for c in removed_prices)


def test_retired_plan_deleted_from_files_is_neutral() -> None:
    old = with_plan(make_catalog(), status="retired")
    diff = diff_catalogs(old, replace(old, plans={}))
    assert only(diff, "plan:pro").action is Action.REMOVED
    assert {c.impact for c in diff.changes} == {Impact.NEUTRAL}


@pytest.mark.parametrize(
    ("before", "after", "impact"),
    [
        (True, False, Impact.BREAKING),
        (False, True, Impact.ADDITIVE),
        (50, 40, Impact.BREAKING),
        (50, 100, Impact.ADDITIVE),
        (50, "unlimited", Impact.ADDITIVE),
        ("unlimited", 1_000_000, Impact.BREAKING),
    ],
)
def test_feature_value_comparisons(before: bool | int | str, after: bool | int | str, impact: Impact) -> None:
    feature = "ai_chat" if isinstance(before, bool) else "strategies"
    old = with_plan(make_catalog(), features={feature: before})
    change = only(diff_catalogs(old, with_plan(old, features={feature: after})), "plan:pro")
    assert change.impact is impact
    assert change.fields[0].field == f"features.{feature}"
    assert (change.fields[0].old, change.fields[0].new) == (before, after)


def test_feature_dropped_from_a_plan_counts_as_off() -> None:
    old = with_plan(make_catalog(), features={"ai_chat": True, "strategies": 5})
    new = with_plan(old, features={"strategies": 5})
    change = only(diff_catalogs(old, new), "plan:pro")
    assert change.impact is Impact.BREAKING
    assert (change.fields[0].old, change.fields[0].new) == (True, False)


def test_explicit_false_equals_absent_boolean_feature() -> None:
    old = with_plan(make_catalog(), features={"strategies": 5})
    new = with_plan(old, features={"strategies": 5, "ai_chat": False})
    assert not diff_catalogs(old, new).has_changes


def test_set_feature_members() -> None:
    old = with_plan(make_catalog(), features={"exports": ("pine", "json")})

    def exports(*values: str) -> Change:
        return only(diff_catalogs(old, with_plan(old, features={"exports": values})), "plan:pro")

    added, removed, swapped = exports("pine", "json", "pdf"), exports("pine"), exports("pine", "pdf")
    assert added.impact is Impact.ADDITIVE
    assert removed.impact is Impact.BREAKING
    assert swapped.impact is Impact.BREAKING


def test_enum_feature_ranks_by_declared_order() -> None:
    old = with_plan(make_catalog(), features={"support": "email"})
    up = only(diff_catalogs(old, with_plan(old, features={"support": "priority"})), "plan:pro")
    down = only(diff_catalogs(old, with_plan(old, features={"support": "community"})), "plan:pro")
    assert (up.impact, down.impact) == (Impact.ADDITIVE, Impact.BREAKING)


def test_limits_trial_and_mixed_changes_take_the_worst_label() -> None:
    old = with_plan(make_catalog(), trial_days=14)
    shorter = only(diff_catalogs(old, with_plan(old, trial_days=7)), "plan:pro")
    assert shorter.impact is Impact.BREAKING
    limited = dataclasses.replace(old.plans["pro"].tokens, limits=TokenLimits(daily=200))
    raised = dataclasses.replace(limited, limits=TokenLimits(daily=300))
    base = with_plan(old, tokens=limited)
    assert only(diff_catalogs(base, with_plan(base, tokens=raised)), "plan:pro").impact is Impact.ADDITIVE
    # No daily limit at all is more than any number.
    unlimited = only(diff_catalogs(base, with_plan(old)), "plan:pro")
    assert unlimited.impact is Impact.ADDITIVE
    mixed = only(
        diff_catalogs(
            old, with_plan(old, name="Pro Max", trial_days=30, features={"ai_chat": False, "strategies": 50})
        ),
        "plan:pro",
    )
    assert mixed.impact is Impact.BREAKING
    assert {f.field: f.impact for f in mixed.fields} == {
        "name": Impact.COPY_ONLY,
        "trial_days": Impact.ADDITIVE,
        "features.ai_chat": Impact.BREAKING,
    }


def test_name_change_is_copy_only() -> None:
    old = make_catalog()
    change = only(diff_catalogs(old, with_plan(old, name="Pro Trader", description="New words")), "plan:pro")
    assert change.impact is Impact.COPY_ONLY
    assert change.summary.startswith("Plan Pro Trader: 2 fields changed")


def test_page_content_change_is_copy_only() -> None:
    old = make_catalog()
    new = replace(old, pages={"pricing": page(headline="Trade smarter", intro="**Now** with AI")})
    change = only(diff_catalogs(old, new), "page:pricing")
    assert (change.action, change.impact) == (Action.CHANGED, Impact.COPY_ONLY)
    assert {f.field for f in change.fields} == {"headline", "intro"}
    assert diff_catalogs(old, new).base_fingerprint != diff_catalogs(old, new).head_fingerprint


def test_promotion_added_is_additive_and_ending_is_neutral() -> None:
    old = make_catalog()
    new = make_catalog(promotions=[promotion()])
    added = only(diff_catalogs(old, new), "promotion:diwali-2026")
    assert (added.action, added.impact) == (Action.ADDED, Impact.ADDITIVE)
    ended = only(
        diff_catalogs(new, make_catalog(promotions=[promotion(status="retired")])), "promotion:diwali-2026"
    )
    assert (ended.action, ended.impact) == (Action.RETIRED, Impact.NEUTRAL)
    vanished = only(diff_catalogs(new, old), "promotion:diwali-2026")
    assert (vanished.action, vanished.impact) == (Action.RETIRED, Impact.NEUTRAL)
    limited = only(
        diff_catalogs(new, make_catalog(promotions=[promotion(max_redemptions=10)])), "promotion:diwali-2026"
    )
    assert limited.impact is Impact.NEUTRAL


def test_currency_and_region_removed_are_destructive() -> None:
    old = make_catalog()
    new = replace(
        old,
        currencies={k: v for k, v in old.currencies.items() if k != "EUR"},
        regions={k: v for k, v in old.regions.items() if k != "EU"},
    )
    diff = diff_catalogs(old, new)
    assert keys(diff) == ["currency:EUR", "region:EU"]
    assert all(c.action is Action.REMOVED and c.impact is Impact.DESTRUCTIVE for c in diff.changes)


def test_package_and_package_prices() -> None:
    old = make_catalog()
    new = make_catalog(packages=[package(amounts={"INR": 599, "USD": 6}, validity_days=30)])
    diff = diff_catalogs(old, new)
    assert keys(diff) == ["package:extra-500", "package-price:extra-500/INR"]
    # No expiry is more than 30 days.
    assert only(diff, "package:extra-500").impact is Impact.BREAKING
    price = only(diff, "package-price:extra-500/INR")
    assert (price.impact, price.percent, price.cycle) == (Impact.PRICE_INCREASE, Decimal("20.0"), None)


def test_changes_sorted_by_kind_then_id() -> None:
    old = make_catalog()
    new = replace(
        with_prices(with_plan(old, name="Pro 2"), "pro", Price("monthly", "INR", Decimal(1599))),
        promotions={"a": promotion("a")},
        pages={"pricing": page(headline="x")},
        currencies={**old.currencies, "GBP": dataclasses.replace(old.currencies["USD"], code="GBP")},
    )
    assert keys(diff_catalogs(old, new)) == [
        "currency:GBP",
        "plan:pro",
        "price:pro/monthly/INR",
        "promotion:a",
        "page:pricing",
    ]


# ------------------------------------------------------------------------------------------ policy


def increased(old: Catalog, percent_amount: int = 1999) -> Catalog:
    return with_prices(old, "pro", Price("monthly", "INR", Decimal(percent_amount)))


def test_increase_above_limit_is_an_error_finding() -> None:
    old = make_catalog(price_limit="25")
    diff = diff_catalogs(
        old,
        increased(old),
        locations={"plan:pro": ("plans/pro.yaml", 1), "price:pro/monthly": ("plans/pro.yaml", 40)},
    )
    assert len(diff.findings) == 1
    finding = diff.findings[0]
    assert finding.code == "policy.max_price_increase_percent"
    assert finding.severity is Severity.ERROR
    assert (finding.file, finding.line, finding.path) == ("plans/pro.yaml", 40, "prices.monthly.INR")
    assert "+33.4%" in finding.message and "25%" in finding.message
    assert finding.hint is not None and "up_to_percent: 33.4" in finding.hint
    assert diff.has_errors


def test_increase_within_limit_is_fine() -> None:
    old = make_catalog(price_limit="25")
    assert diff_catalogs(old, increased(old, 1799)).findings == []


def test_warning_severity_and_off() -> None:
    old = make_catalog(severity="warning")
    assert [f.severity for f in diff_catalogs(old, increased(old)).findings] == [Severity.WARNING]
    off = make_catalog(severity="off")
    assert diff_catalogs(off, increased(off)).findings == []


@pytest.mark.parametrize(("up_to", "expected"), [(None, 0), ("40", 0), ("33.4", 0), ("30", 1)])
def test_approval_covers_increases_up_to_its_percent(up_to: str | None, expected: int) -> None:
    old = make_catalog()
    approval = Approval("cfo@example.com", "inflation", Decimal(up_to) if up_to else None)
    new = with_plan(increased(old), approval=approval)
    assert len(diff_catalogs(old, new).findings) == expected


@pytest.mark.parametrize(
    ("target", "expected"), [("plan:pro", 0), ("plan:*", 0), ("plan:free", 1), ("package:pro", 1)]
)
def test_suppression_matches_target_pattern(target: str, expected: int) -> None:
    old = make_catalog()
    suppressed = replace(
        increased(old),
        settings=dataclasses.replace(
            old.settings,
            suppressions=(Suppression("max_price_increase_percent", target, "agreed with sales"),),
        ),
    )
    assert len(diff_catalogs(old, suppressed).findings) == expected


def test_package_increase_is_checked_too() -> None:
    old = make_catalog()
    new = make_catalog(packages=[package(amounts={"INR": 999, "USD": 6})])
    findings = diff_catalogs(old, new).findings
    assert len(findings) == 1
    assert "package:extra-500" in (findings[0].hint or "")


def test_free_to_paid_exceeds_any_limit() -> None:
    old = with_prices(make_catalog(), "pro", Price("monthly", "INR", Decimal(0)))
    change = only(diff_catalogs(old, increased(old)), "price:pro/monthly/INR")
    assert change.impact is Impact.PRICE_INCREASE and change.percent is None
    assert len(diff_catalogs(old, increased(old)).findings) == 1


def test_draft_plan_changes_are_neutral() -> None:
    old = with_plan(make_catalog(), status="draft")
    new = increased(with_plan(old, features={"ai_chat": False, "strategies": 50}))
    diff = diff_catalogs(old, new)
    assert {c.impact for c in diff.changes} == {Impact.NEUTRAL}
    assert diff.findings == []


def test_format_amount() -> None:
    assert format_amount(Decimal("1499")) == "1,499"
    assert format_amount(Decimal("1499.00")) == "1,499"
    assert format_amount(Decimal("19.9")) == "19.90"
    assert format_amount(Decimal("0.005")) == "0.005"
    assert format_amount(Decimal("1E+4")) == "10,000"
    assert format_amount(None) == "—"


def test_feature_retirement_is_breaking_only_when_plans_offered_it() -> None:
    old = make_catalog()
    features = dict(old.features)
    features["ai_chat"] = dataclasses.replace(features["ai_chat"], status="retired")
    features["exports"] = dataclasses.replace(features["exports"], status="retired")
    diff = diff_catalogs(old, replace(old, features=features))
    assert only(diff, "feature:ai_chat").impact is Impact.BREAKING  # the pro plan has it
    assert only(diff, "feature:exports").impact is Impact.NEUTRAL
    assert {c.action for c in diff.changes} == {Action.RETIRED}


def test_new_page_is_copy_only_and_removed_page_destructive() -> None:
    old = make_catalog()
    new = replace(old, pages={**old.pages, "landing": page("landing")})
    assert only(diff_catalogs(old, new), "page:landing").impact is Impact.COPY_ONLY
    assert only(diff_catalogs(new, old), "page:landing").impact is Impact.DESTRUCTIVE


def test_model_charging_more_credits_is_breaking_and_cost_is_neutral() -> None:
    old = make_catalog()
    model = old.models["gpt-4"]
    dearer = replace(old, models={"gpt-4": dataclasses.replace(model, credits_per_1k_output=Decimal(30))})
    costlier = replace(old, models={"gpt-4": dataclasses.replace(model, cost_per_1k_output=Decimal("0.09"))})
    assert only(diff_catalogs(old, dearer), "model:gpt-4").impact is Impact.BREAKING
    change = only(diff_catalogs(old, costlier), "model:gpt-4")
    assert change.impact is Impact.NEUTRAL
    assert (change.fields[0].old, change.fields[0].new) == ("0.06", "0.09")


def test_walk_names_list_items_by_identity_so_one_edited_card_is_one_change() -> None:
    from compiler.diff import walk

    old = {"cards": [{"plan": "free", "tagline": "Start"}, {"plan": "pro", "tagline": "For traders"}]}
    new = {"cards": [{"plan": "free", "tagline": "Start"}, {"plan": "pro", "tagline": "For active traders"}]}
    assert list(walk(old, new)) == [("cards[plan=pro].tagline", "For traders", "For active traders")]


def test_walk_reports_added_items_and_reordering() -> None:
    from compiler.diff import walk

    old = {"faq": [{"question": "A?", "answer": "a"}, {"question": "B?", "answer": "b"}]}
    new = {"faq": [{"question": "B?", "answer": "b"}, {"question": "A?", "answer": "a"}, {"question": "C?"}]}
    changes = list(walk(old, new))
    assert ("faq[question=C?]", None, {"question": "C?"}) in changes
    assert ("faq (order)", ["question=A?", "question=B?"], ["question=B?", "question=A?"]) in changes


def test_first_publication_of_the_default_region_is_not_breaking() -> None:
    from compiler.diff import _PROJECT_RULES, Impact, _classify

    assert _classify(_PROJECT_RULES, "default_region", None, "US") is Impact.ADDITIVE
    assert _classify(_PROJECT_RULES, "default_region", "IN", "US") is Impact.BREAKING
