"""Rendered pricing pages, read back with an HTML parser: prices, locales, promotions, matrix, CTAs, JSON."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from compiler.catalog import (
    UNLIMITED,
    AppliesTo,
    Card,
    Catalog,
    Cta,
    Discount,
    Eligibility,
    Feature,
    FeatureValue,
    Highlight,
    Page,
    PageDisplay,
    Promotion,
    Schedule,
)
from compiler.money import Currency
from compiler.project import compile_config
from publishers.site import build_page_model, render_error_page, render_site
from publishers.site.formatting import format_money
from publishers.site.offers import ActiveOffer, best_price, current_window
from tests.catalog_factory import make_catalog, page, plan, prices, promotion
from tests.test_site_dom import Node, parse_html, plain

REPO = Path(__file__).resolve().parent.parent
IST = ZoneInfo("Asia/Kolkata")
DIWALI = datetime(2026, 10, 25, 12, 0, tzinfo=IST)
QUIET = datetime(2026, 6, 1, tzinfo=UTC)  # no public promotion runs


@pytest.fixture(scope="module")
def shipped() -> Catalog:
    result = compile_config(REPO / "pricing")
    assert result.ok and result.catalog is not None, [d.message for d in result.diagnostics.errors]
    return result.catalog


def page_with(**fields: object) -> Page:
    """The factory's page with fields replaced (its helper fixes the cards)."""
    return dataclasses.replace(page(), **fields)  # type: ignore[arg-type]


def dom(
    catalog: Catalog, region: str, at: datetime, locale: str | None = None, page_id: str = "pricing"
) -> Node:
    site = render_site(catalog, at=at, regions=[region], locale=locale, pages=[page_id])
    return parse_html(site.pages[0].html)


def card(root: Node, plan_id: str) -> Node:
    return root.find("article", data_plan=plan_id)


def block(root: Node, plan_id: str, cycle: str) -> Node:
    return card(root, plan_id).find("div", cls="price", data_cycle=cycle)


def shown(root: Node, plan_id: str, cycle: str) -> str:
    return plain(block(root, plan_id, cycle).find("span", cls="now").text())


def struck(root: Node, plan_id: str, cycle: str) -> str | None:
    found = block(root, plan_id, cycle).find_all("del")
    return plain(found[0].text()) if found else None


# -- prices and locales --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "monthly", "annual"),
    [("IN", "₹1,499", "₹14,990"), ("US", "$19", "$190"), ("EU", "18 €", "180 €")],
)
def test_prices_are_formatted_for_the_region_locale(
    shipped: Catalog, region: str, monthly: str, annual: str
) -> None:
    root = dom(shipped, region, QUIET)
    assert shown(root, "pro", "monthly") == monthly
    assert shown(root, "pro", "annual") == annual
    assert root.find("html").get("lang") == {"IN": "en-IN", "US": "en-US", "EU": "de-DE"}[region]


def test_locale_override_changes_formatting_not_currency(shipped: Catalog) -> None:
    root = dom(shipped, "IN", QUIET, locale="de_DE")
    assert shown(root, "premium", "annual") == "29.980 ₹"


def test_money_formatting_rules() -> None:
    inr, usd, eur = Currency("INR"), Currency("USD"), Currency("EUR")
    assert plain(format_money(Decimal(149900), inr, "en_IN")) == "₹1,49,900"  # lakh grouping
    assert plain(format_money(Decimal("19.50"), usd, "en_US")) == "$19.50"
    assert plain(format_money(Decimal(19), usd, "en_US", "always")) == "$19.00"
    assert plain(format_money(Decimal("15.3"), eur, "de_DE")) == "15,30 €"
    assert plain(format_money(Decimal(500), Currency("JPY", minor_units=0), "ja_JP")) == "￥500"


def test_every_cycle_price_is_in_the_html_for_readers_without_script(shipped: Catalog) -> None:
    root = dom(shipped, "IN", QUIET)
    for plan_id in ("free", "pro", "premium"):
        cycles = [b.get("data-cycle") for b in card(root, plan_id).find_all("div", cls="price")]
        assert cycles == ["monthly", "annual"]
    # The default cycle is marked shown; the script hides the others only once it runs.
    assert "shown" in block(root, "pro", "monthly").classes
    assert "shown" not in block(root, "pro", "annual").classes


