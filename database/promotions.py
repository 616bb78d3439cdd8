"""Promotions at checkout: a thin, typed Python API over the SQL functions of migration 0006.

The contract is SQL (`quote`, `redeem`, `reverse_redemption`, `reverse_redemptions`), so the app in any
language and Tariff's own CLI compute the very same prices; this module binds arguments, turns the
functions' jsonb into frozen dataclasses (money stays integer minor units, `Decimal` on request) and their
SQLSTATE + HINT errors into `PromotionError`s that say what to do.

Every function works on the caller's connection and transaction. `redeem` relies on READ COMMITTED (the
default) and should run in a transaction of its own (`with engine.begin() as conn:`), so that the counter
rows it locks are released at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import IO, Any, Literal, TypedDict, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from compiler.catalog import Catalog, Eligibility
from compiler.money import Currency
from database.connection import quote_schema
from database.errors import DatabaseError
from database.promo_codes import normalize_code, same_code
from database.sql_errors import refusal, translate

MAX_CODES = 10
NOT_STACKABLE = "not_stackable_with:"
# Every reason quote() can give for a promotion or code that did not apply.
REASONS = (
    "not_started",
    "ended",
    "not_applicable",
    "code_required",
    "wrong_region",
    "currency_not_covered",
    "not_eligible",
    "limit_reached",
    "per_customer_limit",
    "code_used",
    "duplicate_code",
    "unknown_code",
    NOT_STACKABLE + "<id>",
)
PromotionState = Literal["draft", "retired", "scheduled", "active", "ended", "exhausted"]


# ----------------------------------------------------------------------------------------------- errors


class PromotionError(DatabaseError):
    """A quote, redemption or reversal the database refused as bad input; nothing was recorded."""

    def __init__(self, message: str, fix: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message, fix)
        self.sqlstate = sqlstate


class UnknownReferenceError(PromotionError):
    """An unknown customer, plan, package, bundle, region or promotion."""


class InvalidRequestError(PromotionError):
    """A malformed item, key, reason or currency mismatch."""


class NoPriceError(PromotionError):
    """The item has no price on sale in the region's currencies."""


class IdempotencyConflictError(PromotionError):
    """The idempotency key was used before for a different redemption."""


class UnknownRedemptionError(PromotionError):
    """No redemption has that id (or was recorded under that key)."""


# ------------------------------------------------------------------------------------------------ types


@dataclass(frozen=True, slots=True)
class Item:
    """What is being bought: a plan in a billing cycle, a token package, or a bundle (by promotion id)."""

    plan: str | None = None
    cycle: str | None = None
    package: str | None = None
    bundle: str | None = None
    currency: str | None = None  # optional; must be the region's currency or its fallback

    @property
    def kind(self) -> Literal["plan", "package", "bundle"]:
        if self.plan is not None:
            return "plan"
        return "package" if self.package is not None else "bundle"

    @property
    def label(self) -> str:
        if self.plan is not None:
            return f"plan {self.plan} ({self.cycle})"
        return f"package {self.package}" if self.package is not None else f"bundle {self.bundle}"

    def to_json(self) -> dict[str, str]:
        fields = {
            "plan": self.plan,
            "cycle": self.cycle,
            "package": self.package,
            "bundle": self.bundle,
            "currency": self.currency,
        }
        return {key: value for key, value in fields.items() if value is not None}


@dataclass(frozen=True, slots=True)
class Considered:
    """One promotion quote() looked at: whether it applied and, if not, why."""

    id: str
    name: str
    kind: str
    applied: bool
    reason: str | None
    detail: str | None
    code: str | None
    stackable: bool
    priority: int

    @property
    def blocked_by(self) -> str | None:
        """The promotion that won instead of this one (reason `not_stackable_with:<id>`)."""
        if self.reason and self.reason.startswith(NOT_STACKABLE):
            return self.reason[len(NOT_STACKABLE) :]
        return None


