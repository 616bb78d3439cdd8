"""The compiled Catalog: one immutable, typed picture of everything the config sells and shows.

The compiler produces it from YAML and the Postgres publisher reads it back from the live
database, so `plan` is a diff between two values of this one type.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Literal

from compiler.money import Currency
from compiler.timeutil import Duration

Status = Literal["draft", "active", "retired"]
FeatureValue = bool | int | str | tuple[str, ...]
UNLIMITED = "unlimited"
BUILTIN_CYCLES = ("monthly", "annual")
PACKAGE_CYCLE = "once"  # token packages are one-off purchases: their prices carry this pseudo-cycle


@dataclass(frozen=True, slots=True)
class BillingCycle:
    id: str
    every: int
    unit: Literal["day", "month"]
    label: str | None = None

    @property
    def months(self) -> Decimal:
        """Length in months (days count as 1/30.4375 month), used to normalise MRR and savings."""
        if self.unit == "month":
            return Decimal(self.every)
        return (Decimal(self.every) / Decimal("30.4375")).quantize(Decimal("0.0001"))


@dataclass(frozen=True, slots=True)
class Tax:
    name: str
    percent: Decimal
    inclusive: bool = False


@dataclass(frozen=True, slots=True)
class Region:
    code: str
    currency: str
    countries: tuple[str, ...]
    name: str | None = None
    locale: str | None = None
    fallback_currency: str | None = None
    tax: Tax | None = None


@dataclass(frozen=True, slots=True)
class PayUSettings:
    mode: Literal["test", "production", "simulator"]
    key_env: str = "PAYU_KEY"
    salt_env: str = "PAYU_SALT"
    checkout_url: str | None = None
    api_url: str | None = None
    success_url: str | None = None
    failure_url: str | None = None
    webhook_url: str | None = None


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    database_url_env: str | None = None
    schema: str = "tariff"
    protected: bool = False
    payu: PayUSettings | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    severity: Literal["error", "warning", "off"]
    limit: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Suppression:
    policy: str
    target: str
    reason: str


@dataclass(frozen=True, slots=True)
class Channel:
    id: str
    type: Literal["smtp", "webhook"]
    settings: Mapping[str, str | int | bool]


@dataclass(frozen=True, slots=True)
class NotificationTemplate:
    """One kind's message: a Jinja subject line and a Markdown + Jinja body (`content/notifications/`)."""

    kind: str
    file: str
    subject: str
    body: str
    body_line: int  # line of the file the body starts on, so render errors point into the file


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard `tariff notify send` tries: attempts, exponential backoff with jitter, network timeout."""

    max_attempts: int = 8
    backoff_seconds: int = 60
    max_backoff_seconds: int = 21600
    timeout_seconds: int = 10


@dataclass(frozen=True, slots=True)
class Settings:
    """Project settings that steer Tariff but are not published as catalog rows."""

    environments: Mapping[str, Environment] = field(default_factory=dict)
    policies: Mapping[str, Policy] = field(default_factory=dict)
    suppressions: tuple[Suppression, ...] = ()
    admins: tuple[str, ...] = ()
    channels: Mapping[str, Channel] = field(default_factory=dict)
    # Notification kind → channel ids, as configured (kinds left out follow the defaults, see
    # compiler.notification_kinds.channels_for).
    routes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    delivery: DeliveryPolicy = DeliveryPolicy()
    templates: Mapping[str, NotificationTemplate] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Feature:
    id: str
    label: str
    type: Literal["boolean", "number", "enum", "set"]
    description: str | None = None
    unit: str | None = None
    unlimited_allowed: bool = True
    values: tuple[str, ...] = ()
    value_labels: Mapping[str, str] = field(default_factory=dict)
    icon: str | None = None
    status: Literal["active", "retired"] = "active"

    def off_value(self) -> FeatureValue:
        off: dict[str, FeatureValue] = {"boolean": False, "number": 0, "enum": "", "set": ()}
        return off[self.type]


@dataclass(frozen=True, slots=True)
class Price:
    """One sellable amount: plan or package × cycle × currency, optionally for one region only."""

    cycle: str
    currency: str
    amount: Decimal
    region: str | None = None

    @property
    def key(self) -> str:
        scope = f"@{self.region}" if self.region else ""
        return f"{self.cycle}/{self.currency}{scope}"


def pick_price(prices: tuple[Price, ...], cycle: str, currency: str, region: str | None) -> Price | None:
    """The price for `region`: its own override when there is one, else the currency's base price."""
    base = None
    for candidate in prices:
        if candidate.cycle != cycle or candidate.currency != currency:
            continue
        if region is not None and candidate.region == region:
            return candidate
        if candidate.region is None:
            base = candidate
    return base


