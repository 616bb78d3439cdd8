"""`tariff tokens` against the test database: show, grant, revoke, set-limit, boost, text and JSON."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.token_commands import parse_duration, tokens_app
from tests.ledger_support import S, add_customer, publish_shipped

Run = Callable[..., Any]


@pytest.fixture
def cli(engine: Engine, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    publish_shipped(engine)
    add_customer(engine, "ck_1", "pro")
    monkeypatch.setenv("TARIFF_ACTOR", "asha@pinegenie.app")
    app = typer.Typer()
    app.add_typer(tokens_app, name="tokens")

    def run(*args: str, code: int = 0) -> Any:
        result = CliRunner(env={"COLUMNS": "200"}).invoke(
            app, [*args, "--config", str(tmp_path), "--database-url", pg_url]
        )
        if isinstance(result.exception, CommandError):
            assert code == 1, f"{result.exception.message} ({result.exception.fix})"
            return result.exception
        assert result.exit_code == code, result.output + repr(result.exception)
        return result

    return run


def test_grant_revoke_and_show(cli: Run, engine: Engine) -> None:
    granted = cli("tokens", "grant", "ck_1", "300", "--reason", "ticket 4411", "--expires", "30d")
    assert "300 credits granted to ck_1" in granted.output and "balance 300" in granted.output
    again = json.loads(
        cli("tokens", "grant", "ck_1", "50", "--reason", "r", "--reference", "t-1", "-f", "json").output
    )
    assert (again["balance"], again["actor"], again["replayed"]) == (350, "asha@pinegenie.app", False)
    assert json.loads(
        cli("tokens", "grant", "ck_1", "50", "--reason", "r", "--reference", "t-1", "-f", "json").output
    )["replayed"]
    assert "balance 250" in cli("tokens", "revoke", "ck_1", "100", "--reason", "refund").output
    too_much = cli("tokens", "revoke", "ck_1", "1000", "--reason", "x", code=1)
    assert "only 250 available" in too_much.message

    shown = cli("tokens", "show", "ck_1").output
    assert "250 credits (250 usable now)" in shown and "per request 50, daily 300, monthly 2500" in shown
    assert "ticket 4411" in shown and "refund" in shown and "asha@pinegenie.app" in shown
    data = json.loads(cli("tokens", "show", "ck_1", "--format", "json").output)
    assert data["balance"] == 250 and [e["kind"] for e in data["entries"]] == ["adjust", "grant", "grant"]
    assert cli("tokens", "show", "nobody", code=1).message == 'unknown customer "nobody"'
    with engine.connect() as conn:
        reasons = conn.execute(sa.text(f"SELECT reason, actor FROM {S}.token_entries ORDER BY id")).all()
    assert [r[0] for r in reasons] == ["ticket 4411", "r", "refund"]


def test_set_limit_and_boost(cli: Run) -> None:
    limited = cli("tokens", "set-limit", "ck_1", "--daily", "20", "--reason", "abuse review")
    assert "per request 50, daily 20, monthly 2500 (overridden)" in limited.output
    assert cli("tokens", "set-limit", "ck_1", "--reason", "x", code=1).message == "nothing to set"
    boosted = json.loads(
        cli("tokens", "boost", "ck_1", "500", "--for", "48h", "--reason", "outage", "-f", "json").output
    )
    assert (boosted["source"], boosted["amount"], boosted["priority"]) == ("boost", 500, 10)
    assert (
        "above the maximum 1000"
        in cli("tokens", "boost", "ck_1", "5000", "--for", "1h", "--reason", "x", code=1).message
    )
    assert "--for" in cli("tokens", "boost", "ck_1", "5", "--for", "soon", "--reason", "x", code=1).message
    assert (
        "--reason must not be empty" in cli("tokens", "grant", "ck_1", "5", "--reason", " ", code=1).message
    )


def test_parse_duration() -> None:
    assert parse_duration("48h") == timedelta(hours=48)
    assert parse_duration("72 hours") == timedelta(hours=72)
    assert parse_duration("3d") == parse_duration("3 days") == timedelta(days=3)
    assert parse_duration("90m") == timedelta(minutes=90)
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("0h")


def test_tick_command_is_idempotent(cli: Run, pg_url: str, tmp_path: Path) -> None:
    from cli.tick_command import tick

    app = typer.Typer()
    app.command("tick")(tick)
    app.command("noop")(lambda: None)  # two commands, so typer keeps `tick` as a subcommand

    def run(*args: str) -> Any:
        result = CliRunner().invoke(
            app, ["tick", "--no-send", *args, "--config", str(tmp_path), "--database-url", pg_url]
        )
        assert result.exit_code == 0, result.output + repr(result.exception)
        return result

    first = json.loads(run("--now", "2026-01-15T00:00Z", "--format", "json").output)
    assert (first["steps"]["ledger"]["allowances_granted"], first["steps"]["ledger"]["credits_granted"]) == (
        1,
        500,
    )
    text = run("--now", "2026-01-15T00:00:05Z").output
    assert "0 allowance(s) renewed (0 credits), 0 grant(s) expired" in text
    bad = CliRunner().invoke(
        app, ["tick", "--now", "soon", "--config", str(tmp_path), "--database-url", pg_url]
    )
    assert isinstance(bad.exception, CommandError) and bad.exception.message.startswith("--now: not a valid")
