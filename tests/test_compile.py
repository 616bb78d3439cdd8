"""compile_config on the shipped config: PineGenie's real catalog, exact money, a stable fingerprint."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from compiler.catalog import Catalog
from compiler.diagnostics import Diagnostic
from compiler.project import CompileResult, compile_config

SHIPPED = Path(__file__).resolve().parent.parent / "pricing"


@pytest.fixture(scope="module")
def shipped() -> CompileResult:
    return compile_config(SHIPPED)


@pytest.fixture(scope="module")
def catalog(shipped: CompileResult) -> Catalog:
    assert shipped.catalog is not None
    return shipped.catalog


def copy_config(tmp_path: Path, name: str = "pricing") -> Path:
    target = tmp_path / name
    shutil.copytree(SHIPPED, target, symlinks=True)
    return target


def replace_text(root: Path, rel: str, old: str, new: str) -> None:
    path = root / rel
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{rel} does not contain {old!r}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def compiled(root: Path) -> Catalog:
    result = compile_config(root)
    assert result.ok, "\n".join(f"{d.location()}: {d.message}" for d in result.diagnostics)
    assert result.catalog is not None
    return result.catalog


def fingerprint_of(root: Path) -> str:
    return compiled(root).fingerprint


def walk(value: Any) -> Iterator[Any]:
    """Every leaf value of a catalog, through dataclasses, mappings and sequences."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            yield from walk(getattr(value, item.name))
    elif isinstance(value, dict) or hasattr(value, "items"):
        for key, child in value.items():
            yield key
            yield from walk(child)
    elif isinstance(value, tuple | list):
        for child in value:
            yield from walk(child)
    else:
        yield value


def findings(result: CompileResult, code: str) -> list[Diagnostic]:
    return [d for d in result.diagnostics if d.code == code]


# ------------------------------------------------------------------------------------------ clean


def test_shipped_config_compiles_without_errors_or_warnings(shipped: CompileResult) -> None:
    assert shipped.ok
    assert list(shipped.diagnostics) == []


def test_shipped_catalog_has_the_expected_entities(catalog: Catalog) -> None:
    assert set(catalog.plans) == {"free", "pro", "premium"}
    assert set(catalog.packages) == {"extra-500", "extra-2000"}
    assert set(catalog.models) == {"gpt-4", "gpt-4o", "gpt-3.5-turbo", "claude-3-5-sonnet"}
    assert set(catalog.regions) == {"IN", "US", "EU"}
    assert catalog.default_region == "US"
    assert {"diwali-2026", "welcome-code", "creator-bundle", "beta-testers"} <= set(catalog.promotions)
    assert set(catalog.pages) == {"pricing"}


# ---------------------------------------------------------------------------- PineGenie's real catalog


def inr(catalog: Catalog, plan: str, cycle: str) -> Decimal:
    price = catalog.plans[plan].price(cycle, "INR")
    assert price is not None, f"{plan} has no {cycle} INR price"
    return price.amount


@pytest.mark.parametrize(
    ("plan", "monthly", "annual"),
    [("free", "0", "0"), ("pro", "1499", "14990"), ("premium", "2998", "29980")],
)
def test_inr_prices_match_pinegenie(catalog: Catalog, plan: str, monthly: str, annual: str) -> None:
    assert inr(catalog, plan, "monthly") == Decimal(monthly)
    assert inr(catalog, plan, "annual") == Decimal(annual)


@pytest.mark.parametrize("plan", ["pro", "premium"])
@pytest.mark.parametrize("currency", ["INR", "USD", "EUR"])
def test_annual_is_ten_times_monthly(catalog: Catalog, plan: str, currency: str) -> None:
    monthly = catalog.plans[plan].price("monthly", currency)
    annual = catalog.plans[plan].price("annual", currency)
    assert monthly is not None and annual is not None
    assert annual.amount == 10 * monthly.amount


@pytest.mark.parametrize(("plan", "days"), [("free", 0), ("pro", 14), ("premium", 30)])
def test_trial_days(catalog: Catalog, plan: str, days: int) -> None:
    assert catalog.plans[plan].trial_days == days


def test_monthly_ai_credits(catalog: Catalog) -> None:
    pro, premium = catalog.plans["pro"].tokens.allowance, catalog.plans["premium"].tokens.allowance
    assert pro is not None and premium is not None
    assert (pro.amount, pro.every) == (500, "month")
    assert (premium.amount, premium.every) == (1000, "month")
    assert catalog.plans["free"].tokens.allowance is None
    assert catalog.plans["free"].features["ai_chat"] is False
    assert catalog.plans["free"].features["ai_generations"] == 0