@dataclass(frozen=True, slots=True)
class Allowance:
    amount: int
    every: Literal["cycle", "month", "once"] = "cycle"
    expires_after: Duration | None = None


@dataclass(frozen=True, slots=True)
class Rollover:
    max_percent: Decimal | None = None
    max_tokens: int | None = None
    expires_after: Duration | None = None


@dataclass(frozen=True, slots=True)
class TokenLimits:
    per_request: int | None = None
    daily: int | None = None
    monthly: int | None = None


@dataclass(frozen=True, slots=True)
class Throttle:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class PlanTokens:
    allowance: Allowance | None = None
    rollover: Rollover | None = None
    limits: TokenLimits = TokenLimits()
    throttle: Throttle = Throttle()


GrandfatherPolicy = Literal["keep_forever", "keep_for", "migrate_at_renewal", "migrate_now"]


@dataclass(frozen=True, slots=True)
class GrandfatherRule:
    policy: GrandfatherPolicy
    duration: Duration | None = None
    notify_days_before: int = 0


DEFAULT_ON_INCREASE = GrandfatherRule("keep_for", Duration(12, "month"), 30)
DEFAULT_ON_DECREASE = GrandfatherRule("migrate_at_renewal", None, 0)


@dataclass(frozen=True, slots=True)
class Approval:
    approved_by: str
    reason: str
    up_to_percent: Decimal | None = None


@dataclass(frozen=True, slots=True)
class Mandate:
    billing_rule: Literal["MAX", "EXACT"] = "MAX"
    max_amount: Mapping[str, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlanPayU:
    productinfo: str | None = None
    mandate: Mandate | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    id: str
    name: str
    status: Status = "active"
    description: str | None = None
    trial_days: int = 0
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    tokens: PlanTokens = PlanTokens()
    prices: tuple[Price, ...] = ()
    on_increase: GrandfatherRule = DEFAULT_ON_INCREASE
    on_decrease: GrandfatherRule = DEFAULT_ON_DECREASE
    approval: Approval | None = None
    payu: PlanPayU | None = None
    meta: Mapping[str, object] = field(default_factory=dict)

    @property
    def cycles(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.cycle for p in self.prices))

    def price(self, cycle: str, currency: str, region: str | None = None) -> Price | None:
        """The amount charged in `region` (its override first, then the currency's base price)."""
        return pick_price(self.prices, cycle, currency, region)


@dataclass(frozen=True, slots=True)
class AutoRenew:
    when: Literal["exhausted", "expiry"]
    max_per_month: int | None = None


@dataclass(frozen=True, slots=True)
class TokenPackage:
    id: str
    name: str
    tokens: int
    prices: tuple[Price, ...]
    status: Status = "active"
    description: str | None = None
    validity_days: int | None = None
    purchasable_by: tuple[str, ...] | None = None
    priority: int = 200
    auto_renew: AutoRenew | None = None
    approval: Approval | None = None
    meta: Mapping[str, object] = field(default_factory=dict)

    def price(self, currency: str, region: str | None = None) -> Price | None:
        return pick_price(self.prices, PACKAGE_CYCLE, currency, region)


@dataclass(frozen=True, slots=True)
class AIModel:
    id: str
    provider: str
    cost_currency: str
    cost_per_1k_input: Decimal
    cost_per_1k_output: Decimal
    credits_per_1k_input: Decimal
    credits_per_1k_output: Decimal
    credits_minimum: int = 1
    label: str | None = None
    status: Status = "active"
    plans: tuple[str, ...] | None = None


