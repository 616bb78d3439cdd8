"""`apply`: publish a catalog in one transaction, under an advisory lock, with grandfathering executed.

Either everything lands (catalog rows, new price versions, scheduled migrations, notifications, the
revision) or nothing does: every statement runs in one transaction, and a crash or error rolls it back.
"""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from compiler.catalog import Catalog
from compiler.diagnostics import Severity
from compiler.diff import Impact
from compiler.notification_kinds import channels_for
from database.connection import quote_schema
from database.migrate import advisory_key
from database.promo_codes import SyncResult, sync_code_batches
from publishers.notify.routes import publish_routes
from publishers.postgres.grandfather import (
    PriceMove,
    affected_sql,
    moves_params,
    pin_zone,
    tune_for_subscribers,
)
from publishers.postgres.mandates import record_actions
from publishers.postgres.pages import publish_pages
from publishers.postgres.plan import PLAN_FORMAT, PLAN_KIND, Plan, checksum, make_plan, published_files
from publishers.postgres.read import read_catalog
from publishers.postgres.write import WriteResult, write_catalog

Hook = Callable[[str], None]


class ApplyRefusedError(Exception):
    """Apply stopped before writing anything; `fix` says what to do."""

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


@dataclass(frozen=True, slots=True)
class Revision:
    actor: str
    git_commit: str | None = None
    git_dirty: bool | None = None


@dataclass
class ApplyResult:
    plan: Plan
    revision_id: int | None = None
    write: WriteResult = field(default_factory=WriteResult)
    scheduled: int = 0
    migrated_now: int = 0
    notifications: int = 0
    pages: int = 0
    codes: SyncResult = field(default_factory=SyncResult)
    payu_actions: int = 0
    routes_changed: bool = False

    @property
    def applied(self) -> bool:
        return self.revision_id is not None


_MAX_LOCK_TIMEOUT_MS = 2_147_483_647


def lock_name(schema: str) -> str:
    return f"tariff.apply:{schema}"


def apply_catalog(
    engine: Engine,
    schema: str,
    desired: Catalog,
    revision: Revision,
    *,
    environment: str | None,
    database: str,
    saved_plan: dict[str, Any] | None = None,
    allow_destructive: Sequence[str] = (),
    lock_timeout: float = 60.0,
    locations: dict[str, tuple[str, int | None]] | None = None,
    now: datetime | None = None,
    hook: Hook | None = None,
) -> ApplyResult:
    """Plan again under the lock, check it against a saved plan, then write. No changes: no revision."""
    moment = now or datetime.now(UTC)
    stage = hook or (lambda _name: None)
    with engine.connect() as conn, conn.begin():
        _lock(conn, schema, lock_timeout)
        stage("locked")
        plan = make_plan(
            conn, schema, desired, environment=environment, database=database, locations=locations, now=moment
        )
        if saved_plan is not None:
            _check_saved(saved_plan, plan)
        result = ApplyResult(plan)
        # Routes are settings, outside the catalog's diff: published even when the catalog has no changes.
        result.routes_changed = publish_routes(conn, schema, desired.settings.routes)
        if not plan.has_changes:
            return result
        check_allowed(plan, allow_destructive)
        target = plan.desired
        assert target is not None
        s = quote_schema(schema)
        result.revision_id = conn.execute(
            sa.text(
                f"INSERT INTO {s}.revisions (actor, environment, git_commit, git_dirty, config_fingerprint, "
                "catalog_fingerprint, plan, catalog) VALUES (:actor, :env, :commit, :dirty, "
                ":config, :catalog_fp, "
                "CAST(:plan AS jsonb), CAST(:files AS jsonb)) RETURNING id"
            ),
            {
                "actor": revision.actor,
                "env": environment,
                "commit": revision.git_commit,
                "dirty": revision.git_dirty if revision.git_commit else None,
                "config": desired.fingerprint,
                "catalog_fp": target.fingerprint,
                "plan": json.dumps(plan.to_json(), default=str),
                "files": json.dumps(published_files(target)),
            },
        ).scalar_one()
        result.write = write_catalog(conn, schema, target, result.revision_id)
        result.codes = sync_code_batches(conn, schema, target, result.revision_id)
        stage("written")
        _grandfather(conn, schema, target, result, moment)
        stage("grandfathered")
        result.pages = publish_pages(conn, schema, target, result.revision_id, moment)
        _verify(conn, schema, target)
        conn.execute(
            sa.text(
                f"UPDATE {s}.revisions SET counts = CAST(:counts AS jsonb), summary = :summary WHERE id = :id"
            ),
            {"id": result.revision_id, "counts": json.dumps(_counts(result)), "summary": _summary(plan)},
        )
        stage("before-commit")
    return result