@dataclass(frozen=True, slots=True)
class Discount:
    """One applied promotion, in the order the discounts were taken off."""

    promotion: str
    name: str
    kind: str
    position: int
    code: str | None
    before_minor: int
    discount_minor: int
    after_minor: int
    duration: Literal["once", "forever", "cycles"]
    cycles: int | None  # billing periods discounted: 1 for once, N for cycles, None for forever
    stackable: bool
    percent: Decimal | None = None
    amount_minor: int | None = None
    extra_trial_days: int | None = None
    bonus_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class CodeOutcome:
    """What became of one code the customer typed."""

    code: str
    promotion: str | None
    applied: bool
    reason: str | None
    detail: str | None

    @property
    def refused(self) -> bool:
        """True when the code is no good (a code that merely lost to a better offer is not refused)."""
        return not self.applied and not (self.reason or "").startswith(NOT_STACKABLE)


@dataclass(frozen=True, slots=True)
class Component:
    """One item of a bundle, priced at its list price."""

    plan: str | None
    cycle: str | None
    package: str | None
    quantity: int
    unit_minor: int
    list_minor: int


@dataclass(frozen=True, slots=True)
class Quote:
    at: datetime
    customer: str | None
    item: Item
    region: str
    currency: Currency
    list_minor: int
    discount_minor: int
    final_minor: int
    promotions: tuple[Considered, ...]
    discounts: tuple[Discount, ...]
    codes: tuple[CodeOutcome, ...]
    components: tuple[Component, ...]
    extra_trial_days: int
    bonus_tokens: int
    raw: Mapping[str, Any]  # the function's jsonb, the exact shape the app receives

    @property
    def list_price(self) -> Decimal:
        return self.currency.from_minor(self.list_minor)

    @property
    def final_price(self) -> Decimal:
        return self.currency.from_minor(self.final_minor)

    @property
    def refused_codes(self) -> tuple[CodeOutcome, ...]:
        return tuple(c for c in self.codes if c.refused)

    def code(self, typed: str) -> CodeOutcome | None:
        """The outcome of a code as the customer typed it (compared in constant time)."""
        for outcome in self.codes:
            if same_code(typed, outcome.code):
                return outcome
        return None

    def promotion(self, promotion_id: str) -> Considered | None:
        return next((p for p in self.promotions if p.id == promotion_id), None)


@dataclass(frozen=True, slots=True)
class Refusal:
    promotion: str | None
    code: str | None
    reason: str
    detail: str | None


@dataclass(frozen=True, slots=True)
class Redemption:
    status: Literal["redeemed", "refused"]
    idempotency_key: str
    quote: Quote
    redemption_ids: tuple[int, ...]
    reasons: tuple[Refusal, ...]
    replayed: bool

    @property
    def ok(self) -> bool:
        return self.status == "redeemed"


@dataclass(frozen=True, slots=True)
class PromotionStatus:
    id: str
    name: str
    state: PromotionState
    kind: str
    summary: str
    window_starts: datetime | None
    window_ends: datetime | None
    yearly: bool
    timezone: str
    redemptions: int
    max_redemptions: int | None
    per_customer: int | None
    codes: int
    needs_code: bool


@dataclass(frozen=True, slots=True)
class CodeCheck:
    """A code looked up on its own (no purchase): its promotion and whether it can be used at `at`."""

    code: str
    promotion: str
    name: str
    state: PromotionState
    single_use: bool
    used: bool
    retired: bool
    window_starts: datetime | None
    window_ends: datetime | None
    timezone: str
    redemptions: int
    max_redemptions: int | None
    per_customer: int | None
    customer_redemptions: int | None

    @property
    def problems(self) -> list[str]:
        """Why the code cannot be used now; empty when it can (eligibility still depends on the purchase)."""
        found = []
        if self.retired:
            found.append("the code was retired (its promotion now uses another code)")
        if self.state in ("draft", "retired", "scheduled", "ended", "exhausted"):
            found.append(
                {
                    "draft": "its promotion is a draft and not published",
                    "retired": "its promotion is retired",
                    "scheduled": "its promotion has not started",
                    "ended": "its promotion has ended",
                    "exhausted": "its promotion has no redemptions left",
                }[self.state]
            )
        if self.single_use and self.used:
            found.append("this single-use code was already redeemed")
        if (
            self.per_customer is not None
            and self.customer_redemptions is not None
            and self.customer_redemptions >= self.per_customer
        ):
            found.append(f"the customer already redeemed it {self.customer_redemptions} time(s)")
        return found


class Impact(TypedDict):
    eligible_customers: int
    redemptions: int