def test_region_without_its_currency_uses_the_fallback_currency() -> None:
    catalog = make_catalog()
    regions = dict(catalog.regions)
    regions["EU"] = dataclasses.replace(regions["EU"], fallback_currency="USD")
    catalog = dataclasses.replace(catalog, regions=regions)
    model = build_page_model(catalog, "pricing", "EU", "en_US", QUIET)
    assert model.cards[0].prices["monthly"].text == "$19"
    assert "annual" not in model.cards[0].prices  # no USD annual price: not offered, not invented
    root = dom(catalog, "EU", QUIET, locale="en_US")
    assert "Not available" in block(root, "pro", "annual").text()


def test_region_override_wins_over_base_price() -> None:
    pro = plan(
        price_list=[*prices("monthly", {"USD": 19, "INR": 1499}), *prices("monthly", {"INR": 999}, "IN")]
    )
    model = build_page_model(make_catalog(plans=[pro]), "pricing", "IN", None, QUIET)
    assert plain(model.cards[0].prices["monthly"].text) == "₹999"


# -- strikethrough promotions --------------------------------------------------------------------


def test_diwali_strikes_through_annual_prices_in_india(shipped: Catalog) -> None:
    root = dom(shipped, "IN", DIWALI)
    assert struck(root, "pro", "annual") == "₹14,990"
    assert shown(root, "pro", "annual") == "₹10,493"
    assert struck(root, "premium", "annual") == "₹29,980"
    assert shown(root, "premium", "annual") == "₹20,986"
    offer = block(root, "pro", "annual").find("p", cls="offer")
    assert offer.get("data-promotion") == "diwali-2026"
    assert offer.find("span", cls="offer-badge").text() == "Diwali −30%"
    assert offer.find("span", cls="offer-ends").text() == "Until 5 November 2026"
    for plan_id in ("free", "pro", "premium"):
        assert struck(root, plan_id, "monthly") is None
    assert struck(root, "free", "annual") is None
    assert "Diwali −30%" in root.find("ul", cls="offers").text()


@pytest.mark.parametrize(
    "at",
    [
        datetime(2026, 10, 19, 23, 59, 59, tzinfo=IST),  # the minute before it starts
        datetime(2026, 11, 6, 0, 0, tzinfo=IST),  # `ends` is exclusive
        datetime(2027, 10, 25, 12, 0, tzinfo=IST),  # not yearly: no second Diwali 2026
    ],
)
def test_no_strikethrough_outside_the_diwali_window(shipped: Catalog, at: datetime) -> None:
    root = dom(shipped, "IN", at)
    assert root.find_all("del") == []
    assert shown(root, "pro", "annual") == "₹14,990"


def test_diwali_window_edges_are_read_in_india_time(shipped: Catalog) -> None:
    starts = datetime(2026, 10, 19, 18, 30, tzinfo=UTC)  # 20 Oct 00:00 IST
    assert struck(dom(shipped, "IN", starts), "pro", "annual") == "₹14,990"
    last_second = datetime(2026, 11, 5, 18, 29, 59, tzinfo=UTC)
    assert struck(dom(shipped, "IN", last_second), "pro", "annual") == "₹14,990"


@pytest.mark.parametrize("region", ["US", "EU"])
def test_diwali_is_not_shown_outside_india(shipped: Catalog, region: str) -> None:
    root = dom(shipped, region, DIWALI)
    assert root.find_all("del") == []
    assert root.find_all("ul", cls="offers") == []


