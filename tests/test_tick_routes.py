"""tariff.yaml `notifications.routes` decide the channels of what the database writes itself: tick's
promotion notices and low-balance alerts, dunning's payment_failed reminders (migration 0025). One row per
routed channel with enqueue()'s keys, the writer's old channel when a kind has no route, idempotent, and
the same for apps that call the SQL functions directly."""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from typer.testing import CliRunner

from cli.errors import CommandError
from cli.main import app
from compiler.catalog import Catalog
from compiler.notification_kinds import channels_for
from database import ledger
from database.automation import run_tick
from database.payments import checkout, settle
from publishers.notify.outbox import enqueue
from publishers.postgres.apply import Revision, apply_catalog
from tests.ledger_support import PUBLISHED_AT, REPO, S, add_customer
from tests.notify_support import ENV, free_port, shipped_catalog, webhook_server
from tests.payment_support import AT, add_buyer

FESTIVE_OPENS = "2026-12-20T00:30:00+05:30"  # festive-season (yearly, from 20 December) has just opened


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def invoke(args: list[str], env: Mapping[str, str] | None = None) -> Any:
    result = CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, args)
    if isinstance(result.exception, CommandError):
        pytest.fail(f"{result.exception.message} ({result.exception.fix})")
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text("utf-8")
    assert old in text, f"{old!r} not in {name}"
    path.write_text(text.replace(old, new), "utf-8")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """The shipped config (promotion_started/ended routed to ops-webhook, the rest to email)."""
    root = tmp_path / "pricing"
    shutil.copytree(REPO / "pricing", root)
    return root


def routed(catalog: Catalog, routes: Mapping[str, Sequence[str]]) -> Catalog:
    settings = dataclasses.replace(catalog.settings, routes={k: tuple(v) for k, v in routes.items()})
    return dataclasses.replace(catalog, settings=settings)


def publish(engine: Engine, routes: Mapping[str, Sequence[str]]) -> None:
    """The shipped catalog with these routes, published as `tariff apply` does."""
    catalog = routed(shipped_catalog(), routes)
    apply_catalog(engine, S, catalog, Revision("test"), environment=None, database="test", now=PUBLISHED_AT)


def tick(engine: Engine, when: datetime) -> dict[str, Any]:
    with engine.begin() as conn:
        steps: dict[str, Any] = run_tick(conn, S, at=when)["steps"]
        return steps


