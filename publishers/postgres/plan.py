"""`plan`: the desired catalog against the live one, with blast radius and drift. Reads only.

A plan is also a file: `apply plan.json` executes exactly what was reviewed, and refuses when the config, or
the live database, has changed since (a stale plan), or when the file was edited.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from compiler.canonical import fingerprint, to_plain
from compiler.catalog import Catalog, Settings
from compiler.diff import CatalogDiff, Change, diff_catalogs
from compiler.diff_format import diff_to_json
from compiler.emit_yaml import catalog_files
from compiler.gc_pause import paused_gc
from compiler.money import Currency
from compiler.project import compile_config
from database.connection import quote_schema
from database.promotions import Impact as PromotionImpact
from database.promotions import promotion_impact
from publishers.notify.routes import RouteChange, route_changes
from publishers.postgres.grandfather import (
    PriceMove,
    blast_radius_sql,
    moves_params,
    pin_zone,
    tune_for_subscribers,
)
from publishers.postgres.mandates import MandateImpact, mandate_impact
from publishers.postgres.read import read_catalog

PLAN_FORMAT = 1
PLAN_KIND = "tariff-plan"


@dataclass(frozen=True, slots=True)
class BlastRadius:
    """What one price change does to the subscribers paying the version it replaces."""

    change_key: str
    currency: str
    subscribers: int
    customers: int
    kept: int
    migrated_now: int
    scheduled: int
    first_effective: datetime | None
    last_effective: datetime | None
    first_notice: datetime | None
    mrr_now: Decimal
    mrr_after: Decimal


@dataclass
class Plan:
    environment: str | None
    schema: str
    database: str
    created_at: datetime
    config_fingerprint: str
    catalog_fingerprint: str
    live_fingerprint: str | None
    live_revision: int | None
    diff: CatalogDiff
    blast: list[BlastRadius] = field(default_factory=list)
    drift: CatalogDiff | None = None
    promotion_impact: dict[str, PromotionImpact] = field(default_factory=dict)
    desired: Catalog | None = None
    mandates: MandateImpact | None = None
    # tariff.yaml `notifications.routes` against the stored ones: settings, published without a revision.
    routes: list[RouteChange] = field(default_factory=list)

    @property
    def has_changes(self) -> bool:
        """Catalog changes: what makes a revision."""
        return self.diff.has_changes

    @property
    def has_route_changes(self) -> bool:
        return bool(self.routes)

    def to_json(self) -> dict[str, Any]:
        body = {
            "format_version": PLAN_FORMAT,
            "kind": PLAN_KIND,
            "created_at": self.created_at.isoformat(),
            "environment": self.environment,
            "schema": self.schema,
            "database": self.database,
            "config_fingerprint": self.config_fingerprint,
            "catalog_fingerprint": self.catalog_fingerprint,
            "live_fingerprint": self.live_fingerprint,
            "live_revision": self.live_revision,
            "changes": diff_to_json(self.diff),
            "blast_radius": [to_plain(b) for b in self.blast],
            "drift": diff_to_json(self.drift) if self.drift is not None else None,
            "promotion_impact": self.promotion_impact,
            "notification_routes": [c.to_json() for c in self.routes],
        }
        if self.mandates is not None:
            body["payu_mandates"] = self.mandates.to_json()
        return {**body, "checksum": checksum(body)}


def checksum(body: dict[str, Any]) -> str:
    encoded = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return "sha256:" + hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def empty_catalog(like: Catalog) -> Catalog:
    """What an empty database reads as: nothing published yet."""
    return Catalog(
        project=like.project,
        currencies={},
        cycles={},
        regions={},
        default_region=like.default_region,
        timezone=like.timezone,
        settings=like.settings,
        fingerprint="",
    )


def with_retired(desired: Catalog, live: Catalog | None, *, retire_missing: bool = False) -> Catalog:
    """The catalog to publish: the config's, plus retired entities the config no longer lists.

    Nothing sold is deleted, so a plan retired earlier stays in the database as retired; leaving it out of
    the config must not read as a change on every later plan. With `retire_missing`, live entities the
    config dropped are carried too, as retired and with their prices closed (as the diff says): that is
    what apply writes, so it is what must read back.
    """
    if live is None:
        return desired

    def retired(entity: Any) -> Any:
        if entity.status == "retired":
            return entity
        closed = {"prices": ()} if hasattr(entity, "prices") else {}
        return dataclasses.replace(entity, status="retired", **closed)

    carried_any = False

    def keep(current: Any, existing: Any) -> dict[str, Any]:
        nonlocal carried_any
        carried = {
            k: retired(v)
            for k, v in existing.items()
            if k not in current and (retire_missing or v.status == "retired")
        }
        carried_any = carried_any or bool(carried)
        return {**current, **carried}

    published = dataclasses.replace(
        desired,
        features=keep(desired.features, live.features),
        plans=keep(desired.plans, live.plans),
        packages=keep(desired.packages, live.packages),
        models=keep(desired.models, live.models),
        promotions=keep(desired.promotions, live.promotions),
    )
    if not carried_any and desired.fingerprint:
        return desired  # the same content: skip re-hashing a large catalog (its fingerprint is known)
    return dataclasses.replace(published, fingerprint=fingerprint(published))


def live_state(conn: Connection, schema: str) -> tuple[Catalog | None, str | None, int | None]:
    """The live catalog, the fingerprint of what the last apply wrote, and the newest revision id."""
    s = quote_schema(schema)
    published = conn.execute(
        sa.text(
            f"SELECT r.catalog_fingerprint FROM {s}.catalog_state st "
            f"JOIN {s}.revisions r ON r.id = st.revision_id"
        )
    ).scalar()
    revision = conn.execute(sa.text(f"SELECT max(id) FROM {s}.revisions")).scalar()
    return read_catalog(conn, schema), published, revision


def make_plan(
    conn: Connection,
    schema: str,
    desired: Catalog,
    *,
    environment: str | None,
    database: str,
    locations: dict[str, tuple[str, int | None]] | None = None,
    now: datetime | None = None,
) -> Plan:
    with paused_gc():
        return _make_plan(
            conn, schema, desired, environment=environment, database=database, locations=locations, now=now
        )


def _make_plan(
    conn: Connection,
    schema: str,
    desired: Catalog,
    *,
    environment: str | None,
    database: str,
    locations: dict[str, tuple[str, int | None]] | None,
    now: datetime | None,
) -> Plan:
    moment = now or datetime.now(UTC)
    live, published_fingerprint, revision = live_state(conn, schema)
    target = with_retired(desired, live)
    base = dataclasses.replace(
        live if live is not None else empty_catalog(desired), settings=desired.settings
    )
    diff = diff_catalogs(base, target, locations=locations)
    # The diff keeps "removed from config" (its impact differs from "retired"); apply writes it as retired.
    published = with_retired(desired, live, retire_missing=True)
    plan = Plan(
        environment,
        schema,
        database,
        moment,
        desired.fingerprint,
        published.fingerprint,
        live.fingerprint if live else None,
        revision,
        diff,
        desired=published,
        routes=route_changes(conn, schema, desired.settings.routes),
    )
    if live is not None:
        promotion_ids = [c.id for c in diff.changes if c.kind == "promotion"]
        if promotion_ids:
            plan.promotion_impact = promotion_impact(conn, schema, promotion_ids, target)
        plan.blast = blast_radius(conn, schema, live, target, diff.changes, moment)
        if plan.blast:
            plan.mandates = mandates_reached(conn, schema, live, target, diff.changes, moment)
        if published_fingerprint is not None and live.fingerprint != published_fingerprint:
            plan.drift = drift(conn, schema, live, desired.settings)
    return plan


def price_moves(
    conn: Connection, schema: str, live: Catalog, target: Catalog, changes: tuple[Change, ...] | list[Change]
) -> dict[str, tuple[PriceMove, str]]:
    """Price changes whose amount moved, keyed by change key, with the live version each replaces."""
    s = quote_schema(schema)
    wanted = [
        c
        for c in changes
        if c.kind == "price"
        and c.old_amount is not None
        and c.new_amount is not None
        and c.owner in target.plans
    ]
    if not wanted:
        return {}
    # Only the versions these changes close (the unique index on current versions finds each one), not
    # every price of every touched plan: a 10% change to a large catalog would otherwise read them all.
    rows = conn.execute(
        sa.text(
            "SELECT pv.id, pv.plan_id, pv.cycle, pv.currency, pv.region FROM unnest("
            "CAST(:plans AS text[]), CAST(:cycles AS text[]), CAST(:currencies AS text[]), "
            "CAST(:regions AS text[])) AS k(plan_id, cycle, currency, region) "
            f"JOIN {s}.price_versions pv ON pv.valid_to IS NULL AND pv.plan_id = k.plan_id "
            "AND pv.cycle = k.cycle AND pv.currency = k.currency "
            "AND COALESCE(pv.region::text, '') = COALESCE(k.region, '')"
        ),
        {
            "plans": [c.owner for c in wanted],
            "cycles": [c.cycle for c in wanted],
            "currencies": [c.currency for c in wanted],
            "regions": [c.region for c in wanted],
        },
    ).all()
    versions = {(plan, cycle, currency, region): id_ for id_, plan, cycle, currency, region in rows}
    moves: dict[str, tuple[PriceMove, str]] = {}
    for change in wanted:
        assert change.owner is not None and change.currency is not None and change.new_amount is not None
        version = versions.get((change.owner, change.cycle, change.currency, change.region))
        if version is None:
            continue
        plan = target.plans[change.owner]
        currency = target.currencies.get(change.currency) or live.currencies[change.currency]
        moves[change.key] = (
            PriceMove(version, currency.to_minor(change.new_amount), plan.on_increase, plan.on_decrease),
            change.currency,
        )
    return moves


def blast_radius(
    conn: Connection,
    schema: str,
    live: Catalog,
    target: Catalog,
    changes: tuple[Change, ...] | list[Change],
    now: datetime,
) -> list[BlastRadius]:
    moves = price_moves(conn, schema, live, target, changes)
    if not moves:
        return []
    ordered = list(moves.items())
    with conn.begin_nested() as scope:
        pin_zone(conn, target.timezone)
        tune_for_subscribers(conn)
        fetched = conn.execute(
            sa.text(blast_radius_sql(quote_schema(schema))),
            {**moves_params([m for _, (m, _c) in ordered]), "now": now},
        ).all()
        scope.rollback()  # undoes the settings: the caller's session is left as it was
    rows = {r.old_version: r for r in fetched}
    result = []
    for key, (move, code) in ordered:
        row = rows.get(move.old_version)
        currency = target.currencies.get(code) or Currency(code)
        if row is None:
            result.append(BlastRadius(key, code, 0, 0, 0, 0, 0, None, None, None, Decimal(0), Decimal(0)))
            continue
        result.append(
            BlastRadius(
                key,
                code,
                row.subscribers,
                row.customers,
                row.kept,
                row.migrated_now,
                row.scheduled,
                row.first_effective,
                row.last_effective,
                row.first_notice,
                currency.round(
                    currency.from_minor(0) + Decimal(row.mrr_now_minor).scaleb(-currency.minor_units)
                ),
                currency.round(Decimal(row.mrr_after_minor).scaleb(-currency.minor_units)),
            )
        )
    return result


def mandates_reached(
    conn: Connection,
    schema: str,
    live: Catalog,
    target: Catalog,
    changes: tuple[Change, ...] | list[Change],
    now: datetime,
) -> MandateImpact | None:
    """Subscribers on active e-mandates the price changes reach (None when nobody pays by mandate)."""
    s = quote_schema(schema)
    if not conn.execute(
        sa.text(f"SELECT EXISTS (SELECT 1 FROM {s}.mandates WHERE status = 'active')")
    ).scalar():
        return None
    moves = [m for m, _code in price_moves(conn, schema, live, target, changes).values()]
    with conn.begin_nested() as scope:
        pin_zone(conn, target.timezone)
        impact = mandate_impact(conn, s, {**moves_params(moves), "now": now})
        scope.rollback()
    return impact


def drift(conn: Connection, schema: str, live: Catalog, settings: Settings) -> CatalogDiff | None:
    """Live rows changed outside Tariff: the catalog the last revision published against the live tables."""
    published = last_published(conn, schema)
    if published is None:
        return None
    return diff_catalogs(
        dataclasses.replace(published, settings=settings), dataclasses.replace(live, settings=settings)
    )


def last_published(conn: Connection, schema: str) -> Catalog | None:
    """The catalog the last revision published, compiled from the config files it stored."""
    s = quote_schema(schema)
    files = conn.execute(
        sa.text(f"SELECT catalog FROM {s}.revisions WHERE id = (SELECT revision_id FROM {s}.catalog_state)")
    ).scalar()
    if not files:
        return None
    with tempfile.TemporaryDirectory(prefix="tariff-published-") as scratch:
        root = Path(scratch)
        for name, text in files.items():
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, "utf-8")
        return compile_config(root).catalog


def published_files(catalog: Catalog) -> dict[str, str]:
    """What a revision stores of the catalog it published: its config files, project settings included.

    Settings (environments, policies, channels) are not catalog rows, but they hold no secrets, and
    keeping them lets `tariff import` write a tariff.yaml whose references still resolve.
    """
    return catalog_files(catalog)