def _lock(conn: Connection, schema: str, timeout: float) -> None:
    key = advisory_key(lock_name(schema))
    if timeout <= 0:
        # lock_timeout = 0 would mean "wait forever" to PostgreSQL, the opposite of what 0 asks for.
        if not conn.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key}).scalar_one():
            raise ApplyRefusedError(
                f"another apply is running on schema {schema!r}; --lock-timeout 0 does not wait for it",
                fix="wait for it to finish and plan again, or pass --lock-timeout SECONDS to wait for it",
            )
        return
    # Rounded up: a timeout under 1 ms written as 0ms would also turn into "wait forever". PostgreSQL
    # takes at most an int4 of milliseconds (about 24 days), which is as good as forever here.
    wait = timeout * 1000
    milliseconds = _MAX_LOCK_TIMEOUT_MS if wait >= _MAX_LOCK_TIMEOUT_MS else max(1, math.ceil(wait))
    # lock_timeout bounds the wait for the advisory lock too; SET LOCAL ends with the transaction.
    conn.execute(sa.text(f"SET LOCAL lock_timeout = '{milliseconds}ms'"))
    try:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
    except (OperationalError, DBAPIError) as exc:
        if "lock timeout" in str(exc).lower() or "canceling statement" in str(exc).lower():
            raise ApplyRefusedError(
                f"another apply is running on schema {schema!r}; gave up after waiting {timeout:g}s",
                fix="wait for it to finish and plan again, or raise --lock-timeout",
            ) from exc
        raise
    conn.execute(sa.text("SET LOCAL lock_timeout = 0"))


def _check_saved(saved: dict[str, Any], plan: Plan) -> None:
    body = {k: v for k, v in saved.items() if k != "checksum"}
    if saved.get("kind") != PLAN_KIND or saved.get("format_version") != PLAN_FORMAT:
        raise ApplyRefusedError(
            "this file is not a Tariff plan (or comes from an incompatible Tariff version)",
            fix="make a new one with `tariff plan --out plan.json`",
        )
    if saved.get("checksum") != checksum(body):
        raise ApplyRefusedError(
            "the plan file was edited after it was made (its checksum does not match)",
            fix="plans are reviewed as written: make a new one with `tariff plan --out plan.json`",
        )
    if saved.get("schema") != plan.schema or saved.get("environment") != plan.environment:
        raise ApplyRefusedError(
            f"the plan was made for environment {saved.get('environment')!r}, schema "
            f"{saved.get('schema')!r}, "
            f"not {plan.environment!r}, {plan.schema!r}",
            fix="apply it with the same --env, or make a new plan for this one",
        )
    if saved.get("config_fingerprint") != plan.config_fingerprint:
        raise ApplyRefusedError(
            "stale plan: the config changed since the plan was made (or it is another config's)",
            fix="run `tariff plan` again and review the new plan",
        )
    if (
        saved.get("live_fingerprint") != plan.live_fingerprint
        or saved.get("live_revision") != plan.live_revision
    ):
        raise ApplyRefusedError(
            "stale plan: the live database changed since the plan was made "
            f"(revision {saved.get('live_revision')} then, {plan.live_revision} now)",
            fix="run `tariff plan` again and review the new plan",
        )
    # Every route apply would change now must have been shown, with the same outcome. The stored side may
    # have moved meanwhile: a tick running with the same config publishes the very routes reviewed.
    # And every route it shows must still be the config's, or apply would quietly not make that change.
    shown = [c for c in saved.get("notification_routes") or [] if isinstance(c, dict)]
    reviewed = {str(c.get("kind")): c.get("after") for c in shown}
    desired = plan.desired.settings.routes if plan.desired is not None else {}
    unreviewed = [c.kind for c in plan.routes if reviewed.get(c.kind, ...) != c.to_json()["after"]]
    unreviewed += [
        kind
        for kind, after in reviewed.items()
        if (list(desired[kind]) if kind in desired else None) != after and kind not in unreviewed
    ]
    if unreviewed:
        raise ApplyRefusedError(
            "stale plan: the notification routes apply would publish now are not the ones the plan shows "
            f"({', '.join(unreviewed)}; the config's routes or the stored ones changed since)",
            fix="run `tariff plan` again and review the new plan",
        )