@pytest.mark.parametrize(
    ("at", "active"),
    [
        (datetime(2026, 12, 25, tzinfo=UTC), True),  # first window
        (datetime(2027, 12, 25, tzinfo=UTC), True),  # next year's window
        (datetime(2028, 1, 4, 12, 0, tzinfo=IST), True),  # straddles New Year
        (datetime(2028, 1, 5, 0, 0, tzinfo=IST), False),  # ends 5 Jan 00:00 India time
        (datetime(2027, 12, 19, 18, 29, 59, tzinfo=UTC), False),  # 19 Dec 23:59:59 IST
        (datetime(2027, 12, 19, 18, 30, tzinfo=UTC), True),  # 20 Dec 00:00 IST
        (datetime(2027, 6, 1, tzinfo=UTC), False),
        (datetime(2025, 12, 25, tzinfo=UTC), False),  # before the first window: no recurrence back
    ],
)
def test_festive_season_recurs_yearly_in_its_time_zone(shipped: Catalog, at: datetime, active: bool) -> None:
    root = dom(shipped, "US", at)
    assert struck(root, "pro", "monthly") == ("$19" if active else None)
    assert shown(root, "pro", "monthly") == ("$16.15" if active else "$19")
    assert struck(root, "pro", "annual") is None  # monthly plans only


def test_festive_season_everywhere_rounds_per_currency(shipped: Catalog) -> None:
    at = datetime(2027, 12, 25, tzinfo=UTC)
    assert shown(dom(shipped, "IN", at), "pro", "monthly") == "₹1,274.15"
    assert shown(dom(shipped, "EU", at), "premium", "monthly") == "30,60 €"
    ends = block(dom(shipped, "US", at), "pro", "monthly").find("span", cls="offer-ends").text()
    assert ends == "Until January 4, 2028"


def test_targeted_and_code_promotions_never_reach_a_public_page(shipped: Catalog) -> None:
    # 1 Dec 2026: WELCOME20 and launch codes (codes), beta testers (customer list), students (segment),
    # free-to-pro (plans held) and the creator bundle all run; none applies to an anonymous visitor.
    at = datetime(2026, 12, 1, tzinfo=UTC)
    for region in ("IN", "US", "EU"):
        site = render_site(shipped, at=at, regions=[region])
        root = parse_html(site.pages[0].html)
        assert root.find_all("del") == [], region
        assert site.pages[0].data["promotions"] == []
        assert card(root, "pro").find("p", cls="trial").text() == "14-day free trial"


def offer(promo: Promotion) -> ActiveOffer:
    return ActiveOffer(promo, None, None)


def test_stackable_offers_combine_in_priority_order_and_exclusive_ones_compete() -> None:
    usd = Currency("USD")
    ten = promotion("ten", stackable=True, priority=10)
    ten = dataclasses.replace(ten, discount=Discount("percent_off", percent=Decimal(10)))
    five_off = promotion("five-off", stackable=True, priority=20)
    five_off = dataclasses.replace(five_off, discount=Discount("amount_off", amounts={"USD": Decimal(5)}))
    # 100 → 90 (10%) → 85 ($5 off); the other order would give 85.50.
    assert best_price(Decimal(100), usd, (offer(five_off), offer(ten))) == (
        Decimal("85.00"),
        (offer(ten), offer(five_off)),
    )
    exclusive = dataclasses.replace(
        promotion("quarter"), discount=Discount("percent_off", percent=Decimal(25))
    )
    amount, applied = best_price(Decimal(100), usd, (offer(ten), offer(five_off), offer(exclusive)))
    assert (amount, [o.promotion.id for o in applied]) == (Decimal("75.00"), ["quarter"])


def test_discounts_never_go_below_zero_and_respect_currency() -> None:
    usd, inr = Currency("USD"), Currency("INR")
    big = dataclasses.replace(promotion("big"), discount=Discount("amount_off", amounts={"USD": Decimal(50)}))
    assert best_price(Decimal(19), usd, (offer(big),))[0] == Decimal("0.00")
    assert best_price(Decimal(1499), inr, (offer(big),)) == (Decimal(1499), ())  # no INR amount
    fixed = dataclasses.replace(
        promotion("fixed"), discount=Discount("fixed_price", amounts={"USD": Decimal(9)})
    )
    assert best_price(Decimal(19), usd, (offer(fixed),))[0] == Decimal("9.00")
    assert best_price(Decimal(5), usd, (offer(fixed),)) == (Decimal(5), ())  # not a discount there
    third = dataclasses.replace(
        promotion("third"), discount=Discount("percent_off", percent=Decimal("33.333"))
    )
    assert best_price(Decimal("10.00"), Currency("USD", rounding="half_even"), (offer(third),))[0] == Decimal(
        "6.67"
    )