def test_extra_credit_package(catalog: Catalog) -> None:
    package = catalog.packages["extra-500"]
    assert package.tokens == 500
    price = package.price("INR")
    assert price is not None
    assert price.amount == Decimal("1499")
    assert package.purchasable_by == ("pro", "premium")


@pytest.mark.parametrize(
    ("model", "cost"),
    [("gpt-4", "0.03"), ("gpt-4o", "0.005"), ("gpt-3.5-turbo", "0.002"), ("claude-3-5-sonnet", "0.003")],
)
def test_model_costs_in_usd_per_1k(catalog: Catalog, model: str, cost: str) -> None:
    entry = catalog.models[model]
    assert entry.cost_currency == "USD"
    assert entry.cost_per_1k_input == Decimal(cost)
    assert entry.cost_per_1k_output == Decimal(cost)


def test_admin_grant_defaults(catalog: Catalog) -> None:
    rules = catalog.token_rules
    assert (rules.admin_default_tokens, rules.admin_max_tokens) == (1000, 100_000)
    assert str(rules.admin_default_expiry) == "30 days"


def test_premium_only_features(catalog: Catalog) -> None:
    for feature in ("api_access", "white_label", "team_collaboration"):
        assert catalog.plans["premium"].features[feature] is True
        assert catalog.plans["pro"].features[feature] is False


def test_gst_and_regions(catalog: Catalog) -> None:
    india = catalog.regions["IN"]
    assert india.currency == "INR"
    assert india.tax is not None and india.tax.percent == Decimal(18)
    assert "NO" in catalog.regions["EU"].countries  # Norway, not YAML 1.1's false
    assert all(
        isinstance(country, str) for region in catalog.regions.values() for country in region.countries
    )


# ---------------------------------------------------------------------------------------- exact money


def test_every_price_is_an_exact_decimal(catalog: Catalog) -> None:
    prices = [p for plan in catalog.plans.values() for p in plan.prices]
    prices += [p for package in catalog.packages.values() for p in package.prices]
    assert len(prices) >= 3 * 2 * 3 + 2 * 3
    for price in prices:
        assert type(price.amount) is Decimal, price
        assert price.amount == price.amount.quantize(Decimal("0.01")), price


def test_no_float_anywhere_in_the_catalog(catalog: Catalog) -> None:
    floats = [value for value in walk(catalog) if isinstance(value, float)]
    assert floats == []


def test_promotion_amounts_are_decimal(catalog: Catalog) -> None:
    bundle = catalog.promotions["creator-bundle"].discount
    assert bundle.kind == "fixed_price"
    assert bundle.amounts["INR"] == Decimal("15999")
    assert all(type(a) is Decimal for a in bundle.amounts.values())
    assert catalog.promotions["diwali-2026"].discount.percent == Decimal(30)


def test_catalog_is_immutable(catalog: Catalog) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        catalog.plans["pro"].trial_days = 99  # type: ignore[misc]


# --------------------------------------------------------------------------------------- fingerprint


def test_fingerprint_is_stable_across_compiles_and_directories(tmp_path: Path, catalog: Catalog) -> None:
    assert catalog.fingerprint.startswith("sha256:")
    assert fingerprint_of(SHIPPED) == catalog.fingerprint
    assert fingerprint_of(copy_config(tmp_path, "elsewhere")) == catalog.fingerprint


def test_fingerprint_changes_when_a_price_changes(tmp_path: Path, catalog: Catalog) -> None:
    root = copy_config(tmp_path)
    replace_text(root, "plans/pro.yaml", "    INR: 1499\n", "    INR: 1599\n")
    assert fingerprint_of(root) != catalog.fingerprint


def test_fingerprint_changes_when_a_package_price_changes(tmp_path: Path, catalog: Catalog) -> None:
    root = copy_config(tmp_path)
    replace_text(root, "tokens/credits.yaml", "      INR: 4999\n", "      INR: 4499\n")
    assert fingerprint_of(root) != catalog.fingerprint


@pytest.mark.parametrize(
    ("rel", "old", "new"),
    [
        ("plans/pro.yaml", "# Pro — for active traders.", "# Pro: our best seller, for active traders."),
        ("plans/pro.yaml", "    monthly: 2500           # leaves", "    monthly: 2500 # keeps"),
        ("plans/pro.yaml", "name: Pro\n", "name: Pro\n\n\n# a new comment\n"),
        ("plans/pro.yaml", "    INR: 1499\n", "    INR: 1499.00\n"),
        ("plans/pro.yaml", "    INR: 1499\n    USD: 19\n", "    USD: 19\n    INR: 1499\n"),
        ("plans/pro.yaml", "id: pro\nname: Pro\n", "name: Pro\nid: pro\n"),
        ("promotions/diwali-2026.yaml", "plans: [pro, premium]", "plans:  [ pro,  premium ]"),
    ],
    ids=[
        "header-comment",
        "trailing-comment",
        "blank-lines",
        "trailing-zeros",
        "currency-order",
        "key-order",
        "flow-spacing",
    ],
)
def test_fingerprint_ignores_formatting(
    tmp_path: Path, catalog: Catalog, rel: str, old: str, new: str
) -> None:
    root = copy_config(tmp_path)
    replace_text(root, rel, old, new)
    assert fingerprint_of(root) == catalog.fingerprint


