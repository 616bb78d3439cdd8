"""Generate the benchmark's config directory and bulk-load its subscriber base.

The config: `plans` plans × 20 regions (one currency each) × 3 cycles = 60 base prices per plan,
`promotions` promotions of four kinds (auto-applied percent off, vanity code, code batch with money off,
auto-applied bonus credits), a features file, a tokens file, one pricing page and the shipped example's
notification templates (a config with channels needs one per kind). It validates with no
errors and no warnings: auto-applied promotions on the same plan target disjoint regions, and code-batch
prefixes have a fixed width so none is a prefix of another.

Variants of the same config change prices: `tenth` raises 6 of each plan's 60 prices by about 10%
(10% of all prices, the hot price among them), `hot` raises only the hot price (plan 1, monthly, INR),
which ≥ 200,000 subscriptions pay.

Subscribers are loaded with a few INSERT … SELECT over generate_series: no per-row Python.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

Variant = Literal["base", "tenth", "hot"]

# region, currency, minor units, units per USD, countries, locale
REGIONS: tuple[tuple[str, str, int, int, tuple[str, ...], str], ...] = (
    ("IN", "INR", 2, 84, ("IN",), "en_IN"),
    ("US", "USD", 2, 1, ("US", "PR"), "en_US"),
    ("EU", "EUR", 2, 1, ("DE", "FR", "NL", "ES", "IT", "IE", "AT", "BE", "PT", "FI"), "de_DE"),
    ("GB", "GBP", 2, 1, ("GB",), "en_GB"),
    ("JP", "JPY", 0, 150, ("JP",), "ja_JP"),
    ("AU", "AUD", 2, 2, ("AU",), "en_AU"),
    ("CA", "CAD", 2, 1, ("CA",), "en_CA"),
    ("SG", "SGD", 2, 1, ("SG",), "en_SG"),
    ("AE", "AED", 2, 4, ("AE",), "en_AE"),
    ("CH", "CHF", 2, 1, ("CH", "LI"), "de_CH"),
    ("SE", "SEK", 2, 11, ("SE",), "sv_SE"),
    ("NO", "NOK", 2, 11, ("NO",), "nb_NO"),
    ("DK", "DKK", 2, 7, ("DK",), "da_DK"),
    ("PL", "PLN", 2, 4, ("PL",), "pl_PL"),
    ("BR", "BRL", 2, 5, ("BR",), "pt_BR"),
    ("MX", "MXN", 2, 17, ("MX",), "es_MX"),
    ("ZA", "ZAR", 2, 18, ("ZA",), "en_ZA"),
    ("KR", "KRW", 0, 1350, ("KR",), "ko_KR"),
    ("ID", "IDR", 2, 15700, ("ID",), "id_ID"),
    ("TH", "THB", 2, 36, ("TH",), "th_TH"),
)
CYCLES: tuple[tuple[str, int], ...] = (("monthly", 1), ("quarterly", 3), ("annual", 10))
HOT_PLAN, HOT_CYCLE, HOT_CURRENCY = 1, "monthly", "INR"
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"
# The shipped example's notification templates: a config with channels must have one for every kind.
TEMPLATES = Path(__file__).resolve().parent.parent / "pricing" / "content" / "notifications"
SCHEMA_HEADER = "# yaml-language-server: $schema=../../schemas/{kind}.schema.json\n"

FEATURES: dict[str, dict[str, Any]] = {
    "strategies_per_month": {"label": "Strategies", "type": "number", "unit": "strategies / month"},
    "templates_access": {"label": "Templates", "type": "enum", "values": ["basic", "premium", "all"]},
    "ai_generations": {"label": "AI credits", "type": "number", "unlimited_allowed": False},
    "ai_chat": {"label": "AI chat assistant", "type": "boolean", "icon": "message-circle"},
    "script_storage": {"label": "Saved scripts", "type": "number", "unit": "scripts"},
    "export_formats": {"label": "Export formats", "type": "set", "values": ["pine", "json", "pdf", "csv"]},
    "support_level": {"label": "Support", "type": "enum", "values": ["community", "email", "priority"]},
    "custom_signatures": {"label": "Custom signatures", "type": "boolean"},
    "api_access": {"label": "API access", "type": "boolean", "icon": "code"},
    "white_label": {"label": "White label", "type": "boolean"},
    "team_collaboration": {"label": "Team collaboration", "type": "boolean", "icon": "users"},
    "advanced_indicators": {"label": "Advanced indicators", "type": "boolean"},
    "backtesting": {"label": "Backtesting", "type": "boolean"},
}


@dataclass(frozen=True, slots=True)
class Sizes:
    plans: int
    promotions: int
    subscriptions: int
    hot: int  # subscriptions on the hot price (all active, so all are grandfathered by the change)

    @property
    def prices(self) -> int:
        return self.plans * len(REGIONS) * len(CYCLES)


FULL = Sizes(plans=500, promotions=2000, subscriptions=1_000_000, hot=210_000)
QUICK = Sizes(plans=50, promotions=200, subscriptions=100_000, hot=20_000)


def plan_id(index: int) -> str:
    return f"plan-{index:04d}"


def _dump(data: dict[str, Any]) -> str:
    return yaml.dump(data, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True, width=110)


def _write(path: Path, kind: str, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SCHEMA_HEADER.format(kind=kind) + _dump(data), encoding="utf-8")


# --------------------------------------------------------------------------------------------- prices


def base_amount(plan: int, cycle_multiplier: int, region_index: int) -> int:
    """A whole amount in the region's currency (whole numbers fit every currency's minor units)."""
    usd = 5 + (plan * 37) % 195
    return max(5, usd * REGIONS[region_index][3] * cycle_multiplier)


def changed_currencies(plan: int, variant: Variant) -> set[int]:
    """Indexes into REGIONS whose prices (all cycles) the variant raises for `plan`."""
    if variant == "tenth":
        return {(plan - 1) % len(REGIONS), (plan + 9) % len(REGIONS)}
    return set()


def raise_amount(amount: int) -> int:
    return amount + max(1, amount // 10)  # +10% (at most +20% for the smallest amounts): under the policy


def plan_prices(plan: int, variant: Variant) -> dict[str, dict[str, int]]:
    bumped = changed_currencies(plan, variant)
    prices: dict[str, dict[str, int]] = {}
    for cycle, multiplier in CYCLES:
        block: dict[str, int] = {}
        for index, (_region, currency, *_rest) in enumerate(REGIONS):
            amount = base_amount(plan, multiplier, index)
            hot = variant == "hot" and (plan, cycle, currency) == (HOT_PLAN, HOT_CYCLE, HOT_CURRENCY)
            block[currency] = raise_amount(amount) if index in bumped or hot else amount
        prices[cycle] = block
    return prices


# --------------------------------------------------------------------------------------------- config


def _settings() -> dict[str, Any]:
    return {
        "project": "benchmark",
        "name": "Benchmark Co",
        "timezone": "UTC",
        "currencies": {
            currency: {"minor_units": minor, "rounding": "half_up", "usd_rate": rate}
            for _region, currency, minor, rate, _countries, _locale in REGIONS
        },
        "billing_cycles": {"quarterly": {"every": 3, "unit": "month", "label": "per quarter"}},
        "regions": {
            region: {
                "name": f"Region {region}",
                "currency": currency,
                "countries": list(countries),
                "locale": locale,
            }
            for region, currency, _minor, _rate, countries, locale in REGIONS
        },
        "default_region": "US",
        "environments": {"production": {"database_url_env": "BENCH_DATABASE_URL", "protected": True}},
        "policies": {
            "max_discount_percent": {"limit": 60, "severity": "error"},
            "max_price_increase_percent": {"limit": 25, "severity": "error"},
            "promotion_without_end": {"severity": "warning"},
            "region_without_price": {"severity": "error"},
            "content_references_retired_plan": {"severity": "error"},
        },
        "notifications": {
            "admins": ["admin@example.com"],
            "channels": {
                "email": {
                    "type": "smtp",
                    "host": "smtp.example.com",
                    "port": 587,
                    "starttls": True,
                    "username": "tariff",
                    "password_env": "BENCH_SMTP_PASSWORD",
                    "from": "Billing <billing@example.com>",
                }
            },
        },
    }


def _plan(index: int, variant: Variant) -> dict[str, Any]:
    tier = index % 3
    return {
        "id": plan_id(index),
        "name": f"Plan {index}",
        "description": f"Generated plan number {index} for the benchmark.",
        "status": "active",
        "trial_days": (0, 14, 30)[tier],
        "features": {
            "strategies_per_month": (1, 50, "unlimited")[tier],
            "templates_access": ("basic", "premium", "all")[tier],
            "ai_generations": (0, 500, 1000)[tier],
            "ai_chat": tier > 0,
            "script_storage": (1, 50, "unlimited")[tier],
            "export_formats": (["pine"], ["pine", "json", "pdf"], ["pine", "json", "pdf", "csv"])[tier],
            "support_level": ("community", "email", "priority")[tier],
            "custom_signatures": tier > 0,
            "api_access": tier > 1,
            "white_label": tier > 1,
            "team_collaboration": tier > 1,
            "advanced_indicators": tier > 0,
            "backtesting": tier > 0,
        },
        "tokens": {
            "allowance": {"amount": 100 * (tier + 1), "every": "month"},
            "limits": {"per_request": 50, "daily": 300, "monthly": 2500},
            "throttle": {"requests_per_minute": 20, "tokens_per_minute": 200},
        },
        "prices": plan_prices(index, variant),
        "grandfathering": {
            "on_increase": {"policy": "keep_for", "duration": "12 months", "notify_days_before": 30},
            "on_decrease": {"policy": "migrate_at_renewal"},
        },
    }


def _promotion(index: int, sizes: Sizes) -> dict[str, Any]:
    """Four kinds in turn; auto-applied ones on the same plan get different regions (no overlap)."""
    target = plan_id((index - 1) % sizes.plans + 1)
    region = REGIONS[((index - 1) // sizes.plans) % len(REGIONS)][0]
    kind = index % 4
    promo: dict[str, Any] = {
        "id": f"promo-{index:05d}",
        "name": f"Promotion {index}",
        "description": f"Generated promotion number {index}.",
        "status": "active",
        "applies_to": {"plans": [target], "cycles": ["monthly", "annual"]},
        "limits": {"max_redemptions": 1000 + index, "per_customer": 1},
        "schedule": {"starts": "2026-01-01T00:00:00+00:00", "ends": "2027-01-01T00:00:00+00:00"},
        "duration": "once",
        "stacking": {"mode": "exclusive"},
        "display": {"badge": f"Offer {index}", "strikethrough": True, "show_end_date": True},
    }
    if kind == 0:
        promo["discount"] = {"percent_off": 5 + index % 40}
        promo["eligibility"] = {"customers": "new", "regions": [region]}
    elif kind == 1:
        promo["discount"] = {"percent_off": 5 + index % 40}
        promo["codes"] = {"vanity": f"CODE{index:05d}"}
    elif kind == 2:
        promo["discount"] = {"amount_off": {"USD": 1, "EUR": 1, "INR": 50}}
        promo["codes"] = {"generate": {"prefix": "B" + _code(index), "count": 100, "length": 10}}
        promo["duration"] = {"cycles": 3}
    else:
        promo["discount"] = {"bonus_tokens": 100 + index % 400}
        promo["eligibility"] = {"regions": [region]}
    return promo


def _code(index: int, width: int = 4) -> str:
    """`index` in fixed-width letters and digits customers cannot confuse (no 0/O, 1/I)."""
    digits = []
    for _ in range(width):
        index, digit = divmod(index, len(CODE_ALPHABET))
        digits.append(CODE_ALPHABET[digit])
    return "".join(reversed(digits))


def _tokens(sizes: Sizes) -> dict[str, Any]:
    some = [plan_id(i) for i in range(1, min(sizes.plans, 3) + 1)]
    package_prices = {currency: max(5, 19 * rate) for _r, currency, _m, rate, _c, _l in REGIONS}
    return {
        "packages": {
            "extra-500": {
                "name": "500 extra AI credits",
                "tokens": 500,
                "prices": package_prices,
                "validity_days": 30,
                "purchasable_by": some,
                "auto_renew": {"when": "exhausted", "max_per_month": 2},
            },
            "extra-2000": {
                "name": "2,000 extra AI credits",
                "tokens": 2000,
                "prices": {code: amount * 3 for code, amount in package_prices.items()},
                "validity_days": 90,
            },
        },
        "models": {
            "gpt-4o": {
                "provider": "openai",
                "label": "GPT-4o",
                "cost": {"currency": "USD", "per_1k_input": 0.005, "per_1k_output": 0.005},
                "credits": {"per_1k_input": 2, "per_1k_output": 2, "minimum": 1},
            },
            "claude-3-5-sonnet": {
                "provider": "anthropic",
                "cost": {"currency": "USD", "per_1k_input": 0.003, "per_1k_output": 0.003},
                "credits": {"per_1k_input": 1.5, "per_1k_output": 1.5, "minimum": 1},
                "plans": some,
            },
        },
        "rules": {
            "timezone": "UTC",
            "low_balance_alerts": {"thresholds_percent": [20, 5], "channels": ["email"]},
            "rollover": {"max_tokens": 5000},
            "reservations": {"expire_after": "15 minutes"},
        },
        "pools": {
            "team": {
                "name": "Team pool",
                "plans": some[-1:],
                "max_members": 10,
                "member_limits": {"daily": 200, "monthly": 1000},
            }
        },
    }


def _page(sizes: Sizes) -> dict[str, Any]:
    shown = [plan_id(i) for i in range(1, min(sizes.plans, 3) + 1)]
    return {
        "id": "pricing",
        "title": "Pricing",
        "headline": "Plans for every trader",
        "intro": {"file": "intro.md"},
        "display": {"cycles": ["monthly", "quarterly", "annual"], "default_cycle": "monthly"},
        "cards": [
            {
                "plan": plan,
                "tagline": f"Tagline for {plan}",
                "highlights": [{"feature": "strategies_per_month"}, {"feature": "ai_generations"}],
                "cta": {"text": "Start", "action": "checkout"},
            }
            for plan in shown
        ],
        "checkout_url": "https://example.com/checkout?plan={plan}&cycle={cycle}&region={region}",
        "comparison": {
            "title": "Compare plans",
            "groups": [{"title": "Everything", "features": list(FEATURES)}],
        },
        "faq": [{"question": "Can I cancel?", "answer": "Yes, any time."}],
        "footer": "Prices exclude local taxes.",
    }


def write_config(root: Path, sizes: Sizes, variant: Variant = "base") -> Path:
    """Write the whole config directory under `root` and return it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tariff.yaml").write_text(
        "# yaml-language-server: $schema=../schemas/tariff.schema.json\n" + _dump(_settings()), "utf-8"
    )
    (root / "features.yaml").write_text(
        "# yaml-language-server: $schema=../schemas/features.schema.json\n" + _dump({"features": FEATURES}),
        "utf-8",
    )
    for index in range(1, sizes.plans + 1):
        _write(root / "plans" / f"{plan_id(index)}.yaml", "plan", _plan(index, variant))
    for index in range(1, sizes.promotions + 1):
        _write(root / "promotions" / f"promo-{index:05d}.yaml", "promotion", _promotion(index, sizes))
    _write(root / "tokens" / "credits.yaml", "tokens", _tokens(sizes))
    _write(root / "content" / "pricing.yaml", "content", _page(sizes))
    (root / "content" / "intro.md").write_text("Simple pricing, **no surprises**.\n", "utf-8")
    shutil.copytree(TEMPLATES, root / "content" / "notifications", dirs_exist_ok=True)
    return root