DEFAULT_RESERVATION_EXPIRY = Duration(15, "minute")
AdmissionCommit = Literal["synchronous", "asynchronous"]


@dataclass(frozen=True, slots=True)
class TokenRules:
    timezone: str = "UTC"
    low_balance_thresholds: tuple[Decimal, ...] = ()
    low_balance_channels: tuple[str, ...] = ()
    rollover_max_tokens: int | None = None
    boost_max_tokens: int | None = None
    boost_max_duration: Duration | None = None
    boost_max_per_month: int | None = None
    admin_default_tokens: int = 1000
    admin_max_tokens: int | None = None
    admin_default_expiry: Duration | None = None
    reservation_expiry: Duration = DEFAULT_RESERVATION_EXPIRY
    # How the transactions that admit and settle AI requests commit (see 0022_admission_commit.sql).
    admission_commit: AdmissionCommit = "synchronous"


DEFAULT_DUNNING_RETRIES = (Duration(1, "day"), Duration(3, "day"), Duration(5, "day"))
DEFAULT_DUNNING_GRACE = Duration(7, "day")
DEFAULT_MANDATE_HEADROOM_PERCENT = Decimal(25)
DEFAULT_MANDATE_VALID_FOR = Duration(10, "year")
DEFAULT_PRE_DEBIT_NOTICE = Duration(2, "day")


@dataclass(frozen=True, slots=True)
class PaymentRules:
    """tariff.yaml `payments`: PayU currencies, refunds, invoices and dunning (one published row)."""

    currencies: tuple[str, ...] = ("INR",)
    revoke_tokens_on_refund: bool = True
    invoice_prefix: str = "INV-"
    dunning_retries: tuple[Duration, ...] = DEFAULT_DUNNING_RETRIES
    dunning_grace: Duration = DEFAULT_DUNNING_GRACE
    dunning_channel: str = "email"
    dunning_status: Literal["past_due", "canceled"] = "past_due"
    dunning_downgrade_to: str | None = None
    dunning_suspend_tokens: bool = False
    # payments.mandates: e-mandates Tariff asks for, and when their pre-debit notices go out
    mandate_headroom_percent: Decimal = DEFAULT_MANDATE_HEADROOM_PERCENT
    mandate_valid_for: Duration = DEFAULT_MANDATE_VALID_FOR
    pre_debit_notice: Duration = DEFAULT_PRE_DEBIT_NOTICE


@dataclass(frozen=True, slots=True)
class PoolTemplate:
    id: str
    name: str | None = None
    plans: tuple[str, ...] = ()
    max_members: int | None = None
    member_daily: int | None = None
    member_monthly: int | None = None


DiscountKind = Literal["percent_off", "amount_off", "fixed_price", "extra_trial_days", "bonus_tokens"]


@dataclass(frozen=True, slots=True)
class Discount:
    kind: DiscountKind
    percent: Decimal | None = None
    amounts: Mapping[str, Decimal] = field(default_factory=dict)
    days: int | None = None
    tokens: int | None = None


@dataclass(frozen=True, slots=True)
class BundleItem:
    plan: str | None = None
    cycle: str | None = None
    package: str | None = None
    quantity: int = 1

    @property
    def label(self) -> str:
        if self.plan:
            return f"plan {self.plan} ({self.cycle})"
        return f"package {self.package}" + (f" × {self.quantity}" if self.quantity > 1 else "")


@dataclass(frozen=True, slots=True)
class AppliesTo:
    plans: tuple[str, ...] = ()
    cycles: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    bundle: tuple[BundleItem, ...] = ()


@dataclass(frozen=True, slots=True)
class Eligibility:
    customers: Literal["new", "existing", "any"] = "any"
    regions: tuple[str, ...] = ()
    plans_held: tuple[str, ...] = ()
    segments: tuple[str, ...] = ()
    customers_file: str | None = None
    customer_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Schedule:
    starts: datetime | None = None
    ends: datetime | None = None
    timezone: str | None = None
    yearly: bool = False