def test_yearly_window_on_29_february_falls_back_to_the_28th() -> None:
    schedule = Schedule(
        datetime(2028, 2, 29, tzinfo=UTC), datetime(2028, 3, 2, tzinfo=UTC), timezone="UTC", yearly=True
    )
    assert current_window(schedule, datetime(2029, 2, 28, 12, tzinfo=UTC), "UTC") is not None
    assert current_window(schedule, datetime(2029, 2, 27, 12, tzinfo=UTC), "UTC") is None


def test_promotion_eligibility_rules_for_a_public_page() -> None:
    pro = plan(price_list=prices("monthly", {"USD": 20}))
    window = Schedule(datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))

    def shown_for(**fields: object) -> str:
        promo = promotion("p", schedule=window, applies_to=AppliesTo(plans=("pro",)))
        promo = dataclasses.replace(promo, **fields)  # type: ignore[arg-type]
        catalog = make_catalog(plans=[pro], promotions=[promo])
        return build_page_model(catalog, "pricing", "US", "en_US", QUIET).cards[0].prices["monthly"].text

    assert shown_for() == "$14"
    assert shown_for(eligibility=Eligibility(customers="new")) == "$14"
    assert shown_for(eligibility=Eligibility(regions=("US",))) == "$14"
    assert shown_for(eligibility=Eligibility(regions=("IN",))) == "$20"
    assert shown_for(eligibility=Eligibility(customers="existing")) == "$20"
    assert shown_for(eligibility=Eligibility(segments=("students",))) == "$20"
    assert shown_for(eligibility=Eligibility(customer_ids=("c1",))) == "$20"
    assert shown_for(eligibility=Eligibility(plans_held=("free",))) == "$20"
    assert shown_for(vanity_code="SAVE30") == "$20"
    assert shown_for(status="draft") == "$20"
    assert shown_for(schedule=Schedule(datetime(2027, 1, 1, tzinfo=UTC))) == "$20"


def test_page_setting_can_turn_strikethrough_off_but_not_the_discount(shipped: Catalog) -> None:
    page_spec = shipped.pages["pricing"]
    no_strike = dataclasses.replace(
        page_spec, display=dataclasses.replace(page_spec.display, strikethrough=False)
    )
    catalog = dataclasses.replace(shipped, pages={"pricing": no_strike})
    root = dom(catalog, "IN", DIWALI)
    assert struck(root, "pro", "annual") is None
    assert shown(root, "pro", "annual") == "₹10,493"


# -- savings ---------------------------------------------------------------------------------------


def test_savings_are_computed_from_real_prices(shipped: Catalog) -> None:
    root = dom(shipped, "US", QUIET)
    assert block(root, "pro", "annual").find("p", cls="savings").text() == "2 months free"
    assert block(root, "pro", "monthly").find_all("p", cls="savings") == []
    assert block(root, "free", "annual").find_all("p", cls="savings") == []  # nothing to save on 0
    toggle = root.find("label", **{"for": "cycle-annual"})
    assert toggle.find("span", cls="hint").text() == "2 months free"


@pytest.mark.parametrize(
    ("annual", "style", "expected"),
    [
        (190, "percent", "save 17%"),
        (190, "months_free", "2 months free"),
        (209, "months_free", "1 month free"),
        (199.5, "months_free", "save 13%"),  # 1.5 months: not a whole number, so a percentage
        (228, "percent", None),  # no saving
        (190, "none", None),
    ],
)
def test_savings_wording(annual: float, style: str, expected: str | None) -> None:
    pro = plan(price_list=[*prices("monthly", {"USD": 19}), *prices("annual", {"USD": str(annual)})])
    display = PageDisplay(savings=style)  # type: ignore[arg-type]
    catalog = make_catalog(plans=[pro], pages=[page_with(display=display)])
    model = build_page_model(catalog, "pricing", "US", "en_US", QUIET)
    assert model.cards[0].prices["annual"].savings == expected