# ------------------------------------------------------------------------------------------------ calls


def quote(
    conn: Connection,
    schema: str,
    item: Item,
    *,
    region: str | None = None,
    codes: Sequence[str] = (),
    customer_id: str | None = None,
    at: datetime | None = None,
) -> Quote:
    """The price breakdown through `quote()`. Bad input raises a PromotionError; promotions that do not
    apply (and codes that are no good) are reported in the result."""
    _check_codes(codes)
    raw = _call(
        conn,
        f"SELECT {quote_schema(schema)}.quote(p_customer_id => :customer, p_item => CAST(:item AS jsonb), "
        "p_region => :region, p_codes => CAST(:codes AS text[]), p_at => CAST(:at AS timestamptz))",
        {
            "customer": customer_id,
            "item": json.dumps(item.to_json()),
            "region": region,
            "codes": list(codes),
            "at": at,
        },
    )
    return parse_quote(raw)


def redeem(
    conn: Connection,
    schema: str,
    item: Item,
    *,
    customer_id: str,
    idempotency_key: str,
    region: str | None = None,
    codes: Sequence[str] = (),
    at: datetime | None = None,
) -> Redemption:
    """Quote and record the applied promotions atomically through `redeem()`; a refusal records nothing."""
    _check_codes(codes)
    raw = _call(
        conn,
        f"SELECT {quote_schema(schema)}.redeem(p_customer_id => :customer, p_item => CAST(:item AS jsonb), "
        "p_region => :region, p_codes => CAST(:codes AS text[]), p_idempotency_key => :key, "
        "p_at => CAST(:at AS timestamptz))",
        {
            "customer": customer_id,
            "item": json.dumps(item.to_json()),
            "region": region,
            "codes": list(codes),
            "key": idempotency_key,
            "at": at,
        },
    )
    return parse_redemption(raw)


def reverse(
    conn: Connection,
    schema: str,
    *,
    reason: str,
    redemption_id: int | None = None,
    idempotency_key: str | None = None,
) -> list[dict[str, Any]]:
    """Reverse one redemption (by id) or all of one redeem() call (by its key); returns the rows, each with
    `already_reversed`. The promotion's, the customer's and the code's limits count it no longer."""
    if (redemption_id is None) == (idempotency_key is None):
        raise InvalidRequestError("give either a redemption id or an idempotency key")
    s = quote_schema(schema)
    if redemption_id is not None:
        row = _call(
            conn,
            f"SELECT {s}.reverse_redemption(p_redemption_id => :id, p_reason => :reason)",
            {"id": redemption_id, "reason": reason},
        )
        return [dict(row)]
    result = _call(
        conn,
        f"SELECT {s}.reverse_redemptions(p_idempotency_key => :key, p_reason => :reason)",
        {"key": idempotency_key, "reason": reason},
    )
    return [dict(r) for r in result["redemptions"]]


def list_promotions(conn: Connection, schema: str, at: datetime | None = None) -> list[PromotionStatus]:
    """Every promotion with its state at `at` (default now): scheduled, active, ended or exhausted (or
    draft, retired), the window that state refers to, and redemptions so far against the limit."""
    s = quote_schema(schema)
    rows = conn.execute(
        sa.text(f"""
            SELECT p.id, p.name, p.status, p.kind, p.percent_off, p.extra_trial_days, p.bonus_tokens,
                   p.max_redemptions, p.per_customer, p.yearly, z.zone,
                   p.vanity_code IS NOT NULL OR p.code_count IS NOT NULL AS needs_code,
                   w.state, w.window_starts, w.window_ends, coalesce(u.redeemed, 0) AS redeemed,
                   (SELECT coalesce(sum(b.count), 0) FROM {s}.code_batches b WHERE b.promotion_id = p.id)
                   + (SELECT count(*) FROM {s}.promotion_codes c
                       WHERE c.promotion_id = p.id AND c.batch_id IS NULL AND c.retired_at IS NULL) AS codes,
                   (SELECT coalesce(jsonb_object_agg(a.currency, a.amount_minor), '{{}}')
                      FROM {s}.promotion_amounts a WHERE a.promotion_id = p.id) AS amounts
              FROM {s}.promotions p
             CROSS JOIN LATERAL (SELECT coalesce(p.schedule_timezone,
                                     (SELECT timezone FROM {s}.catalog_state), 'UTC') AS zone) z
             CROSS JOIN LATERAL {s}.promotion_window(p.starts_at, p.ends_at, p.yearly, z.zone,
                                                     coalesce(CAST(:at AS timestamptz), now())) w
             CROSS JOIN LATERAL (SELECT sum(x.redeemed) AS redeemed FROM {s}.promotion_usage x
                                  WHERE x.promotion_id = p.id) u
             ORDER BY p.status = 'retired', w.window_starts NULLS FIRST, p.id"""),
        {"at": at},
    ).all()
    currencies = _currencies(conn, schema)
    out = []
    for row in rows:
        out.append(
            PromotionStatus(
                id=row.id,
                name=row.name,
                state=_state(row.status, row.state, row.max_redemptions, row.redeemed),
                kind=row.kind,
                summary=_summary(row, currencies),
                window_starts=row.window_starts,
                window_ends=row.window_ends,
                yearly=row.yearly,
                timezone=row.zone,
                redemptions=int(row.redeemed),
                max_redemptions=row.max_redemptions,
                per_customer=row.per_customer,
                codes=int(row.codes),
                needs_code=row.needs_code,
            )
        )
    return out


