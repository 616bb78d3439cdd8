"""Catalog → live catalog tables, inside the caller's transaction.

Every table is synchronised to the desired catalog in a few set-based statements (upsert what is desired,
retire what is gone). Prices are never updated in place: a changed amount closes the current version and
opens a new one, and the (old, new) pairs are returned for grandfathering.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compiler.canonical import to_plain
from compiler.catalog import PACKAGE_CYCLE, Catalog, Price
from compiler.money import Currency
from database.connection import quote_schema


@dataclass(frozen=True, slots=True)
class PriceVersionChange:
    """A price key whose amount changed: the version closed and the version opened."""

    owner: str
    cycle: str
    currency: str
    region: str | None
    old_version: int
    new_version: int
    old_minor: int
    new_minor: int


@dataclass
class WriteResult:
    rows: dict[str, int] = field(default_factory=dict)
    price_changes: list[PriceVersionChange] = field(default_factory=list)
    prices_opened: int = 0
    prices_closed: int = 0

    def count(self, table: str, rowcount: int) -> None:
        if rowcount > 0:
            self.rows[table] = self.rows.get(table, 0) + rowcount


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(to_plain(value), sort_keys=True)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class _Writer:
    def __init__(self, conn: Connection, schema: str, revision_id: int, result: WriteResult) -> None:
        self.conn = conn
        self.s = quote_schema(schema)
        self.revision_id = revision_id
        self.result = result

    def execute(
        self,
        sql: str,
        params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        table: str | None = None,
    ) -> sa.CursorResult[Any]:
        outcome = self.conn.execute(sa.text(sql), params if params is not None else {})
        if table is not None:
            self.result.count(table, outcome.rowcount)
        return outcome

    def upsert(
        self,
        table: str,
        key: str,
        rows: list[dict[str, Any]],
        *,
        has_status: bool,
        json_columns: Iterable[str] = (),
        retirable: bool = True,
    ) -> None:
        """Insert or update `rows`; retire rows of `table` that are no longer desired (when `retirable`)."""
        if rows:
            sql = _upsert_sql(
                f"{self.s}.{table}", key, list(rows[0]), set(json_columns), has_status, retirable
            )
            self.execute(sql, rows, table)
        if not retirable:
            return
        status_sql = "status = 'retired', " if has_status else ""
        self.execute(
            f"UPDATE {self.s}.{table} SET {status_sql}retired_at = now(), updated_at = now() "
            f"WHERE retired_at IS NULL AND NOT ({key} = ANY(CAST(:wanted AS text[])))",
            {"wanted": [row[key] for row in rows]},
            table,
        )

    def replace_children(
        self,
        table: str,
        owner_column: str,
        owners: list[str],
        key_columns: list[str],
        rows: list[dict[str, Any]],
    ) -> None:
        """Make `table`'s rows for `owners` exactly `rows` (catalog detail rows, not history)."""
        arrays = {c: [row[c] for row in rows] for c in key_columns}
        matches = " AND ".join(f"d.{c} = t.{c}" for c in key_columns)
        unnest = ", ".join(f"CAST(:{c} AS text[])" for c in key_columns)
        self.execute(
            f"DELETE FROM {self.s}.{table} t WHERE t.{owner_column} = ANY(CAST(:owners AS text[])) "
            "AND NOT EXISTS ("
            f"SELECT 1 FROM unnest({unnest}) AS d({', '.join(key_columns)}) WHERE {matches})",
            {"owners": owners, **arrays},
            table,
        )
        if rows:
            columns = list(rows[0])
            others = [c for c in columns if c not in key_columns]
            update = (
                (
                    f"DO UPDATE SET {', '.join(f'{c} = EXCLUDED.{c}' for c in others)} WHERE "
                    + " OR ".join(f"t.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in others)
                )
                if others
                else "DO NOTHING"
            )
            self.execute(
                f"INSERT INTO {self.s}.{table} AS t ({', '.join(columns)}) VALUES "
                f"({', '.join(_placeholder(c) for c in columns)}) "
                f"ON CONFLICT ({', '.join(key_columns)}) {update}",
                rows,
                table,
            )


def _upsert_sql(
    table: str, key: str, columns: list[str], json_columns: set[str], has_status: bool, retirable: bool
) -> str:
    """INSERT … ON CONFLICT that touches a row (and its updated_at) only when a value really changed."""
    values = ", ".join(f"CAST(:{c} AS jsonb)" if c in json_columns else f":{c}" for c in columns)
    updates = [c for c in columns if c != key]
    assignments = ", ".join(f"{c} = EXCLUDED.{c}" for c in updates)
    changed = " OR ".join(f"t.{c} IS DISTINCT FROM EXCLUDED.{c}" for c in updates) or "false"
    insert_extra = value_extra = retired = ""
    if has_status:
        # retired_at follows status: set once when a row is retired, cleared when it comes back.
        insert_extra, value_extra = ", retired_at", ", CASE WHEN :status = 'retired' THEN now() END"
        retired = (
            ", retired_at = CASE WHEN EXCLUDED.status = 'retired' THEN coalesce(t.retired_at, now()) END"
        )
    elif retirable:
        retired = ", retired_at = NULL"  # desired again: bring a retired row back
    if retirable:
        changed += " OR (t.retired_at IS NOT NULL) <> (EXCLUDED.retired_at IS NOT NULL)"
    return (
        f"INSERT INTO {table} AS t ({', '.join(columns)}{insert_extra}) VALUES ({values}{value_extra}) "
        f"ON CONFLICT ({key}) DO UPDATE SET {assignments}{retired}, updated_at = now() WHERE {changed}"
    )


def _placeholder(column: str) -> str:
    # plan_features.value is jsonb: the JSON text must be cast, not bound as a string.
    return f"CAST(:{column} AS jsonb)" if column == "value" else f":{column}"


def write_catalog(conn: Connection, schema: str, catalog: Catalog, revision_id: int) -> WriteResult:
    """Synchronise every catalog table to `catalog`. Runs inside the caller's transaction."""
    result = WriteResult()
    w = _Writer(conn, schema, revision_id, result)
    _settings(w, catalog)
    _features(w, catalog)
    _plans(w, catalog)
    _prices(
        w,
        "price_versions",
        "plan_id",
        True,
        [(plan.id, price) for plan in catalog.plans.values() for price in plan.prices],
        catalog.currencies,
    )
    _packages(w, catalog)
    _prices(
        w,
        "package_price_versions",
        "package_id",
        False,
        [(p.id, price) for p in catalog.packages.values() for price in p.prices],
        catalog.currencies,
    )
    _models_and_rules(w, catalog)
    _promotions(w, catalog)
    w.upsert(
        "pages",
        "id",
        [{"id": p.id, "content": _json(p)} for p in catalog.pages.values()],
        has_status=False,
        json_columns=["content"],
    )
    w.execute(
        f"INSERT INTO {w.s}.catalog_state AS t (singleton, project, name, timezone, default_region, "
        "fingerprint, revision_id) "
        "VALUES (true, :project, :name, :timezone, :default_region, :fingerprint, :revision) "
        "ON CONFLICT (singleton) DO UPDATE SET project = EXCLUDED.project, name = EXCLUDED.name, "
        "timezone = EXCLUDED.timezone, default_region = EXCLUDED.default_region, "
        "fingerprint = EXCLUDED.fingerprint, revision_id = EXCLUDED.revision_id, updated_at = now()",
        {
            "project": catalog.project,
            "name": catalog.name,
            "timezone": catalog.timezone,
            "default_region": catalog.default_region,
            "fingerprint": catalog.fingerprint,
            "revision": revision_id,
        },
    )
    return result


def _settings(w: _Writer, catalog: Catalog) -> None:
    w.upsert(
        "currencies",
        "code",
        [
            {
                "code": c.code,
                "minor_units": c.minor_units,
                "rounding": c.rounding,
                "symbol": c.symbol,
                "usd_rate": c.usd_rate,
            }
            for c in catalog.currencies.values()
        ],
        has_status=False,
    )
    w.upsert(
        "billing_cycles",
        "id",
        [{"id": c.id, "every": c.every, "unit": c.unit, "label": c.label} for c in catalog.cycles.values()],
        has_status=False,
    )
    w.upsert(
        "regions",
        "code",
        [
            {
                "code": r.code,
                "name": r.name,
                "currency": r.currency,
                "fallback_currency": r.fallback_currency,
                "locale": r.locale,
                "tax_name": r.tax.name if r.tax else None,
                "tax_percent": r.tax.percent if r.tax else None,
                "tax_inclusive": r.tax.inclusive if r.tax else False,
            }
            for r in catalog.regions.values()
        ],
        has_status=False,
    )
    w.replace_children(
        "region_countries",
        "region_code",
        list(catalog.regions),
        ["region_code", "country"],
        [
            {"region_code": r.code, "country": country, "position": index}
            for r in catalog.regions.values()
            for index, country in enumerate(r.countries)
        ],
    )


def _features(w: _Writer, catalog: Catalog) -> None:
    w.upsert(
        "features",
        "id",
        [
            {
                "id": f.id,
                "label": f.label,
                "type": f.type,
                "description": f.description,
                "unit": f.unit,
                "unlimited_allowed": f.unlimited_allowed,
                "allowed_values": list(f.values),
                "value_labels": _json(dict(f.value_labels)),
                "icon": f.icon,
                "status": f.status,
            }
            for f in catalog.features.values()
        ],
        has_status=True,
        json_columns=["value_labels"],
    )


def _plans(w: _Writer, catalog: Catalog) -> None:
    rows = []
    for p in catalog.plans.values():
        allowance, rollover, limits, throttle = (
            p.tokens.allowance,
            p.tokens.rollover,
            p.tokens.limits,
            p.tokens.throttle,
        )
        rows.append(
            {
                "id": p.id,
                "name": p.name,
                "description": p.description,
                "status": p.status,
                "trial_days": p.trial_days,
                "allowance_amount": allowance.amount if allowance else None,
                "allowance_every": allowance.every if allowance else None,
                "allowance_expires_after": _text(allowance.expires_after) if allowance else None,
                "rollover": rollover is not None,
                "rollover_max_percent": rollover.max_percent if rollover else None,
                "rollover_max_tokens": rollover.max_tokens if rollover else None,
                "rollover_expires_after": _text(rollover.expires_after) if rollover else None,
                "limit_per_request": limits.per_request,
                "limit_daily": limits.daily,
                "limit_monthly": limits.monthly,
                "throttle_requests_per_minute": throttle.requests_per_minute,
                "throttle_tokens_per_minute": throttle.tokens_per_minute,
                "on_increase_policy": p.on_increase.policy,
                "on_increase_duration": _text(p.on_increase.duration),
                "on_increase_notify_days": p.on_increase.notify_days_before,
                "on_decrease_policy": p.on_decrease.policy,
                "on_decrease_duration": _text(p.on_decrease.duration),
                "on_decrease_notify_days": p.on_decrease.notify_days_before,
                "approval": _json(p.approval),
                "payu": _json(p.payu),
                "meta": _json(dict(p.meta)),
            }
        )
    w.upsert("plans", "id", rows, has_status=True, json_columns=["approval", "payu", "meta"])
    w.replace_children(
        "plan_features",
        "plan_id",
        list(catalog.plans),
        ["plan_id", "feature_id"],
        [
            {"plan_id": p.id, "feature_id": fid, "value": _json(list(v) if isinstance(v, tuple) else v)}
            for p in catalog.plans.values()
            for fid, v in p.features.items()
        ],
    )


def _prices(
    w: _Writer,
    table: str,
    owner_column: str,
    with_cycle: bool,
    prices: list[tuple[str, Price]],
    currencies: Mapping[str, Currency],
) -> None:
    """Close versions whose amount changed or that are no longer sold; open versions for new amounts."""
    cycle_sql = "cycle" if with_cycle else f"'{PACKAGE_CYCLE}'"
    current = {
        (r.owner, r.cycle, r.currency, r.region): (r.id, r.amount_minor)
        for r in w.execute(
            f"SELECT id, {owner_column} AS owner, {cycle_sql} AS cycle, currency, region, "
            f"amount_minor FROM {w.s}.{table} WHERE valid_to IS NULL"
        )
    }
    desired = {
        (owner, p.cycle, p.currency, p.region): currencies[p.currency].to_minor(p.amount)
        for owner, p in prices
    }
    close = [(key, version) for key, (version, minor) in current.items() if desired.get(key) != minor]
    opened = [
        (key, minor) for key, minor in desired.items() if key not in current or current[key][1] != minor
    ]
    if close:
        w.execute(
            f"UPDATE {w.s}.{table} SET valid_to = now() WHERE id = ANY(:ids)",
            {"ids": [version for _key, version in close]},
            table,
        )
        w.result.prices_closed += len(close)
    if not opened:
        return
    cycle_columns = ("cycle, ", "d.cycle, ") if with_cycle else ("", "")
    inserted = w.execute(
        f"INSERT INTO {w.s}.{table} ({owner_column}, {cycle_columns[0]}currency, region, amount_minor, "
        f"revision_id) SELECT d.owner, {cycle_columns[1]}d.currency, d.region, d.amount, :revision "
        "FROM unnest(CAST(:owners AS text[]), CAST(:cycles AS text[]), CAST(:currencies AS text[]), "
        "CAST(:regions AS text[]), CAST(:amounts AS bigint[])) "
        "AS d(owner, cycle, currency, region, amount) "
        f"RETURNING id, {owner_column} AS owner, {cycle_sql} AS cycle, currency, region, amount_minor",
        {
            "owners": [k[0] for k, _ in opened],
            "cycles": [k[1] for k, _ in opened],
            "currencies": [k[2] for k, _ in opened],
            "regions": [k[3] for k, _ in opened],
            "amounts": [m for _, m in opened],
            "revision": w.revision_id,
        },
        table,
    )
    w.result.prices_opened += len(opened)
    if not with_cycle:
        return
    for row in inserted:
        key = (row.owner, row.cycle, row.currency, row.region)
        if key in current:
            old_version, old_minor = current[key]
            w.result.price_changes.append(
                PriceVersionChange(
                    row.owner,
                    row.cycle,
                    row.currency,
                    row.region,
                    old_version,
                    row.id,
                    old_minor,
                    row.amount_minor,
                )
            )


def _packages(w: _Writer, catalog: Catalog) -> None:
    w.upsert(
        "token_packages",
        "id",
        [
            {
                "id": p.id,
                "name": p.name,
                "description": p.description,
                "status": p.status,
                "tokens": p.tokens,
                "validity_days": p.validity_days,
                "purchasable_by": list(p.purchasable_by) if p.purchasable_by is not None else None,
                "priority": p.priority,
                "auto_renew_when": p.auto_renew.when if p.auto_renew else None,
                "auto_renew_max_per_month": p.auto_renew.max_per_month if p.auto_renew else None,
                "approval": _json(p.approval),
                "meta": _json(dict(p.meta)),
            }
            for p in catalog.packages.values()
        ],
        has_status=True,
        json_columns=["approval", "meta"],
    )


def _models_and_rules(w: _Writer, catalog: Catalog) -> None:
    w.upsert(
        "ai_models",
        "id",
        [
            {
                "id": m.id,
                "provider": m.provider,
                "label": m.label,
                "status": m.status,
                "cost_currency": m.cost_currency,
                "cost_per_1k_input": m.cost_per_1k_input,
                "cost_per_1k_output": m.cost_per_1k_output,
                "credits_per_1k_input": m.credits_per_1k_input,
                "credits_per_1k_output": m.credits_per_1k_output,
                "credits_minimum": m.credits_minimum,
                "plans": list(m.plans) if m.plans is not None else None,
            }
            for m in catalog.models.values()
        ],
        has_status=True,
    )
    rules = catalog.token_rules
    w.upsert(
        "token_rules",
        "singleton",
        [
            {
                "singleton": True,
                "timezone": rules.timezone,
                "low_balance_thresholds": list(rules.low_balance_thresholds),
                "low_balance_channels": list(rules.low_balance_channels),
                "rollover_max_tokens": rules.rollover_max_tokens,
                "boost_max_tokens": rules.boost_max_tokens,
                "boost_max_duration": _text(rules.boost_max_duration),
                "boost_max_per_month": rules.boost_max_per_month,
                "admin_default_tokens": rules.admin_default_tokens,
                "admin_max_tokens": rules.admin_max_tokens,
                "admin_default_expiry": _text(rules.admin_default_expiry),
                "reservation_expiry": str(rules.reservation_expiry),
                "admission_commit": rules.admission_commit,
            }
        ],
        has_status=False,
        retirable=False,
    )
    payments = catalog.payment_rules
    w.upsert(
        "payment_rules",
        "singleton",
        [
            {
                "singleton": True,
                "currencies": list(payments.currencies),
                "revoke_tokens_on_refund": payments.revoke_tokens_on_refund,
                "invoice_prefix": payments.invoice_prefix,
                "dunning_retries": [str(d) for d in payments.dunning_retries],
                "dunning_grace": str(payments.dunning_grace),
                "dunning_channel": payments.dunning_channel,
                "dunning_status": payments.dunning_status,
                "dunning_downgrade_to": payments.dunning_downgrade_to,
                "dunning_suspend_tokens": payments.dunning_suspend_tokens,
                "mandate_headroom_percent": payments.mandate_headroom_percent,
                "mandate_valid_for": str(payments.mandate_valid_for),
                "pre_debit_notice": str(payments.pre_debit_notice),
            }
        ],
        has_status=False,
        retirable=False,
    )
    w.upsert(
        "pool_templates",
        "id",
        [
            {
                "id": p.id,
                "name": p.name,
                "plans": list(p.plans),
                "max_members": p.max_members,
                "member_daily": p.member_daily,
                "member_monthly": p.member_monthly,
            }
            for p in catalog.pools.values()
        ],
        has_status=False,
    )


def _promotions(w: _Writer, catalog: Catalog) -> None:
    rows = []
    for p in catalog.promotions.values():
        applies = to_plain(p.applies_to)
        eligibility = to_plain(p.eligibility)
        eligibility.pop("customer_ids", None)
        batch = p.code_batch
        rows.append(
            {
                "id": p.id,
                "name": p.name,
                "description": p.description,
                "status": p.status,
                "kind": p.discount.kind,
                "percent_off": p.discount.percent,
                "extra_trial_days": p.discount.days,
                "bonus_tokens": p.discount.tokens,
                "applies_to": json.dumps({k: v for k, v in applies.items() if v}, sort_keys=True),
                "eligibility": json.dumps(
                    {k: v for k, v in eligibility.items() if v not in (None, [], "any")}, sort_keys=True
                ),
                "max_redemptions": p.max_redemptions,
                "per_customer": p.per_customer,
                "starts_at": p.schedule.starts,
                "ends_at": p.schedule.ends,
                "schedule_timezone": p.schedule.timezone,
                "yearly": p.schedule.yearly,
                "duration": p.duration,
                "stackable": p.stackable,
                "priority": p.priority,
                "vanity_code": p.vanity_code,
                "code_count": batch.count if batch else None,
                "code_length": batch.length if batch else None,
                "code_prefix": batch.prefix if batch else "",
                "badge": p.badge,
                "strikethrough": p.strikethrough,
                "show_end_date": p.show_end_date,
                "approval": _json(p.approval),
                "meta": _json(dict(p.meta)),
            }
        )
    w.upsert(
        "promotions",
        "id",
        rows,
        has_status=True,
        json_columns=["applies_to", "eligibility", "approval", "meta"],
    )
    owners = list(catalog.promotions)
    w.replace_children(
        "promotion_amounts",
        "promotion_id",
        owners,
        ["promotion_id", "currency"],
        [
            {
                "promotion_id": p.id,
                "currency": code,
                "amount_minor": catalog.currencies[code].to_minor(amount),
            }
            for p in catalog.promotions.values()
            for code, amount in p.discount.amounts.items()
        ],
    )
    w.replace_children(
        "promotion_customers",
        "promotion_id",
        owners,
        ["promotion_id", "customer_id"],
        [
            {"promotion_id": p.id, "customer_id": customer}
            for p in catalog.promotions.values()
            for customer in p.eligibility.customer_ids
        ],
    )