def test_per_month_display_for_longer_cycles() -> None:
    pro = plan(price_list=[*prices("monthly", {"USD": 19}), *prices("annual", {"USD": 190})])
    catalog = make_catalog(
        plans=[pro], pages=[page_with(display=PageDisplay(per_month_for_longer_cycles=True))]
    )
    annual = build_page_model(catalog, "pricing", "US", "en_US", QUIET).cards[0].prices["annual"]
    assert (annual.text, annual.period, annual.billed_note) == ("$15.83", "month", "billed $190 per year")


# -- cards -----------------------------------------------------------------------------------------


def test_card_content(shipped: Catalog) -> None:
    root = dom(shipped, "US", QUIET)
    pro = card(root, "pro")
    assert pro.find("h3").text() == "Pro"
    assert pro.find("p", cls="tagline").text() == "For active traders"
    assert pro.find("p", cls="badge").text() == "Most popular"
    assert "recommended" in pro.classes and "recommended" not in card(root, "free").classes
    assert pro.find("p", cls="trial").text() == "14-day free trial"
    assert card(root, "free").find_all("p", cls="trial") == []
    assert pro.find("aside", cls="callout").find("strong").text() == "14 days free."
    lines = [li.find("span", cls="text").text() for li in pro.find("ul", cls="highlights").find_all("li")]
    assert lines == [
        "Everything in Free, plus",
        "500 AI credits / month",
        "AI chat assistant",
        "50 strategies / month",
        "Backtesting",
        "Custom script signatures",
    ]
    free_lines = [li.find("span", cls="text").text() for li in card(root, "free").find_all("li")]
    assert free_lines[:5] == [
        "1 strategy / month",
        "1 script",
        "Basic templates",
        "Export formats: Pine Script",
        "Community forum",
    ]
    premium = card(root, "premium").find("li", data_feature="ai_generations")
    assert premium.find("span", cls="text").text() == "1,000 AI credits / month"
    assert premium.find("small").text().startswith("Refreshed every month")
    # Every highlight carries an inline SVG icon (no network, no icon font).
    assert all(li.find("svg") for li in pro.find_all("li"))


def test_highlight_of_a_feature_the_plan_lacks_says_so() -> None:
    lite = plan("lite", features={"ai_chat": False, "strategies": UNLIMITED})
    cards = (Card("lite", highlights=(Highlight(feature="ai_chat"), Highlight(feature="strategies"))),)
    catalog = make_catalog(plans=[lite], pages=[page_with(cards=cards)])
    root = dom(catalog, "US", QUIET)
    chat = card(root, "lite").find("li", data_feature="ai_chat")
    assert "off" in chat.classes and chat.text(visible=False).startswith("Not included:")
    assert card(root, "lite").find("li", data_feature="strategies").text() == "Unlimited strategies"


def test_unknown_icon_falls_back_to_a_dot_with_a_warning() -> None:
    cards = (Card("pro", highlights=(Highlight(text="Hand-picked", icon="no-such-icon"),)),)
    site = render_site(make_catalog(pages=[page_with(cards=cards)]), at=QUIET, regions=["US"])
    assert site.pages[0].model.cards[0].highlights[0].icon == "circle-small"
    assert any("no-such-icon" in w for w in site.warnings)
    assert "no-such-icon" in parse_html(site.index_html).find("ul").text()


def test_renamed_lucide_icons_resolve(shipped: Catalog) -> None:
    site = render_site(shipped, at=QUIET, regions=["US"])
    row = site.pages[0].model.comparison[0].rows[3]
    assert (row.feature, row.icon) == ("advanced_indicators", "chart-line")  # `line-chart` in features.yaml
    assert site.warnings == ()


# -- CTAs -------------------------------------------------------------------------------------------


