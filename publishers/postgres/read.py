"""Live catalog tables → Catalog, the same type the compiler produces, so `plan` is one diff of two values."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compiler.canonical import fingerprint
from compiler.catalog import (
    PACKAGE_CYCLE,
    AIModel,
    Allowance,
    AppliesTo,
    Approval,
    AutoRenew,
    BillingCycle,
    BundleItem,
    Card,
    Catalog,
    CodeBatch,
    ComparisonGroup,
    Cta,
    Discount,
    Eligibility,
    FaqEntry,
    Feature,
    GrandfatherRule,
    Highlight,
    Mandate,
    Page,
    PageDisplay,
    PaymentRules,
    Plan,
    PlanPayU,
    PlanTokens,
    PoolTemplate,
    Price,
    Promotion,
    Region,
    Rollover,
    Schedule,
    Tax,
    Theme,
    Throttle,
    TokenLimits,
    TokenPackage,
    TokenRules,
)
from compiler.money import Currency
from compiler.timeutil import Duration
from database.connection import quote_schema


def _rows(conn: Connection, sql: str) -> Sequence[sa.RowMapping]:
    return conn.execute(sa.text(sql)).mappings().all()  # one fetchall: tens of thousands of price rows


def _duration(text: str | None) -> Duration | None:
    return Duration.parse(text) if text else None


def _approval(data: dict[str, Any] | None) -> Approval | None:
    if not data:
        return None
    limit = data.get("up_to_percent")
    return Approval(data["approved_by"], data["reason"], None if limit is None else Decimal(str(limit)))


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(value)


def read_catalog(conn: Connection, schema: str) -> Catalog | None:
    """The published catalog, or None when nothing was ever applied. Retired rows are read as retired."""
    s = quote_schema(schema)
    state = conn.execute(sa.text(f"SELECT * FROM {s}.catalog_state")).mappings().first()
    if state is None:
        return None
    currencies = {
        r["code"]: Currency(r["code"], r["minor_units"], r["rounding"], r["symbol"], _decimal(r["usd_rate"]))
        for r in _rows(conn, f"SELECT * FROM {s}.currencies WHERE retired_at IS NULL ORDER BY code")
    }
    cycles = {
        r["id"]: BillingCycle(r["id"], r["every"], r["unit"], r["label"])
        for r in _rows(conn, f"SELECT * FROM {s}.billing_cycles WHERE retired_at IS NULL ORDER BY id")
    }
    countries: dict[str, list[str]] = defaultdict(list)
    for r in _rows(conn, f"SELECT * FROM {s}.region_countries ORDER BY region_code, position"):
        countries[r["region_code"]].append(r["country"])
    regions = {
        r["code"]: Region(
            r["code"],
            r["currency"],
            tuple(countries[r["code"]]),
            r["name"],
            r["locale"],
            r["fallback_currency"],
            Tax(r["tax_name"], Decimal(r["tax_percent"]).normalize(), r["tax_inclusive"])
            if r["tax_name"]
            else None,
        )
        for r in _rows(conn, f"SELECT * FROM {s}.regions WHERE retired_at IS NULL ORDER BY code")
    }
    features = {
        r["id"]: Feature(
            r["id"],
            r["label"],
            r["type"],
            r["description"],
            r["unit"],
            r["unlimited_allowed"],
            tuple(r["allowed_values"]),
            dict(r["value_labels"]),
            r["icon"],
            r["status"],
        )
        for r in _rows(conn, f"SELECT * FROM {s}.features ORDER BY id")
    }
    catalog = Catalog(
        project=state["project"],
        currencies=currencies,
        cycles=cycles,
        regions=regions,
        default_region=state["default_region"],
        name=state["name"],
        timezone=state["timezone"],
        features=features,
        plans=_plans(conn, s, currencies),
        packages=_packages(conn, s, currencies),
        models=_models(conn, s),
        token_rules=_token_rules(conn, s),
        payment_rules=_payment_rules(conn, s),
        pools=_pools(conn, s),
        promotions=_promotions(conn, s, currencies),
        pages=_pages(conn, s),
    )
    return dataclasses.replace(catalog, fingerprint=fingerprint(catalog))


def _current_prices(
    conn: Connection,
    s: str,
    table: str,
    owner: str,
    currencies: dict[str, Currency],
    cycle_column: str | None,
) -> dict[str, list[Price]]:
    cycle = cycle_column or f"'{PACKAGE_CYCLE}'"
    prices: dict[str, list[Price]] = defaultdict(list)
    # Tens of thousands of rows in a large catalog, most amounts repeated: plain tuples, and each
    # currency × minor amount converted once (Decimals are immutable, so sharing one is safe).
    amounts: dict[tuple[str, int], Decimal] = {}
    rows = conn.execute(
        sa.text(
            f"SELECT {owner} AS owner, {cycle} AS cycle, currency, region, amount_minor "
            f"FROM {s}.{table} WHERE valid_to IS NULL ORDER BY id"
        )
    ).all()
    for owner_id, cycle_id, code, region, minor in rows:
        amount = amounts.get((code, minor))
        if amount is None:
            currency = currencies.get(code) or Currency(code)
            amount = amounts[(code, minor)] = currency.from_minor(minor)
        prices[owner_id].append(Price(cycle_id, code, amount, region))
    return prices


def _plans(conn: Connection, s: str, currencies: dict[str, Currency]) -> dict[str, Plan]:
    prices = _current_prices(conn, s, "price_versions", "plan_id", currencies, "cycle")
    values: dict[str, dict[str, Any]] = defaultdict(dict)
    for r in _rows(conn, f"SELECT * FROM {s}.plan_features ORDER BY plan_id, feature_id"):
        value = r["value"]
        values[r["plan_id"]][r["feature_id"]] = tuple(value) if isinstance(value, list) else value
    plans = {}
    for r in _rows(conn, f"SELECT * FROM {s}.plans ORDER BY id"):
        allowance = (
            Allowance(r["allowance_amount"], r["allowance_every"], _duration(r["allowance_expires_after"]))
            if r["allowance_amount"] is not None
            else None
        )
        rollover = (
            Rollover(
                _decimal(r["rollover_max_percent"]),
                r["rollover_max_tokens"],
                _duration(r["rollover_expires_after"]),
            )
            if r["rollover"]
            else None
        )
        tokens = PlanTokens(
            allowance,
            rollover,
            TokenLimits(r["limit_per_request"], r["limit_daily"], r["limit_monthly"]),
            Throttle(r["throttle_requests_per_minute"], r["throttle_tokens_per_minute"]),
        )
        payu = None
        if r["payu"] is not None:
            mandate_data = r["payu"].get("mandate")
            mandate = (
                Mandate(
                    mandate_data.get("billing_rule", "MAX"),
                    {k: Decimal(str(v)) for k, v in (mandate_data.get("max_amount") or {}).items()},
                )
                if mandate_data is not None
                else None
            )
            payu = PlanPayU(r["payu"].get("productinfo"), mandate)
        plans[r["id"]] = Plan(
            id=r["id"],
            name=r["name"],
            status=r["status"],
            description=r["description"],
            trial_days=r["trial_days"],
            features=values[r["id"]],
            tokens=tokens,
            prices=tuple(prices[r["id"]]),
            on_increase=GrandfatherRule(
                r["on_increase_policy"], _duration(r["on_increase_duration"]), r["on_increase_notify_days"]
            ),
            on_decrease=GrandfatherRule(
                r["on_decrease_policy"], _duration(r["on_decrease_duration"]), r["on_decrease_notify_days"]
            ),
            approval=_approval(r["approval"]),
            payu=payu,
            meta=dict(r["meta"]),
        )
    return plans


def _packages(conn: Connection, s: str, currencies: dict[str, Currency]) -> dict[str, TokenPackage]:
    prices = _current_prices(conn, s, "package_price_versions", "package_id", currencies, None)
    return {
        r["id"]: TokenPackage(
            id=r["id"],
            name=r["name"],
            tokens=r["tokens"],
            prices=tuple(prices[r["id"]]),
            status=r["status"],
            description=r["description"],
            validity_days=r["validity_days"],
            purchasable_by=tuple(r["purchasable_by"]) if r["purchasable_by"] is not None else None,
            priority=r["priority"],
            auto_renew=AutoRenew(r["auto_renew_when"], r["auto_renew_max_per_month"])
            if r["auto_renew_when"]
            else None,
            approval=_approval(r["approval"]),
            meta=dict(r["meta"]),
        )
        for r in _rows(conn, f"SELECT * FROM {s}.token_packages ORDER BY id")
    }


def _models(conn: Connection, s: str) -> dict[str, AIModel]:
    return {
        r["id"]: AIModel(
            id=r["id"],
            provider=r["provider"],
            cost_currency=r["cost_currency"],
            cost_per_1k_input=r["cost_per_1k_input"],
            cost_per_1k_output=r["cost_per_1k_output"],
            credits_per_1k_input=r["credits_per_1k_input"],
            credits_per_1k_output=r["credits_per_1k_output"],
            credits_minimum=r["credits_minimum"],
            label=r["label"],
            status=r["status"],
            plans=tuple(r["plans"]) if r["plans"] is not None else None,
        )
        for r in _rows(conn, f"SELECT * FROM {s}.ai_models ORDER BY id")
    }


def _token_rules(conn: Connection, s: str) -> TokenRules:
    r = conn.execute(sa.text(f"SELECT * FROM {s}.token_rules")).mappings().first()
    if r is None:
        return TokenRules()
    return TokenRules(
        timezone=r["timezone"],
        low_balance_thresholds=tuple(Decimal(t) for t in r["low_balance_thresholds"]),
        low_balance_channels=tuple(r["low_balance_channels"]),
        rollover_max_tokens=r["rollover_max_tokens"],
        boost_max_tokens=r["boost_max_tokens"],
        boost_max_duration=_duration(r["boost_max_duration"]),
        boost_max_per_month=r["boost_max_per_month"],
        admin_default_tokens=r["admin_default_tokens"],
        admin_max_tokens=r["admin_max_tokens"],
        admin_default_expiry=_duration(r["admin_default_expiry"]),
        reservation_expiry=Duration.parse(r["reservation_expiry"]),
        admission_commit=r["admission_commit"],
    )


def _plain_decimal(value: Decimal) -> Decimal:
    """numeric(7, 4) read back as written in YAML: 25.0000 → 25, 12.5000 → 12.5."""
    return value.to_integral_value() if value == value.to_integral_value() else value.normalize()


def _payment_rules(conn: Connection, s: str) -> PaymentRules:
    r = conn.execute(sa.text(f"SELECT * FROM {s}.payment_rules")).mappings().first()
    if r is None:
        return PaymentRules()
    return PaymentRules(
        currencies=tuple(r["currencies"]),
        revoke_tokens_on_refund=r["revoke_tokens_on_refund"],
        invoice_prefix=r["invoice_prefix"],
        dunning_retries=tuple(Duration.parse(d) for d in r["dunning_retries"]),
        dunning_grace=Duration.parse(r["dunning_grace"]),
        dunning_channel=r["dunning_channel"],
        dunning_status=r["dunning_status"],
        dunning_downgrade_to=r["dunning_downgrade_to"],
        dunning_suspend_tokens=r["dunning_suspend_tokens"],
        mandate_headroom_percent=_plain_decimal(Decimal(r["mandate_headroom_percent"])),
        mandate_valid_for=Duration.parse(r["mandate_valid_for"]),
        pre_debit_notice=Duration.parse(r["pre_debit_notice"]),
    )


def _pools(conn: Connection, s: str) -> dict[str, PoolTemplate]:
    return {
        r["id"]: PoolTemplate(
            r["id"], r["name"], tuple(r["plans"]), r["max_members"], r["member_daily"], r["member_monthly"]
        )
        for r in _rows(conn, f"SELECT * FROM {s}.pool_templates WHERE retired_at IS NULL ORDER BY id")
    }


def _promotions(conn: Connection, s: str, currencies: dict[str, Currency]) -> dict[str, Promotion]:
    amounts: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for r in _rows(conn, f"SELECT * FROM {s}.promotion_amounts ORDER BY promotion_id, currency"):
        currency = currencies.get(r["currency"]) or Currency(r["currency"])
        amounts[r["promotion_id"]][r["currency"]] = currency.from_minor(r["amount_minor"])
    customers: dict[str, list[str]] = defaultdict(list)
    for r in _rows(conn, f"SELECT * FROM {s}.promotion_customers ORDER BY promotion_id, customer_id"):
        customers[r["promotion_id"]].append(r["customer_id"])
    promotions = {}
    for r in _rows(conn, f"SELECT * FROM {s}.promotions ORDER BY id"):
        kind = r["kind"]
        discount = Discount(
            kind,
            percent=_decimal(r["percent_off"]),
            amounts=amounts[r["id"]] if kind in ("amount_off", "fixed_price") else {},
            days=r["extra_trial_days"],
            tokens=r["bonus_tokens"],
        )
        applies = r["applies_to"]
        eligibility = r["eligibility"]
        promotions[r["id"]] = Promotion(
            id=r["id"],
            name=r["name"],
            discount=discount,
            status=r["status"],
            description=r["description"],
            applies_to=AppliesTo(
                tuple(applies.get("plans", ())),
                tuple(applies.get("cycles", ())),
                tuple(applies.get("packages", ())),
                tuple(
                    BundleItem(i.get("plan"), i.get("cycle"), i.get("package"), i.get("quantity", 1))
                    for i in applies.get("bundle", ())
                ),
            ),
            eligibility=Eligibility(
                eligibility.get("customers", "any"),
                tuple(eligibility.get("regions", ())),
                tuple(eligibility.get("plans_held", ())),
                tuple(eligibility.get("segments", ())),
                eligibility.get("customers_file"),
                tuple(customers[r["id"]]),
            ),
            max_redemptions=r["max_redemptions"],
            per_customer=r["per_customer"],
            schedule=Schedule(r["starts_at"], r["ends_at"], r["schedule_timezone"], r["yearly"]),
            duration=r["duration"],
            stackable=r["stackable"],
            priority=r["priority"],
            vanity_code=r["vanity_code"],
            code_batch=CodeBatch(r["code_count"], r["code_length"], r["code_prefix"])
            if r["code_count"]
            else None,
            badge=r["badge"],
            strikethrough=r["strikethrough"],
            show_end_date=r["show_end_date"],
            approval=_approval(r["approval"]),
            meta=dict(r["meta"]),
        )
    return promotions


def _cta(data: dict[str, Any] | None) -> Cta | None:
    if data is None:
        return None
    return Cta(data["text"], data["action"], data.get("url"), data.get("color"), data.get("text_color"))


def page_from_content(content: dict[str, Any]) -> Page:
    """A Page from its stored JSON (the canonical plain form the publisher writes)."""
    display = content["display"]
    theme = content["theme"]
    return Page(
        id=content["id"],
        headline=content["headline"],
        cards=tuple(
            Card(
                c["plan"],
                c.get("tagline"),
                c.get("description"),
                c.get("badge"),
                c.get("recommended", False),
                c.get("callout"),
                tuple(
                    Highlight(h.get("feature"), h.get("text"), h.get("description"), h.get("icon"))
                    for h in c.get("highlights", ())
                ),
                _cta(c.get("cta")),
            )
            for c in content["cards"]
        ),
        title=content.get("title"),
        intro=content.get("intro"),
        theme=Theme(theme["background"], theme["text"], theme["accent"]),
        display=PageDisplay(
            tuple(display["cycles"]),
            display["default_cycle"],
            display["savings"],
            display["strikethrough"],
            display["decimals"],
            display["per_month_for_longer_cycles"],
        ),
        default_cta=_cta(content.get("default_cta")),
        checkout_url=content.get("checkout_url"),
        contact_url=content.get("contact_url"),
        comparison_title=content.get("comparison_title"),
        comparison=tuple(
            ComparisonGroup(g["title"], tuple(g["features"])) for g in content.get("comparison", ())
        ),
        faq=tuple(FaqEntry(f["question"], f["answer"]) for f in content.get("faq", ())),
        footer=content.get("footer"),
        meta=dict(content.get("meta") or {}),
    )


def _pages(conn: Connection, s: str) -> dict[str, Page]:
    return {
        r["id"]: page_from_content(r["content"])
        for r in _rows(conn, f"SELECT * FROM {s}.pages WHERE retired_at IS NULL ORDER BY id")
    }
