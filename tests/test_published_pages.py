"""Apply stores every rendered page with its revision; old revisions' pages stay recoverable."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.main import app
from compiler.project import compile_config
from publishers.postgres.apply import Revision, apply_catalog
from publishers.postgres.pages import published_page

SHIPPED = Path(__file__).resolve().parent.parent / "pricing"
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _apply(engine: Engine, config: Path) -> int | None:
    catalog = compile_config(config).catalog
    assert catalog is not None
    return apply_catalog(
        engine, "tariff", catalog, Revision("test"), environment=None, database="test", now=NOW
    ).revision_id


def test_apply_publishes_one_snapshot_per_page_and_region_and_keeps_old_ones(
    engine: Engine, tmp_path: Path
) -> None:
    first = _apply(engine, SHIPPED)
    assert first is not None
    with engine.connect() as conn:
        regions = {
            r[0]
            for r in conn.execute(
                sa.text("SELECT region FROM tariff.published_pages WHERE revision_id = :r"), {"r": first}
            )
        }
        assert regions == {"IN", "US", "EU"}
        india = published_page(conn, "tariff", first, None, "in")
    assert india is not None and "₹1,499" in india["html"]
    assert _apply(engine, SHIPPED) is None  # nothing changed: no revision, no new snapshots

    changed = tmp_path / "pricing"
    shutil.copytree(SHIPPED, changed)
    plan_file = changed / "plans" / "pro.yaml"
    plan_file.write_text(plan_file.read_text("utf-8").replace("INR: 1499", "INR: 1599"), "utf-8")
    second = _apply(engine, changed)
    assert second is not None
    with engine.connect() as conn:
        current = conn.execute(
            sa.text("SELECT html FROM tariff.current_pages WHERE region = 'IN'")
        ).scalar_one()
        old = published_page(conn, "tariff", first, "pricing", "IN")
    assert "₹1,599" in current and "₹1,499" not in current
    assert old is not None and "₹1,499" in old["html"]


def test_show_prints_a_past_revisions_page(engine: Engine) -> None:
    revision = _apply(engine, SHIPPED)
    url = engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    result = runner.invoke(
        app, ["show", str(revision), "--page", "EU", "--database-url", url, "--config", str(SHIPPED)]
    )
    assert result.exit_code == 0, result.output
    assert result.output.startswith("<!doctype html>") and "18" in result.output
    missing = runner.invoke(
        app, ["show", str(revision), "--page", "XX", "--database-url", url, "--config", str(SHIPPED)]
    )
    assert missing.exit_code == 1