def test_cta_links_and_colours(shipped: Catalog) -> None:
    site = render_site(shipped, at=QUIET, regions=["IN"])
    root = parse_html(site.pages[0].html)
    pro = card(root, "pro").find("a", cls="cta")
    assert pro.text() == "Start 14-day trial"
    assert pro.get("href") == "https://pinegenie.app/checkout?plan=pro&cycle=monthly&region=IN&code="
    assert (
        pro.get("data-href-annual") == "https://pinegenie.app/checkout?plan=pro&cycle=annual&region=IN&code="
    )
    assert pro.get("data-action") == "checkout"
    free = card(root, "free").find("a", cls="cta")
    assert (free.text(), free.get("href"), free.get("data-action")) == (
        "Start free",
        "https://pinegenie.app/signup",
        "link",
    )
    style = root.find("style").text(visible=False)
    index = next(c for c in free.classes if c.startswith("cta-"))
    assert f".{index}{{background:#111827;color:#ffffff}}" in style
    assert free.text(visible=False) == "Start free — Free"  # the accessible name names the plan


def test_checkout_url_values_are_url_encoded_and_only_known_placeholders_filled() -> None:
    odd = plan("pro & co", price_list=prices("monthly", {"USD": 19}))
    cta = Cta("Buy", "checkout")
    spec = page_with(
        cards=(Card("pro & co", cta=cta),),
        checkout_url="https://x.test/buy/{plan}?c={cycle}&r={region}&cur={currency}&k={code}&x={plan.__class__}",
    )
    model = build_page_model(make_catalog(plans=[odd], pages=[spec]), "pricing", "US", "en_US", QUIET)
    assert model.cards[0].cta is not None
    assert model.cards[0].cta.hrefs["monthly"] == (
        "https://x.test/buy/pro%20%26%20co?c=monthly&r=US&cur=USD&k=&x={plan.__class__}"
    )


def test_contact_sales_uses_the_contact_url() -> None:
    spec = page_with(
        cards=(Card("pro", cta=Cta("Talk to us", "contact_sales")),), contact_url="mailto:sales@x.test"
    )
    root = dom(make_catalog(pages=[spec]), "US", QUIET)
    assert card(root, "pro").find("a", cls="cta").get("href") == "mailto:sales@x.test"


# -- comparison matrix ----------------------------------------------------------------------------


def expected_cell(feature: Feature, value: FeatureValue) -> str:
    """What a cell must say, derived here independently of the renderer."""
    if feature.type == "boolean":
        return "✓" if value else "—"
    if feature.type == "number":
        if value == UNLIMITED:
            return "Unlimited"
        assert isinstance(value, int)
        return "—" if value == 0 else f"{value:,}"
    if feature.type == "enum":
        return feature.value_labels.get(str(value), str(value)) if value else "—"
    assert isinstance(value, tuple)
    return ", ".join(feature.value_labels.get(v, v) for v in value) or "—"


def singular(unit: str) -> str:
    """`strategies / month` and `strategy / month` are the same unit (one of it reads singular)."""
    return re.sub(r"s\b", "", re.sub(r"ies\b", "y", unit))


def check_matrix(catalog: Catalog, root: Node) -> int:
    spec = catalog.pages["pricing"]
    plans = [c.plan for c in spec.cards]
    table = root.find("table")
    assert [th.get("data-plan") for th in table.find("thead").find_all("th")[1:]] == plans
    rows = [tr for tr in table.find_all("tr") if tr.get("data-feature")]
    assert [tr.get("data-feature") for tr in rows] == [f for g in spec.comparison for f in g.features]
    groups = [th.text() for th in table.find_all("th", scope="colgroup")]
    assert groups == [g.title for g in spec.comparison]
    checked = 0
    for tr in rows:
        feature = catalog.features[str(tr.get("data-feature"))]
        assert tr.find("th").text() == feature.label
        for td, plan_id in zip(tr.find_all("td"), plans, strict=True):
            assert td.get("data-plan") == plan_id
            value = catalog.plans[plan_id].features.get(feature.id, feature.off_value())
            text = td.text()
            expected = expected_cell(feature, value)
            if feature.type == "number" and expected not in ("—", "Unlimited"):
                assert feature.unit and text.startswith(expected + " ")
                assert singular(text.removeprefix(expected + " ")) == singular(feature.unit), text
            else:
                assert text == expected, (feature.id, plan_id)
            checked += 1
    return checked