def check_code(
    conn: Connection,
    schema: str,
    code: str,
    *,
    customer_id: str | None = None,
    at: datetime | None = None,
) -> CodeCheck | None:
    """Look a code up on its own; None when no promotion has it (lookalikes and typos included)."""
    s = quote_schema(schema)
    typed = normalize_code(code)
    if len(typed) > 64:
        return None
    if customer_id is not None and not _exists(conn, f"{s}.customers", customer_id):
        raise UnknownReferenceError(
            f'unknown customer "{customer_id}"',
            fix="register the customer first; Tariff never creates customers implicitly",
            sqlstate="23503",
        )
    row = conn.execute(
        sa.text(f"""
            SELECT c.code, c.promotion_id, c.single_use, c.used, c.retired_at IS NOT NULL AS code_retired,
                   p.name, p.status, p.max_redemptions, p.per_customer, z.zone, w.state, w.window_starts,
                   w.window_ends, coalesce(u.redeemed, 0) AS redeemed,
                   (SELECT cu.redeemed FROM {s}.promotion_customer_usage cu
                     WHERE cu.promotion_id = p.id AND cu.customer_id = :customer) AS customer_redeemed
              FROM {s}.promotion_codes c
              JOIN {s}.promotions p ON p.id = c.promotion_id
             CROSS JOIN LATERAL (SELECT coalesce(p.schedule_timezone,
                                     (SELECT timezone FROM {s}.catalog_state), 'UTC') AS zone) z
             CROSS JOIN LATERAL {s}.promotion_window(p.starts_at, p.ends_at, p.yearly, z.zone,
                                                     coalesce(CAST(:at AS timestamptz), now())) w
             CROSS JOIN LATERAL (SELECT sum(x.redeemed) AS redeemed FROM {s}.promotion_usage x
                                  WHERE x.promotion_id = p.id) u
             WHERE c.code = :code"""),
        {"code": typed, "at": at, "customer": customer_id},
    ).one_or_none()
    if row is None or not same_code(typed, row.code):
        return None
    return CodeCheck(
        code=row.code,
        promotion=row.promotion_id,
        name=row.name,
        state=_state(row.status, row.state, row.max_redemptions, row.redeemed),
        single_use=row.single_use,
        used=row.used,
        retired=row.code_retired,
        window_starts=row.window_starts,
        window_ends=row.window_ends,
        timezone=row.zone,
        redemptions=int(row.redeemed),
        max_redemptions=row.max_redemptions,
        per_customer=row.per_customer,
        customer_redemptions=(None if customer_id is None else int(row.customer_redeemed or 0)),
    )