def check_allowed(plan: Plan, patterns: Sequence[str]) -> None:
    """Refuse a plan with policy errors or destructive changes not allowed by `patterns`; the CLI asks this
    before it asks for approval, and apply asks again under the lock."""
    errors = [f for f in plan.diff.findings if f.severity is Severity.ERROR]
    if errors:
        raise ApplyRefusedError(
            "policy: " + "; ".join(f.message for f in errors),
            fix=errors[0].hint or "fix the config or add an approval",
        )
    destructive = [c.key for c in plan.diff.changes if c.impact is Impact.DESTRUCTIVE]
    blocked = [k for k in destructive if not any(fnmatch.fnmatchcase(k, p) for p in patterns)]
    if blocked:
        raise ApplyRefusedError(
            "destructive change(s) need explicit permission: " + ", ".join(blocked),
            fix="review them, then pass --allow-destructive with each key (or a pattern: 'price:pro/*')",
        )


def _grandfather(conn: Connection, schema: str, target: Catalog, result: ApplyResult, now: datetime) -> None:
    changes = result.write.price_changes
    if not changes:
        return
    s = quote_schema(schema)
    pin_zone(conn, target.timezone)
    tune_for_subscribers(conn)
    moves = [
        PriceMove(
            c.old_version,
            c.new_minor,
            target.plans[c.owner].on_increase,
            target.plans[c.owner].on_decrease,
            c.new_version,
        )
        for c in changes
    ]
    conn.execute(
        sa.text(f"CREATE TEMP TABLE tariff_affected ON COMMIT DROP AS {affected_sql(s)}"),
        {**moves_params(moves), "now": now},
    )
    conn.execute(
        sa.text(
            f"UPDATE {s}.price_migrations pm SET status = 'canceled', completed_at = :now "
            "FROM tariff_affected a WHERE pm.subscription_id = a.subscription_id AND pm.status = 'scheduled'"
        ),
        {"now": now},
    )
    result.scheduled = conn.execute(
        sa.text(
            f"INSERT INTO {s}.price_migrations (subscription_id, from_version, to_version, "
            "reason, notify_at, "
            "effective_at, revision_id) SELECT subscription_id, from_version, new_version, "
            "'price ' || direction || ' (' || policy || ')', "
            "greatest(CAST(:now AS timestamptz), effective_at - make_interval(days => "
            "notice_days)), effective_at, :rev "
            "FROM tariff_affected WHERE effective_at IS NOT NULL AND policy <> 'migrate_now'"
        ),
        {"now": now, "rev": result.revision_id},
    ).rowcount
    result.migrated_now = conn.execute(
        sa.text(
            f"WITH moved AS (UPDATE {s}.subscriptions sub SET price_version_id = a.new_version, "
            "updated_at = :now "
            "FROM tariff_affected a WHERE sub.id = a.subscription_id AND a.policy = 'migrate_now' "
            "AND a.direction <> 'same' RETURNING sub.id, a.from_version, a.new_version, a.direction) "
            f"INSERT INTO {s}.price_migrations (subscription_id, from_version, to_version, "
            "reason, notify_at, "
            "effective_at, status, revision_id, completed_at) SELECT id, from_version, new_version, "
            "'price ' || direction || ' (migrate_now)', :now, :now, 'done', :rev, :now FROM moved"
        ),
        {"now": now, "rev": result.revision_id},
    ).rowcount
    channels = _customer_channels(target)
    if conn.execute(sa.text(f"SELECT EXISTS (SELECT 1 FROM {s}.mandates WHERE status = 'active')")).scalar():
        assert result.revision_id is not None
        result.payu_actions = record_actions(
            conn,
            s,
            {**moves_params(moves), "now": now},
            result.revision_id,
            channels[0] if channels else "email",
            affected="SELECT * FROM tariff_affected",
        )
    if not channels:
        return  # price_change is routed nowhere: customers are not written to
    result.notifications = conn.execute(
        sa.text(
            f"INSERT INTO {s}.notifications (kind, customer_id, channel, payload, "
            "idempotency_key, next_attempt_at) "
            "SELECT 'price_change', n.customer_id, ch.id, n.payload, "
            "n.key || CASE WHEN ch.ord = 1 THEN '' ELSE ':' || ch.id END, n.due "
            "FROM (SELECT a.customer_id, jsonb_build_object('revision', :rev, 'items', "
            "jsonb_agg(jsonb_build_object('subscription', a.subscription_id, 'plan', a.plan_id, "
            "'cycle', a.cycle, "
            "'currency', a.currency, 'old_amount_minor', a.from_minor, 'new_amount_minor', a.new_minor, "
            "'direction', a.direction, 'effective_at', a.effective_at) ORDER BY a.subscription_id)) "
            "AS payload, "
            "'price-change:' || :rev || ':' || a.customer_id AS key, "
            "greatest(CAST(:now AS timestamptz), min(a.effective_at - make_interval(days => a.notice_days))) "
            "AS due FROM tariff_affected a WHERE a.effective_at IS NOT NULL GROUP BY a.customer_id) n "
            "CROSS JOIN unnest(CAST(:channels AS text[])) WITH ORDINALITY AS ch(id, ord) "
            "ON CONFLICT (idempotency_key) DO NOTHING"
        ),
        {"now": now, "rev": result.revision_id, "channels": list(channels)},
    ).rowcount


