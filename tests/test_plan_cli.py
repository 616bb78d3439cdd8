"""`tariff plan`, `apply`, `import`, `history`, `show` and `db status` as users run them, against real
PostgreSQL (the `engine` fixture's freshly migrated `tariff` schema), through typer's CliRunner.

Errors a command reports (CommandError, DatabaseError) are rendered here as `tariff`'s entry point renders
them, so assertions read what the user reads; any other exception is an internal error and fails the test."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.errors import CommandError, report_error
from cli.main import app
from database.errors import DatabaseError

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "pricing"
CHANGE_SCRIPT = REPO / "demo" / "change_pricing.py"
PRO_MONTHLY_INR = "  monthly:\n    INR: 1499\n"


@dataclass(frozen=True)
class Run:
    exit_code: int
    output: str
    stdout: str

    def __str__(self) -> str:
        return f"exit {self.exit_code}\n{self.output}"


def tariff(*args: str | Path) -> Run:
    """Run `tariff ARGS` with a non-terminal standard input (as in CI)."""
    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)
    output = result.output
    error = result.exception
    if error is not None and not isinstance(error, SystemExit):
        if not isinstance(error, CommandError | DatabaseError):
            trace = "".join(traceback.format_exception(error))
            pytest.fail(f"internal error (a traceback for the user):\n{trace}")
        stream = io.StringIO()
        report_error(Console(file=stream, width=200, soft_wrap=True), error.message, error.fix)
        output += stream.getvalue()
    return Run(result.exit_code, output, result.stdout)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TARIFF_ENV", "TARIFF_CONFIG", "TARIFF_DATABASE_URL", "TARIFF_ACTOR", "CI", "TARIFF_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "200")  # rich tables at a terminal's width, not cut at 80


@pytest.fixture
def url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    target = tmp_path / "pricing"
    shutil.copytree(SHIPPED, target)
    return target


def changed_config(tmp_path: Path) -> Path:
    dest = tmp_path / "changed"
    done = subprocess.run(
        [sys.executable, str(CHANGE_SCRIPT), str(SHIPPED), str(dest)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return dest


def count(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        value: int = conn.execute(sa.text(f"SELECT count(*) FROM tariff.{table}")).scalar_one()
    return value


def apply_ok(config: Path, url: str) -> Run:
    done = tariff("apply", "--config", config, "--database-url", url, "--auto-approve")
    assert done.exit_code == 0, done
    return done


# --------------------------------------------------------------------------------------- plan and apply


def test_plan_detailed_exitcode_is_2_with_changes_and_0_after_apply(
    engine: Engine, config: Path, url: str
) -> None:
    fresh = tariff("plan", "--config", config, "--database-url", url, "--detailed-exitcode")
    assert fresh.exit_code == 2, fresh
    assert "nothing published yet" in fresh.output
    assert "Plan Pro added" in fresh.output and "Promotion Diwali" in fresh.output
    assert count(engine, "revisions") == 0  # plan writes nothing

    applied = apply_ok(config, url)
    assert "Applied revision 1" in applied.output
    assert count(engine, "revisions") == 1

    again = tariff("plan", "--config", config, "--database-url", url, "--detailed-exitcode")
    assert again.exit_code == 0, again
    assert "No changes" in again.output and "live revision 1" in again.output

    twice = apply_ok(config, url)
    assert "No changes" in twice.output
    assert count(engine, "revisions") == 1


def test_plan_without_detailed_exitcode_exits_0_with_changes(config: Path, url: str) -> None:
    done = tariff("plan", "--config", config, "--database-url", url)
    assert done.exit_code == 0, done


def test_apply_refuses_to_ask_without_a_terminal(engine: Engine, config: Path, url: str) -> None:
    done = tariff("apply", "--config", config, "--database-url", url)
    assert done.exit_code == 1, done
    assert "standard input is not a terminal" in done.output
    assert "--auto-approve" in done.output
    assert "Plan Pro added" in done.output  # the plan was shown before refusing
    assert count(engine, "revisions") == 0
    assert count(engine, "plans") == 0


def test_a_saved_plan_file_applies(engine: Engine, config: Path, url: str, tmp_path: Path) -> None:
    saved = tmp_path / "out" / "plan.json"
    planned = tariff("plan", "--config", config, "--database-url", url, "--out", saved)
    assert planned.exit_code == 0, planned
    assert f"tariff apply {saved}" in planned.output
    data = json.loads(saved.read_text("utf-8"))
    assert data["kind"] == "tariff-plan" and data["checksum"].startswith("sha256:")
    assert count(engine, "revisions") == 0

    applied = tariff("apply", saved, "--config", config, "--database-url", url)
    assert applied.exit_code == 0, applied  # a reviewed plan needs no second approval
    assert "Applied revision 1" in applied.output
    assert tariff("plan", "--config", config, "--database-url", url, "--detailed-exitcode").exit_code == 0


def test_a_stale_plan_file_is_refused_after_another_apply(
    engine: Engine, config: Path, url: str, tmp_path: Path
) -> None:
    saved = tmp_path / "plan.json"
    assert tariff("plan", "--config", config, "--database-url", url, "--out", saved).exit_code == 0
    apply_ok(config, url)
    done = tariff("apply", saved, "--config", config, "--database-url", url)
    assert done.exit_code == 1, done
    assert "stale plan" in done.output and "live database changed" in done.output
    assert "tariff plan" in done.output  # the fix
    assert count(engine, "revisions") == 1


def test_a_plan_file_for_another_config_is_refused(
    engine: Engine, config: Path, url: str, tmp_path: Path
) -> None:
    apply_ok(config, url)
    saved = tmp_path / "plan.json"
    changed = changed_config(tmp_path)
    assert tariff("plan", "--config", changed, "--database-url", url, "--out", saved).exit_code == 0
    pro = config / "plans" / "pro.yaml"
    pro.write_text(pro.read_text("utf-8").replace(PRO_MONTHLY_INR, "  monthly:\n    INR: 1599\n"), "utf-8")
    done = tariff("apply", saved, "--config", config, "--database-url", url)
    assert done.exit_code == 1, done
    assert "stale plan" in done.output and "config changed" in done.output
    assert count(engine, "revisions") == 1


def test_a_hand_edited_plan_file_is_refused(engine: Engine, config: Path, url: str, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    assert tariff("plan", "--config", config, "--database-url", url, "--out", saved).exit_code == 0
    data = json.loads(saved.read_text("utf-8"))
    data["live_revision"] = 7
    saved.write_text(json.dumps(data, indent=2), "utf-8")
    done = tariff("apply", saved, "--config", config, "--database-url", url)
    assert done.exit_code == 1, done
    assert "edited" in done.output
    assert count(engine, "revisions") == 0


@pytest.mark.parametrize(
    ("content", "message"), [("{not json", "not readable JSON"), ("[1, 2]", "not a Tariff plan")]
)
def test_a_file_that_is_not_a_plan_is_refused(
    engine: Engine, config: Path, url: str, tmp_path: Path, content: str, message: str
) -> None:
    saved = tmp_path / "plan.json"
    saved.write_text(content, "utf-8")
    done = tariff("apply", saved, "--config", config, "--database-url", url)
    assert done.exit_code == 1, done
    assert message in done.output
    missing = tariff("apply", tmp_path / "nope.json", "--config", config, "--database-url", url)
    assert missing.exit_code == 1 and "does not exist" in missing.output
    assert count(engine, "revisions") == 0


# ----------------------------------------------------------------------------------- formats and history


def _subscribe_pro_inr(engine: Engine, customers: int) -> None:
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20)
    with engine.begin() as conn:
        for n in range(customers):
            conn.execute(
                sa.text("SELECT tariff.register_customer(p_id => :id, p_country => 'IN')"), {"id": f"c{n}"}
            )
            conn.execute(
                sa.text(
                    "SELECT tariff.register_subscription(p_customer_id => :id, p_plan_id => 'pro', "
                    "p_cycle => 'monthly', p_current_period_start => :start, p_current_period_end => :end)"
                ),
                {"id": f"c{n}", "start": end - timedelta(days=30), "end": end},
            )


def test_plan_markdown_shows_the_blast_radius(engine: Engine, config: Path, url: str, tmp_path: Path) -> None:
    apply_ok(config, url)
    _subscribe_pro_inr(engine, 3)
    changed = changed_config(tmp_path)
    done = tariff("plan", "--config", changed, "--database-url", url, "--format", "markdown")
    assert done.exit_code == 0, done
    text = done.stdout
    assert text.startswith("## Tariff plan")
    assert "### Blast radius (existing subscribers)" in text
    assert "| Price | Subscribers | Rollout | MRR now | MRR after grandfathering |" in text
    [row] = [line for line in text.splitlines() if line.startswith("| `pro/monthly/INR`")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "3"
    assert "3 move at renewal" in cells[2] and "notified from" in cells[2]
    assert (cells[3], cells[4]) == ("0 INR", "+900 INR")
    annual = [line for line in text.splitlines() if line.startswith("| `pro/annual/INR`")]
    assert annual and "| 0 |" in annual[0]
    assert "Pricing pages re-published with the new prices (pro): pricing" in text
    assert count(engine, "price_migrations") == 0


def test_plan_json_is_a_checksummed_plan(engine: Engine, config: Path, url: str, tmp_path: Path) -> None:
    apply_ok(config, url)
    _subscribe_pro_inr(engine, 2)
    done = tariff("plan", "--config", changed_config(tmp_path), "--database-url", url, "--format", "json")
    assert done.exit_code == 0, done
    data = json.loads(done.stdout)
    assert data["format_version"] == 1 and data["kind"] == "tariff-plan"
    assert data["checksum"].startswith("sha256:") and len(data["checksum"]) == len("sha256:") + 64
    assert data["live_revision"] == 1 and data["schema"] == "tariff"
    assert "price:pro/monthly/INR" in {c["key"] for c in data["changes"]["changes"]}
    [blast] = [b for b in data["blast_radius"] if b["change_key"] == "price:pro/monthly/INR"]
    assert blast["subscribers"] == 2 and blast["mrr_after"] == "600"
    assert "password" not in done.stdout.lower()


@pytest.mark.parametrize("command", [("plan",), ("history",), ("show", "1")])
def test_json_output_stays_json_when_the_schema_is_created_first(
    raw_engine: Engine, config: Path, command: tuple[str, ...]
) -> None:
    """The first command on a new database creates the schema; saying so must not corrupt the JSON."""
    url = raw_engine.url.render_as_string(hide_password=False)
    done = tariff(*command, "--config", config, "--database-url", url, "--format", "json")
    if command[0] == "show":
        assert done.exit_code == 1 and "no revision 1" in done.output
        assert done.stdout == ""
        return
    assert done.exit_code == 0, done
    data = json.loads(done.stdout)
    assert data["format_version"] == 1
    assert "applied migrations" in done.output  # the notice is still shown, on standard error


def test_history_lists_revisions_with_the_actor(
    engine: Engine, config: Path, url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tariff("history", "--config", config, "--database-url", url)
    assert empty.exit_code == 0 and "No revisions yet" in empty.output

    monkeypatch.setenv("TARIFF_ACTOR", "priya@pinegenie.app")
    apply_ok(config, url)
    monkeypatch.setenv("TARIFF_ACTOR", "ci-bot")
    apply_ok(changed_config(tmp_path), url)

    listed = tariff("history", "--config", config, "--database-url", url)
    assert listed.exit_code == 0, listed
    lines = [line for line in listed.output.splitlines() if "priya@pinegenie.app" in line or "ci-bot" in line]
    assert len(lines) == 2
    assert lines[0].split()[0] == "2" and "ci-bot" in lines[0]  # newest first
    assert lines[1].split()[0] == "1" and "priya@pinegenie.app" in lines[1]

    as_json = tariff("history", "--config", config, "--database-url", url, "--format", "json", "--limit", "1")
    assert as_json.exit_code == 0, as_json
    [only] = json.loads(as_json.stdout)["revisions"]
    assert (only["id"], only["actor"]) == (2, "ci-bot")
    assert only["counts"]["migrations_scheduled"] == 0
    assert "price increase" in only["summary"]


def test_show_prints_one_revision(
    engine: Engine, config: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TARIFF_ACTOR", "priya@pinegenie.app")
    apply_ok(config, url)
    done = tariff("show", "1", "--config", config, "--database-url", url)
    assert done.exit_code == 0, done
    assert "Revision 1" in done.output and "priya@pinegenie.app" in done.output
    assert "plan:pro" in done.output and "[additive]" in done.output

    as_json = tariff("show", "1", "--config", config, "--database-url", url, "--format", "json")
    assert json.loads(as_json.stdout)["plan"]["kind"] == "tariff-plan"

    missing = tariff("show", "9", "--config", config, "--database-url", url)
    assert missing.exit_code == 1 and "no revision 9" in missing.output


# ------------------------------------------------------------------------------------------------ import


def test_import_then_plan_shows_no_changes(config: Path, url: str, tmp_path: Path) -> None:
    apply_ok(config, url)
    imported = tmp_path / "imported"
    done = tariff("import", "--config", config, "--database-url", url, "--out", imported)
    assert done.exit_code == 0, done
    planned = tariff("plan", "--config", imported, "--database-url", url, "--detailed-exitcode")
    assert planned.exit_code == 0, planned


def test_import_writes_config_files_and_never_overwrites_silently(
    config: Path, url: str, tmp_path: Path
) -> None:
    nothing = tariff("import", "--config", config, "--database-url", url, "--out", tmp_path / "early")
    assert nothing.exit_code == 1 and "nothing has been published" in nothing.output

    apply_ok(config, url)
    imported = tmp_path / "imported"
    done = tariff("import", "--config", config, "--database-url", url, "--out", imported)
    assert done.exit_code == 0, done
    assert "3 plans" in done.output
    pro = (imported / "plans" / "pro.yaml").read_text("utf-8")
    assert pro.startswith("# yaml-language-server: $schema=")
    assert "INR: 1499" in pro

    again = tariff("import", "--config", config, "--database-url", url, "--out", imported)
    assert again.exit_code == 1 and "--force" in again.output
    forced = tariff("import", "--config", config, "--database-url", url, "--out", imported, "--force")
    assert forced.exit_code == 0, forced


# ------------------------------------------------------------------------------------ errors and status


def test_an_unreachable_database_is_a_clear_error(config: Path) -> None:
    bad = "postgresql://x@127.0.0.1:1/none"
    done = tariff("plan", "--config", config, "--database-url", bad)
    assert done.exit_code == 1, done
    assert "127.0.0.1:1" in done.output
    assert "Traceback" not in done.output
    assert not (config / ".tariff").exists()  # no embedded server was started instead

    # The real entry point, as a process: one clear line on standard error, no traceback.
    process = subprocess.run(
        [sys.executable, "-m", "cli", "plan", "--config", str(config), "--database-url", bad],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={k: v for k, v in os.environ.items() if k != "TARIFF_DEBUG"},
        timeout=60,
        check=False,
    )
    assert process.returncode == 1, process.stderr
    assert "error: cannot reach PostgreSQL at 127.0.0.1:1" in process.stderr
    assert "Traceback" not in process.stdout + process.stderr


def test_db_status_reports_the_schema_version(engine: Engine, config: Path, url: str) -> None:
    done = tariff("db", "status", "--config", config, "--database-url", url)
    assert done.exit_code == 0, done
    assert "up to date" in done.output and "tariff" in done.output
    as_json = tariff("db", "status", "--config", config, "--database-url", url, "--format", "json")
    data: dict[str, Any] = json.loads(as_json.stdout)
    assert data["exists"] is True and data["pending"] == [] and data["version"] == data["latest"]
    assert data["source"] == "argument"


def test_a_config_with_errors_is_not_planned(engine: Engine, config: Path, url: str) -> None:
    pro = config / "plans" / "pro.yaml"
    text = pro.read_text("utf-8")
    line = text[: text.index("trial_days: 14")].count("\n") + 1
    pro.write_text(text.replace("trial_days: 14", "trial_days: fourteen"), "utf-8")
    done = tariff("plan", "--config", config, "--database-url", url, "--detailed-exitcode")
    assert done.exit_code == 1, done
    assert f"plans/pro.yaml:{line}:" in done.output and "trial_days" in done.output
    assert "expected a whole number" in done.output
    assert "does not validate" in done.output
    assert count(engine, "revisions") == 0


def test_plan_shows_the_reach_of_a_changed_promotion(
    engine: Engine, config: Path, url: str, tmp_path: Path
) -> None:
    apply_ok(config, url)
    changed = changed_config(tmp_path)  # adds the black-friday-2026 promotion
    done = tariff("plan", "--config", changed, "--database-url", url, "--format", "markdown")
    assert done.exit_code == 0, done
    assert "### Promotion reach" in done.stdout
    assert "black-friday-2026: 0 registered customer(s) eligible now, 0 redemption(s) so far" in done.stdout


# --------------------------------------------------------------------------------------- notification routes
# A change to tariff.yaml `notifications.routes` alone: plan shows it (and `--detailed-exitcode` says there is
# something to apply, so the on-merge workflow applies it), apply publishes it without a revision and says
# so, and a saved plan is refused once the routes it was made for changed.

SHIPPED_ROUTE = "promotion_started: [ops-webhook]"


def reroute(config: Path, new: str) -> None:
    path = config / "tariff.yaml"
    text = path.read_text("utf-8")
    assert SHIPPED_ROUTE in text
    path.write_text(text.replace(SHIPPED_ROUTE, new), "utf-8")


def stored(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        routes: dict[str, list[str]] = conn.execute(
            sa.text("SELECT tariff.notification_routes_json()")
        ).scalar_one()
    return routes


def plan(config: Path, url: str, *extra: str | Path) -> Run:
    return tariff("plan", "--config", config, "--database-url", url, "--detailed-exitcode", *extra)


def test_a_route_change_alone_is_planned_and_applied_without_a_revision(
    engine: Engine, config: Path, url: str
) -> None:
    apply_ok(config, url)
    assert stored(engine)["promotion_started"] == ["ops-webhook"]
    reroute(config, "promotion_started: [email, ops-webhook]\n    usage_anomaly: []")

    planned = plan(config, url)
    assert planned.exit_code == 2, planned  # the apply workflow runs apply only on 2
    assert "No catalog changes" in planned.output
    assert "promotion_started: ops-webhook → email, ops-webhook" in planned.output
    assert "usage_anomaly: default → off" in planned.output
    assert stored(engine)["promotion_started"] == ["ops-webhook"]  # plan writes nothing

    as_json = json.loads(plan(config, url, "--format", "json").stdout)
    assert as_json["notification_routes"] == [
        {"kind": "promotion_started", "before": ["ops-webhook"], "after": ["email", "ops-webhook"]},
        {"kind": "usage_anomaly", "before": None, "after": []},
    ]
    markdown = plan(config, url, "--format", "markdown").stdout
    assert "### Notification routes" in markdown and "`usage_anomaly: default → off`" in markdown

    applied = apply_ok(config, url)
    assert "Notification routes updated" in applied.output and "no revision" in applied.output
    assert "promotion_started: ops-webhook → email, ops-webhook" in applied.output
    assert stored(engine)["promotion_started"] == ["email", "ops-webhook"]
    assert stored(engine)["usage_anomaly"] == []
    assert count(engine, "revisions") == 1

    again = plan(config, url)
    assert again.exit_code == 0, again
    assert "No changes. The live catalog matches the config." in again.output
    assert "Notification routes" not in again.output
    assert "No changes" in apply_ok(config, url).output


def test_dropping_a_route_sends_the_kind_back_to_its_default(engine: Engine, config: Path, url: str) -> None:
    apply_ok(config, url)
    reroute(config, "")
    planned = plan(config, url)
    assert planned.exit_code == 2 and "promotion_started: ops-webhook → default" in planned.output
    apply_ok(config, url)
    assert "promotion_started" not in stored(engine)


def test_routes_and_catalog_changes_are_applied_together(
    engine: Engine, config: Path, url: str, tmp_path: Path
) -> None:
    reroute(config, "promotion_started: [email]")
    planned = plan(config, url)
    assert planned.exit_code == 2
    assert "Plan Pro added" in planned.output and "promotion_started: default → email" in planned.output
    applied = apply_ok(config, url)
    assert "Applied revision 1" in applied.output
    updated = next(line for line in applied.output.splitlines() if "Notification routes updated:" in line)
    assert "promotion_started: default → email" in updated  # the first apply stores every route
    assert stored(engine)["promotion_started"] == ["email"]


def saved_route_plan(config: Path, url: str, tmp_path: Path) -> Path:
    """Published as shipped, then promotion_started rerouted to email and planned into plan.json."""
    apply_ok(config, url)
    reroute(config, "promotion_started: [email]")
    saved = tmp_path / "plan.json"
    assert plan(config, url, "--out", saved).exit_code == 2
    return saved


def edit_route(config: Path, new: str) -> None:
    """The config edited after the plan: promotion_started's route (email) becomes `new`."""
    path = config / "tariff.yaml"
    path.write_text(path.read_text("utf-8").replace("promotion_started: [email]", new), "utf-8")