def list_codes(
    conn: Connection, schema: str, promotion_id: str, *, limit: int = 100
) -> tuple[list[dict[str, Any]], int, int]:
    """A promotion's codes (vanity first, then batches oldest first), how many it has, how many are used."""
    s = quote_schema(schema)
    if not _exists(conn, f"{s}.promotions", promotion_id):
        raise UnknownReferenceError(
            f"unknown promotion {promotion_id!r}", fix="list them with `tariff promo list`"
        )
    rows = conn.execute(
        sa.text(f"""
            SELECT c.code, c.batch_id, b.source, c.single_use, c.used, c.created_at,
                   c.retired_at IS NOT NULL AS retired
              FROM {s}.promotion_codes c LEFT JOIN {s}.code_batches b ON b.id = c.batch_id
             WHERE {_of_promotion(s, ":promotion")}
             ORDER BY c.batch_id NULLS FIRST, c.code
             LIMIT :limit"""),
        {"promotion": promotion_id, "limit": limit},
    ).all()
    total, used = conn.execute(
        sa.text(
            f"SELECT count(*), count(*) FILTER (WHERE used) FROM {s}.promotion_codes c "
            f"WHERE {_of_promotion(s, ':promotion')}"
        ),
        {"promotion": promotion_id},
    ).one()
    return [dict(row._mapping) for row in rows], int(total), int(used)


def export_codes(
    conn: Connection, schema: str, promotion_id: str, out: IO[bytes], *, header: bool = True
) -> None:
    """Stream a promotion's codes as CSV (code, promotion, batch, source, single_use, used, created_at,
    retired) with COPY: a million codes take seconds and constant memory."""
    s = quote_schema(schema)
    if not _exists(conn, f"{s}.promotions", promotion_id):
        raise UnknownReferenceError(
            f"unknown promotion {promotion_id!r}", fix="list them with `tariff promo list`"
        )
    # COPY takes no parameters: the id (checked to exist) goes in as a quoted literal.
    literal = "'" + promotion_id.replace("'", "''") + "'"
    driver: Any = conn.connection.driver_connection
    query = (
        f"COPY (SELECT c.code, c.promotion_id AS promotion, c.batch_id AS batch, b.source, c.single_use, "
        f"c.used, c.created_at, c.retired_at IS NOT NULL AS retired FROM {s}.promotion_codes c "
        f"LEFT JOIN {s}.code_batches b ON b.id = c.batch_id "
        f"WHERE {_of_promotion(s, literal)} "
        f"ORDER BY c.batch_id NULLS FIRST, c.code) TO STDOUT WITH (FORMAT csv, HEADER {str(header).lower()})"
    )
    with driver.cursor() as cursor, cursor.copy(query) as copy:
        for block in copy:
            out.write(bytes(block))


def promotion_impact(
    conn: Connection,
    schema: str,
    promotion_ids: Iterable[str],
    catalog: Catalog | None = None,
) -> dict[str, Impact]:
    """For `plan`: per promotion, how many registered customers are eligible now and how many redemptions
    it has so far. Eligibility is the catalog's (the config being planned) when `catalog` has the
    promotion, else the live one; regions are the customers' registered regions."""
    s = quote_schema(schema)
    ids = list(dict.fromkeys(promotion_ids))
    redeemed = {
        str(promo): int(n)
        for promo, n in conn.execute(
            sa.text(
                f"SELECT promotion_id, count(*) FROM {s}.redemptions WHERE status = 'redeemed' "
                "AND promotion_id = ANY(CAST(:ids AS text[])) GROUP BY promotion_id"
            ),
            {"ids": ids},
        )
    }
    live = {
        str(row.id): row
        for row in conn.execute(
            sa.text(f"SELECT id, eligibility FROM {s}.promotions WHERE id = ANY(CAST(:ids AS text[]))"),
            {"ids": ids},
        )
    }
    out: dict[str, Impact] = {}
    for promo_id in ids:
        desired = catalog.promotions.get(promo_id) if catalog is not None else None
        if desired is not None:
            eligible = _eligible_customers(conn, s, promo_id, desired.eligibility, listed_live=False)
        elif promo_id in live:
            spec = cast(dict[str, Any], live[promo_id].eligibility or {})
            eligibility = Eligibility(
                spec.get("customers", "any"),
                tuple(spec.get("regions") or ()),
                tuple(spec.get("plans_held") or ()),
                tuple(spec.get("segments") or ()),
                spec.get("customers_file"),
            )
            eligible = _eligible_customers(conn, s, promo_id, eligibility, listed_live=True)
        else:
            eligible = 0
        out[promo_id] = {"eligible_customers": eligible, "redemptions": redeemed.get(promo_id, 0)}
    return out


