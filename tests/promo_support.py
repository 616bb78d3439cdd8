"""Shared setup for the promotion tests: publish a config the way `tariff apply` will (catalog, then code
batches), register customers and subscriptions, and write scenario promotions into a copy of the config."""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from compiler.catalog import Catalog
from compiler.project import compile_config
from database.promo_codes import SyncResult
from publishers.postgres.apply import Revision, apply_catalog

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pricing"
SCHEMA = "tariff"
PUBLISHED_AT = datetime(2026, 10, 1, tzinfo=UTC)

# Moments on the shipped config's schedules (India time, where its promotions are written).
DIWALI = datetime.fromisoformat("2026-10-25T12:00:00+05:30")  # diwali-2026 runs 20 Oct – 6 Nov
LAUNCH = datetime.fromisoformat(
    "2026-11-25T12:00:00+05:30"
)  # launch-codes, welcome-code, bundle, free-to-pro
FESTIVE = datetime.fromisoformat("2026-12-25T12:00:00+05:30")  # festive-season (yearly, 20 Dec – 5 Jan)


def compile_dir(config: Path) -> Catalog:
    result = compile_config(config)
    errors = [f"{d.location()}: {d.message}" for d in result.diagnostics.errors]
    assert result.ok and result.catalog is not None, errors
    return result.catalog


def publish(engine: Engine, config: Path = SHIPPED, *, now: datetime = PUBLISHED_AT) -> SyncResult:
    """Apply the config; return the code batches apply generated (none when nothing changed)."""
    catalog = compile_dir(config)
    result = apply_catalog(
        engine, SCHEMA, catalog, Revision("test"), environment=None, database="test", now=now
    )
    return result.codes


def scenario_config(tmp_path: Path, promotions: dict[str, str], *, keep_shipped: bool = False) -> Path:
    """A copy of the shipped config whose promotions are exactly `promotions` (file stem → YAML body)."""
    target = tmp_path / "pricing"
    if not target.exists():
        shutil.copytree(SHIPPED, target)
    if not keep_shipped:
        for path in (target / "promotions").glob("*.yaml"):
            path.unlink()
    for stem, body in promotions.items():
        (target / "promotions" / f"{stem}.yaml").write_text(textwrap.dedent(body), "utf-8")
    return target


def customer(conn: Connection, customer_id: str, **fields: Any) -> None:
    conn.execute(
        sa.text(
            f"SELECT {SCHEMA}.register_customer(p_id => :id, p_country => :country, p_region => :region, "
            "p_segments => CAST(:segments AS text[]))"
        ),
        {
            "id": customer_id,
            "country": fields.get("country", "IN"),
            "region": fields.get("region"),
            "segments": fields.get("segments"),
        },
    )


def subscribe(
    conn: Connection, customer_id: str, plan: str, cycle: str = "monthly", status: str = "active"
) -> None:
    conn.execute(
        sa.text(
            f"SELECT {SCHEMA}.register_subscription(p_customer_id => :c, p_plan_id => :p, p_cycle => :y, "
            "p_status => :s, p_current_period_start => CAST(:start AS timestamptz))"
        ),
        {"c": customer_id, "p": plan, "y": cycle, "s": status, "start": PUBLISHED_AT},
    )


def customers(engine: Engine, *ids: str, **fields: Any) -> None:
    with engine.begin() as conn:
        for customer_id in ids:
            customer(conn, customer_id, **fields)