def test_matrix_cells_equal_plan_feature_values(shipped: Catalog) -> None:
    assert check_matrix(shipped, dom(shipped, "US", QUIET)) == 13 * 3


def test_matrix_follows_a_changed_plan(shipped: Catalog) -> None:
    pro = shipped.plans["pro"]
    changed = dataclasses.replace(
        pro, features={**pro.features, "white_label": True, "script_storage": UNLIMITED, "export_formats": ()}
    )
    catalog = dataclasses.replace(shipped, plans={**shipped.plans, "pro": changed})
    root = dom(catalog, "US", QUIET)
    check_matrix(catalog, root)
    row = root.find("tr", data_feature="white_label")
    assert row.find("td", data_plan="pro").text() == "✓"
    assert row.find("td", data_plan="pro").text(visible=False) == "✓Included"
    assert root.find("tr", data_feature="export_formats").find("td", data_plan="pro").text() == "—"


# -- page structure and accessibility ------------------------------------------------------------


def test_page_structure_is_accessible_and_self_contained(shipped: Catalog) -> None:
    html = render_site(shipped, at=QUIET, regions=["IN"]).pages[0].html
    root = parse_html(html)
    assert [h.text() for h in root.find_all("h1")] == ["Build TradingView strategies with AI"]
    assert [h.text() for h in root.find_all("h2")] == [
        "Plans and prices",
        "Compare plans",
        "Frequently asked questions",
    ]
    assert root.find("meta", name="viewport").get("content") == "width=device-width, initial-scale=1"
    fieldset = root.find("fieldset", cls="cycles")
    assert fieldset.find("legend").text() == "Billing cycle"
    radios = fieldset.find_all("input", type="radio")
    assert [r.get("value") for r in radios] == ["monthly", "annual"]
    assert [r.get("checked") is not None or "checked" in r.attrs for r in radios] == [True, False]
    for radio in radios:
        assert fieldset.find("label", **{"for": str(radio.get("id"))}).text()
    # Nothing is fetched: no external script, stylesheet, image or font.
    for node in root.iter():
        assert "style" not in node.attrs
        assert not any(name.startswith("on") for name in node.attrs)
        if node.tag in ("script", "img", "iframe"):
            assert node.get("src") is None
        if node.tag == "link":
            assert node.get("rel") == "icon" and node.get("href") == "data:,"
    assert "@import" not in html and "url(" not in html
    faq = root.find_all("details")
    assert len(faq) == 6 and faq[0].find("summary").text() == "Are prices inclusive of GST?"
    footer_links = root.find("footer").find_all("a")
    assert [a.get("rel") for a in footer_links] == ["noopener noreferrer"] * 2


def test_content_security_policy_allows_exactly_the_inline_blocks(shipped: Catalog) -> None:
    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    for live in (False, True):
        root = parse_html(render_site(shipped, at=QUIET, regions=["US"], live_reload=live).pages[0].html)
        csp = str(root.find("meta", **{"http-equiv": "Content-Security-Policy"}).get("content"))
        assert "unsafe-inline" not in csp and "default-src 'none'" in csp
        style = "".join(c for c in root.find("style").children if isinstance(c, str))
        assert f"style-src {digest(style)}" in csp
        scripts = root.find_all("script")
        assert len(scripts) == (2 if live else 1)
        for script in scripts:
            assert digest("".join(c for c in script.children if isinstance(c, str))) in csp
        assert ("connect-src 'self'" in csp) is live


def test_rendering_is_deterministic(shipped: Catalog) -> None:
    first = render_site(shipped, at=DIWALI)
    second = render_site(shipped, at=DIWALI)
    assert first.files() == second.files()


# -- site, JSON and index --------------------------------------------------------------------------


