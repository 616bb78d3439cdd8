"""The view-model of a pricing page: plain frozen dataclasses, and the same content as JSON types.

Everything here is already resolved (formatted prices, sanitised HTML, icon names), so templates only lay
it out and apps that draw their own page read `PageModel.to_json()`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from markupsafe import Markup

from publishers.site.palette import Palette

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class CycleOption:
    id: str
    label: str
    period: str
    savings_hint: str | None  # shown on the toggle when every card saves the same


@dataclass(frozen=True, slots=True)
class OfferView:
    id: str
    name: str
    badge: str
    ends: datetime | None
    ends_text: str | None  # `Until 5 November 2026`, when the promotion shows its end date


@dataclass(frozen=True, slots=True)
class PriceView:
    cycle: str
    period: str  # what the shown amount pays for: `month`, `year`
    currency: str
    list_amount: Decimal
    amount: Decimal  # what the customer pays for the cycle after public promotions
    list_text: str
    text: str
    strikethrough: bool
    offers: tuple[OfferView, ...]
    savings: str | None  # `2 months free` / `save 17%` against paying monthly
    billed_note: str | None  # with per-month display of a longer cycle: `billed ₹14,990 per year`

    @property
    def discounted(self) -> bool:
        return self.amount < self.list_amount

    @property
    def list_amount_text(self) -> str:
        return format(self.list_amount, "f")

    @property
    def amount_text(self) -> str:
        return format(self.amount, "f")


@dataclass(frozen=True, slots=True)
class HighlightView:
    text: str
    included: bool
    icon: str
    description: str | None = None
    feature: str | None = None


@dataclass(frozen=True, slots=True)
class CtaView:
    text: str
    action: str
    background: str
    foreground: str
    hrefs: Mapping[str, str]  # per cycle: a checkout URL names the cycle


@dataclass(frozen=True, slots=True)
class CardView:
    plan: str
    name: str
    tagline: str | None
    description_html: Markup
    badge: str | None
    recommended: bool
    callout_html: Markup
    trial_days: int
    trial_note: str | None
    prices: Mapping[str, PriceView]  # by cycle; a cycle the plan is not sold in is absent
    highlights: tuple[HighlightView, ...]
    cta: CtaView | None


@dataclass(frozen=True, slots=True)
class MatrixCell:
    plan: str
    text: str
    included: bool
    value: bool | int | str | list[str]


@dataclass(frozen=True, slots=True)
class MatrixRow:
    feature: str
    label: str
    description: str | None
    icon: str
    cells: tuple[MatrixCell, ...]


@dataclass(frozen=True, slots=True)
class MatrixGroup:
    title: str
    rows: tuple[MatrixRow, ...]


@dataclass(frozen=True, slots=True)
class FaqView:
    question: str
    answer_html: Markup


@dataclass(frozen=True, slots=True)
class PageModel:
    page_id: str
    region: str
    region_name: str
    locale: str
    currency: str
    at: datetime
    title: str
    headline: str
    intro_html: Markup
    palette: Palette
    cycles: tuple[CycleOption, ...]
    default_cycle: str
    cards: tuple[CardView, ...]
    offers: tuple[OfferView, ...]  # public promotions that change a price or a trial on this page
    comparison_title: str | None
    comparison: tuple[MatrixGroup, ...]
    faq: tuple[FaqView, ...]
    footer_html: Markup
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The page as plain JSON types: amounts as decimal strings, HTML already sanitised."""
        return {
            "format_version": FORMAT_VERSION,
            "page": self.page_id,
            "region": self.region,
            "region_name": self.region_name,
            "locale": self.locale,
            "currency": self.currency,
            "as_of": self.at.isoformat(),
            "title": self.title,
            "headline": self.headline,
            "intro_html": str(self.intro_html),
            "theme": {
                "background": self.palette.background,
                "text": self.palette.text,
                "accent": self.palette.accent,
            },
            "cycles": [
                {"id": c.id, "label": c.label, "period": c.period, "savings_hint": c.savings_hint}
                for c in self.cycles
            ],
            "default_cycle": self.default_cycle,
            "cards": [_card_json(card) for card in self.cards],
            "promotions": [_offer_json(offer) for offer in self.offers],
            "comparison": {
                "title": self.comparison_title,
                "plans": [card.plan for card in self.cards],
                "groups": [
                    {
                        "title": group.title,
                        "rows": [
                            {
                                "feature": row.feature,
                                "label": row.label,
                                "description": row.description,
                                "cells": [
                                    {"plan": c.plan, "text": c.text, "included": c.included, "value": c.value}
                                    for c in row.cells
                                ],
                            }
                            for row in group.rows
                        ],
                    }
                    for group in self.comparison
                ],
            },
            "faq": [{"question": f.question, "answer_html": str(f.answer_html)} for f in self.faq],
            "footer_html": str(self.footer_html),
        }


def _offer_json(offer: OfferView) -> dict[str, Any]:
    return {
        "id": offer.id,
        "name": offer.name,
        "badge": offer.badge,
        "ends": offer.ends.isoformat() if offer.ends else None,
        "ends_text": offer.ends_text,
    }


def _card_json(card: CardView) -> dict[str, Any]:
    return {
        "plan": card.plan,
        "name": card.name,
        "tagline": card.tagline,
        "description_html": str(card.description_html),
        "badge": card.badge,
        "recommended": card.recommended,
        "callout_html": str(card.callout_html),
        "trial_days": card.trial_days,
        "trial_note": card.trial_note,
        "prices": {
            cycle: {
                "currency": p.currency,
                "list_amount": p.list_amount_text,
                "amount": p.amount_text,
                "list_text": p.list_text,
                "text": p.text,
                "period": p.period,
                "discounted": p.discounted,
                "strikethrough": p.strikethrough,
                "savings": p.savings,
                "billed_note": p.billed_note,
                "promotions": [o.id for o in p.offers],
            }
            for cycle, p in card.prices.items()
        },
        "highlights": [
            {
                "feature": h.feature,
                "text": h.text,
                "included": h.included,
                "icon": h.icon,
                "description": h.description,
            }
            for h in card.highlights
        ],
        "cta": (
            {
                "text": card.cta.text,
                "action": card.cta.action,
                "color": card.cta.background,
                "text_color": card.cta.foreground,
                "urls": dict(card.cta.hrefs),
            }
            if card.cta
            else None
        ),
    }