def _customer_channels(catalog: Catalog) -> tuple[str, ...]:
    """Where price-change notices go (compiler.notification_kinds.channels_for). The first channel's row
    keeps the key `price-change:<revision>:<customer>`; further channels append `:<channel>`."""
    return channels_for("price_change", catalog)


def _verify(conn: Connection, schema: str, target: Catalog) -> None:
    # A safety net: what we wrote must read back as exactly what we meant to write, or nothing is committed.
    live = read_catalog(conn, schema)
    if live is None or live.fingerprint != target.fingerprint:
        raise ApplyRefusedError(
            "the catalog did not read back as written; nothing was applied",
            fix="please report this with the plan JSON (tariff plan --format json)",
        )


def _counts(result: ApplyResult) -> dict[str, Any]:
    return {
        "changes": len(result.plan.diff.changes),
        "by_impact": result.plan.diff.by_impact(),
        "rows": result.write.rows,
        "prices_opened": result.write.prices_opened,
        "prices_closed": result.write.prices_closed,
        "migrations_scheduled": result.scheduled,
        "migrated_now": result.migrated_now,
        "notifications": result.notifications,
        "pages_published": result.pages,
        "codes_generated": result.codes.codes_generated,
    }


def _summary(plan: Plan) -> str:
    counts = plan.diff.by_impact()
    parts = ", ".join(f"{n} {impact.replace('_', ' ')}" for impact, n in counts.items() if n)
    return f"{len(plan.diff.changes)} change(s): {parts}"