# ----------------------------------------------------------------------------------- suppressions


SUPPRESSION = "  - policy: promotion_without_end\n    target: promotion:students\n"


def without_students_suppression(root: Path) -> None:
    text = (root / "tariff.yaml").read_text(encoding="utf-8")
    start = text.index("suppressions:\n")
    end = text.index("\n\n", start)
    (root / "tariff.yaml").write_text(text[:start] + text[end + 2 :], encoding="utf-8")


def test_a_promotion_without_end_warns_without_its_suppression(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    without_students_suppression(root)
    result = compile_config(root)
    assert result.ok  # the policy is a warning in the shipped settings
    warnings = findings(result, "policy.promotion_without_end")
    assert [(w.file, w.severity.value) for w in warnings] == [("promotions/students.yaml", "warning")]
    assert "'students' has no end date" in warnings[0].message
    assert warnings[0].hint and "suppress" in warnings[0].hint


def test_the_suppression_with_a_reason_silences_it(shipped: CompileResult) -> None:
    assert findings(shipped, "policy.promotion_without_end") == []
    assert findings(shipped, "settings.unused-suppression") == []


def test_the_policy_as_error_fails_without_the_suppression(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    without_students_suppression(root)
    replace_text(
        root,
        "tariff.yaml",
        "  promotion_without_end:\n    severity: warning\n",
        "  promotion_without_end:\n    severity: error\n",
    )
    result = compile_config(root)
    assert not result.ok
    assert [d.severity.value for d in findings(result, "policy.promotion_without_end")] == ["error"]


def test_a_suppression_without_reason_is_refused(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    text = (root / "tariff.yaml").read_text(encoding="utf-8")
    start = text.index("    reason: >-\n")
    end = text.index("\n\n", start)
    (root / "tariff.yaml").write_text(text[:start] + text[end + 1 :], encoding="utf-8")
    result = compile_config(root)
    assert not result.ok
    missing = findings(result, "schema.missing-key")
    assert [(d.file, d.path) for d in missing] == [("tariff.yaml", "suppressions[0]")]
    assert "'reason'" in missing[0].message


def test_a_suppression_that_is_no_longer_needed_warns(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(
        root,
        "tariff.yaml",
        SUPPRESSION,
        SUPPRESSION
        + (
            "    reason: >-\n      Evergreen, see the student programme.\n"
            "  - policy: promotion_without_end\n    target: promotion:diwali-2026\n"
        ),
    )
    result = compile_config(root)
    assert result.ok
    unused = findings(result, "settings.unused-suppression")
    assert len(unused) == 1
    assert unused[0].file == "tariff.yaml"
    assert unused[0].path == "suppressions[1]"
    assert "promotion:diwali-2026" in unused[0].message
    assert "no longer needed" in unused[0].message


def test_a_suppression_for_a_misspelt_target_warns_with_a_suggestion(tmp_path: Path) -> None:
    root = copy_config(tmp_path)
    replace_text(root, "tariff.yaml", "target: promotion:students", "target: promotion:student")
    result = compile_config(root)
    unused = findings(result, "settings.unused-suppression")
    assert len(unused) == 1
    assert "matches nothing" in unused[0].message
    assert unused[0].hint == "did you mean `promotion:students`?"
    # …and the promotion it meant to cover is reported again.
    assert [w.file for w in findings(result, "policy.promotion_without_end")] == ["promotions/students.yaml"]


# --------------------------------------------------------------------------------------- robustness


def test_missing_directory_is_a_diagnostic_not_an_exception(tmp_path: Path) -> None:
    result = compile_config(tmp_path / "nope")
    assert not result.ok
    assert result.catalog is None
    assert [d.code for d in result.diagnostics] == ["files.no-config"]


def test_locations_point_at_definitions(shipped: CompileResult) -> None:
    assert shipped.locations["plan:pro"][0] == "plans/pro.yaml"
    file, line = shipped.locations["package:extra-500"]
    assert file == "tokens/credits.yaml"
    lines = (SHIPPED / file).read_text(encoding="utf-8").splitlines()
    key_line = lines.index("  extra-500:") + 1
    assert line in (key_line, key_line + 1)  # the key, or the first line of its mapping