# ----------------------------------------------------------------------------------------- subscribers


def _statements(s: str, sizes: Sizes) -> Iterator[tuple[str, dict[str, Any]]]:
    # Current versions, numbered; the hot one gets number -1 and serves the first `hot` subscriptions.
    yield (
        "CREATE TEMP TABLE bench_versions ON COMMIT DROP AS "
        "SELECT CASE WHEN plan_id = :hot_plan AND cycle = :hot_cycle AND currency = :hot_currency "
        "AND region IS NULL THEN -1 ELSE row_number() OVER (PARTITION BY plan_id = :hot_plan "
        "AND cycle = :hot_cycle AND currency = :hot_currency AND region IS NULL ORDER BY id) - 1 END "
        "AS idx, id, plan_id, cycle, currency "
        f"FROM {s}.price_versions WHERE valid_to IS NULL",
        {"hot_plan": plan_id(HOT_PLAN), "hot_cycle": HOT_CYCLE, "hot_currency": HOT_CURRENCY},
    )
    yield "CREATE UNIQUE INDEX ON bench_versions (idx)", {}
    yield (
        "CREATE TEMP TABLE bench_regions ON COMMIT DROP AS "
        "SELECT DISTINCT ON (r.currency) r.currency, r.code AS region, c.country "
        f"FROM {s}.regions r JOIN {s}.region_countries c ON c.region_code = r.code "
        "ORDER BY r.currency, r.code, c.position",
        {},
    )
    # g ≤ hot: the hot version; the rest spread over every other version (7919 is prime: a good shuffle).
    yield (
        "CREATE TEMP TABLE bench_assign ON COMMIT DROP AS "
        "SELECT g, v.id AS version, v.plan_id, v.cycle, v.currency, r.region, r.country "
        "FROM generate_series(1, CAST(:total AS int)) AS g "
        "JOIN bench_versions v ON v.idx = CASE WHEN g <= :hot THEN -1 "
        "ELSE (g::bigint * 7919) % ((SELECT count(*) FROM bench_versions) - 1) END "
        "JOIN bench_regions r ON r.currency = v.currency",
        {"total": sizes.subscriptions, "hot": sizes.hot},
    )
    yield (
        f"INSERT INTO {s}.customers (id, email, region, country, segments, created_at, updated_at) "
        "SELECT 'cus_' || lpad(g::text, 8, '0'), 'user' || g || '@example.com', region, country, "
        "CASE WHEN g % 10 = 0 THEN ARRAY['students'] ELSE '{}' END, now(), now() FROM bench_assign",
        {},
    )
    yield (
        f"INSERT INTO {s}.subscriptions (id, customer_id, plan_id, cycle, currency, region, "
        "price_version_id, status, current_period_start, current_period_end, created_at, updated_at) "
        "SELECT 'sub_' || lpad(g::text, 8, '0'), 'cus_' || lpad(g::text, 8, '0'), plan_id, cycle, currency, "
        "region, version, "
        "CASE WHEN g <= :hot THEN 'active' WHEN g % 50 = 0 THEN 'canceled' WHEN g % 33 = 0 THEN 'past_due' "
        "WHEN g % 20 = 0 THEN 'trialing' ELSE 'active' END, "
        "date_trunc('day', now()) - make_interval(days => g % 28), "
        "date_trunc('day', now()) - make_interval(days => g % 28) + CASE cycle "
        "WHEN 'monthly' THEN interval '1 month' WHEN 'quarterly' THEN interval '3 months' "
        "ELSE interval '12 months' END, now(), now() "
        "FROM bench_assign",
        {"hot": sizes.hot},
    )


def load_subscribers(engine: Engine, schema: str, sizes: Sizes) -> None:
    """≥ `sizes.subscriptions` customers, one subscription each, in one transaction, set-based."""
    s = f'"{schema}"'
    with engine.begin() as conn:
        for sql, params in _statements(s, sizes):
            conn.execute(sa.text(sql), params)
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(sa.text(f"VACUUM ANALYZE {s}.customers"))
        conn.execute(sa.text(f"VACUUM ANALYZE {s}.subscriptions"))
        conn.execute(sa.text(f"ANALYZE {s}.price_versions"))