def _currencies(conn: Connection, schema: str) -> dict[str, Currency]:
    rows = conn.execute(
        sa.text(f"SELECT code, minor_units, rounding, symbol FROM {quote_schema(schema)}.currencies")
    ).all()
    return {
        str(code).strip(): Currency(str(code).strip(), int(minor), str(rounding), symbol)
        for code, minor, rounding, symbol in rows
    }


# -------------------------------------------------------------------------------------------- parsing


def parse_quote(raw: Mapping[str, Any]) -> Quote:
    """The jsonb of quote() (or of redeem(), which includes it) as a Quote."""
    item = cast(dict[str, str], raw["item"])
    currency = Currency(str(raw["currency"]).strip(), int(raw["minor_units"]), str(raw["rounding"]))
    return Quote(
        at=datetime.fromisoformat(raw["at"]),
        customer=raw.get("customer"),
        item=Item(item.get("plan"), item.get("cycle"), item.get("package"), item.get("bundle")),
        region=raw["region"],
        currency=currency,
        list_minor=int(raw["list_minor"]),
        discount_minor=int(raw["discount_minor"]),
        final_minor=int(raw["final_minor"]),
        promotions=tuple(
            Considered(
                id=p["id"],
                name=p["name"],
                kind=p["kind"],
                applied=bool(p["applied"]),
                reason=p.get("reason"),
                detail=p.get("detail"),
                code=p.get("code"),
                stackable=bool(p["stackable"]),
                priority=int(p["priority"]),
            )
            for p in raw["promotions"]
        ),
        discounts=tuple(
            Discount(
                promotion=d["promotion"],
                name=d["name"],
                kind=d["kind"],
                position=int(d["position"]),
                code=d.get("code"),
                before_minor=int(d["before_minor"]),
                discount_minor=int(d["discount_minor"]),
                after_minor=int(d["after_minor"]),
                duration=d["duration"],
                cycles=d.get("cycles"),
                stackable=bool(d["stackable"]),
                percent=Decimal(str(d["percent"])) if d.get("percent") is not None else None,
                amount_minor=d.get("amount_minor"),
                extra_trial_days=d.get("extra_trial_days"),
                bonus_tokens=d.get("bonus_tokens"),
            )
            for d in raw["discounts"]
        ),
        codes=tuple(
            CodeOutcome(c["code"], c.get("promotion"), bool(c["applied"]), c.get("reason"), c.get("detail"))
            for c in raw["codes"]
        ),
        components=tuple(
            Component(
                c.get("plan"),
                c.get("cycle"),
                c.get("package"),
                int(c["quantity"]),
                int(c["unit_minor"]),
                int(c["list_minor"]),
            )
            for c in raw.get("components") or ()
        ),
        extra_trial_days=int(raw["extra_trial_days"]),
        bonus_tokens=int(raw["bonus_tokens"]),
        raw=raw,
    )


def parse_redemption(raw: Mapping[str, Any]) -> Redemption:
    return Redemption(
        status=raw["status"],
        idempotency_key=raw["idempotency_key"],
        quote=parse_quote(raw),
        redemption_ids=tuple(int(r["id"]) for r in raw.get("redemptions") or ()),
        reasons=tuple(
            Refusal(r.get("promotion"), r.get("code"), r["reason"], r.get("detail"))
            for r in raw.get("reasons") or ()
        ),
        replayed=bool(raw.get("replayed", False)),
    )


# ------------------------------------------------------------------------------------------- internals


def _state(status: str, window: str, max_redemptions: int | None, redeemed: int) -> PromotionState:
    """What `promo list` shows: the catalog status first, then the schedule, then the limit."""
    if status == "draft":
        return "draft"
    if status == "retired":
        return "retired"
    if window == "not_started":
        return "scheduled"
    if window == "ended":
        return "ended"
    if max_redemptions is not None and redeemed >= max_redemptions:
        return "exhausted"
    return "active"


def _check_codes(codes: Sequence[str]) -> None:
    if isinstance(codes, str):
        raise InvalidRequestError("codes must be a list of strings, not one string")
    if len(codes) > MAX_CODES:
        raise InvalidRequestError(f"too many codes ({len(codes)} given, at most {MAX_CODES})")