def outbox(engine: Engine, kind: str) -> list[tuple[str | None, str, str]]:
    """(customer, channel, idempotency key) of every row of `kind`, oldest first."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                f"SELECT customer_id, channel, idempotency_key FROM {S}.notifications "
                "WHERE kind = :k ORDER BY id"
            ),
            {"k": kind},
        )
        return [(r[0], r[1], r[2]) for r in rows]


def festive(rows: list[tuple[str | None, str, str]]) -> list[tuple[str, str]]:
    return [(channel, key) for _, channel, key in rows if ":festive-season:" in key]


# --------------------------------------------------------------------------------------- the reported case


def test_promotion_notices_of_tick_go_to_the_routed_webhook_and_are_posted_there(
    engine: Engine, config: Path, pg_url: str
) -> None:
    db = ["-c", str(config), "--database-url", pg_url]
    with webhook_server() as (hook, url):
        edit(config, "tariff.yaml", "url: https://pinegenie.app/api/tariff/events", f"url: {url}")
        # Nobody listens on the e-mail channel's port: an SMTP attempt could only fail.
        edit(config, "tariff.yaml", "host: smtp.pinegenie.app", "host: 127.0.0.1")
        edit(config, "tariff.yaml", "port: 587", f"port: {free_port()}")
        invoke(["apply", "--auto-approve", *db])
        invoke(["tick", "--no-send", "--now", FESTIVE_OPENS, *db])

        listed = json.loads(invoke(["notify", "list", "--format", "json", *db]).stdout)
        promotions = [r for r in listed if r["kind"] in ("promotion_started", "promotion_ended")]
        assert promotions and any(":festive-season:" in r["idempotency_key"] for r in promotions)
        assert {r["channel"] for r in promotions} == {"ops-webhook"}

        sent = json.loads(
            invoke(["notify", "send", "--now", FESTIVE_OPENS, "-f", "json", *db], env=ENV).stdout
        )
    assert [e for e in sent["errors"] if e["kind"].startswith("promotion_")] == []
    posted = sorted(json.loads(r.body)["idempotency_key"] for r in hook.received)
    assert posted == sorted(r["idempotency_key"] for r in promotions)


# --------------------------------------------------------------------------------------- fan-out and keys


def test_each_routed_channel_gets_its_own_row_and_key_and_a_second_tick_adds_none(engine: Engine) -> None:
    publish(engine, {"promotion_started": ["ops-webhook", "email"], "promotion_ended": ["ops-webhook"]})
    tick(engine, at(FESTIVE_OPENS))
    key = "promotion_started:festive-season:2026-12-19T18:30:00Z:admins"
    assert festive(outbox(engine, "promotion_started")) == [("ops-webhook", key), ("email", f"{key}:email")]

    again = tick(engine, at(FESTIVE_OPENS) + timedelta(minutes=5))
    assert again["promotions"]["notifications"] == 0
    assert len(festive(outbox(engine, "promotion_started"))) == 2

    tick(engine, at("2027-01-05T00:00:00+05:30"))  # the window has closed
    ended = "promotion_ended:festive-season:2026-12-19T18:30:00Z:admins"
    assert festive(outbox(engine, "promotion_ended")) == [("ops-webhook", ended)]


def test_a_channel_added_to_a_route_later_hears_of_new_events_only(engine: Engine) -> None:
    publish(engine, {"promotion_ended": ["ops-webhook"]})
    tick(engine, at(FESTIVE_OPENS))  # diwali-2026 ended in October: announced on the first tick
    before = outbox(engine, "promotion_ended")
    assert before and {channel for _, channel, _ in before} == {"ops-webhook"}

    publish(engine, {"promotion_ended": ["email", "ops-webhook"]})
    tick(engine, at(FESTIVE_OPENS) + timedelta(minutes=5))
    assert outbox(engine, "promotion_ended") == before  # no second notice of Diwali, on either channel

    tick(engine, at("2027-01-05T00:00:00+05:30"))  # festive-season ends: news for both channels
    key = "promotion_ended:festive-season:2026-12-19T18:30:00Z:admins"
    assert festive(outbox(engine, "promotion_ended")) == [
        ("email", key),
        ("ops-webhook", f"{key}:ops-webhook"),
    ]


def test_two_ticks_at_once_write_each_routed_row_once(engine: Engine) -> None:
    publish(engine, {"promotion_started": ["ops-webhook", "email"]})
    racer = sa.create_engine(engine.url, poolclass=NullPool)
    barrier = threading.Barrier(2)
    results: list[dict[str, Any]] = []

    def work() -> None:
        barrier.wait()
        results.append(tick(racer, at(FESTIVE_OPENS)))

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    racer.dispose()
    assert sorted(r["promotions"]["notifications"] > 0 for r in results) == [False, True]
    rows = outbox(engine, "promotion_started")
    assert len(rows) == len({key for _, _, key in rows})
    assert [channel for channel, _ in festive(rows)] == ["ops-webhook", "email"]


def test_a_kind_without_a_route_keeps_its_old_channel_and_an_empty_route_turns_it_off(engine: Engine) -> None:
    publish(engine, {"promotion_ended": []})
    tick(engine, at(FESTIVE_OPENS))
    tick(engine, at("2027-01-05T00:00:00+05:30"))
    key = "promotion_started:festive-season:2026-12-19T18:30:00Z:admins"
    assert festive(outbox(engine, "promotion_started")) == [("email", key)]
    assert outbox(engine, "promotion_ended") == []


def test_a_kind_without_a_route_goes_to_the_same_channel_from_python_and_from_tick(engine: Engine) -> None:
    # No routes at all: the shipped config has an SMTP channel and a webhook. Python's enqueue once sent
    # unrouted admin kinds to every webhook while tick mailed them; both now use the writer defaults.
    publish(engine, {})
    catalog = routed(shipped_catalog(), {})
    tick(engine, at(FESTIVE_OPENS))
    from_tick = {channel for channel, _ in festive(outbox(engine, "promotion_started"))}
    with engine.begin() as conn:
        payload = {"promotion": "festive-season"}
        assert enqueue(conn, S, catalog, "promotion_started", "ps:python", payload) == 1
    from_python = {channel for c, channel, key in outbox(engine, "promotion_started") if key == "ps:python"}
    assert from_tick == from_python == {"email"} == set(channels_for("promotion_started", catalog))


def test_writer_defaults_follow_the_rules_they_name() -> None:
    catalog = routed(shipped_catalog(), {})
    rules = dataclasses.replace(catalog.token_rules, low_balance_channels=("ops-webhook", "email"))
    payments = dataclasses.replace(catalog.payment_rules, dunning_channel="ops-webhook")
    tuned = dataclasses.replace(catalog, token_rules=rules, payment_rules=payments)
    assert channels_for("low_balance", tuned) == ("ops-webhook", "email")
    assert channels_for("tokens_expired", tuned) == ("ops-webhook",)
    assert channels_for("promotion_ended", tuned) == ("ops-webhook",)
    assert channels_for("payment_failed", tuned) == ("ops-webhook",)
    assert channels_for("usage_anomaly", tuned) == ("email",)
    assert channels_for("price_change", tuned) == ("email",)  # the first SMTP channel
    no_channels = dataclasses.replace(tuned.settings, channels={})
    assert channels_for("price_change", dataclasses.replace(tuned, settings=no_channels)) == ("email",)
    webhooks_only = dataclasses.replace(
        tuned.settings, channels={k: v for k, v in tuned.settings.channels.items() if v.type == "webhook"}
    )
    assert channels_for("price_change", dataclasses.replace(tuned, settings=webhooks_only)) == ()
    routed_anomalies = routed(tuned, {"usage_anomaly": ["ops-webhook"]})
    assert channels_for("usage_anomaly", routed_anomalies) == ("ops-webhook",)


def test_low_balance_alerts_follow_their_route_over_the_token_rules_channels(engine: Engine) -> None:
    # The token rules send low-balance alerts by email; the route says the webhook and email, in that order.
    publish(engine, {"low_balance": ["ops-webhook", "email"]})
    add_customer(engine, "pro1", "pro")
    tick(engine, at("2026-01-01T00:00:00+00:00"))
    with engine.begin() as conn:
        ledger.revoke(conn, S, "pro1", 450, reason="used", at=at("2026-01-05T00:00:00+00:00"))  # 10% left
    assert tick(engine, at("2026-01-05T00:01:00+00:00"))["low_balance"] == {"alerts": 2, "customers": 1}
    assert [(c, channel) for c, channel, _ in outbox(engine, "low_balance")] == [
        ("pro1", "ops-webhook"),
        ("pro1", "email"),
    ]
    assert tick(engine, at("2026-01-06T00:00:00+00:00"))["low_balance"]["alerts"] == 0


def test_dunning_reminders_follow_the_payment_failed_route(engine: Engine) -> None:
    publish(engine, {"payment_failed": ["email", "ops-webhook"]})
    add_buyer(engine, "asha")
    with engine.begin() as conn:
        pay = checkout(conn, S, "asha", {"plan": "pro", "cycle": "monthly"}, at=AT)
    with engine.begin() as conn:
        settle(conn, S, str(pay["txnid"]), "success", amount=str(pay["amount_text"]), verified=True, at=AT)
    unpaid = AT + timedelta(days=31)  # the paid month is over and nothing renewed it
    assert tick(engine, unpaid)["dunning"]["reminders_sent"] == 1
    assert tick(engine, unpaid + timedelta(minutes=5))["dunning"]["reminders_sent"] == 0
    rows = outbox(engine, "payment_failed")
    assert [channel for _, channel, _ in rows] == ["email", "ops-webhook"]
    first, second = (key for _, _, key in rows)
    assert first.startswith("dunning:") and second == f"{first}:ops-webhook"


def test_a_failed_payment_notice_follows_the_payment_failed_route(engine: Engine) -> None:
    publish(engine, {"payment_failed": ["email", "ops-webhook"]})
    add_buyer(engine, "asha")
    with engine.begin() as conn:
        pay = checkout(conn, S, "asha", {"plan": "pro", "cycle": "monthly"}, at=AT)
    for _ in range(2):  # PayU's redelivery of the failure writes nothing more
        with engine.begin() as conn:
            settle(conn, S, str(pay["txnid"]), "failure", amount=str(pay["amount_text"]), at=AT)
    rows = outbox(engine, "payment_failed")
    assert [(channel, key) for _, channel, key in rows] == [
        ("email", f"payment_failed:{pay['txnid']}"),
        ("ops-webhook", f"payment_failed:{pay['txnid']}:ops-webhook"),
    ]


# --------------------------------------------------------------------------------------- how routes arrive


def test_apps_calling_the_sql_directly_get_the_routes_apply_published(engine: Engine) -> None:
    publish(engine, {"promotion_started": ["ops-webhook"]})
    with engine.begin() as conn:
        conn.execute(sa.text(f"SELECT {S}.tick_promotions(:at)"), {"at": at(FESTIVE_OPENS)})
    assert [channel for channel, _ in festive(outbox(engine, "promotion_started"))] == ["ops-webhook"]


def test_a_change_to_the_routes_alone_reaches_the_next_tick(
    engine: Engine, config: Path, pg_url: str
) -> None:
    # Published by tick even when nobody ran apply since the config changed (apply publishes them too:
    # tests/test_plan_cli.py).
    db = ["-c", str(config), "--database-url", pg_url]
    invoke(["apply", "--auto-approve", *db])
    edit(config, "tariff.yaml", "promotion_started: [ops-webhook]", "promotion_started: [email, ops-webhook]")

    done = invoke(["tick", "--no-send", "--now", FESTIVE_OPENS, "-f", "json", *db])
    assert json.loads(done.stdout)["steps"]["promotions"]["started"]
    assert "notification routes updated" in done.stderr
    key = "promotion_started:festive-season:2026-12-19T18:30:00Z:admins"
    assert festive(outbox(engine, "promotion_started")) == [
        ("email", key),
        ("ops-webhook", f"{key}:ops-webhook"),
    ]
    assert "notification routes updated" not in invoke(["tick", "--no-send", *db]).stderr
    with engine.connect() as conn:  # settings make no revision
        assert conn.execute(sa.text(f"SELECT count(*) FROM {S}.revisions")).scalar_one() == 1