@dataclass(frozen=True, slots=True)
class CodeBatch:
    count: int
    length: int = 10
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class Promotion:
    id: str
    name: str
    discount: Discount
    status: Status = "active"
    description: str | None = None
    applies_to: AppliesTo = AppliesTo()
    eligibility: Eligibility = Eligibility()
    max_redemptions: int | None = None
    per_customer: int | None = None
    schedule: Schedule = Schedule()
    duration: str = "once"  # once | forever | cycles:N
    stackable: bool = False
    priority: int = 100
    vanity_code: str | None = None
    code_batch: CodeBatch | None = None
    badge: str | None = None
    strikethrough: bool = True
    show_end_date: bool = True
    approval: Approval | None = None
    meta: Mapping[str, object] = field(default_factory=dict)

    @property
    def is_bundle(self) -> bool:
        return bool(self.applies_to.bundle)

    @property
    def auto_applies(self) -> bool:
        return self.vanity_code is None and self.code_batch is None

    @property
    def duration_cycles(self) -> int | None:
        if self.duration.startswith("cycles:"):
            return int(self.duration.split(":", 1)[1])
        return None


@dataclass(frozen=True, slots=True)
class Cta:
    text: str
    action: Literal["checkout", "link", "contact_sales"]
    url: str | None = None
    color: str | None = None
    text_color: str | None = None


@dataclass(frozen=True, slots=True)
class Highlight:
    feature: str | None = None
    text: str | None = None
    description: str | None = None
    icon: str | None = None


@dataclass(frozen=True, slots=True)
class Card:
    plan: str
    tagline: str | None = None
    description: str | None = None
    badge: str | None = None
    recommended: bool = False
    callout: str | None = None
    highlights: tuple[Highlight, ...] = ()
    cta: Cta | None = None


@dataclass(frozen=True, slots=True)
class ComparisonGroup:
    title: str
    features: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FaqEntry:
    question: str
    answer: str


@dataclass(frozen=True, slots=True)
class PageDisplay:
    cycles: tuple[str, ...] = ("monthly", "annual")
    default_cycle: str = "monthly"
    savings: Literal["percent", "months_free", "none"] = "percent"
    strikethrough: bool = True
    decimals: Literal["auto", "always"] = "auto"
    per_month_for_longer_cycles: bool = False


@dataclass(frozen=True, slots=True)
class Theme:
    background: str = "#ffffff"
    text: str = "#111827"
    accent: str = "#4f46e5"


@dataclass(frozen=True, slots=True)
class Page:
    """A pricing page. Markdown is stored resolved (file references read in), so a page is self-contained."""

    id: str
    headline: str
    cards: tuple[Card, ...]
    title: str | None = None
    intro: str | None = None
    theme: Theme = Theme()
    display: PageDisplay = PageDisplay()
    default_cta: Cta | None = None
    checkout_url: str | None = None
    contact_url: str | None = None
    comparison_title: str | None = None
    comparison: tuple[ComparisonGroup, ...] = ()
    faq: tuple[FaqEntry, ...] = ()
    footer: str | None = None
    meta: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Catalog:
    project: str
    currencies: Mapping[str, Currency]
    cycles: Mapping[str, BillingCycle]
    regions: Mapping[str, Region]
    default_region: str
    name: str | None = None
    timezone: str = "UTC"
    features: Mapping[str, Feature] = field(default_factory=dict)
    plans: Mapping[str, Plan] = field(default_factory=dict)
    packages: Mapping[str, TokenPackage] = field(default_factory=dict)
    models: Mapping[str, AIModel] = field(default_factory=dict)
    token_rules: TokenRules = TokenRules()
    payment_rules: PaymentRules = PaymentRules()
    pools: Mapping[str, PoolTemplate] = field(default_factory=dict)
    promotions: Mapping[str, Promotion] = field(default_factory=dict)
    pages: Mapping[str, Page] = field(default_factory=dict)
    settings: Settings = Settings()
    fingerprint: str = ""

    def region_for_country(self, country: str) -> Region:
        for region in self.regions.values():
            if country.upper() in region.countries:
                return region
        return self.regions[self.default_region]

    def currency_for(self, region: str) -> str:
        return self.regions[region].currency