def _call(conn: Connection, sql: str, params: dict[str, Any]) -> dict[str, Any]:
    try:
        result = conn.execute(sa.text(sql), params).scalar_one()
    except DBAPIError as exc:
        raise _translate(exc) from exc
    return cast(dict[str, Any], result)


def _translate(exc: DBAPIError) -> Exception:
    """The SQL functions' errors as PromotionErrors (message and HINT kept); anything else unchanged."""
    raised = refusal(exc)
    if raised.sqlstate == "P0002":
        return raised.as_error(UnknownRedemptionError if "redemption" in raised.message else NoPriceError)
    return translate(
        exc, {"23503": UnknownReferenceError, "22023": InvalidRequestError, "23505": IdempotencyConflictError}
    )


def _of_promotion(s: str, promotion: str) -> str:
    """A promotion's codes (alias c) through the two partial indexes, generated by batch and vanity by
    promotion, so that a million-code batch of another promotion is never scanned."""
    return (
        f"(c.batch_id IN (SELECT b.id FROM {s}.code_batches b WHERE b.promotion_id = {promotion}) "
        f"OR (c.batch_id IS NULL AND c.promotion_id = {promotion}))"
    )


def _exists(conn: Connection, table: str, key: str) -> bool:
    found = conn.execute(
        sa.text(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = :key)"), {"key": key}
    ).scalar_one()
    return bool(found)


def _eligible_customers(
    conn: Connection, s: str, promo_id: str, eligibility: Eligibility, *, listed_live: bool
) -> int:
    """Registered customers matching every condition, counted in one set-based query (only the conditions
    the promotion has are in the WHERE clause, so the planner can turn them into joins)."""
    conditions = ["TRUE"]
    params: dict[str, Any] = {"promotion": promo_id}
    if eligibility.regions:
        conditions.append("c.region = ANY(CAST(:regions AS text[]))")
        params["regions"] = list(eligibility.regions)
    if eligibility.segments:
        conditions.append("c.segments && CAST(:segments AS text[])")
        params["segments"] = list(eligibility.segments)
    if eligibility.customers_file or eligibility.customer_ids:
        if listed_live:
            conditions.append(
                f"EXISTS (SELECT 1 FROM {s}.promotion_customers pc "
                "WHERE pc.promotion_id = :promotion AND pc.customer_id = c.id)"
            )
        else:
            conditions.append("c.id = ANY(CAST(:listed AS text[]))")
            params["listed"] = list(eligibility.customer_ids)
    if eligibility.plans_held:
        conditions.append(
            f"EXISTS (SELECT 1 FROM {s}.subscriptions h WHERE h.customer_id = c.id "
            "AND h.plan_id = ANY(CAST(:held AS text[])) AND h.status IN ('trialing', 'active', 'past_due'))"
        )
        params["held"] = list(eligibility.plans_held)
    if eligibility.customers in ("new", "existing"):
        negate = "NOT " if eligibility.customers == "new" else ""
        # The database's one definition of a paying customer, the one quote() judges by.
        conditions.append(f"{negate}{s}.paid_customer(c.id)")
    count = conn.execute(
        sa.text(f"SELECT count(*) FROM {s}.customers c WHERE {' AND '.join(conditions)}"), params
    ).scalar_one()
    return int(count)


def _summary(row: Any, currencies: Mapping[str, Currency]) -> str:
    """The discount in a few words: `30% off`, `500.00 INR / 6.00 USD off`, `+16 trial days`."""

    def money(amounts: Mapping[str, int]) -> str:
        parts = []
        for code, minor in sorted(amounts.items()):
            currency = currencies.get(code)
            shown = currency.from_minor(int(minor)) if currency else Decimal(int(minor))
            parts.append(f"{shown:,} {code}")
        return " / ".join(parts)

    if row.kind == "percent_off":
        return f"{Decimal(row.percent_off).normalize():f}% off"
    if row.kind == "amount_off":
        return money(row.amounts) + " off"
    if row.kind == "fixed_price":
        return "for " + money(row.amounts)
    if row.kind == "extra_trial_days":
        return f"+{row.extra_trial_days} trial days"
    return f"+{row.bonus_tokens:,} bonus tokens"