def test_site_files_and_index(shipped: Catalog, tmp_path: Path) -> None:
    site = render_site(shipped, at=DIWALI)
    assert [p.file_name for p in site.pages] == ["pricing-in.html", "pricing-us.html", "pricing-eu.html"]
    written = site.write(tmp_path)
    assert sorted(p.name for p in written) == sorted(
        ["index.html", "index.json"]
        + [f"pricing-{r}.{e}" for r in ("in", "us", "eu") for e in ("html", "json")]
    )
    index = parse_html((tmp_path / "index.html").read_text(encoding="utf-8"))
    hrefs = {a.get("href") for a in index.find_all("a")}
    assert {"pricing-in.html", "pricing-in.json", "pricing-eu.html"} <= hrefs
    manifest = json.loads((tmp_path / "index.json").read_text(encoding="utf-8"))
    assert manifest["fingerprint"] == shipped.fingerprint
    assert manifest["pages"][0] == {
        "page": "pricing",
        "region": "IN",
        "locale": "en_IN",
        "currency": "INR",
        "html": "pricing-in.html",
        "json": "pricing-in.json",
        "promotions": ["diwali-2026"],
    }
    assert site.page("pricing", "US").file_name == "pricing-us.html"


def test_page_json_matches_the_html(shipped: Catalog) -> None:
    site = render_site(shipped, at=DIWALI, regions=["IN"])
    data = json.loads(site.files()["pricing-in.json"])
    root = parse_html(site.pages[0].html)
    assert (data["format_version"], data["page"], data["region"], data["currency"]) == (
        1,
        "pricing",
        "IN",
        "INR",
    )
    assert data["as_of"] == DIWALI.isoformat()
    pro = next(c for c in data["cards"] if c["plan"] == "pro")
    annual = pro["prices"]["annual"]
    assert (annual["list_amount"], annual["amount"], annual["promotions"]) == (
        "14990.00",
        "10493.00",
        ["diwali-2026"],
    )
    assert annual["strikethrough"] is True and annual["savings"] == "2 months free"
    assert data["promotions"] == [
        {
            "id": "diwali-2026",
            "name": "Diwali 2026 — 30% off annual plans",
            "badge": "Diwali −30%",
            "ends": "2026-11-06T00:00:00+05:30",
            "ends_text": "Until 5 November 2026",
        }
    ]
    for card_data in data["cards"]:
        for cycle, price in card_data["prices"].items():
            assert plain(price["text"]) == shown(root, card_data["plan"], cycle)
    rows = [row for group in data["comparison"]["groups"] for row in group["rows"]]
    assert rows[0]["cells"][2] == {
        "plan": "premium",
        "text": "Unlimited",
        "included": True,
        "value": "unlimited",
    }
    assert pro["cta"]["urls"]["annual"].endswith("cycle=annual&region=IN&code=")
    assert data["intro_html"].startswith("<p>Describe your trading idea")


def test_unknown_region_page_or_locale_is_refused(shipped: Catalog) -> None:
    with pytest.raises(ValueError, match="unknown region 'XX'"):
        render_site(shipped, at=QUIET, regions=["XX"])
    with pytest.raises(ValueError, match="unknown page 'nope'"):
        render_site(shipped, at=QUIET, pages=["nope"])
    with pytest.raises(ValueError, match="unknown locale"):
        render_site(shipped, at=QUIET, locale="xx_YY")


def test_naive_moment_is_utc(shipped: Catalog) -> None:
    site = render_site(shipped, at=datetime(2026, 10, 19, 18, 30))  # 20 Oct 00:00 IST, as UTC
    assert site.at.tzinfo is not None
    assert site.page("pricing", "IN").promotions == ("diwali-2026",)


def test_error_page_names_file_and_line_and_escapes() -> None:
    from compiler.diagnostics import Diagnostic, Severity

    problem = Diagnostic(
        Severity.ERROR,
        "schema.type",
        "bad <script>alert(1)</script>",
        file="plans/pro.yaml",
        line=12,
        column=3,
    )
    html = render_error_page([problem], live_reload=True)
    root = parse_html(html)
    item = root.find("li", cls="error")
    assert item.find("strong", cls="where").text() == "plans/pro.yaml:12:3"
    assert item.find("p", cls="message").text() == "bad <script>alert(1)</script>"
    assert "<script>alert" not in html
    assert len(root.find_all("script")) == 1  # only the reload script
