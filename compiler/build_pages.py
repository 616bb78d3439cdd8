"""content/*.yaml (+ Markdown files) → Page, with checks against plans and features."""

from __future__ import annotations

from typing import Any

from compiler.catalog import (
    Card,
    ComparisonGroup,
    Cta,
    FaqEntry,
    Feature,
    Highlight,
    Page,
    PageDisplay,
    Plan,
    Theme,
)
from compiler.colors import contrast_ratio
from compiler.context import BuildContext
from compiler.yaml_loader import LoadedDocument, PathKey, YamlLoadError, decode_text, read_config_bytes


def _markdown(ctx: BuildContext, doc: LoadedDocument, path: PathKey, value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    name = value["file"]
    base = (ctx.root / doc.file).parent
    target = (base / name).resolve()
    if not target.is_relative_to(ctx.root.resolve()):
        ctx.error(
            doc,
            (*path, "file"),
            "content.markdown-file",
            f"{name!r} is outside the config directory",
            hint="keep Markdown files inside the config directory",
        )
        return None
    if not target.exists():
        ctx.error(
            doc,
            (*path, "file"),
            "content.markdown-file",
            f"Markdown file {name!r} does not exist",
            hint=f"create {target.relative_to(ctx.root.resolve())}, or write the text inline",
        )
        return None
    display = str(target.relative_to(ctx.root.resolve()))
    try:
        return decode_text(read_config_bytes(target, display), display)
    except YamlLoadError as exc:
        ctx.diagnostics.add(exc.diagnostic)
        return None


def _cta(spec: dict[str, Any] | None) -> Cta | None:
    if not spec:
        return None
    return Cta(spec["text"], spec["action"], spec.get("url"), spec.get("color"), spec.get("text_color"))


def build_page(ctx: BuildContext, doc: LoadedDocument) -> Page:
    data: dict[str, Any] = doc.data
    ctx.remember(f"page:{data['id']}", doc, ())
    cards = []
    for index, spec in enumerate(data["cards"]):
        path: PathKey = ("cards", index)
        highlights = tuple(
            Highlight(h.get("feature"), h.get("text"), h.get("description"), h.get("icon"))
            for h in spec.get("highlights") or ()
        )
        cards.append(
            Card(
                spec["plan"],
                spec.get("tagline"),
                _markdown(ctx, doc, (*path, "description"), spec.get("description")),
                spec.get("badge"),
                spec.get("recommended", False),
                _markdown(ctx, doc, (*path, "callout"), spec.get("callout")),
                highlights,
                _cta(spec.get("cta")),
            )
        )
    theme_spec = data.get("theme") or {}
    theme = Theme(
        theme_spec.get("background", "#ffffff"),
        theme_spec.get("text", "#111827"),
        theme_spec.get("accent", "#4f46e5"),
    )
    display_spec = data.get("display") or {}
    cycles = tuple(display_spec.get("cycles") or ("monthly", "annual"))
    display = PageDisplay(
        cycles,
        display_spec.get("default_cycle", cycles[0]),
        display_spec.get("savings", "percent"),
        display_spec.get("strikethrough", True),
        display_spec.get("decimals", "auto"),
        display_spec.get("per_month_for_longer_cycles", False),
    )
    comparison = data.get("comparison") or {}
    faq = tuple(
        FaqEntry(f["question"], _markdown(ctx, doc, ("faq", i, "answer"), f["answer"]) or "")
        for i, f in enumerate(data.get("faq") or ())
    )
    return Page(
        id=data["id"],
        headline=data["headline"],
        cards=tuple(cards),
        title=data.get("title"),
        intro=_markdown(ctx, doc, ("intro",), data.get("intro")),
        theme=theme,
        display=display,
        default_cta=_cta(data.get("default_cta")),
        checkout_url=data.get("checkout_url"),
        contact_url=data.get("contact_url"),
        comparison_title=comparison.get("title"),
        comparison=tuple(
            ComparisonGroup(g["title"], tuple(g["features"])) for g in comparison.get("groups") or ()
        ),
        faq=faq,
        footer=_markdown(ctx, doc, ("footer",), data.get("footer")),
        meta=dict(data.get("meta") or {}),
    )


def check_page(
    ctx: BuildContext,
    doc: LoadedDocument,
    page: Page,
    plans: dict[str, Plan],
    features: dict[str, Feature],
    cycles: set[str],
    min_ratio: float,
) -> None:
    seen: dict[str, int] = {}
    for index, card in enumerate(page.cards):
        path: PathKey = ("cards", index)
        plan = plans.get(card.plan)
        if plan is None:
            ctx.unknown(doc, (*path, "plan"), "plan", card.plan, plans, declared_in="plans/")
        elif plan.status != "active":
            ctx.policy(
                "content_references_retired_plan",
                f"page:{page.id}",
                doc,
                (*path, "plan"),
                f"card shows plan {card.plan!r}, which is {plan.status}",
                hint="remove the card, or make the plan active",
            )
        if card.plan in seen:
            ctx.error(
                doc,
                (*path, "plan"),
                "content.duplicate-card",
                f"plan {card.plan!r} already has a card (cards[{seen[card.plan]}])",
                hint="remove one",
            )
        seen.setdefault(card.plan, index)
        for h_index, highlight in enumerate(card.highlights):
            if highlight.feature is not None and highlight.feature not in features:
                ctx.unknown(
                    doc,
                    (*path, "highlights", h_index, "feature"),
                    "feature",
                    highlight.feature,
                    features,
                    declared_in="features.yaml",
                )
            elif highlight.feature is not None and features[highlight.feature].status == "retired":
                ctx.error(
                    doc,
                    (*path, "highlights", h_index, "feature"),
                    "content.retired-feature",
                    f"feature {highlight.feature!r} is retired",
                    hint="remove the highlight",
                )
        _check_cta(ctx, doc, (*path, "cta"), card.cta, page, min_ratio)
    _check_cta(ctx, doc, ("default_cta",), page.default_cta, page, min_ratio)
    if any(c.cta is None for c in page.cards) and page.default_cta is None:
        ctx.error(
            doc,
            ("cards",),
            "content.no-cta",
            "some cards have no `cta` and there is no `default_cta`",
            hint="add `default_cta:` or a `cta:` to every card",
        )
    for g_index, group in enumerate(page.comparison):
        for f_index, feature_id in enumerate(group.features):
            where: PathKey = ("comparison", "groups", g_index, "features", f_index)
            if feature_id not in features:
                ctx.unknown(doc, where, "feature", feature_id, features, declared_in="features.yaml")
            elif features[feature_id].status == "retired":
                ctx.error(
                    doc,
                    where,
                    "content.retired-feature",
                    f"feature {feature_id!r} is retired",
                    hint="remove the row",
                )
    for index, cycle in enumerate(page.display.cycles):
        if cycle not in cycles:
            ctx.unknown(
                doc,
                ("display", "cycles", index),
                "billing cycle",
                cycle,
                cycles,
                declared_in="tariff.yaml `billing_cycles`",
            )
    if page.display.default_cycle not in page.display.cycles:
        ctx.error(
            doc,
            ("display", "default_cycle"),
            "content.default-cycle",
            f"default_cycle {page.display.default_cycle!r} is not among the page's cycles",
            hint="use one of: " + ", ".join(page.display.cycles),
        )


def _check_cta(
    ctx: BuildContext, doc: LoadedDocument, path: PathKey, cta: Cta | None, page: Page, min_ratio: float
) -> None:
    if cta is None:
        return
    if cta.action == "link" and not cta.url:
        ctx.error(doc, path, "content.cta-url", "a `link` button needs a `url`", hint="add url: https://…")
    if cta.action == "checkout" and not page.checkout_url:
        ctx.error(
            doc,
            path,
            "content.cta-url",
            "a `checkout` button needs the page's `checkout_url` template",
            hint="add checkout_url: https://…/checkout?plan={plan}&cycle={cycle}",
        )
    if cta.action == "contact_sales" and not page.contact_url:
        ctx.error(
            doc,
            path,
            "content.cta-url",
            "a `contact_sales` button needs the page's `contact_url`",
            hint="add contact_url: mailto:sales@…",
        )
    background = cta.color or page.theme.accent
    foreground = cta.text_color or "#ffffff"
    ratio = contrast_ratio(foreground, background)
    if ratio < min_ratio:
        ctx.policy(
            "cta_contrast",
            f"page:{page.id}",
            doc,
            path,
            f"button text {foreground} on {background} has contrast {ratio:.2f}:1, below {min_ratio}:1",
            hint="darken the button colour or change `text_color` (WCAG AA needs 4.5:1)",
        )