def test_a_saved_plan_is_refused_once_the_routes_it_shows_changed(
    engine: Engine, config: Path, url: str, tmp_path: Path
) -> None:
    saved = saved_route_plan(config, url, tmp_path)
    edit_route(config, "promotion_started: []")

    refused = tariff("apply", saved, "--config", config, "--database-url", url)
    assert refused.exit_code == 1, refused
    assert "stale plan: the notification routes apply would publish now" in refused.output
    assert "(promotion_started;" in refused.output
    assert stored(engine)["promotion_started"] == ["ops-webhook"]  # nothing half-written

    assert plan(config, url, "--out", saved).exit_code == 2
    applied = tariff("apply", saved, "--config", config, "--database-url", url)
    assert applied.exit_code == 0, applied
    assert stored(engine)["promotion_started"] == []


def test_a_saved_plan_still_applies_when_a_tick_published_its_routes_first(
    engine: Engine, config: Path, url: str, tmp_path: Path
) -> None:
    saved = saved_route_plan(config, url, tmp_path)
    # A scheduled tick with the same config runs between the plan and its apply, and stores the routes.
    ticked = tariff("tick", "--no-send", "--config", config, "--database-url", url)
    assert ticked.exit_code == 0, ticked
    assert stored(engine)["promotion_started"] == ["email"]
    applied = tariff("apply", saved, "--config", config, "--database-url", url)
    assert applied.exit_code == 0, applied
    assert "No changes" in applied.output


def test_a_saved_plan_is_refused_when_a_route_it_shows_was_reverted_in_the_config(
    engine: Engine, config: Path, url: str, tmp_path: Path
) -> None:
    saved = saved_route_plan(config, url, tmp_path)
    edit_route(config, SHIPPED_ROUTE)
    refused = tariff("apply", saved, "--config", config, "--database-url", url)
    assert refused.exit_code == 1, refused
    assert "stale plan: the notification routes apply would publish now" in refused.output
    assert stored(engine)["promotion_started"] == ["ops-webhook"]
