"""Every notice tick writes reaches its reader with the right figures (migration 0027): a price move tick
carries out is a `grandfathering_executed` mail with old and new price, expired credits a `tokens_expired`
mail per customer and run, and boost, package-renewal and usage-anomaly notices are delivered too. Reruns
and concurrent ticks mail nothing twice; `price_migrated` rows written before 0027 are still delivered."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from analytics.anomalies import raise_anomaly_alerts
from database import ledger
from database.automation import run_tick
from database.connection import DEFAULT_SCHEMA
from database.migrate import load_migrations, upgrade
from publishers.notify import outbox
from publishers.notify.deliver import deliver_due
from tests.ledger_support import S, publish_shipped
from tests.notify_support import ENV, shipped_catalog, smtp_server, with_channels
from tests.reporting_support import insert_usage, weekly_usage


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def subscriber(engine: Engine, customer: str, plan: str | None = None) -> None:
    """An Indian customer with an e-mail address, on `plan` (monthly) from 2026-01-01 UTC when given."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(f"SELECT {S}.register_customer(p_id => :id, p_email => :email, p_country => 'IN')"),
            {"id": customer, "email": f"{customer}@example.in"},
        )
        if plan is not None:
            conn.execute(
                sa.text(
                    f"SELECT {S}.register_subscription(p_customer_id => :id, p_plan_id => :plan, "
                    "p_cycle => 'monthly', p_current_period_start => '2026-01-01T00:00:00Z', "
                    "p_current_period_end => '2027-01-01T00:00:00Z')"
                ),
                {"id": customer, "plan": plan},
            )


def tick(engine: Engine, when: datetime) -> dict[str, Any]:
    with engine.begin() as conn:
        steps: dict[str, Any] = run_tick(conn, S, at=when)["steps"]
        return steps


