"""The view-model of one pricing page in one region at one moment, built from the Catalog alone.

`build_page_model` is pure: the same catalog, page, region, locale and moment always give the same model,
so a published snapshot can be rebuilt and compared. Every price, saving, highlight and comparison cell
is derived here from the plans and promotions, never written in content, so the page cannot disagree
with what is sold. Templates only lay the model out; `PageModel.to_json()` is the same content for apps
that draw their own page.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from urllib.parse import quote

from compiler.catalog import BillingCycle, Card, Catalog, Cta, Feature, Highlight, Page, Plan, Price, Region
from compiler.colors import contrast_ratio
from compiler.money import Currency
from publishers.site.formatting import (
    cycle_label,
    cycle_period,
    format_last_day,
    format_money,
    locale_for,
)
from publishers.site.icons import resolve_icon
from publishers.site.markdown import render_markdown
from publishers.site.offers import ActiveOffer, best_price, covers, extra_trial_days, public_offers
from publishers.site.palette import MIN_CONTRAST, WHITE, Palette, checked_color
from publishers.site.values import highlight_text, json_value, matrix_text
from publishers.site.views import (
    CardView,
    CtaView,
    CycleOption,
    FaqView,
    HighlightView,
    MatrixCell,
    MatrixGroup,
    MatrixRow,
    OfferView,
    PageModel,
    PriceView,
)

DEFAULT_LOCALE = "en_US"
CHECKOUT_PLACEHOLDER = re.compile(r"\{(plan|cycle|region|currency|code)\}")
# Where a button may point: absolute web or mail links, or a path on the site serving the page.
SAFE_HREF = re.compile(r"(https?://|mailto:|/(?!/))", re.IGNORECASE)
# Cycle ids become attribute names and CSS selectors (`data-href-annual`); the schema's id pattern.
SAFE_CYCLE = re.compile(r"[a-z][a-z0-9_-]{0,63}")


class _Builder:
    """Shared state while one page model is built: the inputs and the warnings found on the way."""

    def __init__(self, catalog: Catalog, page: Page, region: Region, locale: str, at: datetime) -> None:
        self.catalog = catalog
        self.page = page
        self.region = region
        self.locale = locale
        self.at = at
        self.where = f"page {page.id!r} ({region.code})"
        self.warnings: list[str] = []
        self.offers = public_offers(catalog.promotions, region.code, at, catalog.timezone)
        self.shown_offers: dict[str, OfferView] = {}
        self.cycles = tuple(c for c in page.display.cycles if SAFE_CYCLE.fullmatch(c))
        for dropped in set(page.display.cycles) - set(self.cycles):
            self.warnings.append(f"{self.where}: billing cycle id {dropped!r} is not a valid id; not shown")
        default = page.display.default_cycle
        self.default_cycle = default if default in self.cycles else (self.cycles[0] if self.cycles else "")

    # -- money ------------------------------------------------------------------------------------
    def currency(self, code: str) -> Currency:
        return self.catalog.currencies.get(code) or Currency(code)

    def money(self, amount: Decimal, code: str) -> str:
        return format_money(amount, self.currency(code), self.locale, self.page.display.decimals)

    def list_price(self, plan: Plan, cycle: str) -> Price | None:
        """The region's price: its override, else the base price, else one in the fallback currency."""
        price = plan.price(cycle, self.region.currency, self.region.code)
        if price is None and self.region.fallback_currency:
            price = plan.price(cycle, self.region.fallback_currency, self.region.code)
        return price

    def months(self, cycle: str) -> Decimal:
        known = self.catalog.cycles.get(cycle)
        return known.months if known else Decimal(1)

    def base_cycle(self) -> str | None:
        """The one-month cycle savings are measured against (`monthly` unless renamed)."""
        candidates = [c for c in self.cycles if self.months(c) == 1]
        return "monthly" if "monthly" in candidates else (candidates[0] if candidates else None)

    def savings(self, plan: Plan, cycle: str, price: Price) -> str | None:
        base_id = self.base_cycle()
        if self.page.display.savings == "none" or base_id is None or cycle == base_id:
            return None
        base = plan.price(base_id, price.currency, self.region.code)
        months = self.months(cycle)
        if base is None or base.amount <= 0 or months <= 1:
            return None
        full = base.amount * months
        saved = full - price.amount
        if saved <= 0:
            return None
        free_months = saved / base.amount
        if self.page.display.savings == "months_free" and free_months == free_months.to_integral_value():
            count = int(free_months)
            return f"{count} month{'' if count == 1 else 's'} free"
        percent = (saved / full * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
        return f"save {percent}%" if percent >= 1 else None

    # -- promotions -------------------------------------------------------------------------------
    def offer_view(self, offer: ActiveOffer) -> OfferView:
        promotion = offer.promotion
        view = self.shown_offers.get(promotion.id)
        if view is None:
            ends_text = None
            if promotion.show_end_date and offer.ends is not None:
                zone_name = promotion.schedule.timezone or self.catalog.timezone
                ends_text = f"Until {format_last_day(offer.ends, zone_name, self.locale)}"
            view = OfferView(
                promotion.id, promotion.name, promotion.badge or promotion.name, offer.ends, ends_text
            )
            self.shown_offers[promotion.id] = view
        return view

    def price_view(self, plan: Plan, cycle: str) -> PriceView | None:
        price = self.list_price(plan, cycle)
        if price is None:
            return None
        currency = self.currency(price.currency)
        offers = tuple(o for o in self.offers if covers(o.promotion, plan.id, cycle))
        # Amounts carry the currency's minor units (`14990.00`), so JSON readers see one exact form.
        list_amount = currency.round(price.amount)
        amount, applied = best_price(list_amount, currency, offers)
        views = tuple(self.offer_view(o) for o in applied)
        strike = (
            bool(applied)
            and self.page.display.strikethrough
            and all(o.promotion.strikethrough for o in applied)
        )
        months = self.months(cycle)
        known = self.catalog.cycles.get(cycle)
        period = cycle_period(known) if known else cycle
        billed_note = None
        shown, shown_list = amount, list_amount
        if self.page.display.per_month_for_longer_cycles and months > 1:
            # Per-month equivalents are rounded for display only; the note states what is charged.
            billed_note = f"billed {self.money(amount, price.currency)} per {period}"
            shown, shown_list = currency.round(amount / months), currency.round(list_amount / months)
            period = "month"
        return PriceView(
            cycle=cycle,
            period=period,
            currency=price.currency,
            list_amount=list_amount,
            amount=amount,
            list_text=self.money(shown_list, price.currency),
            text=self.money(shown, price.currency),
            strikethrough=strike,
            offers=views,
            savings=self.savings(plan, cycle, price),
            billed_note=billed_note,
        )

    # -- cards ------------------------------------------------------------------------------------
    def icon(self, name: str | None, what: str) -> str:
        resolved, known = resolve_icon(name)
        if not known:
            self.warnings.append(f"{self.where}: unknown icon {name!r} on {what}; drawn as a dot")
        return resolved

    def highlight(self, plan: Plan, item: Highlight, index: int, card_index: int) -> HighlightView | None:
        what = f"cards[{card_index}].highlights[{index}]"
        if item.feature is None:
            return HighlightView(
                item.text or "", True, self.icon(item.icon or "check", what), item.description
            )
        feature = self.catalog.features.get(item.feature)
        if feature is None:
            self.warnings.append(f"{self.where}: {what} names unknown feature {item.feature!r}; skipped")
            return None
        value = plan.features.get(feature.id, feature.off_value())
        described = highlight_text(feature, value, self.locale)
        icon = self.icon(item.icon or feature.icon or "check", f"{what} ({feature.id})")
        return HighlightView(
            item.text or described.text, described.included, icon, item.description, feature.id
        )

    def cta(self, card: Card, plan: Plan, cycles: tuple[str, ...]) -> CtaView | None:
        spec: Cta | None = card.cta or self.page.default_cta
        if spec is None:
            return None
        hrefs: dict[str, str] = {}
        for cycle in cycles:
            href = self.href(spec, plan, cycle)
            if href is not None:
                hrefs[cycle] = href
        if not hrefs:
            self.warnings.append(f"{self.where}: the {plan.id!r} button has no usable URL; it is not shown")
            return None
        background = checked_color(spec.color, checked_color(self.page.theme.accent, "#4f46e5"))
        foreground = checked_color(spec.text_color, WHITE)
        ratio = contrast_ratio(foreground, background)
        if ratio < MIN_CONTRAST:
            self.warnings.append(
                f"{self.where}: the {plan.id!r} button text {foreground} on {background} has contrast "
                f"{ratio:.2f}:1, below {MIN_CONTRAST}:1"
            )
        return CtaView(spec.text, spec.action, background, foreground, hrefs)

    def href(self, spec: Cta, plan: Plan, cycle: str) -> str | None:
        if spec.action == "checkout":
            template = self.page.checkout_url
            if template is None:
                return None
            price = self.list_price(plan, cycle)
            values = {
                "plan": plan.id,
                "cycle": cycle,
                "region": self.region.code,
                "currency": price.currency if price else self.region.currency,
                # Public promotions apply at checkout without a code; the slot is for pages that add one.
                "code": "",
            }
            # Only the five placeholders are filled (not str.format, which would read attributes).
            url = CHECKOUT_PLACEHOLDER.sub(lambda m: quote(values[m.group(1)], safe=""), template)
        elif spec.action == "contact_sales":
            url = self.page.contact_url or ""
        else:
            url = spec.url or ""
        return url if SAFE_HREF.match(url) else None

    def card(self, card: Card, index: int) -> CardView | None:
        plan = self.catalog.plans.get(card.plan)
        if plan is None:
            self.warnings.append(f"{self.where}: cards[{index}] shows unknown plan {card.plan!r}; skipped")
            return None
        cycles = self.cycles
        prices = {c: price for c in cycles if (price := self.price_view(plan, c)) is not None}
        trial_days = plan.trial_days + extra_trial_days(self.offers, plan.id)
        for offer in self.offers:
            if offer.promotion.discount.kind == "extra_trial_days" and covers(offer.promotion, plan.id, None):
                self.offer_view(offer)
        highlights = tuple(
            line
            for h_index, item in enumerate(card.highlights)
            if (line := self.highlight(plan, item, h_index, index)) is not None
        )
        return CardView(
            plan=plan.id,
            name=plan.name,
            tagline=card.tagline,
            description_html=render_markdown(card.description),
            badge=card.badge,
            recommended=card.recommended,
            callout_html=render_markdown(card.callout),
            trial_days=trial_days,
            trial_note=f"{trial_days}-day free trial" if trial_days else None,
            prices=prices,
            highlights=highlights,
            cta=self.cta(card, plan, tuple(prices) or cycles),
        )

    # -- comparison -------------------------------------------------------------------------------
    def matrix(self, cards: tuple[CardView, ...]) -> tuple[MatrixGroup, ...]:
        groups = []
        for group in self.page.comparison:
            rows = []
            for feature_id in group.features:
                feature: Feature | None = self.catalog.features.get(feature_id)
                if feature is None:
                    self.warnings.append(f"{self.where}: comparison names unknown feature {feature_id!r}")
                    continue
                cells = []
                for card in cards:
                    value = self.catalog.plans[card.plan].features.get(feature_id, feature.off_value())
                    described = matrix_text(feature, value, self.locale)
                    cells.append(MatrixCell(card.plan, described.text, described.included, json_value(value)))
                rows.append(
                    MatrixRow(
                        feature_id,
                        feature.label,
                        feature.description,
                        self.icon(feature.icon, f"feature {feature_id}"),
                        tuple(cells),
                    )
                )
            groups.append(MatrixGroup(group.title, tuple(rows)))
        return tuple(groups)

    def cycle_options(self, cards: tuple[CardView, ...]) -> tuple[CycleOption, ...]:
        options = []
        for cycle in self.cycles:
            known = self.catalog.cycles.get(cycle) or BillingCycle(cycle, 1, "month")
            hints = {card.prices[cycle].savings for card in cards if cycle in card.prices}
            hints.discard(None)
            hint = hints.pop() if len(hints) == 1 else None
            options.append(CycleOption(cycle, cycle_label(known), cycle_period(known), hint))
        return tuple(options)

    def build(self) -> PageModel:
        page = self.page
        cards = tuple(
            view for index, card in enumerate(page.cards) if (view := self.card(card, index)) is not None
        )
        comparison = self.matrix(cards)
        palette = Palette.from_theme(page.theme, self.warnings, self.where)
        project = self.catalog.name or self.catalog.project
        return PageModel(
            page_id=page.id,
            region=self.region.code,
            region_name=self.region.name or self.region.code,
            locale=self.locale,
            currency=self.region.currency,
            at=self.at,
            title=page.title or f"{project} pricing",
            headline=page.headline,
            intro_html=render_markdown(page.intro),
            palette=palette,
            cycles=self.cycle_options(cards),
            default_cycle=self.default_cycle,
            cards=cards,
            offers=tuple(self.shown_offers.values()),
            comparison_title=page.comparison_title,
            comparison=comparison,
            faq=tuple(FaqView(f.question, render_markdown(f.answer)) for f in page.faq),
            footer_html=render_markdown(page.footer),
            warnings=tuple(dict.fromkeys(self.warnings)),
        )


def aware(at: datetime) -> datetime:
    """`at` with a time zone: a naive moment is read as UTC."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def build_page_model(
    catalog: Catalog, page_id: str, region: str, locale: str | None, at: datetime
) -> PageModel:
    """The model of page `page_id` as a visitor in `region` sees it at `at`.

    `locale` None uses the region's locale (else en_US). Raises KeyError for an unknown page or region
    and ValueError for an unknown locale.
    """
    page = catalog.pages[page_id]
    region_spec = catalog.regions[region]
    chosen = locale or region_spec.locale or DEFAULT_LOCALE
    locale_for(chosen)  # fail early, with a clear message, on an unknown locale
    return _Builder(catalog, page, region_spec, chosen, aware(at)).build()