def racing_ticks(engine: Engine, when: datetime) -> None:
    """Two ticks at the same moment on their own connections, as two cron hosts would run them."""
    racer = sa.create_engine(engine.url, poolclass=NullPool)
    barrier = threading.Barrier(2)
    failures: list[BaseException] = []

    def work() -> None:
        try:
            barrier.wait()
            with racer.begin() as conn:
                run_tick(conn, S, at=when)
        except BaseException as exc:  # surfaced below: a thread's exception is otherwise lost
            failures.append(exc)

    workers = [threading.Thread(target=work) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    racer.dispose()
    assert failures == []


def kinds(engine: Engine) -> list[tuple[str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT kind, customer_id FROM {S}.notifications ORDER BY id"))
        return [(r[0], r[1]) for r in rows]


def schedule_price_move(engine: Engine, customer: str, new_minor: int, effective: datetime) -> None:
    """What apply leaves behind for a grandfathered price change: a new version and a scheduled move."""
    with engine.begin() as conn:
        sub, old, plan, cycle, currency, region = conn.execute(
            sa.text(
                "SELECT s.id, s.price_version_id, s.plan_id, s.cycle, s.currency, pv.region "
                f"FROM {S}.subscriptions s JOIN {S}.price_versions pv ON pv.id = s.price_version_id "
                "WHERE s.customer_id = :c"
            ),
            {"c": customer},
        ).one()
        conn.execute(
            sa.text(
                f"UPDATE {S}.price_versions SET valid_to = valid_from "
                "WHERE plan_id = :plan AND cycle = :cycle AND currency = :currency "
                "AND region IS NOT DISTINCT FROM :region AND valid_to IS NULL"
            ),
            {"plan": plan, "cycle": cycle, "currency": currency, "region": region},
        )
        new = conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_versions "
                "(plan_id, cycle, currency, region, amount_minor, valid_from) "
                "VALUES (:plan, :cycle, :currency, :region, :amount, '2026-01-01T00:00:00Z') RETURNING id"
            ),
            {"plan": plan, "cycle": cycle, "currency": currency, "region": region, "amount": new_minor},
        ).scalar_one()
        conn.execute(
            sa.text(
                f"INSERT INTO {S}.price_migrations (subscription_id, from_version, to_version, reason, "
                "effective_at) VALUES (:sub, :old, :new, 'price increase (keep_for)', :eff)"
            ),
            {"sub": sub, "old": old, "new": new, "eff": effective},
        )


@pytest.fixture
def mail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`send(engine, when)` delivers what is due by SMTP to a local server and returns the mail received."""
    with smtp_server(tmp_path) as (mailbox, port, ca_file):
        monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))  # trust the throwaway certificate only
        catalog = with_channels(shipped_catalog(), smtp_port=port)

        def send(engine: Engine, when: datetime, errors: int = 0) -> dict[str, EmailMessage]:
            before = len(mailbox.messages)
            summary = deliver_due(engine, S, when, catalog=catalog, environ=ENV)
            assert len(summary["errors"]) == errors, summary
            return {str(m["To"]): m for m in mailbox.messages[before:]}

        yield send


def text_of(message: EmailMessage) -> str:
    body = message.get_body(preferencelist=("plain",))
    assert isinstance(body, EmailMessage)
    return str(body.get_content()).replace("\r\n", "\n")


# ------------------------------------------------------------------------------------------- price moves


def test_a_price_move_tick_carries_out_is_mailed_with_old_and_new_price_once(
    engine: Engine, mail: Any
) -> None:
    publish_shipped(engine)
    subscriber(engine, "asha", "pro")  # ₹1,499 a month
    effective = at("2026-06-01T00:00:00+00:00")
    schedule_price_move(engine, "asha", 179900, effective)

    racing_ticks(engine, effective)
    tick(engine, effective + timedelta(minutes=5))
    assert kinds(engine) == [("grandfathering_executed", "asha")]

    received = mail(engine, effective + timedelta(minutes=10))
    message = received["asha@example.in"]
    assert message["Subject"] == "Your new PineGenie Pro price now applies"
    text = text_of(message)
    assert "moved from ₹1,499 to **₹1,799** on\n1 June 2026" in text
    assert mail(engine, effective + timedelta(days=1)) == {}


def test_price_migrated_rows_queued_before_the_fix_are_delivered_as_grandfathering_executed(
    raw_engine: Engine, mail: Any
) -> None:
    before = load_migrations()[:26]  # the schema as it was, whose tick wrote `price_migrated`
    assert before[-1].name == "paid_customers"
    upgrade(raw_engine, DEFAULT_SCHEMA, migrations=before)
    publish_shipped(raw_engine)
    subscriber(raw_engine, "asha", "pro")
    subscriber(raw_engine, "ben", "pro")
    effective = at("2026-06-01T00:00:00+00:00")
    schedule_price_move(raw_engine, "asha", 179900, effective)
    tick(raw_engine, effective)  # asha's notice is written, and delivery fails it for good
    assert mail(raw_engine, effective, errors=1) == {}
    schedule_price_move(raw_engine, "ben", 129900, effective + timedelta(days=1))
    tick(raw_engine, effective + timedelta(days=1))  # ben's is still queued when 0027 arrives
    assert kinds(raw_engine) == [("price_migrated", "asha"), ("price_migrated", "ben")]

    upgrade(raw_engine, DEFAULT_SCHEMA)
    assert kinds(raw_engine) == [("grandfathering_executed", "asha"), ("grandfathering_executed", "ben")]
    received = mail(raw_engine, effective + timedelta(days=1, minutes=1))
    assert list(received) == ["ben@example.in"]  # a failed row waits for an operator's retry
    assert "moved from ₹1,499 to **₹1,299** on\n2 June 2026" in text_of(received["ben@example.in"])

    with raw_engine.begin() as conn:
        outbox.retry(conn, S, None, effective + timedelta(days=2))
    retried = mail(raw_engine, effective + timedelta(days=2))
    assert "moved from ₹1,499 to **₹1,799** on\n1 June 2026" in text_of(retried["asha@example.in"])


# ------------------------------------------------------------------------------------------- expiry


def test_expired_credits_are_mailed_once_per_customer_and_run_net_of_rollover(
    engine: Engine, mail: Any
) -> None:
    publish_shipped(engine)
    subscriber(engine, "pro1", "pro")  # 500 credits a month, no rollover
    subscriber(engine, "prem1", "premium")  # 1,000 a month, 50 % rolls over
    subscriber(engine, "solo")
    tick(engine, at("2026-01-01T00:00:00+00:00"))
    with engine.begin() as conn:
        ledger.grant(conn, S, "pro1", 50, reason="goodwill", expires_at=at("2026-01-31T12:00:00+00:00"),
                     at=at("2026-01-02T00:00:00+00:00"))  # fmt: skip
        ledger.revoke(conn, S, "prem1", 300, reason="used", at=at("2026-01-10T00:00:00+00:00"))
        ledger.boost(conn, S, "solo", 400, timedelta(hours=48), reason="outage",
                     at=at("2026-01-30T00:05:00+00:00"))  # fmt: skip

    # January's allowances end at 05:30 IST on 1 February; both ticks run after that, and so does a third.
    when = at("2026-02-01T00:05:00+00:00")
    racing_ticks(engine, when)
    tick(engine, when + timedelta(minutes=5))
    expired = [str(customer) for kind, customer in kinds(engine) if kind == "tokens_expired"]
    # solo's boost is told by its boost_ended notice; its expiry is not told twice.
    assert sorted(expired) == ["prem1", "pro1"]

    received = mail(engine, when + timedelta(minutes=10))
    pro = received["pro1@example.in"]
    assert pro["Subject"] == "550 PineGenie credits expired"  # the allowance and the goodwill grant together
    assert "**550** unused credits expired on 1 February 2026." in text_of(pro)
    # 700 were left; 500 rolled into February, so 200 were lost.
    assert "**200** unused credits expired on 1 February 2026." in text_of(received["prem1@example.in"])
    assert received["solo@example.in"]["Subject"] == "Your PineGenie boost of 400 credits has ended"
    assert mail(engine, when + timedelta(days=1)) == {}


# ------------------------------------------------------------------------------------------- other kinds


def test_boost_and_package_renewal_notices_are_delivered_with_their_figures(
    engine: Engine, mail: Any
) -> None:
    publish_shipped(engine)
    subscriber(engine, "pro1", "pro")
    subscriber(engine, "solo")
    start = at("2026-04-29T12:00:00+00:00")
    tick(engine, start)
    with engine.begin() as conn:
        ledger.boost(conn, S, "solo", 400, timedelta(hours=48), reason="outage", at=start)
        ledger.revoke(conn, S, "solo", 150, reason="used", at=start + timedelta(hours=1))
        ledger.purchase(conn, S, "pro1", "extra-500", "pay_1", at=start)
        ledger.revoke(conn, S, "pro1", 1000, reason="used", at=start + timedelta(hours=1))

    racing_ticks(engine, start + timedelta(hours=48))
    tick(engine, start + timedelta(hours=49))
    assert sorted(k for k in kinds(engine) if k[0] in ("boost_ended", "package_renewal_due")) == [
        ("boost_ended", "solo"),
        ("package_renewal_due", "pro1"),
    ]

    received = mail(engine, start + timedelta(hours=50))
    boost = text_of(received["solo@example.in"])
    assert "The boost of **400** credits we gave you (outage) ran from\n29 April 2026 to 1 May 2026" in boost
    assert "**250** of its credits went unused and expired with it." in boost
    renewal = received["pro1@example.in"]
    assert renewal["Subject"] == "Your PineGenie 500 extra AI credits pack is being renewed"
    assert "**500** credits are added as soon as it is paid" in text_of(renewal)


def test_usage_anomaly_alerts_reach_the_admins_once(engine: Engine, mail: Any) -> None:
    publish_shipped(engine)
    subscriber(engine, "bob", "pro")
    insert_usage(engine, weekly_usage("bob", "gpt-4o", date(2026, 9, 7), 70, 400, noise=0.15))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"UPDATE {S}.token_usage_daily SET credits = 4000 "
                "WHERE customer_id = 'bob' AND model_id = 'gpt-4o' AND day = '2026-11-14'"
            )
        )
    when = at("2026-11-15T09:00:00+05:30")
    for minutes in (0, 5):
        with engine.begin() as conn:
            raise_anomaly_alerts(conn, S, when + timedelta(minutes=minutes))
    received = mail(engine, when + timedelta(minutes=10))
    assert list(received) == ["admin@pinegenie.app"]
    message = received["admin@pinegenie.app"]
    assert message["Subject"] == "Unusual usage: bob used 4,000 credits of gpt-4o on November 14, 2026"
    # Bob's Saturdays (a quiet day in this rhythm) come to 107 credits: 4,000 is 37.4 times that.
    assert (
        "on November 14, 2026, 37.4 times\nthe usual 107 for that weekday (the median of 8 earlier ones)"
        in (text_of(message))
    )
    assert mail(engine, when + timedelta(days=1)) == {}
